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
//!   through a per-type table of [`MAX_CLASSES`] words (a 512-byte block of another slab). A
//!   type that uses three classes costs 896 bytes; nothing inline but a word per type slot.
//!   Inlining `MAX_TYPES` x `MAX_CLASSES` buckets of 120 bytes would be 720 KiB.
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

/// Bytes of one type's table of bucket addresses.
const TABLE_BLOCK: usize = 512;

const _: () = assert!(core::mem::size_of::<Bucket>() <= BUCKET_BLOCK);
const _: () = assert!(core::mem::align_of::<Bucket>() <= BUCKET_BLOCK);
const _: () = assert!(MAX_CLASSES * W <= TABLE_BLOCK);
const _: () = assert!(MAX_CLASSES <= 64);

/// The owner code of a type: its slot + 1 (0 is "no owner").
#[inline]
pub(super) fn owner_code(ty: MallocType) -> u8 {
    ty.index() as u8 + 1
}

/// A bucket: its size class and its owner code (0: the class's shared bucket; a type slot + 1:
/// that type's own bucket of the class).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BucketId {
    pub(super) class: usize,
    pub(super) owner: u8,
}

impl BucketId {
    /// The shared bucket of `class`.
    pub(super) const fn shared(class: usize) -> Self {
        Self { class, owner: 0 }
    }
}

/// The per-type buckets and the threshold.
///
/// # Invariants
///
/// `tables[s]` is 0 or a block of `table_slab` holding, per class `c < classes`, 0 or the address
/// of a block of `bucket_slab` holding an initialised [`Bucket`] of class `c` owned by type slot
/// `s`; entries for classes `>= classes` are 0. `masks[s]` has bit `c` set iff that entry is not
/// 0. Every cluster whose record has owner code `s + 1` belongs to such a bucket.
pub(super) struct Segregation {
    /// Classes whose piece size is below this are segregated.
    below: usize,
    /// Segregated classes: `0..classes` (class sizes grow with the index).
    classes: usize,
    tables: [usize; MAX_TYPES],
    masks: [u64; MAX_TYPES],
    /// Page runs each type slot owns (handed out, not freed yet).
    runs: [usize; MAX_TYPES],
    table_slab: MetaSlab,
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
            runs: [0; MAX_TYPES],
            table_slab: MetaSlab::new(TABLE_BLOCK),
            bucket_slab: MetaSlab::new(BUCKET_BLOCK),
        }
    }

    /// Whether any class is segregated (then page runs carry their owner too).
    #[inline]
    pub(super) fn on(&self) -> bool {
        self.below != 0
    }

    /// The bucket a piece of `class` for `ty` comes from.
    #[inline]
    pub(super) fn bucket_of(&self, class: usize, ty: MallocType) -> BucketId {
        if class < self.classes {
            BucketId {
                class,
                owner: owner_code(ty),
            }
        } else {
            BucketId::shared(class)
        }
    }

    /// The address of type bucket `b` (owner code not 0), if it exists.
    #[inline]
    pub(super) fn bucket_addr(&self, b: BucketId) -> Option<usize> {
        let slot = (b.owner as usize).checked_sub(1)?;
        let table = *self.tables.get(slot)?;
        if table == 0 || b.class >= self.classes {
            return None;
        }
        // SAFETY: `table` is a live table block of `MAX_CLASSES` words (type invariant) and
        // `b.class < classes <= MAX_CLASSES`.
        let addr = unsafe { read_word(table + b.class * W) };
        (addr != 0).then_some(addr)
    }

    /// Metadata pages held by the type buckets and their tables.
    pub(super) fn meta_pages(&self) -> usize {
        self.table_slab.pages() + self.bucket_slab.pages()
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

    /// Bucket `b` (the shared bucket of its class if a type bucket does not exist, which the
    /// type invariants rule out for every id the allocator derives).
    #[inline]
    pub(super) fn bucket(&self, b: BucketId) -> &Bucket {
        if b.owner != 0 {
            if let Some(a) = self.seg.bucket_addr(b) {
                // SAFETY: `a` is an initialised bucket block of ours (type invariant of
                // `Segregation`), borrowed with `self`.
                return unsafe { &*(a as *const Bucket) };
            }
            debug_assert!(false, "type bucket {b:?} does not exist");
        }
        &self.buckets[b.class]
    }

    /// Bucket `b`, mutably (as [`Malloc::bucket`]).
    #[inline]
    pub(super) fn bucket_mut(&mut self, b: BucketId) -> &mut Bucket {
        if b.owner != 0 {
            if let Some(a) = self.seg.bucket_addr(b) {
                // SAFETY: `a` is an initialised bucket block of ours (type invariant), borrowed
                // mutably with `self`: nothing else refers to it.
                return unsafe { &mut *(a as *mut Bucket) };
            }
            debug_assert!(false, "type bucket {b:?} does not exist");
        }
        &mut self.buckets[b.class]
    }

    /// Whether owner code `owner` may own a cluster of `class`: 0, or a type bucket that exists.
    #[inline]
    pub(super) fn bucket_exists(&self, class: usize, owner: u8) -> bool {
        owner == 0 || self.seg.bucket_addr(BucketId { class, owner }).is_some()
    }

    /// The bucket pieces of `class` for `ty` come from, made on first use. `None`: no metadata
    /// page for it.
    pub(super) fn bucket_for(&mut self, class: usize, ty: MallocType) -> Option<BucketId> {
        let b = self.seg.bucket_of(class, ty);
        if b.owner == 0 || self.seg.bucket_addr(b).is_some() {
            return Some(b);
        }
        let slot = ty.index();
        let seg = &mut self.seg;
        let new_table = seg.tables[slot] == 0;
        if new_table {
            seg.tables[slot] = seg.table_slab.alloc(&mut self.kmem)?;
        }
        let Some(addr) = seg.bucket_slab.alloc(&mut self.kmem) else {
            if new_table {
                // SAFETY: the table was just allocated from this slab and holds no bucket.
                unsafe { seg.table_slab.free(&mut self.kmem, seg.tables[slot]) };
                seg.tables[slot] = 0;
            }
            return None;
        };
        // SAFETY: `addr` is a fresh block of `BUCKET_BLOCK` bytes, aligned to it (at least
        // `Bucket`'s alignment); the table is a live block of `MAX_CLASSES` words.
        unsafe {
            (addr as *mut Bucket).write(Bucket::new(self.classes, class));
            write_word(seg.tables[slot] + class * W, addr);
        }
        seg.masks[slot] |= 1 << class;
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
    /// existing buckets by class), `None` after the last. O(1) but for skipping type slots
    /// without buckets (at most [`MAX_TYPES`]).
    pub(super) fn next_bucket(&self, b: BucketId) -> Option<BucketId> {
        if b.owner == 0 && b.class + 1 < self.classes.count() {
            return Some(BucketId::shared(b.class + 1));
        }
        // From the shared buckets, type slot 0's first class; from a type bucket, the next
        // class of its slot (the owner code is the slot + 1).
        let (mut slot, mut from) = match (b.owner as usize).checked_sub(1) {
            Some(s) => (s, b.class + 1),
            None => (0, 0),
        };
        while slot < MAX_TYPES {
            let rest = if from >= 64 {
                0
            } else {
                self.seg.mask(slot) >> from << from
            };
            if rest != 0 {
                return Some(BucketId {
                    class: rest.trailing_zeros() as usize,
                    owner: slot as u8 + 1,
                });
            }
            slot += 1;
            from = 0;
        }
        None
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
            let s = self.bucket(BucketId { class, owner: code }).stats;
            out += s.total - s.totalfree - s.lost;
        }
        if out != 0 {
            return Err(MallocError::TypeInUse { ty, inuse: out });
        }
        for class in (0..MAX_CLASSES).filter(|&c| mask & (1 << c) != 0) {
            let b = BucketId { class, owner: code };
            self.release_bucket(b);
            let s = self.bucket(b).stats;
            let shared = &mut self.buckets[class].stats;
            shared.calls += s.calls;
            shared.freed += s.freed;
            shared.bad_links += s.bad_links;
            let addr = self.seg.bucket_addr(b).unwrap_or(0);
            // SAFETY: `addr` is the bucket's block from this slab, which is empty now (every
            // cluster given back) and referenced only by the table entry cleared with the table.
            unsafe { self.seg.bucket_slab.free(&mut self.kmem, addr) };
        }
        let table = self.seg.tables[slot];
        if table != 0 {
            // SAFETY: the table block of this slab, whose buckets were all freed just above.
            unsafe {
                crate::malloc::raw::fill(table, TABLE_BLOCK, 0);
                self.seg.table_slab.free(&mut self.kmem, table);
            }
        }
        self.seg.tables[slot] = 0;
        self.seg.masks[slot] = 0;
        if self.age_cursor.owner == code {
            self.age_cursor = self.first_bucket();
        }
        Ok(())
    }
}
