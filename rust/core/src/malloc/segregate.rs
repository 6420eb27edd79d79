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
//!   allocation of each segregated class, each a 64-byte block of one metadata slab, found
//!   through the type's mask of classes with a bucket (a `u64`) and the type's table word: the
//!   bucket of class `c` is the one of rank `r`, the rank of bit `c` in the mask. With one
//!   bucket the table word is that bucket's address; with 2 to [`LEAF`] (8) it points at a
//!   block of their addresses in class order; with more, at a directory block whose word `j`
//!   points at the block of ranks `8j..8j + 8`. Every block is one size, from one slab, so a
//!   heap's types share its pages: a type that uses one class costs 64 bytes, three classes
//!   256, 34 classes 2,560 (34 buckets, a directory and 5 tables); no type slot costs more
//!   than three words inline. Inlining `MAX_TYPES` x `MAX_CLASSES` buckets would be 384 KiB, a
//!   table per type of `MAX_CLASSES` addresses 384 bytes per type even for a type with one
//!   class. (Before, buckets were 128-byte blocks and tables came from five slabs of 4 to 64
//!   words: at the committed trace's peak two more pages, each slab's page mostly empty.)
//! * With segregation on, a page run's owner is written into its record when the run is handed
//!   out (`malloc`, or [`Malloc::take_for_magazine`] for a type's magazine) and goes with the
//!   record when it is freed; runs a type owns are counted so that the type cannot be undefined
//!   while one is out (in a magazine, say).
//! * A type's buckets go when the type is undefined (no live allocation, no piece or run held
//!   for it by a magazine): its wholly free clusters go back to kmem and its buckets' blocks go
//!   back to the slab. The counters that outlive a bucket (calls, clusters given back, bad
//!   links) are the class's in the first place, so per-class statistics never go backwards.
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

/// Bytes of one block of the type buckets' metadata slab: a [`Bucket`], a table of [`LEAF`]
/// bucket addresses, or a directory of up to [`LEAF`] tables. The metadata budget (issue 9: at
/// most 4 KB per MiB held) depends on it: a test guards it (`tests/malloc_segregation.rs`).
const BUCKET_BLOCK: usize = 64;

/// Addresses in one table block.
const LEAF: usize = BUCKET_BLOCK / W;

const _: () = assert!(core::mem::size_of::<Bucket>() <= BUCKET_BLOCK);
const _: () = assert!(core::mem::align_of::<Bucket>() <= BUCKET_BLOCK);
// A directory of `LEAF` tables holds an address per class.
const _: () = assert!(MAX_CLASSES <= LEAF * LEAF);
const _: () = assert!(MAX_CLASSES <= 64 && MAX_TYPES <= 128);

/// The word holding the address of the bucket of rank `k` in table `t` of a type with `n`
/// buckets (`2 <= n`, `k < n`): a word of `t` itself up to [`LEAF`] buckets, else of the table
/// `t`'s word `k / LEAF` points at.
///
/// # Safety
///
/// `t` must be a table laid out for `n` buckets (type invariant of [`Segregation`]; its blocks
/// exist, the words read may still be 0 for ranks not filled yet) and `k < n`.
#[inline]
unsafe fn entry(t: usize, n: usize, k: usize) -> usize {
    if n <= LEAF {
        t + k * W
    } else {
        // SAFETY: `t` is a directory with a table for every rank below `n` (caller).
        unsafe { read_word(t + k / LEAF * W) + k % LEAF * W }
    }
}

/// Table blocks the table of a type with `n` buckets gains when it gets one more: the first
/// table at 2 buckets; a directory and a second table at `LEAF + 1`; one more table at every
/// multiple of `LEAF` plus one after that.
fn blocks_added(n: usize) -> usize {
    match n {
        1 => 1,
        LEAF => 2,
        _ if n > LEAF && n.is_multiple_of(LEAF) => 1,
        _ => 0,
    }
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
/// `slots` has bit `s` set iff `masks[s]` is not 0. With `n` the mask's population, the
/// addresses of slot `s`'s buckets in class order (the bucket of class `c` at the rank of bit
/// `c` in the mask), blocks of `slab` each holding an initialised [`Bucket`] of that class owned
/// by slot `s`, are: for `n == 0` none (`tables[s]` is 0); for `n == 1` `tables[s]` itself; for
/// `2 <= n <= LEAF` the first `n` words of the block `tables[s]`; for `n > LEAF` the words of the
/// `n.div_ceil(LEAF)` blocks the first words of the directory block `tables[s]` point at, `LEAF`
/// to a block (every block of `slab`). Every cluster whose record has owner code `s + 1` belongs
/// to such a bucket.
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
    /// The blocks of the type buckets and of their tables.
    slab: MetaSlab,
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
            slab: MetaSlab::new(BUCKET_BLOCK),
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
    /// the mask and of the table word; for a type with more than one bucket a population count
    /// and one more load (two with more than [`LEAF`] buckets).
    #[inline]
    fn bucket_addr(&self, class: usize, owner: u8) -> Option<usize> {
        let slot = (owner as usize).checked_sub(1)?;
        let mask = self.mask(slot);
        let bit = 1u64.checked_shl(class as u32)?;
        if mask & bit == 0 {
            return None;
        }
        let t = self.tables[slot];
        if mask == bit {
            // The type's only bucket: the table word is its address.
            return Some(t);
        }
        let (n, rank) = (
            mask.count_ones() as usize,
            (mask & (bit - 1)).count_ones() as usize,
        );
        // SAFETY: `t` is the slot's table laid out for its `n >= 2` buckets (type invariant),
        // whose entries below `n` are bucket addresses, and `rank < n`.
        Some(unsafe { read_word(entry(t, n, rank)) })
    }

    /// Metadata pages held by the type buckets and their tables.
    pub(super) fn meta_pages(&self) -> usize {
        self.slab.pages()
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

    /// Whether every size class is segregated, so that every piece and every page run has an
    /// owner in its record and page hint (no piece belongs to no type): [`SEGREGATE_ALL`], or a
    /// threshold above the largest class.
    pub fn segregates_every_class(&self) -> bool {
        self.seg.on() && self.seg.classes == self.classes.count()
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
        let mask = seg.masks[slot];
        let (n, rank) = (
            mask.count_ones() as usize,
            (mask & ((1 << class) - 1)).count_ones() as usize,
        );
        // The bucket's block, then the blocks its table gains, all or none.
        let mut blocks = [0; 3];
        for k in 0..1 + blocks_added(n) {
            match seg.slab.alloc(&mut self.kmem) {
                Some(a) => blocks[k] = a,
                None => {
                    for &a in &blocks[..k] {
                        // SAFETY: just allocated from this slab, referenced nowhere.
                        unsafe { seg.slab.free(&mut self.kmem, a) };
                    }
                    return None;
                }
            }
        }
        let [addr, gained, dir_table] = blocks;
        let old = seg.tables[slot];
        // SAFETY: `addr` is a fresh block of `BUCKET_BLOCK` bytes, aligned to it (at least
        // `Bucket`'s alignment).
        unsafe { (addr as *mut Bucket).write(Bucket::new()) };
        // The table laid out for `n + 1` buckets, holding the `n` old addresses in rank order.
        // SAFETY: `gained` and `dir_table` are fresh zeroed blocks where `blocks_added(n)` says
        // so; `old` is the table of `n` buckets (type invariant): for `n == 1` the bucket's
        // address itself, for `n > LEAF` a directory with a word for every table.
        let table = unsafe {
            match n {
                0 => addr,
                1 => {
                    write_word(gained, old);
                    gained
                }
                LEAF => {
                    // The full table becomes the directory's first, an empty one its second.
                    write_word(gained, old);
                    write_word(gained + W, dir_table);
                    gained
                }
                _ if blocks_added(n) == 1 => {
                    write_word(old + n / LEAF * W, gained);
                    old
                }
                _ => old,
            }
        };
        if n != 0 {
            // The entries from `rank` on move up by one, from the last, so none is overwritten
            // before it is copied; then the new bucket takes rank `rank`.
            // SAFETY: `table` is laid out for `n + 1` buckets, its first `n` entries hold the old
            // addresses in rank order.
            unsafe {
                for k in (rank..n).rev() {
                    write_word(
                        entry(table, n + 1, k + 1),
                        read_word(entry(table, n + 1, k)),
                    );
                }
                write_word(entry(table, n + 1, rank), addr);
            }
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
        self.bucket_mut(b).parked.restart_window(window);
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

    /// The bucket of `b`'s class after `b`: from the shared bucket, the bucket of the class of
    /// the first type slot that has one, from a type's bucket, that of the next such slot;
    /// `None` after the last. O(types with buckets).
    pub(super) fn next_bucket_of_class(&self, b: BucketId) -> Option<BucketId> {
        if b.class >= self.seg.classes {
            return None;
        }
        // The slots after `b`'s: from the shared bucket (owner 0) slot 0 on, from slot `s`'s
        // (owner `s + 1`) slot `s + 1` on.
        let mut later = self.seg.slots & u128::MAX.checked_shl(b.owner.into()).unwrap_or(0);
        while later != 0 {
            let slot = later.trailing_zeros() as u8;
            if let Some(id) = self.type_bucket(b.class, slot + 1) {
                return Some(id);
            }
            later &= later - 1;
        }
        None
    }

    /// Undefine's part for the type's buckets: refused (`TypeInUse` with the pieces and runs
    /// still out, nothing changed) if a bucket of `ty` holds a piece that is not free or `ty`
    /// owns a page run (a magazine holds them: drain it first); otherwise every cluster of its
    /// buckets goes back to kmem and the buckets' memory goes back (the counters that outlive
    /// them are the class's).
    pub(super) fn release_type_buckets(&mut self, ty: MallocType) -> Result<(), MallocError> {
        let slot = ty.index();
        let mask = self.seg.mask(slot);
        let mut out = self.seg.runs.get(slot).copied().unwrap_or(0);
        let code = owner_code(ty);
        for class in (0..MAX_CLASSES).filter(|&c| mask & (1 << c) != 0) {
            let Some(b) = self.type_bucket(class, code) else {
                continue;
            };
            let s = self.bucket(b);
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
            debug_assert_eq!(self.bucket(b).total, 0, "a type bucket kept a cluster");
            // SAFETY: the bucket's block from this slab, which holds no cluster now and is
            // referenced only by the table, freed below (and by `b`, dropped here).
            unsafe { self.seg.slab.free(&mut self.kmem, b.at) };
        }
        let (table, n) = (self.seg.tables[slot], mask.count_ones() as usize);
        // SAFETY: the type's table blocks of this slab (type invariant of `Segregation`: none
        // for one bucket, one up to `LEAF`, a directory and its tables above), read before they
        // are freed; the buckets they name were all freed just above.
        unsafe {
            if n > LEAF {
                for j in 0..n.div_ceil(LEAF) {
                    self.seg.slab.free(&mut self.kmem, read_word(table + j * W));
                }
            }
            if n > 1 {
                self.seg.slab.free(&mut self.kmem, table);
            }
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
