// SPDX-License-Identifier: GPL-2.0

//! The magazine front of an arena's quantum caches (Bonwick & Adams 2001, sections 3-4 applied
//! to vmem's quantum caches, which in the paper are kmem caches with magazines).
//!
//! Per quantum-cached size `s` the caller keeps one [`CpuMagazines`] per CPU and one [`Depot`]
//! (from [`crate::magazine`], the same core as the malloc buckets'); this type holds the
//! [`SlabTable`] that makes `free` exact and does the work of each path:
//!
//! * fast, on the owning CPU with its slot lock, no arena lock: [`QcFront::alloc`],
//!   [`QcFront::free`] (a magazine pop/push plus one bit flip in the slab's record);
//! * slow, under the arena lock (which also guards the depots): [`QcFront::refill`] (depot
//!   exchange, else carve objects from slabs at home, else import a slab from the arena),
//!   [`QcFront::unload`], [`QcFront::flush_cpu`], [`QcFront::flush_depot`],
//!   [`QcFront::trim_depot`], [`QcFront::release_idle`], [`QcFront::arena_free`] (every free the
//!   front did not take, guarded so that a slab itself can never be freed by a client).
//!
//! Magazine memory is the caller's, as in [`crate::magazine`]: `spare` hands one in, `give`
//! takes one back.

use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::arena::Arena;
use super::constraints::Constraints;
use super::error::VmemError;
use super::flags::Flags;
use super::qslab::{slab_align, SlabTable, SLAB_OBJS};
use super::source::SpanRelease;
use super::stats::SegKindSet;
use super::tags::TagPageSource;
use crate::magazine::{CpuMagazines, Depot, MagBox};

/// Outcome of a fast-path [`QcFront::free`] that did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FastFree {
    /// The integer is in a magazine of this CPU.
    Done,
    /// The integer was checked and is free, but both magazines are full: call
    /// [`QcFront::unload`] with it under the arena lock.
    Full(usize),
    /// Not an object of a slab of that size: free it with [`QcFront::arena_free`].
    NotCached,
}

/// The magazine front of one arena.
pub struct QcFront {
    table: SlabTable,
    quantum: usize,
    ncaches: usize,
    /// Misses still to send straight to the arena after a slab could not be had (a hint, read
    /// and written without a lock: an arena too full or fragmented for an aligned slab is not
    /// searched for one on every miss).
    bypass: AtomicUsize,
}

/// Misses sent straight to the arena after a failed slab refill.
pub(super) const REFILL_BACKOFF: usize = 64;

impl QcFront {
    /// A front for an arena of `quantum` (a power of two) caching sizes up to `qcache_max`.
    pub const fn new(quantum: usize, qcache_max: usize) -> Self {
        Self {
            table: SlabTable::new(quantum),
            quantum,
            ncaches: qcache_max >> quantum.trailing_zeros(),
            bypass: AtomicUsize::new(0),
        }
    }

    /// [`QcFront::new`] at `slot`, in place (a front is about 8 KiB: a kernel stack cannot
    /// hold a temporary one).
    ///
    /// # Safety
    ///
    /// `slot` is valid for writes of a `QcFront` and aligned.
    pub unsafe fn init_in_place(slot: *mut Self, quantum: usize, qcache_max: usize) {
        // SAFETY: `slot` is valid and aligned (contract); the table is built in place and the
        // other fields written, which initialises the whole front.
        unsafe {
            SlabTable::init_in_place(&raw mut (*slot).table, quantum);
            (&raw mut (*slot).quantum).write(quantum);
            (&raw mut (*slot).ncaches).write(qcache_max >> quantum.trailing_zeros());
            (&raw mut (*slot).bypass).write(AtomicUsize::new(0));
        }
    }

    /// Whether a miss should go straight to the arena (a slab refill failed within the last
    /// [`REFILL_BACKOFF`] misses); counts the miss if so.
    #[inline]
    pub fn bypass_miss(&self) -> bool {
        let left = self.bypass.load(Relaxed);
        if left == 0 {
            return false;
        }
        self.bypass.store(left - 1, Relaxed);
        true
    }

    /// A slab refill failed: the next [`REFILL_BACKOFF`] misses go straight to the arena.
    pub fn refill_failed(&self) {
        self.bypass.store(REFILL_BACKOFF, Relaxed);
    }

    /// Number of quantum-cached sizes.
    pub fn ncaches(&self) -> usize {
        self.ncaches
    }

    /// The index (`0..ncaches`) of the cache serving requests of `size`, or `None`.
    #[inline]
    pub fn cache_index(&self, size: usize) -> Option<usize> {
        if size == 0 {
            return None;
        }
        let k = (size - 1) >> self.quantum.trailing_zeros();
        (k < self.ncaches).then_some(k)
    }

    /// The object size of cache `i`.
    #[inline]
    pub fn cache_size(&self, i: usize) -> usize {
        (i + 1) * self.quantum
    }

    /// The slab records (statistics, audits).
    pub fn table(&self) -> &SlabTable {
        &self.table
    }

    /// Fast allocation from cache `i`; `None`: both magazines empty, call [`QcFront::refill`].
    #[inline]
    pub fn alloc(&self, i: usize, cpu: &mut CpuMagazines) -> Option<usize> {
        let r = cpu.alloc()?;
        self.table.mark_out(r, self.cache_size(i)).then_some(r)
    }

    /// Fast free of `addr` to cache `i` (`i` from [`QcFront::cache_index`] of the size given).
    /// A double free or a bad address is an error and changes nothing.
    #[inline]
    pub fn free(
        &self,
        i: usize,
        cpu: &mut CpuMagazines,
        addr: usize,
    ) -> Result<FastFree, VmemError> {
        if !self.table.free_check(addr, self.cache_size(i))? {
            return Ok(FastFree::NotCached);
        }
        Ok(match cpu.free(addr) {
            Ok(()) => FastFree::Done,
            Err(a) => FastFree::Full(a),
        })
    }

    /// Allocation miss (arena lock held): reloads from the depot, else fills the loaded (or the
    /// `spare`) magazine from slab objects at home, importing a slab from `arena` if none is;
    /// then allocates. `Err(NoSpace)` etc.: nothing could be had this way (the caller may fall
    /// back to a plain arena allocation).
    pub fn refill<P: TagPageSource>(
        &self,
        i: usize,
        cpu: &mut CpuMagazines,
        depot: &mut Depot,
        arena: &mut Arena<P>,
        spare: &mut Option<MagBox>,
    ) -> Result<usize, VmemError> {
        if let Some(r) = self.alloc(i, cpu) {
            return Ok(r);
        }
        if cpu.reload_from_depot(depot) {
            return self.alloc(i, cpu).ok_or(VmemError::NoSpace);
        }
        if cpu.loaded_mut().is_none() {
            let Some(mut m) = spare.take() else {
                return Err(VmemError::NoSpace);
            };
            m.set_cap(depot.magsize());
            if let Err(m) = cpu.install(m) {
                *spare = Some(m);
            }
        }
        let size = self.cache_size(i);
        let Some(m) = cpu.loaded_mut() else {
            return Err(VmemError::NoSpace);
        };
        let mut n = self.table.take_home(size, m.spare());
        if n == 0 {
            self.import_slab(size, arena)?;
            n = self.table.take_home(size, m.spare());
        }
        m.commit(n);
        self.alloc(i, cpu).ok_or(VmemError::NoSpace)
    }

    /// Imports one slab of objects of `size` from `arena` into the table.
    fn import_slab<P: TagPageSource>(
        &self,
        size: usize,
        arena: &mut Arena<P>,
    ) -> Result<(), VmemError> {
        let align = slab_align(size).ok_or(VmemError::BadSize)?;
        let c = Constraints {
            align,
            ..Constraints::default()
        };
        let bytes = size * SLAB_OBJS;
        let base = arena.xalloc(bytes, &c, Flags::INSTANT_FIT)?;
        if !self.table.insert(base, size) {
            // The table is full: give the span back (it was just allocated, so this succeeds)
            // and let the caller use the arena directly.
            let _ = arena.xfree(base, bytes);
            return Err(VmemError::NoSpace);
        }
        Ok(())
    }

    /// Free miss (arena lock held) of the checked round `addr` of cache `i`: trades the full
    /// previous magazine for an empty one from the depot (or `spare`), then frees into it; with
    /// no empty magazine at all the round goes home to its slab.
    pub fn unload(
        &self,
        i: usize,
        cpu: &mut CpuMagazines,
        depot: &mut Depot,
        spare: &mut Option<MagBox>,
        addr: usize,
    ) {
        match cpu.unload_to_depot(depot, spare.take()) {
            Ok(left) => {
                *spare = left;
                if cpu.free(addr).is_ok() {
                    return;
                }
            }
            Err(s) => *spare = s,
        }
        let home = self.table.put_home(addr, self.cache_size(i));
        debug_assert!(home, "checked round {addr:#x} is not a free slab object");
    }

    /// Puts every round of `m` home and gives the magazine to `give`.
    fn empty_into_home(&self, size: usize, mut m: MagBox, give: &mut impl FnMut(MagBox)) {
        for &r in m.take_rounds() {
            let home = self.table.put_home(r, size);
            debug_assert!(home, "round {r:#x} is not a free slab object");
        }
        give(m);
    }

    /// Flush (arena lock held, the CPU's slot locked): the CPU's magazines of cache `i` go
    /// home, the magazines to `give`.
    pub fn flush_cpu(&self, i: usize, cpu: &mut CpuMagazines, mut give: impl FnMut(MagBox)) {
        for m in cpu.take().into_iter().flatten() {
            self.empty_into_home(self.cache_size(i), m, &mut give);
        }
    }

    /// Flush (arena lock held): every depot magazine of cache `i` goes home.
    pub fn flush_depot(&self, i: usize, depot: &mut Depot, mut give: impl FnMut(MagBox)) {
        while let Some(m) = depot.take_any() {
            self.empty_into_home(self.cache_size(i), m, &mut give);
        }
    }

    /// Working-set trim (arena lock held): magazines the depot has not needed for an interval
    /// go home.
    pub fn trim_depot(&self, i: usize, depot: &mut Depot, mut give: impl FnMut(MagBox)) {
        while let Some(m) = depot.reap() {
            self.empty_into_home(self.cache_size(i), m, &mut give);
        }
    }

    /// Frees the slabs whose objects are all home back into `arena` (arena lock held);
    /// `release` receives imported spans that became wholly free.
    pub fn release_idle<P: TagPageSource>(
        &self,
        arena: &mut Arena<P>,
        release: &mut dyn FnMut(SpanRelease),
    ) {
        self.table.remove_idle(|base, bytes| {
            if let Ok(Some(r)) = arena.xfree(base, bytes) {
                release(r);
            }
        });
    }

    /// Every free the fast path did not take (arena lock held): refuses the base of a slab
    /// (a slab is the front's, never a client's), frees anything else in `arena`, and reports
    /// an integer handed out from a slab of another size as `WrongSize` with its real size.
    pub fn arena_free<P: TagPageSource>(
        &self,
        arena: &mut Arena<P>,
        addr: usize,
        size: usize,
    ) -> Result<Option<SpanRelease>, VmemError> {
        let slab_base = (0..self.ncaches).any(|i| {
            slab_align(self.cache_size(i))
                .is_some_and(|a| addr & (a - 1) == 0 && self.slab_at(addr, self.cache_size(i)))
        });
        let r = if slab_base {
            Err(VmemError::BadFree { addr, size })
        } else {
            arena.free(addr, size)
        };
        r.map_err(|e| self.table.classify(addr, size, self.ncaches).unwrap_or(e))
    }

    fn slab_at(&self, base: usize, size: usize) -> bool {
        matches!(self.table.locate(base, size), Ok(Some(_)))
    }

    /// Destroys `arena` behind the front (arena lock held), after every CPU's magazines and
    /// the depots were flushed home ([`QcFront::flush_cpu`], [`QcFront::flush_depot`]: that
    /// moves rounds between the front's own records and changes nothing in the arena). The
    /// decision comes first: objects still handed out, or any allocation of the arena that is
    /// not a slab, refuse with `LiveSegments` and leave the arena untouched (no slab freed, no
    /// span released). Otherwise the slabs go back and the arena is destroyed.
    ///
    /// The arena must have no quantum-cache depots of its own (`qcache_max == 0`): the front
    /// is its quantum cache.
    pub fn destroy<P: TagPageSource>(
        &self,
        arena: &mut Arena<P>,
        release: &mut dyn FnMut(SpanRelease),
    ) -> Result<(), VmemError> {
        let (out, out_bytes) = self.table.live();
        let (mut segs, mut bytes) = (0usize, 0usize);
        arena.walk(SegKindSet::ALLOC, |_, n| {
            segs += 1;
            bytes += n;
        });
        let (slabs, slab_bytes) = self.table.slabs();
        let (others, other_bytes) = (segs - slabs, bytes - slab_bytes);
        if out + others > 0 {
            return Err(VmemError::LiveSegments {
                count: out + others,
                bytes: out_bytes + other_bytes,
            });
        }
        self.release_idle(arena, release);
        arena.destroy(release)
    }
}
