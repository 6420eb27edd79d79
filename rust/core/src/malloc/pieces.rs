// SPDX-License-Identifier: GPL-2.0

//! The piece layer seen from a magazine layer above it: size classes that magazines cache, and
//! uncharged bulk transfers between the buckets (or kmem, for page runs) and magazines.
//!
//! The allocator splits into an *accounting layer* (types: limits and statistics, done by the
//! caller's per-CPU ledgers when magazines are in front, see `crate::magazine::ledger`) and this
//! *piece layer*. Objects in a magazine are allocated as far as the piece layer knows (their
//! clusters cannot go back to kmem), and charged to no type.
//!
//! Magazine classes: size class `i` is class `i`; a page run of `n <= MAG_LARGE_PAGES` pages is
//! class `MAX_CLASSES + n - 1`. Bigger runs have no magazine (a vmem xalloc of their own is the fast path).

use core::{num::NonZeroUsize, ptr::NonNull};

use super::allocator::{Class, Malloc};
use super::bucket::may_be_listed;
use super::classes::{ClassTable, MAX_CLASSES};
use super::error::MallocError;
use super::flags::MallocFlags;
use super::kmem::KmemPages;
use super::params::{PAGE_SHIFT, PAGE_SIZE};
use super::segregate::BucketId;
use super::types::{MallocType, TypeStats, LARGE_SIZE_BIT};
use crate::magazine::marker::RoundKey;

/// Largest page run (in pages) with magazines: 16 pages, 64 KiB.
pub const MAG_LARGE_PAGES: usize = 16;

/// Number of magazine classes: every size class of either mode, then the page runs.
pub const NCLASSES: usize = MAX_CLASSES + MAG_LARGE_PAGES;

/// The magazine class of a request of `size` bytes (`None`: zero, or a run too big to cache).
#[inline]
pub fn size_class(classes: &ClassTable, size: usize) -> Option<usize> {
    size_class_charge(classes, size).map(|(c, _)| c)
}

/// The magazine class of a request of `size` bytes and the bytes an object of it is charged
/// (`None`: zero, or a run too big to cache): [`size_class`] and [`class_charge`] at once, for
/// the malloc fast path. A size class is one compare and two table loads
/// ([`ClassTable::lookup`]); the page runs are out of the way of the size classes' path.
#[inline(always)]
pub fn size_class_charge(classes: &ClassTable, size: usize) -> Option<(usize, usize)> {
    let (c, charge) = match classes.lookup(size) {
        Some(cc) => cc,
        None => run_class_charge(size)?,
    };
    // A magazine class is below `NCLASSES` (64): the reduction changes nothing, and tells the
    // optimiser so, which then indexes the magazines' rows (`ClassMagazines`, modulo 64 too)
    // with the class itself instead of keeping a reduced copy in another register.
    Some((c % NCLASSES, charge))
}

/// The page-run part of [`size_class_charge`]: above [`MAXALLOCSAVE`](super::params::MAXALLOCSAVE), or
/// 0 (`None`).
#[inline]
fn run_class_charge(size: usize) -> Option<(usize, usize)> {
    let n = size.div_ceil(PAGE_SIZE);
    (1..=MAG_LARGE_PAGES)
        .contains(&n)
        .then(|| (MAX_CLASSES + n - 1, n << PAGE_SHIFT))
}

fn class_of(c: usize) -> Class {
    if c < MAX_CLASSES {
        Class::Bucket(c)
    } else {
        Class::Large(c - MAX_CLASSES + 1)
    }
}

/// Whether magazine class `c` is a size class (as opposed to a page run).
#[inline]
pub fn is_bucket_class(c: usize) -> bool {
    c < MAX_CLASSES
}

/// Bytes an object of class `c` is charged (and usable).
#[inline]
pub fn class_charge(classes: &ClassTable, c: usize) -> usize {
    if c < MAX_CLASSES {
        classes.size(c)
    } else {
        (c - MAX_CLASSES + 1) << PAGE_SHIFT
    }
}

/// Bytes the largest magazine of a piece class below [`MAG_BIG_PIECE`] may cache: 32 KiB, so that
/// the magazines of a heap (two per class per CPU, plus the depot's working set) stay small
/// against what its classes hold (illumos sizes its magazines by object size for the same
/// reason).
pub const MAG_BYTES_PIECES: usize = 32 * 1024;

/// Pieces of at least this many bytes and below a page have the byte budget
/// [`MAG_BYTES_BIG_PIECES`].
pub const MAG_BIG_PIECE: usize = 1024;

/// Bytes the largest magazine of a piece class from [`MAG_BIG_PIECE`] to below a page may cache:
/// 64 KiB, 62 rounds of 1 KiB ([`crate::magazine::MAG_ROUNDS`]), 32 of 2 KiB, 18 of 3.5 KiB
/// (pieces of a page and more keep [`MAG_BYTES_PIECES`]: their batches already cost less than
/// `kmalloc`'s). With 32 KiB (16 rounds of 2 KiB; first magazines of 15) a batch of 256 such
/// objects traded with the depot 17 times each way, and batches of 1-2 KiB cost 1.04-1.19
/// `kmalloc` batches; with 64 KiB, and first magazines of that size (`magazine::start_magsize`),
/// 0.84-0.87 at 1 KiB and 0.97-1.09 at 2 KiB, at the same peak pages on the committed trace
/// (`Documentation/performance.rst`, "Magazines of 1-2 KiB pieces").
pub const MAG_BYTES_BIG_PIECES: usize = 64 * 1024;

/// Bytes the largest magazine of a page-run class may cache: 128 KiB (two 64 KiB runs, eight
/// 16 KiB ones).
///
/// This budget and [`MAG_BYTES_PIECES`] were chosen by measurement (session 4), each one `make bench` and one `make replay` in one
/// boot (see `Documentation/performance.rst`): with 256 KiB for every class, kmalloc43 `fine` held
/// 1.04 times SLUB's peak pages on the committed trace; with 32 KiB for every class 0.99 times,
/// but batches of 16-64 KiB runs cost 1.56-1.69 times `kmalloc`'s (target 1.5); with these two,
/// 1.00 times SLUB's peak and 1.39-1.44 times `kmalloc` for the batches.
pub const MAG_BYTES_RUNS: usize = 128 * 1024;

/// Rounds of the largest magazine of class `c`: its byte budget in objects, at least one and at
/// most `cap` (the magazine layer's own largest).
pub fn magazine_rounds(classes: &ClassTable, c: usize, cap: usize) -> usize {
    let budget = if !is_bucket_class(c) {
        MAG_BYTES_RUNS
    } else if (MAG_BIG_PIECE..PAGE_SIZE).contains(&class_charge(classes, c)) {
        MAG_BYTES_BIG_PIECES
    } else {
        MAG_BYTES_PIECES
    };
    // A division by a `NonZeroUsize` cannot trap (objtool in 7.3 does not know that
    // `panic_const_div_by_zero` never returns); a charge is never 0, and would get one round.
    match NonZeroUsize::new(class_charge(classes, c)) {
        Some(charge) => (budget / charge).max(1).min(cap),
        None => 1.min(cap),
    }
}

/// The [`TypeStats::sizemask`] bit of class `c`.
#[inline]
pub fn class_sizebit(c: usize) -> u32 {
    if c < MAX_CLASSES {
        c as u32
    } else {
        LARGE_SIZE_BIT
    }
}

/// The [`TypeStats::sizemask`] of a set of magazine classes (bit `c` for class `c`): the bits
/// [`class_sizebit`] gives each of them, or-ed (bit `c` for a size class, [`LARGE_SIZE_BIT`] for
/// any page run). The per-CPU ledgers record their classes so (one `or` of `1 << c` on the fast
/// path) and their readers convert.
#[inline]
pub fn classes_sizemask(classes: u64) -> u64 {
    let sizes = classes & ((1 << MAX_CLASSES) - 1);
    if classes >> MAX_CLASSES != 0 {
        sizes | 1 << LARGE_SIZE_BIT
    } else {
        sizes
    }
}

// Every magazine class has its bit in a `u64` class set.
const _: () = assert!(NCLASSES <= 64 && MAX_CLASSES < 64);

/// Whether an object of class `c` at `addr`, whose first word is `word0`, might already be free:
/// the round mark under `key` (it sits in a magazine: see `magazine::marker`) or a free-list link
/// (to be checked against the list). `false` is certain.
#[inline]
pub fn may_be_free(c: usize, addr: usize, word0: usize, key: RoundKey) -> bool {
    word0 == key.mark_of(addr) || (c < MAX_CLASSES && may_be_listed(addr, word0))
}

/// What a magazine fill takes from.
#[derive(Clone, Copy)]
enum Fill {
    /// Pieces of this bucket.
    Pieces(BucketId),
    /// Page runs of this many pages, with this owner code.
    Runs(usize, u8),
}

impl<K: KmemPages> Malloc<K> {
    /// Takes up to `out.len()` objects of class `c` for a magazine of type `ty`, charged to no
    /// type (`flags` and `ty` name the caller in a shortage: `mapblocks` and
    /// `WouldBlock`/`NoMemory`). Fills do not count as requests: the magazine layer counts the
    /// allocations it serves. Returns how many were taken (at least one), or the shortage if none
    /// could be.
    ///
    /// With segregation on ([`Malloc::set_segregation`]) the objects are `ty`'s: pieces of a
    /// segregated class come from `ty`'s own bucket, page runs carry `ty` as their owner (record
    /// and hint) until they are given back; so the magazine must be `ty`'s alone. With it off
    /// they belong to no type.
    pub fn take_for_magazine(
        &mut self,
        c: usize,
        ty: MallocType,
        flags: MallocFlags,
        out: &mut [usize],
    ) -> Result<usize, MallocError> {
        let fill = match class_of(c) {
            Class::Bucket(i) => {
                Fill::Pieces(self.bucket_or_shortage(i, ty, flags, self.classes.size(i))?)
            }
            Class::Large(p) => Fill::Runs(p, self.run_owner(ty)),
        };
        let mut n = 0;
        for slot in out.iter_mut() {
            let got = match fill {
                Fill::Pieces(b) => self.alloc_piece(b, ty, flags, self.classes.size(b.class)),
                Fill::Runs(p, owner) => self.alloc_large(p, ty, owner, flags, p << PAGE_SHIFT),
            };
            match got {
                Ok(a) => {
                    *slot = a;
                    n += 1;
                }
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        match fill {
            Fill::Pieces(b) => {
                self.counts[b.class].calls -= n as u64;
            }
            Fill::Runs(..) => self.large.calls -= n as u64,
        }
        Ok(n)
    }

    /// Gives objects of class `c` from a magazine back to the piece layer: each piece to the
    /// bucket its cluster's record names (its type's, for a segregated class), each page run to
    /// kmem (its owner goes with its record).
    ///
    /// # Safety
    ///
    /// Every round must be an object of class `c` taken with [`Malloc::take_for_magazine`] and
    /// not given back since, and nothing may use it any more.
    pub unsafe fn return_from_magazine(&mut self, c: usize, rounds: &[usize]) {
        for &addr in rounds {
            match self.locate(addr) {
                Ok(loc) => match loc.class {
                    _ if loc.class != class_of(c) => {
                        debug_assert!(false, "magazine round of another class");
                    }
                    // DIAGNOSTIC is off while magazines hold objects (the glue drains them before
                    // switching it on), so the owner tag this names is never written.
                    Class::Bucket(i) => self.free_piece(i, addr, &loc, MallocType::from_raw(0)),
                    Class::Large(n) => self.free_large(addr, n, &loc),
                },
                // Cannot happen for a genuine round; keep the object rather than corrupt lists.
                Err(_) => debug_assert!(false, "magazine round not found in the page map"),
            }
        }
    }

    /// Adds allocations a magazine layer served from class `c` to the bucket (or large) request
    /// counters (when its per-CPU counters are folded): the class's shared bucket.
    pub fn add_magazine_calls(&mut self, c: usize, calls: u64) {
        match class_of(c) {
            Class::Bucket(i) => {
                self.counts[i].calls += calls;
            }
            Class::Large(_) => self.large.calls += calls,
        }
    }

    /// As [`Malloc::add_magazine_calls`], for the allocations a magazine of type `ty` served.
    /// The same counters: requests are counted per class, over all its buckets (the shared one
    /// and every type's), and the class's give-back budget counts them; the type is not needed
    /// for them (kept so that a caller holding a type's magazine need not know whether its
    /// class is segregated).
    pub fn add_type_magazine_calls(&mut self, c: usize, _ty: MallocType, calls: u64) {
        self.add_magazine_calls(c, calls);
    }

    /// The piece layer's verdict on freeing `addr`, an object the caller believes is of class `c`
    /// and which is in no magazine: its class if it is a live object, else the exact error
    /// (foreign, interior, or already on a free list: `DoubleFree`).
    pub fn check_object(&self, addr: usize) -> Result<usize, MallocError> {
        let loc = self.locate(addr)?;
        if let Class::Bucket(_) = loc.class {
            if self.is_listed(loc.bucket, addr, loc.head, loc.free) {
                return Err(MallocError::DoubleFree { addr, ty: None });
            }
        }
        match loc.class {
            Class::Bucket(i) => Ok(i),
            Class::Large(n) if n <= MAG_LARGE_PAGES => Ok(MAX_CLASSES + n - 1),
            Class::Large(_) => Err(MallocError::ForeignPointer { addr }),
        }
    }

    /// The handle of the type in table slot `index`, if one is defined there.
    pub fn type_handle(&self, index: usize) -> Option<MallocType> {
        self.types.handle(index)
    }

    /// A type's statistics, mutably (the magazine layer's ledgers keep their base here).
    pub fn type_stats_mut(&mut self, ty: MallocType) -> Result<&mut TypeStats, MallocError> {
        self.types.get_mut(ty)
    }

    /// Changes the name `ty`'s statistics show (an orphaned type's new name; valid until the type
    /// is undefined or renamed again).
    pub fn rename_type(&mut self, ty: MallocType, name: &'static str) -> Result<(), MallocError> {
        self.types.get_mut(ty)?.name = name;
        Ok(())
    }

    /// Bytes charged for a request of `size` bytes (class size or whole pages).
    pub fn charge_of(&self, size: usize) -> Result<usize, MallocError> {
        Ok(super::allocator::classify(self.classes, size)?.charge(self.classes))
    }

    /// The pointer form of an object address.
    pub fn object_ptr(addr: usize) -> Option<NonNull<u8>> {
        NonNull::new(addr as *mut u8)
    }
}
