// SPDX-License-Identifier: GPL-2.0

//! One CPU's magazines of one malloc type: for each of `N` magazine classes, the loaded and
//! previous magazine ([`CpuMagazines`]) and the allocations served from them that the layer below
//! has not been told about yet.
//!
//! Magazines are kept per (type, class) rather than per class, so that a magazine only ever holds
//! objects of one type's buckets: a core whose buckets are segregated by type (each cluster owned
//! by one type) hands a type only pieces of its own clusters. The kernel glue keeps one row per
//! defined type and CPU (`rust/glue/magazines.rs`); like [`CpuMagazines`], nothing here locks.

use super::cpu::CpuMagazines;
use super::mag::MagBox;

/// One CPU's magazines and request counters of one type, per magazine class `0..N`.
pub struct ClassMagazines<const N: usize> {
    mags: [CpuMagazines; N],
    /// Allocations served from this row's magazines per class, not yet folded into the layer
    /// below's statistics ([`ClassMagazines::take_calls`]).
    calls: [u64; N],
    /// Requests of the class were taken ([`ClassMagazines::take_calls`]) since the last aging
    /// look ([`ClassMagazines::take_idle`]): the class was used.
    folded: [bool; N],
}

impl<const N: usize> Default for ClassMagazines<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> ClassMagazines<N> {
    /// A row with no magazine and no request yet.
    pub const fn new() -> Self {
        Self {
            mags: [const { CpuMagazines::new() }; N],
            calls: [0; N],
            folded: [false; N],
        }
    }

    /// The loaded and previous magazines of class `c` (`c < N`).
    #[inline(always)]
    pub fn class(&mut self, c: usize) -> &mut CpuMagazines {
        &mut self.mags[c]
    }

    /// Fast allocation from class `c`'s loaded or previous magazine
    /// ([`CpuMagazines::alloc`]), counted as a request; `None` (nothing counted) if both are
    /// empty or missing.
    #[inline(always)]
    pub fn alloc(&mut self, c: usize) -> Option<usize> {
        let r = self.mags[c].alloc()?;
        self.count(c);
        Some(r)
    }

    /// Counts one allocation of class `c` served by this row (after a depot exchange or a fill).
    #[inline(always)]
    pub fn count(&mut self, c: usize) {
        // A request counter: 2^64 allocations are out of reach, so no overflow check.
        self.calls[c] = self.calls[c].wrapping_add(1);
    }

    /// Requests of class `c` counted since the last [`ClassMagazines::take_calls`].
    pub fn calls(&self, c: usize) -> u64 {
        self.calls[c]
    }

    /// Takes the requests of class `c` counted so far (to fold them into the layer below). The
    /// next aging look ([`ClassMagazines::take_idle`]) then counts the class as used: requests are
    /// folded by the paths that serve them (a fill) or by an aging pass that saw them.
    pub fn take_calls(&mut self, c: usize) -> u64 {
        self.folded[c] = true;
        core::mem::take(&mut self.calls[c])
    }

    /// Rounds of class `c` held by this row.
    pub fn rounds(&self, c: usize) -> usize {
        self.mags[c].rounds()
    }

    /// Whether `addr` is a round of class `c` held by this row.
    pub fn holds(&self, c: usize, addr: usize) -> bool {
        let mut found = false;
        self.mags[c].for_each_round(|r| found |= r == addr);
        found
    }

    /// Aging (module `trim`): takes the requests of class `c` counted so far (to fold them into
    /// the layer below, as [`ClassMagazines::take_calls`]) and, if the class served none since
    /// the last look (none counted, none taken), its magazines (the caller gives their rounds
    /// back to the piece layer and frees them; `None`: used). Frees alone do not keep
    /// magazines: rounds that no allocation took for a whole window are what trimming returns.
    pub fn take_idle(&mut self, c: usize) -> (u64, Option<[Option<MagBox>; 2]>) {
        let calls = core::mem::take(&mut self.calls[c]);
        let folded = core::mem::take(&mut self.folded[c]);
        let idle = calls == 0 && !folded;
        (calls, idle.then(|| self.mags[c].take()))
    }

    /// Takes class `c`'s magazines out (flush); the caller empties them into the layer below.
    pub fn take(&mut self, c: usize) -> [Option<MagBox>; 2] {
        self.mags[c].take()
    }

    /// Whether the row holds no magazine and no uncounted request (every class flushed and its
    /// requests taken): its memory may go.
    pub fn is_empty(&self) -> bool {
        self.mags.iter().all(|m| m.is_empty()) && self.calls.iter().all(|&n| n == 0)
    }
}
