// SPDX-License-Identifier: GPL-2.0

//! The allocator proper: `malloc`, `free`, `realloc`, `usable_size` and the type interface.

use core::ptr::NonNull;

use super::bucket::{Bucket, BucketStats, LargeStats};
use super::classes::{ClassTable, SizeClasses, MAX_CLASSES};
use super::diag::{self, Diag, LIVE, OWNER_NONE, OWNER_UNKNOWN};
use super::error::{BlockReason, MallocError};
use super::flags::MallocFlags;
use super::kmem::KmemPages;
use super::params::{MAX_LARGE_PAGES, PAGE_SHIFT, PAGE_SIZE};
use super::raw::{copy, fill};
use super::types::{MallocType, TypeStats, TypeTable, LARGE_SIZE_BIT};
use super::usage::{PageMap, RecordSlot, Usage};

const W: usize = core::mem::size_of::<usize>();

/// Size class of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    /// A piece of bucket `index`.
    Bucket(usize),
    /// A run of whole pages.
    Large(usize),
}

impl Class {
    /// Bytes charged to the type (and usable by the caller), with the allocator's classes.
    pub(super) fn charge(self, classes: &ClassTable) -> usize {
        match self {
            Class::Bucket(i) => classes.size(i),
            Class::Large(n) => n << PAGE_SHIFT,
        }
    }

    fn sizebit(self) -> u32 {
        match self {
            Class::Bucket(i) => i as u32,
            Class::Large(_) => LARGE_SIZE_BIT,
        }
    }
}

pub(super) fn classify(classes: &ClassTable, size: usize) -> Result<Class, MallocError> {
    if size == 0 {
        return Err(MallocError::ZeroSize);
    }
    if let Some(i) = classes.index(size) {
        return Ok(Class::Bucket(i));
    }
    let npages = size.div_ceil(PAGE_SIZE);
    if npages > MAX_LARGE_PAGES {
        return Err(MallocError::TooLarge { size });
    }
    Ok(Class::Large(npages))
}

/// A live allocation found from its address.
#[derive(Clone, Copy)]
pub(super) struct Located {
    pub(super) class: Class,
    /// First page of the cluster or page run.
    pub(super) head: usize,
    /// Piece index in the cluster (0 for large).
    pub(super) piece: usize,
    /// Free pieces in the cluster (0 for large).
    pub(super) free: usize,
    /// The head page's record, to update it without a second lookup.
    pub(super) slot: Option<RecordSlot>,
}

/// Memory held by the allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryStats {
    /// Pages held from kmem for buckets and large allocations ("managed" memory).
    pub data_pages: usize,
    /// Metadata pages of the page map (the usage records): the bookkeeping.
    pub bookkeeping_pages: usize,
    /// Metadata pages of the DIAGNOSTIC side table.
    pub diag_pages: usize,
}

/// The 4.3BSD kernel malloc over a [`KmemPages`] supply: a single-threaded state machine the
/// kernel glue wraps in a spinlock. Nothing in it sleeps.
///
/// # Invariants
///
/// Every page held from kmem has a usage record; bucket free lists, record free counts and
/// statistics agree with each other and with the live allocations ([`Malloc::audit`] checks all of
/// it).
pub struct Malloc<K: KmemPages> {
    pub(super) kmem: K,
    /// The size classes (chosen at construction, never changed).
    pub(super) classes: &'static ClassTable,
    /// One bucket per class; only the first `classes.count()` are used.
    pub(super) buckets: [Bucket; MAX_CLASSES],
    /// Bucket mallocs and frees so far: the give-back windows' clock (module `giveback`).
    pub(super) ops: u64,
    /// The bucket whose window `giveback` checks next, round robin.
    pub(super) age_cursor: usize,
    /// Per bucket: parked clusters an idle window would have given back but the budget kept.
    pub(super) deferred: [u64; MAX_CLASSES],
    pub(super) large: LargeStats,
    pub(super) types: TypeTable,
    pub(super) usage: PageMap,
    pub(super) diag: Diag,
    pub(super) data_pages: usize,
}

impl<K: KmemPages> Malloc<K> {
    /// An allocator with no types and the default size classes ([`SizeClasses::DEFAULT`]),
    /// drawing pages from `kmem`.
    pub fn new(kmem: K) -> Self {
        Self::with_classes(kmem, SizeClasses::DEFAULT)
    }

    /// An allocator with no types and the size classes `classes`, drawing pages from `kmem`.
    pub fn with_classes(kmem: K, classes: SizeClasses) -> Self {
        let table = classes.table();
        Self {
            kmem,
            classes: table,
            buckets: core::array::from_fn(|i| Bucket::new(table, i.min(table.count() - 1))),
            ops: 0,
            age_cursor: 0,
            deferred: [0; MAX_CLASSES],
            large: LargeStats::default(),
            types: TypeTable::new(),
            usage: PageMap::new(),
            diag: Diag::new(),
            data_pages: 0,
        }
    }

    /// Initialises, at `slot`, the allocator [`Malloc::with_classes`] returns, without building it
    /// on the stack first: the structure is about 14 KiB (mostly the type table), too big for a kernel
    /// stack. The large fields are copied from constants straight into place.
    ///
    /// `kmem` itself is passed by value; when the supply is large too (a [`VmemKmem`] is about
    /// 2 KiB), build it in place with [`Malloc::init_in_place_with`].
    ///
    /// # Safety
    ///
    /// `slot` must be valid for writes of `Self` and aligned; its previous contents are
    /// overwritten without being dropped.
    ///
    /// [`VmemKmem`]: super::VmemKmem
    pub unsafe fn init_in_place(slot: *mut Self, kmem: K, classes: SizeClasses) {
        let init_kmem = |k: *mut K| {
            // SAFETY: `init_in_place_with` passes a pointer valid for writes and aligned.
            unsafe { k.write(kmem) };
            Ok::<(), core::convert::Infallible>(())
        };
        // SAFETY: the caller's guarantee about `slot`; `init_kmem` always initialises the supply.
        let Ok(()) = unsafe { Self::init_in_place_with(slot, classes, init_kmem) };
    }

    /// Initialises, at `slot`, an allocator with no types and the size classes `classes`, whose
    /// page supply `init_kmem` initialises in place: the supply first, then the allocator's own fields (which cannot
    /// fail). Neither the allocator nor the supply is ever built on the stack.
    ///
    /// Returns `init_kmem`'s error, with the slot left uninitialised.
    ///
    /// # Safety
    ///
    /// * `slot` must be valid for writes of `Self` and aligned; its previous contents are
    ///   overwritten without being dropped. On `Ok(())` it holds an allocator the caller owns (and
    ///   must drop); on `Err` it is left uninitialised (nothing to drop).
    /// * `init_kmem` is called with a pointer to the supply field (valid for writes, aligned,
    ///   uninitialised). On `Ok(())` it must have initialised it; on `Err` it must have left it
    ///   uninitialised, owning nothing.
    pub unsafe fn init_in_place_with<E>(
        slot: *mut Self,
        classes: SizeClasses,
        init_kmem: impl FnOnce(*mut K) -> Result<(), E>,
    ) -> Result<(), E> {
        const EMPTY_TYPES: TypeTable = TypeTable::new();
        const EMPTY_MAP: PageMap = PageMap::new();
        const EMPTY_DIAG: Diag = Diag::new();
        // SAFETY: `slot` is valid for writes and aligned (contract); the field place is formed
        // without a reference to the uninitialised allocator.
        init_kmem(unsafe { &raw mut (*slot).kmem })?;
        // SAFETY: the caller guarantees `slot` is writable and aligned; each remaining field is
        // written exactly once through a raw place, so no reference to uninitialised memory is
        // formed, and after this block every field is initialised.
        unsafe {
            let table = classes.table();
            (&raw mut (*slot).classes).write(table);
            let buckets = (&raw mut (*slot).buckets).cast::<Bucket>();
            for i in 0..MAX_CLASSES {
                buckets
                    .add(i)
                    .write(Bucket::new(table, i.min(table.count() - 1)));
            }
            (&raw mut (*slot).ops).write(0);
            (&raw mut (*slot).age_cursor).write(0);
            (&raw mut (*slot).deferred).write([0; MAX_CLASSES]);
            (&raw mut (*slot).large).write(LargeStats::default());
            (&raw mut (*slot).types).write(EMPTY_TYPES);
            (&raw mut (*slot).usage).write(EMPTY_MAP);
            (&raw mut (*slot).diag).write(EMPTY_DIAG);
            (&raw mut (*slot).data_pages).write(0);
        }
        Ok(())
    }

    /// The page supply.
    pub fn kmem(&self) -> &K {
        &self.kmem
    }

    /// The page supply, mutably (to grow it; pages malloc holds must be left alone).
    pub fn kmem_mut(&mut self) -> &mut K {
        &mut self.kmem
    }

    // ---- types -------------------------------------------------------------------------------

    /// Defines a type (FreeBSD's `MALLOC_DEFINE`) with a limit in bytes (`usize::MAX`: none).
    pub fn define_type(
        &mut self,
        name: &'static str,
        description: &'static str,
        limit: usize,
    ) -> Result<MallocType, MallocError> {
        self.types.define(name, description, limit)
    }

    /// Undefines a type with no live allocation and returns its final statistics.
    pub fn undefine_type(&mut self, ty: MallocType) -> Result<TypeStats, MallocError> {
        self.types.undefine(ty)
    }

    /// Changes a type's limit. Waiters of the type should be woken by the caller.
    pub fn set_limit(&mut self, ty: MallocType, limit: usize) -> Result<(), MallocError> {
        self.types.get_mut(ty)?.limit = limit;
        Ok(())
    }

    /// Statistics of a type.
    pub fn type_stats(&self, ty: MallocType) -> Result<TypeStats, MallocError> {
        self.types.get(ty).copied()
    }

    /// Every defined type with its statistics (for a `vmstat -m` style listing).
    pub fn types(&self) -> impl Iterator<Item = (MallocType, TypeStats)> + '_ {
        self.types.iter().map(|(t, s)| (t, *s))
    }

    /// The size classes ([`ClassTable::count`] of them; bucket `i` serves class `i`).
    pub fn classes(&self) -> &'static ClassTable {
        self.classes
    }

    /// Statistics of bucket `index` (0 = 16 bytes, up to `classes().count() - 1`).
    pub fn bucket_stats(&self, index: usize) -> Option<BucketStats> {
        self.buckets[..self.classes.count()]
            .get(index)
            .map(|b| b.stats)
    }

    /// Clusters of bucket `index` that stayed parked through an idle window but were not given
    /// back because the bucket's give-back budget (one per 200 allocations) was spent, counted
    /// once per window (module `giveback`).
    pub fn deferred_give_backs(&self, index: usize) -> Option<u64> {
        self.deferred[..self.classes.count()].get(index).copied()
    }

    /// Statistics of large allocations.
    pub fn large_stats(&self) -> LargeStats {
        self.large
    }

    /// Pages held, for data and for bookkeeping.
    pub fn memory_stats(&self) -> MemoryStats {
        MemoryStats {
            data_pages: self.data_pages,
            bookkeeping_pages: self.usage.meta_pages(),
            diag_pages: self.diag.meta_pages(),
        }
    }

    // ---- allocation --------------------------------------------------------------------------

    /// Allocates `size` bytes charged to `ty`.
    ///
    /// Pieces up to [`MAXALLOCSAVE`](super::MAXALLOCSAVE) come from the size classes' buckets
    /// (aligned to their size in pow2 mode; to the largest power of two dividing the class size,
    /// at least 16 bytes, in fine mode); larger requests are whole pages, page-aligned.
    pub fn malloc(
        &mut self,
        size: usize,
        ty: MallocType,
        flags: MallocFlags,
    ) -> Result<NonNull<u8>, MallocError> {
        if !flags.is_valid() {
            return Err(MallocError::BadFlags { bits: flags.bits() });
        }
        let class = classify(self.classes, size)?;
        self.check_limit(ty, class, flags)?;
        let addr = match class {
            Class::Bucket(i) => self.alloc_piece(i, ty, flags, size)?,
            Class::Large(n) => self.alloc_large(n, ty, flags, size)?,
        };
        self.types
            .get_mut(ty)?
            .charge(class.charge(self.classes), class.sizebit());
        if flags.contains(MallocFlags::ZERO) {
            // SAFETY: `addr` is a fresh allocation of `class.charge()` bytes.
            unsafe { fill(addr, class.charge(self.classes), 0) };
        }
        NonNull::new(addr as *mut u8).ok_or(MallocError::ForeignPointer { addr })
    }

    fn check_limit(
        &mut self,
        ty: MallocType,
        class: Class,
        flags: MallocFlags,
    ) -> Result<(), MallocError> {
        let charge = class.charge(self.classes);
        let st = self.types.get_mut(ty)?;
        let fits = match st.memuse.checked_add(charge) {
            Some(total) => total <= st.limit,
            None => false,
        };
        if fits {
            return Ok(());
        }
        st.limblocks += 1;
        if charge > st.limit || flags.contains(MallocFlags::NOWAIT) {
            Err(MallocError::Limit { ty, charge })
        } else {
            Err(MallocError::WouldBlock {
                ty,
                reason: BlockReason::Limit,
            })
        }
    }

    fn shortage(&mut self, ty: MallocType, flags: MallocFlags, size: usize) -> MallocError {
        if let Ok(st) = self.types.get_mut(ty) {
            st.mapblocks += 1;
        }
        if flags.contains(MallocFlags::NOWAIT) {
            MallocError::NoMemory { ty, size }
        } else {
            MallocError::WouldBlock {
                ty,
                reason: BlockReason::Arena,
            }
        }
    }

    /// Pages from kmem, reclaiming wholly free clusters once if kmem is exhausted. `align` (in
    /// pages) must be a power of two: 1, or a bucket's cluster pages.
    fn take_pages(&mut self, npages: usize, align: usize) -> Option<usize> {
        if !align.is_power_of_two() {
            return None;
        }
        let addr = match self.kmem.alloc_pages(npages, align) {
            Some(a) => a,
            None => {
                if self.reclaim() == 0 {
                    return None;
                }
                self.kmem.alloc_pages(npages, align)?
            }
        };
        // Masks, not `%`: a division by a runtime value is slow and, in the kernel build, an
        // objtool warning (the divide-error path does not return).
        let misaligned = addr & (PAGE_SIZE - 1) != 0 || (addr >> PAGE_SHIFT) & (align - 1) != 0;
        if addr == 0 || misaligned {
            // A supply breaking its contract: refuse the run rather than corrupt the map.
            return None;
        }
        Some(addr)
    }

    pub(super) fn alloc_piece(
        &mut self,
        i: usize,
        ty: MallocType,
        flags: MallocFlags,
        size: usize,
    ) -> Result<usize, MallocError> {
        if self.buckets[i].head == 0 && !self.unpark(i) && !self.refill(i) {
            return Err(self.shortage(ty, flags, size));
        }
        if self.diag.enabled {
            self.diag_check_head(i)?;
        }
        // SAFETY: the list is non-empty and (checked in DIAGNOSTIC mode) well linked.
        let piece = unsafe { self.buckets[i].pop() };
        let pos = self.classes.position(i, piece);
        let (head, k) = (pos.head, pos.index);
        if let Some(slot) = self.usage.slot(head) {
            if let Usage::Bucket { index, free } = slot.get() {
                slot.set(Usage::Bucket {
                    index,
                    free: free.saturating_sub(1),
                });
            }
        }
        let b = &mut self.buckets[i].stats;
        b.totalfree -= 1;
        b.calls += 1;
        if self.diag.enabled {
            self.diag.set_piece_tag(head, k, LIVE | ty.index() as u16);
        }
        self.tick();
        Ok(piece)
    }

    /// Takes a cluster from kmem and carves it into free pieces. False if kmem is exhausted.
    fn refill(&mut self, i: usize) -> bool {
        let np = self.classes.cluster_pages(i);
        let Some(base) = self.take_pages(np, np) else {
            return false;
        };
        let head = base >> PAGE_SHIFT;
        let n = self.classes.pieces(i);
        let record = Usage::Bucket { index: i, free: n };
        if self
            .usage
            .register_run(&mut self.kmem, head, np, record)
            .is_err()
        {
            // SAFETY: the run was just taken from kmem and is referenced nowhere.
            unsafe { self.kmem.free_pages(base, np) };
            return false;
        }
        if self.diag.enabled
            && self
                .diag
                .add_cluster(&mut self.kmem, head, n, OWNER_NONE)
                .is_err()
        {
            self.usage.clear_run(&mut self.kmem, head, np);
            // SAFETY: as above.
            unsafe { self.kmem.free_pages(base, np) };
            return false;
        }
        self.data_pages += np;
        let size = self.classes.size(i);
        // Push the highest piece first so that the lowest is handed out first.
        for k in (0..n).rev() {
            let piece = base + k * size;
            // SAFETY: `piece` is a piece of a cluster we own, not yet on any list.
            unsafe {
                if self.diag.enabled {
                    diag::poison(piece, size);
                }
                self.buckets[i].push(piece);
            }
        }
        let b = &mut self.buckets[i].stats;
        b.total += n;
        b.totalfree += n;
        true
    }

    pub(super) fn alloc_large(
        &mut self,
        n: usize,
        ty: MallocType,
        flags: MallocFlags,
        size: usize,
    ) -> Result<usize, MallocError> {
        let Some(base) = self.take_pages(n, 1) else {
            return Err(self.shortage(ty, flags, size));
        };
        let head = base >> PAGE_SHIFT;
        let registered = self
            .usage
            .register_run(&mut self.kmem, head, n, Usage::Large { npages: n })
            .is_ok();
        let tagged = registered
            && (!self.diag.enabled
                || self
                    .diag
                    .add_large(&mut self.kmem, head, LIVE | ty.index() as u16)
                    .is_ok());
        if !tagged {
            if registered {
                self.usage.clear_run(&mut self.kmem, head, n);
            }
            // SAFETY: the run was just taken from kmem and is referenced nowhere.
            unsafe { self.kmem.free_pages(base, n) };
            return Err(self.shortage(ty, flags, size));
        }
        self.data_pages += n;
        self.large.calls += 1;
        self.large.inuse += 1;
        self.large.pages += n;
        Ok(base)
    }

    // ---- free --------------------------------------------------------------------------------

    /// Finds the allocation `addr` starts, or says why it is not one.
    pub(super) fn locate(&self, addr: usize) -> Result<Located, MallocError> {
        let page = addr >> PAGE_SHIFT;
        let Some(first) = self.usage.slot(page) else {
            return Err(MallocError::ForeignPointer { addr });
        };
        let (head, slot) = match first.get() {
            Usage::Cont { back } => (page - back, self.usage.slot(page - back)),
            _ => (page, Some(first)),
        };
        let usage = slot.map_or(Usage::None, |s| s.get());
        match usage {
            Usage::Bucket { index, free } if index < self.classes.count() => {
                let pos = self.classes.position(index, addr);
                if pos.index >= self.classes.pieces(index) {
                    // In the cluster's unused tail: inside no piece.
                    return Err(MallocError::ForeignPointer { addr });
                }
                if pos.start != addr {
                    return Err(MallocError::InteriorPointer {
                        addr,
                        start: pos.start,
                    });
                }
                Ok(Located {
                    class: Class::Bucket(index),
                    head,
                    piece: pos.index,
                    free,
                    slot,
                })
            }
            Usage::Large { npages } => {
                let start = head << PAGE_SHIFT;
                if start != addr {
                    return Err(MallocError::InteriorPointer { addr, start });
                }
                Ok(Located {
                    class: Class::Large(npages),
                    head,
                    piece: 0,
                    free: 0,
                    slot,
                })
            }
            _ => Err(MallocError::ForeignPointer { addr }),
        }
    }

    /// The DIAGNOSTIC tag of a located allocation.
    fn tag_of(&self, loc: &Located) -> u16 {
        match loc.class {
            Class::Bucket(_) => self.diag.piece_tag(loc.head, loc.piece),
            Class::Large(_) => self.diag.large_tag(loc.head),
        }
    }

    /// Checks that `loc` is live and owned by `ty` (as far as the mode can tell).
    ///
    /// Liveness is exact in both modes: DIAGNOSTIC reads the side table, otherwise a bucket piece
    /// is checked against its free list in O(1) ([`listed`](super::listed)). A large run is live
    /// whenever `locate` finds it: freeing one clears its records, so freeing it again is
    /// [`MallocError::ForeignPointer`] (no memory says it was ours) until its pages are reused.
    ///
    /// The owner is exact only with DIAGNOSTIC. Without it nothing stores a piece's type (pieces
    /// of one page belong to many types and the page record has no room for them), so a wrong
    /// type is caught only when the given type's counters could not cover the free: no live
    /// allocation of that size class's charge left. Exact detection needs a per-piece tag, i.e.
    /// the side table.
    fn check_live(
        &self,
        addr: usize,
        loc: &Located,
        ty: MallocType,
        freeing: bool,
    ) -> Result<(), MallocError> {
        let st = self.types.get(ty)?;
        if self.diag.enabled {
            let tag = self.tag_of(loc);
            let owner = tag & !LIVE;
            if tag & LIVE == 0 {
                return Err(if freeing {
                    MallocError::DoubleFree {
                        addr,
                        ty: self.types.handle(owner as usize),
                    }
                } else {
                    MallocError::NotAllocated { addr }
                });
            }
            if owner != OWNER_UNKNOWN && owner as usize != ty.index() {
                return Err(MallocError::WrongType {
                    addr,
                    given: ty,
                    owner: self.types.handle(owner as usize),
                });
            }
        } else if let Class::Bucket(i) = loc.class {
            if self.is_listed(i, addr, loc.head, loc.free) {
                return Err(if freeing {
                    MallocError::DoubleFree { addr, ty: None }
                } else {
                    MallocError::NotAllocated { addr }
                });
            }
        }
        if !st.can_uncharge(loc.class.charge(self.classes)) {
            return Err(MallocError::WrongType {
                addr,
                given: ty,
                owner: None,
            });
        }
        Ok(())
    }

    /// Frees the allocation at `ptr`, which must have been allocated with type `ty`. No size is
    /// needed: it is found from the page's usage record.
    pub fn free(&mut self, ptr: NonNull<u8>, ty: MallocType) -> Result<(), MallocError> {
        let addr = ptr.as_ptr() as usize;
        self.types.get(ty)?;
        let loc = self.locate(addr)?;
        self.check_live(addr, &loc, ty, true)?;
        self.types
            .get_mut(ty)?
            .uncharge(loc.class.charge(self.classes));
        match loc.class {
            Class::Bucket(i) => self.free_piece(i, addr, &loc, ty),
            Class::Large(n) => self.free_large(addr, n, loc.head),
        }
        Ok(())
    }

    pub(super) fn free_piece(&mut self, i: usize, addr: usize, loc: &Located, ty: MallocType) {
        let size = self.classes.size(i);
        if self.diag.enabled {
            self.diag
                .set_piece_tag(loc.head, loc.piece, ty.index() as u16);
            // SAFETY: `addr` is a piece of ours that the caller gave up.
            unsafe { diag::poison(addr, size) };
        }
        // SAFETY: `addr` is a piece of bucket `i` that was live (`check_live`: the side table, or
        // `is_listed`), so it is not on the list.
        unsafe { self.buckets[i].push(addr) };
        let free = loc.free + 1;
        if let Some(slot) = loc.slot {
            slot.set(Usage::Bucket { index: i, free });
        }
        let b = &mut self.buckets[i].stats;
        b.totalfree += 1;
        if free == b.elmpercl {
            // Parked, not given back at once (module `giveback`).
            self.cluster_emptied(i, loc.head);
        }
        self.tick();
    }

    pub(super) fn free_large(&mut self, addr: usize, n: usize, head: usize) {
        if self.diag.enabled {
            self.diag.remove_large(head);
        }
        self.usage.clear_run(&mut self.kmem, head, n);
        // SAFETY: the run came from kmem with `n` pages and is no longer referenced.
        unsafe { self.kmem.free_pages(addr, n) };
        self.data_pages -= n;
        self.large.inuse -= 1;
        self.large.pages -= n;
    }

    /// Gives a wholly free cluster of bucket `i` back to kmem.
    fn release_cluster(&mut self, i: usize, head: usize) {
        let n = self.classes.pieces(i);
        let size = self.classes.size(i);
        let base = head << PAGE_SHIFT;
        for k in 0..n {
            // SAFETY: the cluster is wholly free, so each of its pieces is on the list.
            unsafe { self.buckets[i].unlink(base + k * size) };
        }
        self.give_back(i, head);
    }

    /// Gives every wholly free cluster of every bucket back to kmem, whatever the high water
    /// (done automatically before reporting kmem exhausted). Returns the clusters released.
    pub fn reclaim(&mut self) -> usize {
        let mut released = self.release_parked();
        for i in 0..self.classes.count() {
            let n = self.classes.pieces(i);
            // `kept` is the last piece seen whose cluster stays; releasing a cluster never unlinks
            // it, so the walk resumes after it.
            let mut kept = 0;
            let mut p = self.buckets[i].head;
            while p != 0 {
                let head = self.classes.position(i, p).head;
                let wholly_free =
                    matches!(self.usage.get(head), Usage::Bucket { free, .. } if free == n);
                if wholly_free {
                    self.release_cluster(i, head);
                    released += 1;
                    p = if kept == 0 {
                        self.buckets[i].head
                    } else {
                        // SAFETY: `kept` is still on the list.
                        unsafe { Bucket::next(kept) }
                    };
                } else {
                    kept = p;
                    // SAFETY: `p` is on the list.
                    p = unsafe { Bucket::next(p) };
                }
            }
        }
        self.kmem.trim();
        released
    }

    // ---- realloc / usable_size ---------------------------------------------------------------

    /// Bytes usable at `ptr`: the bucket size, or the whole pages of a large allocation.
    pub fn usable_size(&self, ptr: NonNull<u8>) -> Result<usize, MallocError> {
        let addr = ptr.as_ptr() as usize;
        let loc = self.locate(addr)?;
        let live = if self.diag.enabled {
            self.tag_of(&loc) & LIVE != 0
        } else {
            !matches!(loc.class, Class::Bucket(i) if self.is_listed(i, addr, loc.head, loc.free))
        };
        if live {
            Ok(loc.class.charge(self.classes))
        } else {
            Err(MallocError::NotAllocated { addr })
        }
    }

    /// Resizes the allocation at `ptr` (type `ty`) to `new_size` bytes.
    ///
    /// If the new size falls in the same class (or the same page count) the allocation stays in
    /// place; otherwise a new one is made, the contents copied and the old one freed. With
    /// [`MallocFlags::ZERO`] the bytes past the old usable size are zeroed. On error the old
    /// allocation is untouched. `new_size == 0` is [`MallocError::ZeroSize`], not a free.
    pub fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        new_size: usize,
        ty: MallocType,
        flags: MallocFlags,
    ) -> Result<NonNull<u8>, MallocError> {
        if !flags.is_valid() {
            return Err(MallocError::BadFlags { bits: flags.bits() });
        }
        let class = classify(self.classes, new_size)?;
        let addr = ptr.as_ptr() as usize;
        self.types.get(ty)?;
        let loc = self.locate(addr)?;
        self.check_live(addr, &loc, ty, false)?;
        if loc.class == class {
            return Ok(ptr);
        }
        let old = loc.class.charge(self.classes);
        let new_flags = MallocFlags::from_bits(flags.bits() & !MallocFlags::ZERO.bits());
        let new = self.malloc(new_size, ty, new_flags)?;
        let new_addr = new.as_ptr() as usize;
        let new_len = class.charge(self.classes);
        // SAFETY: both allocations are live, distinct and at least `min(old, new_len)` long.
        unsafe {
            copy(addr, new_addr, old.min(new_len));
            if flags.contains(MallocFlags::ZERO) && new_len > old {
                fill(new_addr + old, new_len - old, 0);
            }
        }
        if let Err(e) = self.free(ptr, ty) {
            // Cannot happen (checked above); undo rather than leak.
            let _ = self.free(new, ty);
            return Err(e);
        }
        Ok(new)
    }

    // ---- DIAGNOSTIC --------------------------------------------------------------------------

    /// Whether DIAGNOSTIC mode is on.
    pub fn diagnostic(&self) -> bool {
        self.diag.enabled
    }

    /// Switches DIAGNOSTIC mode. Switching on tags existing allocations as "type unknown" and
    /// poisons every free piece; switching off gives the side table back.
    pub fn set_diagnostic(&mut self, on: bool) -> Result<(), MallocError> {
        if on == self.diag.enabled {
            return Ok(());
        }
        if !on {
            self.diag_off();
            return Ok(());
        }
        self.diag.enabled = true;
        let mut ok = true;
        {
            let diag = &mut self.diag;
            let kmem = &mut self.kmem;
            let classes = self.classes;
            self.usage.for_each(|page, u| {
                if !ok {
                    return;
                }
                let tag = LIVE | OWNER_UNKNOWN;
                ok = match u {
                    Usage::Bucket { index, .. } => diag
                        .add_cluster(kmem, page, classes.pieces(index), tag)
                        .is_ok(),
                    Usage::Large { .. } => diag.add_large(kmem, page, tag).is_ok(),
                    _ => true,
                };
            });
        }
        if !ok {
            self.diag_off();
            return Err(MallocError::NoMetadata);
        }
        for i in 0..self.classes.count() {
            let size = self.classes.size(i);
            let mut p = self.buckets[i].head;
            while p != 0 {
                let pos = self.classes.position(i, p);
                let (head, k) = (pos.head, pos.index);
                self.diag.set_piece_tag(head, k, OWNER_NONE);
                // SAFETY: `p` is a free piece on the list.
                unsafe {
                    diag::poison(p, size);
                    p = Bucket::next(p);
                }
            }
        }
        self.diag_mark_parked();
        Ok(())
    }

    fn diag_off(&mut self) {
        let usage = &self.usage;
        self.diag.clear(&mut self.kmem, |page| {
            matches!(usage.get(page), Usage::Bucket { .. })
        });
    }

    /// Whether `p` is a free piece of bucket `i` according to the map and the side table.
    fn is_free_piece(&self, i: usize, p: usize) -> bool {
        match self.locate(p) {
            Ok(loc) if loc.class == Class::Bucket(i) => self.tag_of(&loc) & LIVE == 0,
            _ => false,
        }
    }

    /// DIAGNOSTIC: validates the head piece of bucket `i` before it is handed out.
    fn diag_check_head(&mut self, i: usize) -> Result<(), MallocError> {
        let piece = self.buckets[i].head;
        let size = self.classes.size(i);
        // SAFETY: the list is non-empty.
        let (next, prev) = unsafe { self.buckets[i].head_links() };
        let bad = if prev != 0 {
            Some(W)
        } else if next != 0
            // SAFETY: `next` is read only once it is known to be a free piece of ours.
            && (!self.is_free_piece(i, next) || unsafe { Bucket::prev(next) } != piece)
        {
            Some(0)
        } else {
            // SAFETY: the head is a free piece of ours.
            unsafe { diag::check_poison(piece, size) }
        };
        let Some(offset) = bad else {
            return Ok(());
        };
        let pos = self.classes.position(i, piece);
        let owner = self.diag.piece_tag(pos.head, pos.index) & !LIVE;
        self.rebuild_free_list(i);
        Err(MallocError::ModifiedAfterFree {
            addr: piece,
            offset,
            ty: self.types.handle(owner as usize),
        })
    }

    /// DIAGNOSTIC: rebuilds bucket `i`'s free list (and its poison) from the side table, after a
    /// client scribbled over a free piece.
    fn rebuild_free_list(&mut self, i: usize) {
        // Every free piece goes back on the list, parked clusters' included.
        self.forget_parked(i);
        let n = self.classes.pieces(i);
        let size = self.classes.size(i);
        let bucket = &mut self.buckets[i];
        let diag = &self.diag;
        bucket.head = 0;
        self.usage.for_each(|page, u| {
            if matches!(u, Usage::Bucket { index, .. } if index == i) {
                for k in (0..n).rev() {
                    if diag.piece_tag(page, k) & LIVE == 0 {
                        let p = (page << PAGE_SHIFT) + k * size;
                        // SAFETY: the side table says `p` is a free piece of ours.
                        unsafe {
                            diag::poison(p, size);
                            bucket.push(p);
                        }
                    }
                }
            }
        });
    }
}

impl<K: KmemPages> Drop for Malloc<K> {
    fn drop(&mut self) {
        // Give back what is not in use; pages of live allocations stay with the supply.
        self.diag_off();
        self.reclaim();
        self.usage.release(&mut self.kmem);
    }
}
