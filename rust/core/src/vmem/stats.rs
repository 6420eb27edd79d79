// SPDX-License-Identifier: GPL-2.0

//! Per-arena counters, modelled on the illumos vmem kstats.

use core::ops::BitOr;

/// Counters of one arena. Sizes are in integers (bytes for address arenas).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Integers allocated (including those held by the quantum caches).
    pub mem_inuse: usize,
    /// Integers in imported spans.
    pub mem_import: usize,
    /// Integers in all spans.
    pub mem_total: usize,
    /// Successful allocations from the segment lists (quantum-cache hits not included).
    pub alloc: usize,
    /// Frees to the segment lists.
    pub free: usize,
    /// Spans imported from the source.
    pub import: usize,
    /// Spans released to the source.
    pub release: usize,
    /// Times a sleeping caller waited (maintained by wrappers through `note_wait`).
    pub wait: usize,
    /// Allocations that failed with no space.
    pub fail: usize,
    /// Hash lookups of allocated segments.
    pub lookup: usize,
    /// Longest hash chain walked by a lookup.
    pub lookup_max_chain: usize,
    /// Hash chain entries examined during lookups (kept apart from `lookup` in memory, so the
    /// compiler updates the two with plain adds instead of a vector add).
    pub lookup_steps: usize,
    /// Free segments examined by the fit searches (beyond the instant-fit head).
    pub search: usize,
    /// Times the tag or hash page source could not supply a page.
    pub populate_fail: usize,
    /// Tag pages obtained.
    pub populate: usize,
    /// Hash table resizes (grow + shrink).
    pub hash_rescale: usize,
    /// Allocations served by a quantum cache.
    pub qcache_hit: usize,
    /// Quantum-cache allocations that fell through to the arena.
    pub qcache_miss: usize,
}

/// Which segments `walk` and `size` look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SegKindSet(u8);

impl SegKindSet {
    /// Allocated segments (including those held by quantum caches).
    pub const ALLOC: SegKindSet = SegKindSet(1);
    /// Free segments.
    pub const FREE: SegKindSet = SegKindSet(2);
    /// Allocated and free: the whole of every span.
    pub const TOTAL: SegKindSet = SegKindSet(3);

    /// Whether every kind of `other` is in `self`.
    pub const fn contains(self, other: SegKindSet) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for SegKindSet {
    type Output = SegKindSet;
    fn bitor(self, rhs: SegKindSet) -> SegKindSet {
        SegKindSet(self.0 | rhs.0)
    }
}
