// SPDX-License-Identifier: GPL-2.0

//! Type-segregated buckets: every size class below a threshold has one bucket per (type, class),
//! so that a cluster's pieces all belong to one type and the owner can live in the cluster's
//! usage record (and its pages' hints). `free(p, B)` of a piece of type `A` is then
//! [`MallocError::WrongType`] naming `A`, exactly, in O(1), without DIAGNOSTIC and without a byte
//! per piece.
//!
//! * The threshold is a construction parameter ([`Malloc::set_segregation`]): classes whose piece
//!   size is below it are segregated, the others stay shared by every type (owner code 0). 0 is
//!   off (the paper's buckets); [`SEGREGATE_ALL`] segregates every class.
//! * A bucket is named by a [`BucketId`]: its class and an *owner code*, 0 for the shared bucket
//!   of the class, a type slot + 1 for that type's own.
//! * Storage: the shared buckets sit inline in [`Malloc`]; a type's buckets are made on its first
//!   allocation of each segregated class, each a 128-byte block of a metadata slab, found
//!   through the type's mask of classes with a bucket (a `u64`) and a table of their addresses
//!   in class order (4 to 64 words, blocks of other metadata slabs, grown by doubling): the
//!   bucket of class `c` is at the rank of bit `c` in the mask. A type that uses three classes
//!   costs 416 bytes, no type slot costs more than three words inline. Inlining `MAX_TYPES` x
//!   `MAX_CLASSES` buckets of 120 bytes would be 720 KiB, a table per type of `MAX_CLASSES`
//!   addresses 384 bytes per type even for a type with one class.
//! * With segregation on, a page run's owner is written into its record when the run is handed
//!   out (`malloc`, or [`Malloc::take_for_magazine`] for a type's magazine) and goes with the
//!   record when it is freed; runs a type owns are counted so that the type cannot be undefined
//!   while one is out (in a magazine, say).
//! * A type's buckets go when the type is undefined (no live allocation, no piece or run held
//!   for it by a magazine): its wholly free clusters go back to kmem, the buckets' counters are
//!   added to the shared bucket of their class (so per-class statistics never go backwards).
//!   An orphaned type keeps its slot, and so its buckets and clusters.

use super::allocator::Malloc;
use super::bucket::Bucket;
use super::classes::MAX_CLASSES;
use super::error::MallocError;
use super::kmem::KmemPages;
use super::meta::MetaSlab;
use super::params::MAX_TYPES;
use super::raw::{read_word, write_word};
use super::types::MallocType;

const W: usize = core::mem::size_of::<usize>();

/// A segregation threshold that segregates every bucket class.
pub const SEGREGATE_ALL: usize = usize::MAX;

/// [`Malloc::set_segregation`] was refused: the allocator already holds pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegregationBusy;

/// Bytes of one bucket block (a [`Bucket`] rounded up to the slab's power of two).
const BUCKET_BLOCK: usize = 128;

/// Sizes of a type's table of bucket addresses: 4, 8, 16, 32 or 64 addresses (32 to 512
/// bytes), the smallest that holds one per existing bucket.
const TABLE_SIZES: usize = 5;
const MIN_TABLE: usize = 4;

const _: () = assert!(core::mem::size_of::<Bucket>() <= BUCKET_BLOCK);
const _: () = assert!(core::mem::align_of::<Bucket>() <= BUCKET_BLOCK);
const _: () = assert!(MAX_CLASSES <= MIN_TABLE << (TABLE_SIZES - 1));
const _: () = assert!(MAX_CLASSES <= 64 && MAX_TYPES <= 128);

/// The table size (index into the table slabs) for `n` buckets (at least one).
fn table_size(n: usize) -> usize {
    n.div_ceil(MIN_TABLE).next_power_of_two().trailing_zeros() as usize
}

/// The owner code of a type: its slot + 1 (0 is "no owner").
#[inline]
pub(super) fn owner_code(ty: MallocType) -> u8 {
    ty.index() as u8 + 1
}

/// A bucket: its size class and its owner code (0: the class's shared bucket; a type slot + 1:
/// that type's own bucket of the class), with the type bucket's address, found once when the id
/// is made ([`Malloc::type_bucket`]), so that every use after is one load.
///
/// # Invariants
///
/// `at` is 0 for a shared bucket, else the address of the existing bucket of `class` owned by
/// `owner`. An id lives within one call of the allocator (the give-back cursor, which lives
/// longer, is reset when its type's buckets go), so its bucket cannot go away under it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BucketId {
    pub(super) class: usize,
    pub(super) owner: u8,
    at: usize,
}

impl BucketId {
    /// The shared bucket of `class`.
    pub(super) const fn shared(class: usize) -> Self {
        Self {
            class,
            owner: 0,
            at: 0,
        }
    }
}

/// The per-type buckets and the threshold.
///
/// # Invariants
///
/// `masks[s]` has bit `c` set iff type slot `s` has a bucket of class `c` (then `c < classes`);
/// `slots` has bit `s` set iff `masks[s]` is not 0.
/// `tables[s]` is 0 if the mask is 0, else a block of `table_slabs[table_size(n)]`, `n` the
/// mask's population, whose first `n` words are the addresses of those buckets in class order
/// (the bucket of class `c` at the rank of bit `c` in the mask): blocks of `bucket_slab` holding
/// an initialised [`Bucket`] of that class owned by slot `s`. Every cluster whose record has
/// owner code `s + 1` belongs to such a bucket.
pub(super) struct Segregation {
    /// Classes whose piece size is below this are segregated.
    below: usize,
    /// Segregated classes: `0..classes` (class sizes grow with the index).
    classes: usize,
    tables: [usize; MAX_TYPES],
    masks: [u64; MAX_TYPES],
    /// Bit `s` set iff `masks[s]` is not 0.
    slots: u128,
    /// Page runs each type slot owns (handed out, not freed yet).
    runs: [usize; MAX_TYPES],
    table_slabs: [MetaSlab; TABLE_SIZES],
    bucket_slab: MetaSlab,
}

impl Segregation {
    /// Off: every class shared.
    pub(super) const fn new() -> Self {
        Self {
            below: 0,
            classes: 0,
            tables: [0; MAX_TYPES],
            masks: [0; MAX_TYPES],
            slots: 0,
            runs: [0; MAX_TYPES],
            table_slabs: [
                MetaSlab::new(MIN_TABLE * W),
                MetaSlab::new(MIN_TABLE * W * 2),
                MetaSlab::new(MIN_TABLE * W * 4),
                MetaSlab::new(MIN_TABLE * W * 8),
                MetaSlab::new(MIN_TABLE * W * 16),
            ],
            bucket_slab: MetaSlab::new(BUCKET_BLOCK),
        }
    }

    /// Whether any class is segregated (then page runs carry their owner too).
    #[inline]
    pub(super) fn on(&self) -> bool {
        self.below != 0
    }

    /// The owner code of the bucket a piece of `class` for `ty` comes from (0: shared).
    #[inline]
    pub(super) fn owner_for(&self, class: usize, ty: MallocType) -> u8 {
        if class < self.classes {
            owner_code(ty)
        } else {
            0
        }
    }

    /// The address of the bucket of `class` owned by `owner` (not 0), if it exists: one load of
    /// the mask, a population count and one load of the table.
    #[inline]
    fn bucket_addr(&self, class: usize, owner: u8) -> Option<usize> {
        let slot = (owner as usize).checked_sub(1)?;
        let mask = self.mask(slot);
        let bit = 1u64.checked_shl(class as u32)?;
        if mask & bit == 0 {
            return None;
        }
        let rank = (mask & (bit - 1)).count_ones() as usize;
        // SAFETY: the mask is not 0, so `tables[slot]` is a live table whose first
        // `mask.count_ones()` words are bucket addresses (type invariant), and `rank` is below.
        Some(unsafe { read_word(self.tables[slot] + rank * W) })
    }

    /// Metadata pages held by the type buckets and their tables.
    pub(super) fn meta_pages(&self) -> usize {
        self.table_slabs.iter().map(MetaSlab::pages).sum::<usize>() + self.bucket_slab.pages()
    }

    /// Page runs type slot `slot` owns.
    pub(super) fn runs(&self, slot: usize) -> usize {
        self.runs.get(slot).copied().unwrap_or(0)
    }

    /// The classes of `slot`'s existing buckets, as a bit mask.
    fn mask(&self, slot: usize) -> u64 {
        self.masks.get(slot).copied().unwrap_or(0)
    }
}

impl<K: KmemPages> Malloc<K> {
    /// Sets the segregation threshold: every size class whose pieces are smaller than `below`
    /// bytes gets one bucket per type, so that a free with the wrong type is
    /// [`MallocError::WrongType`] naming the owner, exactly, for pieces of those classes and (with
    /// any threshold but 0) for page runs. 0: off (every bucket shared, as 4.3BSD);
    /// [`SEGREGATE_ALL`]: every class.
    ///
    /// A construction parameter: allowed only while the allocator holds no data page and no type
    /// bucket (right after construction); otherwise refused, nothing changed.
    pub fn set_segregation(&mut self, below: usize) -> Result<(), SegregationBusy> {
        if self.data_pages != 0 || self.seg.meta_pages() != 0 {
            return Err(SegregationBusy);
        }
        let count = self.classes.count();
        self.seg.below = below;
        self.seg.classes = (0..count)
            .take_while(|&c| self.classes.size(c) < below)
            .count();
        Ok(())
    }

    /// The segregation threshold in bytes (0: off; see [`Malloc::set_segregation`]).
    pub fn segregate_below(&self) -> usize {
        self.seg.below
    }

    /// Bucket `b`.
    #[inline]
    pub(super) fn bucket(&self, b: BucketId) -> &Bucket {
        if b.at != 0 {
            // SAFETY: `b.at` is an initialised bucket block of ours (type invariants of
            // `BucketId` and `Segregation`), borrowed with `self`.
            return unsafe { &*(b.at as *const Bucket) };
        }
        &self.buckets[b.class]
    }

    /// Bucket `b`, mutably.
    #[inline]
    pub(super) fn bucket_mut(&mut self, b: BucketId) -> &mut Bucket {
        if b.at != 0 {
            // SAFETY: as in `bucket`; borrowed mutably with `self`, nothing else refers to it.
            return unsafe { &mut *(b.at as *mut Bucket) };
        }
        &mut self.buckets[b.class]
    }

    /// The bucket of `class` owned by owner code `owner` (0: the shared one), if it exists.
    #[inline]
    pub(super) fn type_bucket(&self, class: usize, owner: u8) -> Option<BucketId> {
        if owner == 0 {
            return Some(BucketId::shared(class));
        }
        let at = self.seg.bucket_addr(class, owner)?;
        Some(BucketId { class, owner, at })
    }

    /// The bucket pieces of `class` for `ty` come from, made on first use. `None`: no metadata
    /// page for it.
    pub(super) fn bucket_for(&mut self, class: usize, ty: MallocType) -> Option<BucketId> {
        let owner = self.seg.owner_for(class, ty);
        if let Some(b) = self.type_bucket(class, owner) {
            return Some(b);
        }
        let slot = ty.index();
        let seg = &mut self.seg;
        let addr = seg.bucket_slab.alloc(&mut self.kmem)?;
        let mask = seg.masks[slot];
        let (n, rank) = (
            mask.count_ones() as usize,
            (mask & ((1 << class) - 1)).count_ones() as usize,
        );
        let old = seg.tables[slot];
        let table = if n != 0 && table_size(n + 1) == table_size(n) {
            old
        } else {
            let Some(t) = seg.table_slabs[table_size(n + 1)].alloc(&mut self.kmem) else {
                // SAFETY: the block was just allocated from this slab and is referenced nowhere.
                unsafe { seg.bucket_slab.free(&mut self.kmem, addr) };
                return None;
            };
            t
        };
        // The entries from `rank` on move up by one, from the last, so none is overwritten
        // before it is copied.
        // SAFETY: `addr` is a fresh block of `BUCKET_BLOCK` bytes, aligned to it (at least
        // `Bucket`'s alignment); `old` holds `n` addresses (type invariant) and `table` room for
        // `n + 1` (the same block, or a fresh one).
        unsafe {
            (addr as *mut Bucket).write(Bucket::new_segregated(self.classes, class));
            for k in (0..n).rev() {
                let to = if k >= rank { k + 1 } else { k };
                write_word(table + to * W, read_word(old + k * W));
            }
            write_word(table + rank * W, addr);
        }
        if table != old && old != 0 {
            // SAFETY: `old` came from this slab size's slab and, copied above, is referenced
            // nowhere any more.
            unsafe { seg.table_slabs[table_size(n)].free(&mut self.kmem, old) };
        }
        seg.tables[slot] = table;
        seg.masks[slot] = mask | 1 << class;
        seg.slots |= 1 << slot;
        let b = BucketId {
            class,
            owner,
            at: addr,
        };
        let window = self.ops;
        self.bucket_mut(b).parked.window_start = window;
        Some(b)
    }

    /// Counts a page run handed out to `owner` (owner code; 0: none).
    pub(super) fn run_owned(&mut self, owner: u8) {
        if let Some(slot) = (owner as usize).checked_sub(1) {
            self.seg.runs[slot] += 1;
        }
    }

    /// Counts a page run of `owner` freed.
    pub(super) fn run_disowned(&mut self, owner: u8) {
        if let Some(slot) = (owner as usize).checked_sub(1) {
            self.seg.runs[slot] -= 1;
        }
    }

    /// The first bucket (the shared bucket of class 0).
    pub(super) fn first_bucket(&self) -> BucketId {
        BucketId::shared(0)
    }

    /// The bucket after `b` in a fixed order (the shared buckets by class, then each type's
    /// existing buckets by class), `None` after the last. O(1): two masks.
    pub(super) fn next_bucket(&self, b: BucketId) -> Option<BucketId> {
        if b.owner == 0 && b.class + 1 < self.classes.count() {
            return Some(BucketId::shared(b.class + 1));
        }
        // From the shared buckets, type slot 0's first class; from a type bucket, the next
        // class of its slot (the owner code is the slot + 1); then the next slot with a bucket.
        let (slot, from) = match (b.owner as usize).checked_sub(1) {
            Some(s) => (s, b.class + 1),
            None => (0, 0),
        };
        let rest = self.seg.mask(slot) & u64::MAX.checked_shl(from as u32).unwrap_or(0);
        let (slot, rest) = if rest != 0 {
            (slot, rest)
        } else {
            let later = self.seg.slots & u128::MAX.checked_shl(slot as u32 + 1).unwrap_or(0);
            if later == 0 {
                return None;
            }
            let next = later.trailing_zeros() as usize;
            (next, self.seg.mask(next))
        };
        self.type_bucket(rest.trailing_zeros() as usize, slot as u8 + 1)
    }

    /// Undefine's part for the type's buckets: refused (`TypeInUse` with the pieces and runs
    /// still out, nothing changed) if a bucket of `ty` holds a piece that is not free or `ty`
    /// owns a page run (a magazine holds them: drain it first); otherwise every cluster of its
    /// buckets goes back to kmem, the buckets' counters go to the shared buckets of their
    /// classes, and the buckets' memory goes back.
    pub(super) fn release_type_buckets(&mut self, ty: MallocType) -> Result<(), MallocError> {
        let slot = ty.index();
        let mask = self.seg.mask(slot);
        let mut out = self.seg.runs.get(slot).copied().unwrap_or(0);
        let code = owner_code(ty);
        for class in (0..MAX_CLASSES).filter(|&c| mask & (1 << c) != 0) {
            let Some(b) = self.type_bucket(class, code) else {
                continue;
            };
            let s = self.bucket(b).stats;
            out += s.total - s.totalfree - s.lost;
        }
        if out != 0 {
            return Err(MallocError::TypeInUse { ty, inuse: out });
        }
        for class in (0..MAX_CLASSES).filter(|&c| mask & (1 << c) != 0) {
            let Some(b) = self.type_bucket(class, code) else {
                continue;
            };
            self.release_bucket(b);
            let s = self.bucket(b).stats;
            let shared = &mut self.buckets[class].stats;
            shared.calls += s.calls;
            shared.freed += s.freed;
            shared.bad_links += s.bad_links;
            debug_assert_eq!(s.total, 0, "a type bucket kept a cluster");
            // SAFETY: the bucket's block from this slab, which holds no cluster now and is
            // referenced only by the table, freed below (and by `b`, dropped here).
            unsafe { self.seg.bucket_slab.free(&mut self.kmem, b.at) };
        }
        let table = self.seg.tables[slot];
        if mask != 0 {
            let size = table_size(mask.count_ones() as usize);
            // SAFETY: the type's table block of this slab (the mask is not 0), whose buckets
            // were all freed just above.
            unsafe { self.seg.table_slabs[size].free(&mut self.kmem, table) };
        }
        self.seg.tables[slot] = 0;
        self.seg.masks[slot] = 0;
        self.seg.slots &= !(1 << slot);
        if self.age_cursor.owner == code {
            self.age_cursor = self.first_bucket();
        }
        Ok(())
    }
}
