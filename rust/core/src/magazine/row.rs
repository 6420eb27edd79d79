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

/// [`ClassMagazines::flags`]: requests of the class were taken ([`ClassMagazines::take_calls`])
/// since the last aging look: the class was used.
const FOLDED: u8 = 1;
/// [`ClassMagazines::flags`]: the class's depot held magazines when this CPU last aged it (or this
/// CPU's magazines of the class were just taken as idle): the next idle look visits it again.
const DEPOT: u8 = 2;

/// What an aging look at one class of a row found ([`ClassMagazines::take_idle`]).
pub struct Idle {
    /// Requests served since the last look, taken (the caller folds them into the layer below).
    pub calls: u64,
    /// The class served none since the last look: its magazines, taken out (the caller gives
    /// their rounds back to the piece layer and frees them). `None`: the class is in use.
    pub mags: Option<[Option<MagBox>; 2]>,
    /// The caller should age the class's depot (close an interval, reap what stayed out of the
    /// working set) and tell the row what is left ([`ClassMagazines::depot_aged`]): the class is
    /// idle here and its depot may hold what this CPU put there.
    pub visit_depot: bool,
}

/// The classes an aging pass looks at ([`ClassMagazines::active_classes`]): the set bits of a
/// copy of the row's mask, lowest first.
#[derive(Clone, Copy, Debug)]
pub struct ActiveClasses(u64);

impl Iterator for ActiveClasses {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let c = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(c)
    }
}

/// One CPU's magazines and request counters of one type, per magazine class `0..N` (`N <= 64`).
pub struct ClassMagazines<const N: usize> {
    mags: [CpuMagazines; N],
    /// Allocations served from this row's magazines per class, not yet folded into the layer
    /// below's statistics ([`ClassMagazines::take_calls`]).
    calls: [u64; N],
    /// Aging state per class: [`FOLDED`], [`DEPOT`].
    flags: [u8; N],
    /// Bit `c`: class `c` may hold magazines, requests or a depot to age
    /// ([`ClassMagazines::activate`]); an aging pass looks at these classes only and clears the
    /// bit of a class it leaves with nothing.
    active: u64,
}

impl<const N: usize> Default for ClassMagazines<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> ClassMagazines<N> {
    /// A row with no magazine and no request yet.
    pub const fn new() -> Self {
        const { assert!(N <= 64, "one bit per class in `active`") };
        Self {
            mags: [const { CpuMagazines::new() }; N],
            calls: [0; N],
            flags: [0; N],
            active: 0,
        }
    }

    /// Where class `c` is kept. Every caller passes a class below `N` (the magazine classes
    /// `size_class` and `PageCode::object_of` return are below `NCLASSES`, the row's `N`), for
    /// which this is `c` itself. Reduced modulo `N` instead of bounds-checked: with `N` a power of two (64
    /// in the kernel) that is one `and` on the fast paths, where the bounds check that could
    /// never fail was a compare, a branch and a panic call (`Documentation/performance.rst`,
    /// "The diet").
    #[inline(always)]
    fn at(c: usize) -> usize {
        debug_assert!(c < N);
        c % N
    }

    /// The loaded and previous magazines of class `c` (`c < N`).
    #[inline(always)]
    pub fn class(&mut self, c: usize) -> &mut CpuMagazines {
        &mut self.mags[Self::at(c)]
    }

    /// Fast allocation from class `c`'s loaded or previous magazine
    /// ([`CpuMagazines::alloc`]), counted as a request; `None` (nothing counted) if both are
    /// empty or missing.
    #[inline(always)]
    pub fn alloc(&mut self, c: usize) -> Option<usize> {
        let r = self.mags[Self::at(c)].alloc()?;
        self.count(c);
        Some(r)
    }

    /// Counts one allocation of class `c` served by this row (after a depot exchange or a fill).
    #[inline(always)]
    pub fn count(&mut self, c: usize) {
        // A request counter: 2^64 allocations are out of reach, so no overflow check.
        let c = Self::at(c);
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
        self.flags[c] |= FOLDED;
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
    /// back to the piece layer and frees them). Frees alone do not keep magazines: rounds that no
    /// allocation took for a whole window are what trimming returns.
    pub fn take_idle(&mut self, c: usize) -> Idle {
        let calls = core::mem::take(&mut self.calls[c]);
        let used = calls != 0 || self.flags[c] & FOLDED != 0;
        self.flags[c] &= !FOLDED;
        if used {
            return Idle {
                calls,
                mags: None,
                visit_depot: false,
            };
        }
        let mags = self.mags[c].take();
        if mags.iter().any(Option::is_some) {
            self.flags[c] |= DEPOT;
        }
        if self.flags[c] & DEPOT == 0 {
            self.active &= !(1 << c);
        }
        Idle {
            calls,
            mags: Some(mags),
            visit_depot: self.flags[c] & DEPOT != 0,
        }
    }

    /// The caller aged class `c`'s depot after [`ClassMagazines::take_idle`] asked it to:
    /// `holds` says whether the depot still holds magazines (then the next idle look visits it
    /// again).
    pub fn depot_aged(&mut self, c: usize, holds: bool) {
        if holds {
            self.flags[c] |= DEPOT;
        } else {
            self.flags[c] &= !DEPOT;
            self.active &= !(1 << c);
        }
    }

    /// Marks class `c` for the aging passes: the caller is about to give it magazines (a fill,
    /// a depot exchange, a new magazine on a free miss). Only those slow paths make a class hold
    /// magazines, and only a class with magazines counts requests, so a pass that looks at the
    /// marked classes alone misses nothing.
    pub fn activate(&mut self, c: usize) {
        self.active |= 1 << c;
    }

    /// Whether class `c` is marked for the aging passes ([`ClassMagazines::activate`]).
    pub fn is_active(&self, c: usize) -> bool {
        self.active & (1 << c) != 0
    }

    /// The classes the next aging pass looks at (those marked since a pass last left them
    /// empty), as a copy: the row may change while the caller walks them.
    pub fn active_classes(&self) -> ActiveClasses {
        ActiveClasses(self.active)
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
