// SPDX-License-Identifier: GPL-2.0

//! The depot: full and empty magazines shared by all CPUs of one size class (Bonwick & Adams
//! 2001, section 3.2), with the two controls of section 3.5 and illumos `kmem_depot_ws_*`:
//!
//! * **Magazine size grows with contention.** The caller (which owns the depot's lock) counts a
//!   trylock failure with [`Depot::note_contention`]. At the end of each *interval* (every
//!   [`INTERVAL_OPS`] depot operations, or when the caller runs [`Depot::update`], e.g. from a
//!   periodic work), more than [`CONTENTION_LIMIT`] contended acquisitions make the magazine
//!   size grow by half (up to the class's maximum): bigger magazines mean fewer depot visits per
//!   object. Magazines already loaded keep their size until they come back through the depot.
//! * **Working-set trimming.** The depot tracks, for full and for empty magazines, the minimum
//!   number it held during the interval. Magazines that stayed in the depot for a whole interval
//!   were not part of the working set: [`Depot::reap`] takes out up to the smaller of the last
//!   interval's minimum and the current one (illumos' `ml_reaplimit`), so idle magazines give
//!   their rounds back to the layer below and their memory to the allocator.

use super::mag::{MagBox, MAG_ROUNDS};

/// Depot operations per interval (event-driven intervals: a busy depot updates itself).
pub const INTERVAL_OPS: u32 = 1024;

/// Contended depot-lock acquisitions per interval above which the magazine size grows.
pub const CONTENTION_LIMIT: u32 = 3;

/// Rounds of a class's first magazines at least ([`start_magsize`]), and the most rounds a
/// magazine takes from the layer below in one fill ([`super::Magazine::fill_room`]): a magazine
/// reaches its size through frees, so that the first allocation of a class on a CPU ties up no
/// more objects than before (a fill runs when the depot has no full magazine: first use, and
/// while a workload grows).
pub const MAG_START: usize = 15;

/// Rounds of the first magazines of a class of `object_bytes`-byte objects, before any
/// contention grows them (the caller clamps it to the class's largest, its byte budget).
///
/// At least [`MAG_START`]; below 256 bytes as many as the per-CPU arrays of the allocator
/// kmalloc43 is measured against hold for objects of that size: SLUB's sheaves
/// (`calculate_sheaf_capacity()` in `mm/slub.c`, Linux 7.3) take 60 objects below 256 bytes, 28
/// below 1 KiB (26, rounded up to fill the sheaf's `kmalloc-256` object), 12 below a page and 4
/// from a page on. From 256 bytes to below a page a first magazine is a whole one, [`MAG_ROUNDS`]
/// (62, the `kmalloc-512` object a magazine is; the byte budget makes it 36-62 rounds below
/// 1 KiB and 18-62 from 1 KiB, whose pieces have 64 KiB, `malloc::MAG_BYTES_BIG_PIECES`: 62
/// rounds of 1 KiB, 32 of 2 KiB): a depot exchange costs the magazine path more than SLUB's barn
/// exchange costs a sheaf (the slot taken again, the depot lock, the trimming's bookkeeping;
/// `Documentation/performance.rst`, *The depot exchange (session 7)*), and with 28 rounds a batch
/// of 256 such objects made 9 exchanges each way (13 guest instructions per 512-byte batch pair
/// over a 64-byte one, 10 % of its time), with 62 it makes 4, as at 64 bytes. At 1-2 KiB, with
/// 15-round magazines, a batch made 17 exchanges each way and cost 1.04-1.19 `kmalloc` batches;
/// with the largest magazines 0.84-0.87 at 1 KiB and 0.97-1.09 at 2 KiB (*Magazines of 1-2 KiB
/// pieces (session 7)*). With 15 rounds a batch of 256 small objects made 16 exchanges each way,
/// with 60 it makes 4. The objects a CPU caches grow with it (at most two magazines per CPU and
/// (type, class), plus the depot's working set, which trimming returns; a CPU's magazines of a
/// class over all types stay within the class budget, module `trim`): for objects of 512 bytes,
/// 2 x 62 x 512 = 62 KiB per CPU and type instead of 28 KiB, of 2 KiB 128 KiB instead of 60 KiB.
pub const fn start_magsize(object_bytes: usize) -> usize {
    let sheaf = if object_bytes < 256 {
        60
    } else if object_bytes < 4096 {
        MAG_ROUNDS
    } else {
        4
    };
    if sheaf > MAG_START {
        sheaf
    } else {
        MAG_START
    }
}

/// A LIFO list of magazines, linked through their `next` field.
///
/// # Invariants
///
/// `len` is the number of magazines reachable from `head`.
#[derive(Default)]
struct MagList {
    head: Option<MagBox>,
    len: usize,
    /// Smallest `len` since the interval started.
    min: usize,
    /// `min` of the last complete interval.
    reap_limit: usize,
}

impl MagList {
    fn push(&mut self, mut m: MagBox) {
        m.next = self.head.take();
        self.head = Some(m);
        self.len += 1;
    }

    fn pop(&mut self) -> Option<MagBox> {
        let mut m = self.head.take()?;
        self.head = m.next.take();
        self.len -= 1;
        self.min = self.min.min(self.len);
        Some(m)
    }

    fn close_interval(&mut self) {
        self.reap_limit = self.min;
        self.min = self.len;
    }

    /// Magazines that stayed unused for the last interval and so far in this one.
    fn reapable(&self) -> usize {
        self.reap_limit.min(self.min)
    }

    fn pop_reapable(&mut self) -> Option<MagBox> {
        if self.reapable() == 0 {
            return None;
        }
        let m = self.pop()?;
        self.reap_limit -= 1;
        Some(m)
    }
}

/// Counters of one depot (debugfs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DepotStats {
    /// Full magazines held.
    pub full: usize,
    /// Empty magazines held.
    pub empty: usize,
    /// Capacity of magazines loaded from now on.
    pub magsize: usize,
    /// Contended lock acquisitions ever.
    pub contended: u64,
    /// Times the magazine size grew.
    pub resizes: u64,
    /// Magazines taken out by working-set trimming.
    pub reaped: u64,
}

/// The depot of one size class. Not locked itself: the caller holds the depot's own lock.
pub struct Depot {
    full: MagList,
    empty: MagList,
    magsize: usize,
    max_magsize: usize,
    ops: u32,
    contended: u32,
    /// Contended acquisitions ever (the counters of [`DepotStats`] are kept one by one rather
    /// than as a whole `DepotStats`, so that a kernel type's 64 locked depots fit in 8 KiB).
    contended_ever: u64,
    /// Times the magazine size grew.
    resizes: u64,
    /// Magazines taken out by working-set trimming.
    reaped: u64,
}

impl Depot {
    /// An empty depot whose magazines start at `magsize` rounds and grow up to `max_magsize`.
    pub fn new(magsize: usize, max_magsize: usize) -> Self {
        let max = max_magsize.clamp(1, super::MAG_ROUNDS);
        Self {
            full: MagList::default(),
            empty: MagList::default(),
            magsize: magsize.clamp(1, max),
            max_magsize: max,
            ops: 0,
            contended: 0,
            contended_ever: 0,
            resizes: 0,
            reaped: 0,
        }
    }

    /// Capacity given to magazines loaded from now on.
    pub fn magsize(&self) -> usize {
        self.magsize
    }

    /// Capacity the magazine size may grow to (the class's byte budget in rounds).
    pub fn max_magsize(&self) -> usize {
        self.max_magsize
    }

    /// Whether the depot holds any magazine, full or empty.
    pub fn holds_any(&self) -> bool {
        self.full.len + self.empty.len != 0
    }

    /// Counters.
    pub fn stats(&self) -> DepotStats {
        DepotStats {
            full: self.full.len,
            empty: self.empty.len,
            magsize: self.magsize,
            contended: self.contended_ever,
            resizes: self.resizes,
            reaped: self.reaped,
        }
    }

    fn tick(&mut self) {
        self.ops += 1;
        if self.ops >= INTERVAL_OPS {
            self.update();
        }
    }

    /// A full magazine, if any.
    pub fn get_full(&mut self) -> Option<MagBox> {
        self.tick();
        self.full.pop()
    }

    /// An empty magazine sized to the current magazine size, if any.
    pub fn get_empty(&mut self) -> Option<MagBox> {
        self.tick();
        let mut m = self.empty.pop()?;
        m.set_cap(self.magsize);
        Some(m)
    }

    /// Stores a magazine: on the full list if it holds rounds, else on the empty list.
    pub fn put(&mut self, m: MagBox) {
        self.tick();
        if m.is_empty() {
            self.empty.push(m);
        } else {
            self.full.push(m);
        }
    }

    /// Counts one contended acquisition of the depot's lock (the caller's trylock failed).
    pub fn note_contention(&mut self) {
        self.contended += 1;
        self.contended_ever += 1;
    }

    /// Closes the interval: grows the magazine size if the lock was contended, and moves the
    /// working-set window. Returns whether the size grew.
    pub fn update(&mut self) -> bool {
        let grow = self.contended > CONTENTION_LIMIT && self.magsize < self.max_magsize;
        if grow {
            self.magsize = (self.magsize + self.magsize.div_ceil(2)).min(self.max_magsize);
            self.resizes += 1;
        }
        self.contended = 0;
        self.ops = 0;
        self.full.close_interval();
        self.empty.close_interval();
        grow
    }

    /// One magazine outside the working set (full ones first: their rounds go back to the layer
    /// below), or `None` when the working set is all that is left.
    pub fn reap(&mut self) -> Option<MagBox> {
        let m = self
            .full
            .pop_reapable()
            .or_else(|| self.empty.pop_reapable())?;
        self.reaped += 1;
        Some(m)
    }

    /// Every magazine, whatever the working set (flush: drain, type undefine, unload).
    pub fn take_any(&mut self) -> Option<MagBox> {
        self.full.pop().or_else(|| self.empty.pop())
    }

    /// Calls `f` with the rounds of every full magazine (audit and exact double-free checks).
    pub fn for_each_round(&self, mut f: impl FnMut(usize)) {
        let mut m = self.full.head.as_ref();
        while let Some(mag) = m {
            mag.rounds().iter().for_each(|&r| f(r));
            m = mag.next.as_ref();
        }
    }

    /// Rounds in full magazines.
    pub fn rounds(&self) -> usize {
        let mut n = 0;
        self.for_each_round(|_| n += 1);
        n
    }
}

impl Drop for Depot {
    fn drop(&mut self) {
        debug_assert!(
            self.full.len == 0 && self.empty.len == 0,
            "depot dropped with magazines"
        );
        // Leak rather than drop (MagBox's drop complains): the memory is the caller's.
        while let Some(m) = self.take_any() {
            let _ = m.into_raw();
        }
    }
}
