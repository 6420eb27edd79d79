// SPDX-License-Identifier: GPL-2.0

//! The allocator proper: `malloc`, `free`, `realloc`, `usable_size` and the type interface.

use core::ptr::NonNull;

use super::account::{Account, Own};

use super::bucket::{shared_highwat, Bucket, BucketStats, ClassCounters, LargeStats};
use super::classes::{ClassTable, SizeClasses, MAX_CLASSES};
use super::diag::{self, Diag, LIVE, OWNER_NONE, OWNER_UNKNOWN};
use super::error::{BlockReason, MallocError};
use super::flags::MallocFlags;
use super::kmem::KmemPages;
use super::params::{MAX_LARGE_PAGES, PAGE_SHIFT, PAGE_SIZE};
use super::raw::{copy, fill};
use super::segregate::{owner_code, BucketId, Segregation, SegregationBusy};
use super::types::{MallocType, TypeStats, TypeTable, LARGE_SIZE_BIT};
use super::usage::{PageMap, RecordSlot, Usage};

mod alloc;
mod diagnostic;
mod free;
mod realloc;
mod types_api;

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
    pub(in crate::malloc) fn charge(self, classes: &ClassTable) -> usize {
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
    /// The owner code in the record (0: none; else the owning type's slot + 1).
    pub(super) owner: u8,
    /// The piece's bucket (for a bucket class).
    pub(super) bucket: BucketId,
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
    /// Metadata pages of the type-segregated buckets (module `segregate`).
    pub bucket_pages: usize,
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
    /// One shared bucket per class; only the first `classes.count()` are used.
    pub(super) buckets: [Bucket; MAX_CLASSES],
    /// The segregation threshold and the type-segregated buckets (module `segregate`).
    pub(super) seg: Segregation,
    /// Bucket mallocs and frees so far: the give-back windows' clock (module `giveback`).
    pub(super) ops: u64,
    /// The bucket whose window `giveback` checks next, round robin.
    pub(super) age_cursor: BucketId,
    /// Per class: the counters kept over all the class's buckets (statistics and the
    /// give-back budget, module `giveback`).
    pub(super) counts: [ClassCounters; MAX_CLASSES],
    pub(super) large: LargeStats,
    pub(super) types: TypeTable,
    pub(super) usage: PageMap,
    pub(super) diag: Diag,
    pub(super) data_pages: usize,
    /// The first corrupt free-list link found (bucket index, piece whose link it was), until
    /// [`Malloc::take_bad_link`] reports it.
    pub(super) bad_link: Option<(usize, usize)>,
    /// Whether a corrupt link was ever found (only the first is reported).
    pub(super) bad_link_seen: bool,
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
            buckets: [const { Bucket::new() }; MAX_CLASSES],
            seg: Segregation::new(),
            ops: 0,
            age_cursor: BucketId::shared(0),
            counts: [ClassCounters::default(); MAX_CLASSES],
            large: LargeStats::default(),
            types: TypeTable::new(),
            usage: PageMap::new(),
            diag: Diag::new(),
            data_pages: 0,
            bad_link: None,
            bad_link_seen: false,
        }
    }

    /// An allocator with no types, the size classes `classes` and segregation threshold `below`
    /// ([`Malloc::set_segregation`]), drawing pages from `kmem`.
    pub fn with_segregation(kmem: K, classes: SizeClasses, below: usize) -> Self {
        let mut m = Self::with_classes(kmem, classes);
        let fresh: Result<(), SegregationBusy> = m.set_segregation(below);
        debug_assert!(fresh.is_ok(), "a new allocator holds no page");
        m
    }

    /// Initialises, at `slot`, the allocator [`Malloc::with_classes`] returns, without building it
    /// on the stack first: the structure is about 24 KiB (the type table, the shared buckets, the
    /// type buckets' directory), too big for a kernel stack. The large fields are copied from
    /// constants straight into place.
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
        const NO_SEGREGATION: Segregation = Segregation::new();
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
                buckets.add(i).write(Bucket::new());
            }
            (&raw mut (*slot).seg).write(NO_SEGREGATION);
            (&raw mut (*slot).ops).write(0);
            (&raw mut (*slot).age_cursor).write(BucketId::shared(0));
            (&raw mut (*slot).counts).write([ClassCounters::default(); MAX_CLASSES]);
            (&raw mut (*slot).large).write(LargeStats::default());
            (&raw mut (*slot).types).write(EMPTY_TYPES);
            (&raw mut (*slot).usage).write(EMPTY_MAP);
            (&raw mut (*slot).diag).write(EMPTY_DIAG);
            (&raw mut (*slot).data_pages).write(0);
            (&raw mut (*slot).bad_link).write(None);
            (&raw mut (*slot).bad_link_seen).write(false);
        }
        Ok(())
    }

    /// The first corrupt free-list link found, once: `(size class, piece)` whose `next` link a
    /// client overwrote after freeing it (the glue reports it; every one is counted in the
    /// bucket's `bad_links`).
    pub fn take_bad_link(&mut self) -> Option<(usize, usize)> {
        self.bad_link.take()
    }

    /// The page supply.
    pub fn kmem(&self) -> &K {
        &self.kmem
    }

    /// The page supply, mutably (to grow it; pages malloc holds must be left alone).
    pub fn kmem_mut(&mut self) -> &mut K {
        &mut self.kmem
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
