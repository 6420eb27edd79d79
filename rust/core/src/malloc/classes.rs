// SPDX-License-Identifier: GPL-2.0

//! Size classes: which piece size serves a request, how big a bucket's cluster is, and which
//! piece of a cluster an address falls in, for the paper's powers of two and for a finer table.
//!
//! Two modes share one design (no header, the size kept in the page's usage record, `free`
//! without a size):
//!
//! * [`SizeClasses::Pow2`], the paper's buckets: 16, 32, ..., [`MAXALLOCSAVE`]. Every piece is
//!   aligned to its size; a cluster is one page, or one piece for the buckets bigger than a page.
//! * [`SizeClasses::Fine`]: at most 8 classes per doubling (table [`FINE_SIZES`], how it was
//!   chosen is documented there). A piece is aligned to the largest power of two dividing its
//!   class size (at least 16 bytes, e.g. 64 for 192, 512 for 1536). The table is such that a
//!   request whose size is a multiple of a power of two up to a page (a Rust type's size is a
//!   multiple of its alignment) still gets a piece aligned to it, as in pow2 mode (tested for
//!   every size). A cluster is the smallest
//!   power-of-two run of pages, naturally aligned, that wastes at most 1/16 of itself in its tail
//!   (a 1536-byte class takes two pages, 5 pieces).
//!
//! Both modes answer the same questions in O(1) without dividing:
//!
//! * Class of a request: a 64-entry byte table indexed by `(size - 1) >> 4` up to 1 KiB, and a
//!   second one indexed by `(size - 1) >> 7` up to [`MAXALLOCSAVE`] (classes above 1 KiB are
//!   multiples of 128 bytes).
//! * Piece index of an offset in a cluster: `(offset * recip) >> 32` with `recip = ceil(2^32 /
//!   size)`. This is exact for every offset below `2^32 / (recip * size - 2^32)`, which is more
//!   than the largest cluster (32 KiB) for every size up to 8 KiB; the unit tests check every
//!   offset of every cluster of both tables.

use super::params::{MAXALLOCSAVE, MIN_BUCKET_SHIFT, PAGE_SHIFT, PAGE_SIZE};
use super::pieces::NCLASSES;
use super::starts::StartTests;

/// Most classes a table may have (the usage record stores the index in 6 bits).
pub const MAX_CLASSES: usize = 48;

/// log2 of the largest cluster, in pages (8 pages: 32 KiB).
const MAX_CLUSTER_SHIFT: u32 = 3;

const _: () = assert!(PAGE_SIZE << MAX_CLUSTER_SHIFT <= EXACT_BYTES);

/// Most pieces in one cluster (the DIAGNOSTIC tag block and the usage record's free count are
/// sized for this: one page of the smallest class).
pub const MAX_PIECES: usize = PAGE_SIZE >> MIN_BUCKET_SHIFT;

/// Largest dividend the reciprocals divide exactly: `recip * size - 2^32 < size <= 2^13`, so
/// every dividend below `2^32 / 2^13 = 2^19` is exact.
const EXACT_BYTES: usize = 1 << 19;

/// Entries of each lookup table.
const SLOTS: usize = 64;
/// Largest size the first lookup table serves (its slots are 16 bytes wide).
const SMALL_MAX: usize = SLOTS << MIN_BUCKET_SHIFT;
/// log2 of the width of the second lookup table's slots (128 bytes: 64 slots up to 8 KiB).
const BIG_SHIFT: u32 = 7;

/// The size-class mode, chosen when the allocator is built (module parameter `classes=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeClasses {
    /// The paper's power-of-two buckets (the reference).
    Pow2,
    /// Finer classes: at most 8 per doubling.
    Fine,
}

impl SizeClasses {
    /// The mode `Malloc::new` and the module use when none is asked for: fine, which held 17 %
    /// fewer pages than pow2 at the committed trace's peak for the same cost per call (README).
    pub const DEFAULT: SizeClasses = SizeClasses::Fine;

    /// The mode's name, as the module parameter and the reports spell it.
    pub const fn name(self) -> &'static str {
        match self {
            SizeClasses::Pow2 => "pow2",
            SizeClasses::Fine => "fine",
        }
    }

    /// Parses `pow2` or `fine` (optionally followed by one newline, as `echo` writes).
    pub fn parse(input: &[u8]) -> Option<Self> {
        let word = match input {
            [rest @ .., b'\n'] => rest,
            _ => input,
        };
        match word {
            b"pow2" => Some(SizeClasses::Pow2),
            b"fine" => Some(SizeClasses::Fine),
            _ => None,
        }
    }

    /// The mode's class table.
    pub const fn table(self) -> &'static ClassTable {
        match self {
            SizeClasses::Pow2 => &POW2.0,
            SizeClasses::Fine => &FINE.0,
        }
    }
}

/// The fine table's sizes in bytes (39 classes).
///
/// How it was chosen (`tools/fine-classes.py`, on the committed trace
/// `tools/kmtrace/traces/boot-busybox.csv.xz`): start from four classes per doubling, every
/// multiple of 16 up to 128 and then `2^k * (1 + j/4)`, the table that minimises the rounding
/// loss for sizes spread evenly on a log scale (at most 20 %, 11 % on average, against 50 % and
/// 28 % for powers of two); then add, one at a time, the class that most reduces the pages the
/// trace's peak live set needs (rounding and cluster tails), while a class saves at least 0.05 %
/// of the live bytes, keeping the table's rules (at most 8 per doubling, multiples of 128 above
/// 1 KiB, and the alignment rule of the module documentation). That added 144 (136-byte objects:
/// 10,437 live at the peak), 576, 704, 2176, 464, 1152 and 544: at the peak the classes need
/// 3.2 % more than the live bytes, against 6.2 % for the four-per-doubling base and 26.6 % for
/// powers of two. The base keeps the bound on traces it was not fitted to.
pub const FINE_SIZES: &[usize] = &[
    16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 192, 224, 256, 320, 384, 448, 464, 512, 544, 576,
    640, 704, 768, 896, 1024, 1152, 1280, 1536, 1792, 2048, 2176, 2560, 3072, 3584, 4096, 5120,
    6144, 7168, 8192,
];

/// The pow2 table's sizes: 16, 32, ..., [`MAXALLOCSAVE`].
const POW2_SIZES: &[usize] = &[16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192];

/// A class table on a 4 KiB page of its own: every malloc and free reads it (the size's class
/// and charge, the object-start test), and a table that straddled two pages would cost every
/// pair one more data page (one more TLB entry; under TCG one more chance of a conflict in
/// QEMU's direct-mapped TLB: `Documentation/performance.rst`, "Fewer pages per pair").
#[repr(align(4096))]
struct PageAligned(ClassTable);

const _: () = assert!(core::mem::size_of::<ClassTable>() <= 4096);

/// The paper's buckets.
static POW2: PageAligned = PageAligned(ClassTable::build(SizeClasses::Pow2, POW2_SIZES));
/// The fine classes.
static FINE: PageAligned = PageAligned(ClassTable::build(SizeClasses::Fine, FINE_SIZES));

/// Where an address falls in a cluster ([`ClassTable::position`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PiecePosition {
    /// Page number of the cluster's first page.
    pub head: usize,
    /// Piece index in the cluster.
    pub index: usize,
    /// Address of that piece.
    pub start: usize,
}

/// A table of size classes with its O(1) lookup and division-free piece index.
///
/// # Invariants
///
/// Built only by [`ClassTable::build`], which checks (at compile time for the two static tables):
/// sizes strictly increasing multiples of 16 from 16 to [`MAXALLOCSAVE`], multiples of 128 above
/// 1 KiB, at most 8 per doubling, at most [`MAX_CLASSES`]; every cluster a naturally alignable
/// power of two of at most 8 pages holding between 1 and [`MAX_PIECES`] pieces; `small` and `big`
/// map every size to the smallest class that holds it, and `small_size` and `big_size` hold that
/// class's size at the same slot; `starts` holds the object-start test of every magazine class
/// ([`ClassTable::starts_object`]).
pub struct ClassTable {
    mode: SizeClasses,
    count: usize,
    size: [u32; MAX_CLASSES],
    cluster_shift: [u8; MAX_CLASSES],
    pieces: [u16; MAX_CLASSES],
    recip: [u32; MAX_CLASSES],
    small: [u8; SLOTS],
    big: [u8; SLOTS],
    small_size: [u16; SLOTS],
    big_size: [u16; SLOTS],
    starts: StartTests,
}

/// log2 of the pages of the cluster of a class of `size` bytes in `mode`.
const fn cluster_shift_for(mode: SizeClasses, size: usize) -> u32 {
    // Smallest cluster holding one piece.
    let mut shift = 0;
    while (PAGE_SIZE << shift) < size {
        shift += 1;
    }
    if let SizeClasses::Pow2 = mode {
        return shift;
    }
    // Fine: grow it while the tail wastes more than 1/16 of it; if no cluster up to the largest
    // is that good, keep the one wasting the smallest share.
    let mut best = shift;
    let mut best_waste = usize::MAX;
    while shift <= MAX_CLUSTER_SHIFT {
        let bytes = PAGE_SIZE << shift;
        let waste = bytes % size;
        if waste * 16 <= bytes {
            return shift;
        }
        // Compare waste shares without dividing: waste / bytes, scaled to the largest cluster.
        let scaled = waste << (MAX_CLUSTER_SHIFT - shift);
        if scaled < best_waste {
            best_waste = scaled;
            best = shift;
        }
        shift += 1;
    }
    best
}

/// The lookup table whose slot `k` holds the smallest class of `sizes` that holds `(k + 1) <<
/// shift` bytes.
const fn lookup_table(sizes: &[usize], shift: u32) -> [u8; SLOTS] {
    let mut table = [0; SLOTS];
    let mut k = 0;
    let mut c = 0;
    while k < SLOTS {
        while sizes[c] < (k + 1) << shift {
            c += 1;
        }
        table[k] = c as u8;
        k += 1;
    }
    table
}

/// The sizes of the classes that `table` ([`lookup_table`] of `sizes`) names, slot by slot.
const fn lookup_sizes(sizes: &[usize], table: &[u8; SLOTS]) -> [u16; SLOTS] {
    const _: () = assert!(MAXALLOCSAVE <= u16::MAX as usize);
    let mut out = [0; SLOTS];
    let mut k = 0;
    while k < SLOTS {
        out[k] = sizes[table[k] as usize] as u16;
        k += 1;
    }
    out
}

impl ClassTable {
    /// Builds the table of `sizes` (panics, at compile time for a `static`, on a table that
    /// breaks the type's invariants).
    pub const fn build(mode: SizeClasses, sizes: &[usize]) -> Self {
        let count = sizes.len();
        assert!(count >= 1 && count <= MAX_CLASSES, "class count");
        assert!(sizes[0] == 1 << MIN_BUCKET_SHIFT, "first class is 16 bytes");
        assert!(
            sizes[count - 1] == MAXALLOCSAVE,
            "last class is MAXALLOCSAVE"
        );
        let mut t = ClassTable {
            mode,
            count,
            size: [0; MAX_CLASSES],
            cluster_shift: [0; MAX_CLASSES],
            pieces: [0; MAX_CLASSES],
            recip: [0; MAX_CLASSES],
            small: [0; SLOTS],
            big: [0; SLOTS],
            small_size: [0; SLOTS],
            big_size: [0; SLOTS],
            starts: StartTests::none(),
        };
        // The page runs' entries: one object, at the first byte of the run's first page.
        let mut r = MAX_CLASSES;
        while r < NCLASSES {
            t.starts.set(r, PAGE_SIZE, 1, PAGE_SIZE);
            r += 1;
        }
        let mut i = 0;
        while i < count {
            let s = sizes[i];
            // Also tells the optimiser that every division by `s` below cannot trap: objtool in
            // 7.3 does not know `panic_const_div_by_zero` never returns, and warns about a
            // function ending in a call to it.
            assert!(s >= 16, "classes are at least 16 bytes");
            assert!(s.is_multiple_of(16), "classes are multiples of 16 bytes");
            assert!(
                s <= SMALL_MAX || s.is_multiple_of(1 << BIG_SHIFT),
                "multiples of 128 above 1 KiB"
            );
            if i > 0 {
                assert!(s > sizes[i - 1], "classes strictly increase");
            }
            // At most 8 classes in any doubling (s/2, s].
            let mut in_doubling = 0;
            let mut j = 0;
            while j <= i {
                if sizes[j] * 2 > s {
                    in_doubling += 1;
                }
                j += 1;
            }
            assert!(in_doubling <= 8, "at most 8 classes per doubling");
            let shift = cluster_shift_for(mode, s);
            assert!(shift <= MAX_CLUSTER_SHIFT, "cluster of at most 8 pages");
            let pieces = (PAGE_SIZE << shift) / s;
            assert!(pieces >= 1 && pieces <= MAX_PIECES, "pieces per cluster");
            t.size[i] = s as u32;
            t.cluster_shift[i] = shift as u8;
            t.pieces[i] = pieces as u16;
            // ceil(2^32 / s); s >= 16, so it fits 32 bits.
            t.recip[i] = ((1u64 << 32).div_ceil(s as u64)) as u32;
            t.starts.set(i, s, pieces, PAGE_SIZE << shift);
            i += 1;
        }
        // The lookup tables: slot k serves sizes up to (k + 1) * width; classes above 1 KiB are
        // multiples of 128 bytes, so a slot never straddles a class boundary.
        t.small = lookup_table(sizes, MIN_BUCKET_SHIFT);
        t.big = lookup_table(sizes, BIG_SHIFT);
        t.small_size = lookup_sizes(sizes, &t.small);
        t.big_size = lookup_sizes(sizes, &t.big);
        t
    }

    /// The mode this table implements.
    pub const fn mode(&self) -> SizeClasses {
        self.mode
    }

    /// Number of classes.
    pub const fn count(&self) -> usize {
        self.count
    }

    /// Class serving a request of `size` bytes (0 is served by the first class), or `None`
    /// above [`MAXALLOCSAVE`]: two compares and one table load.
    #[inline]
    pub fn index(&self, size: usize) -> Option<usize> {
        self.lookup(size.max(1)).map(|(c, _)| c)
    }

    /// Class serving a request of `size` bytes and that class's size (the bytes a piece of it is
    /// charged), or `None` for 0 or above [`MAXALLOCSAVE`]: one compare and two independent
    /// table loads per tier, with no bounds check (a slot below [`SLOTS`] by the compare) and no
    /// test of the class (the size is read from the slot too). The malloc fast path's classify.
    #[inline(always)]
    pub fn lookup(&self, size: usize) -> Option<(usize, usize)> {
        // 0 wraps to the largest slot, past both tiers: the zero test costs no branch here.
        let slot = size.wrapping_sub(1);
        if slot < SMALL_MAX {
            let k = slot >> MIN_BUCKET_SHIFT;
            Some((usize::from(self.small[k]), usize::from(self.small_size[k])))
        } else if slot < MAXALLOCSAVE {
            let k = slot >> BIG_SHIFT;
            Some((usize::from(self.big[k]), usize::from(self.big_size[k])))
        } else {
            None
        }
    }

    /// Piece size of class `i` in bytes.
    #[inline]
    pub fn size(&self, i: usize) -> usize {
        self.size[i] as usize
    }

    /// log2 of the pages of one cluster of class `i`.
    #[inline]
    pub fn cluster_shift(&self, i: usize) -> u32 {
        u32::from(self.cluster_shift[i])
    }

    /// Pages of one cluster of class `i` (a power of two; clusters are naturally aligned).
    #[inline]
    pub fn cluster_pages(&self, i: usize) -> usize {
        1 << self.cluster_shift[i]
    }

    /// Bytes of one cluster of class `i`.
    #[inline]
    pub fn cluster_bytes(&self, i: usize) -> usize {
        PAGE_SIZE << self.cluster_shift[i]
    }

    /// Pieces per cluster of class `i` (the paper's `kb_elmpercl`).
    #[inline]
    pub fn pieces(&self, i: usize) -> usize {
        usize::from(self.pieces[i])
    }

    /// Index of the piece of class `i` that byte `offset` of a cluster falls in, without a
    /// division. `offset` must be below [`cluster_bytes`](Self::cluster_bytes); the result is
    /// [`pieces`](Self::pieces) or more for an offset in the cluster's unused tail.
    #[inline]
    pub fn piece_index(&self, i: usize, offset: usize) -> usize {
        // No overflow check (it is on every free's fast path): `offset` is below a cluster's
        // 512 KiB at most and `recip` below 2^32, so the product is below 2^51.
        ((offset as u64).wrapping_mul(u64::from(self.recip[i])) >> 32) as usize
    }

    /// Where address `addr` falls in a cluster of class `i`: the cluster's first page, the piece
    /// index (at least [`pieces`](Self::pieces) in the cluster's unused tail) and the start of
    /// that piece. O(1), no division; `addr` is a piece start iff it equals `start` and `index`
    /// is below `pieces`.
    #[inline]
    pub fn position(&self, i: usize, addr: usize) -> PiecePosition {
        // No overflow checks (every free's fast path runs this): the cluster shift is at most
        // `MAX_CLUSTER_SHIFT` (so the size is a nonzero power of two), `base <= addr`, and
        // `index * size` is at most the offset's cluster, which `base` starts without wrapping.
        let cluster = PAGE_SIZE << (self.cluster_shift[i] & 63);
        let base = addr & !cluster.wrapping_sub(1);
        let index = self.piece_index(i, addr.wrapping_sub(base));
        PiecePosition {
            head: base >> PAGE_SHIFT,
            index,
            start: base.wrapping_add(index.wrapping_mul(self.size(i))),
        }
    }

    /// Whether `addr`, an address in a cluster of magazine class `c` (or in the first page of
    /// a run of that class), starts an object: for a size class, one of its pieces; for a page
    /// run (`c` from [`MAX_CLASSES`] to [`NCLASSES`]), the page's first byte; for a size class
    /// this table does not have, or `c` from [`NCLASSES`] on, never. `c` is taken modulo
    /// [`START_TESTS`](super::starts::START_TESTS) (no bounds check); four loads from the table,
    /// no division, no branch (`starts.rs`).
    #[inline(always)]
    pub fn starts_object(&self, c: usize, addr: usize) -> bool {
        self.starts.starts_at(c, addr)
    }

    /// Whether `addr` is the start of a piece of class `i` (in a cluster of class `i`).
    #[inline]
    pub fn is_piece_start(&self, i: usize, addr: usize) -> bool {
        let p = self.position(i, addr);
        p.start == addr && p.index < self.pieces(i)
    }

    /// Whole pieces of class `i` in `bytes` bytes (at most 512 KiB), without a division.
    #[inline]
    pub fn pieces_in(&self, i: usize, bytes: usize) -> usize {
        debug_assert!(bytes <= EXACT_BYTES);
        self.piece_index(i, bytes)
    }

    /// Alignment every piece of class `i` has: the largest power of two dividing its size (its
    /// size in pow2 mode), at most a page (clusters are page-aligned).
    #[inline]
    pub fn align(&self, i: usize) -> usize {
        let s = self.size(i);
        (s & s.wrapping_neg()).min(PAGE_SIZE << self.cluster_shift(i))
    }

    /// Alignment guaranteed for an allocation of `size` bytes: its class's alignment, or a page
    /// for a page run.
    pub fn align_for(&self, size: usize) -> usize {
        match self.index(size) {
            Some(i) => self.align(i),
            None => PAGE_SIZE,
        }
    }
}

const _: () = assert!(MAXALLOCSAVE <= SLOTS << BIG_SHIFT);
const _: () = assert!(PAGE_SHIFT >= MIN_BUCKET_SHIFT);

#[cfg(test)]
mod tests {
    use super::*;

    const MODES: [SizeClasses; 2] = [SizeClasses::Pow2, SizeClasses::Fine];

    #[test]
    fn pow2_table_is_the_papers_buckets() {
        let t = SizeClasses::Pow2.table();
        assert_eq!(t.count(), 10);
        for i in 0..t.count() {
            assert_eq!(t.size(i), 16 << i);
            assert_eq!(t.align(i), 16 << i, "natural alignment");
            assert_eq!(t.cluster_pages(i), ((16 << i) / PAGE_SIZE).max(1));
        }
        assert_eq!(t.index(1), Some(0));
        assert_eq!(t.index(16), Some(0));
        assert_eq!(t.index(17), Some(1));
        assert_eq!(t.index(1024), Some(6));
        assert_eq!(t.index(1025), Some(7));
        assert_eq!(t.index(4097), Some(9));
        assert_eq!(t.index(8192), Some(9));
        assert_eq!(t.index(8193), None);
        assert_eq!(t.pieces(0), 256);
        assert_eq!(t.pieces(9), 1);
    }

    #[test]
    fn lookup_is_the_smallest_class_that_fits_for_every_size() {
        for mode in MODES {
            let t = mode.table();
            for size in 1..=MAXALLOCSAVE + 300 {
                let want = (0..t.count()).find(|&i| t.size(i) >= size);
                assert_eq!(t.index(size), want, "{mode:?} size {size}");
            }
        }
    }

    /// The fast path's lookup names `index`'s class with that class's size, for every size of
    /// both modes; 0 and every size past the tables have none (0 is `index`'s first class only).
    #[test]
    fn lookup_gives_the_class_and_its_size_for_every_size() {
        for mode in MODES {
            let t = mode.table();
            assert_eq!(t.lookup(0), None, "{mode:?}");
            assert_eq!(t.index(0), Some(0), "{mode:?}");
            for size in 1..=MAXALLOCSAVE + 300 {
                let want = t.index(size).map(|c| (c, t.size(c)));
                assert_eq!(t.lookup(size), want, "{mode:?} size {size}");
            }
            for size in [MAXALLOCSAVE + 1, usize::MAX / 2, usize::MAX - 1, usize::MAX] {
                assert_eq!(t.lookup(size), None, "{mode:?} size {size}");
            }
        }
    }

    /// The malloc fast path's classify ([`size_class_charge`]) is the class the magazines file
    /// an object of that size under and the charge [`class_charge`] gives that class: every size
    /// class, every page run with magazines, and none for 0 or a run too big to cache.
    #[test]
    fn size_class_charge_is_the_class_and_its_charge() {
        use crate::malloc::{class_charge, size_class, size_class_charge, MAG_LARGE_PAGES};
        for mode in MODES {
            let t = mode.table();
            let top = MAG_LARGE_PAGES * PAGE_SIZE;
            for size in (0..=top + 2 * PAGE_SIZE).chain([usize::MAX - 1, usize::MAX]) {
                let got = size_class_charge(t, size);
                let c = size_class(t, size);
                assert_eq!(got, c.map(|c| (c, class_charge(t, c))), "{mode:?} {size}");
                if let Some((c, charge)) = got {
                    assert!(
                        charge >= size && c < crate::malloc::NCLASSES,
                        "{mode:?} {size}"
                    );
                }
                assert_eq!(got.is_none(), size == 0 || size > top, "{mode:?} {size}");
            }
            // The page runs by their own arithmetic, not by the function under test.
            assert_eq!(
                size_class_charge(t, MAXALLOCSAVE + 1),
                Some((MAX_CLASSES + 2, 3 * PAGE_SIZE))
            );
            assert_eq!(
                size_class_charge(t, top),
                Some((MAX_CLASSES + MAG_LARGE_PAGES - 1, top))
            );
            assert_eq!(size_class_charge(t, 1), Some((0, 16)));
        }
    }

    #[test]
    fn fine_has_at_most_8_classes_per_doubling_and_16_byte_alignment() {
        let t = SizeClasses::Fine.table();
        assert!(t.count() <= MAX_CLASSES);
        for i in 0..t.count() {
            let s = t.size(i);
            let n = (0..t.count())
                .filter(|&j| t.size(j) * 2 > s && t.size(j) <= s)
                .count();
            assert!(n <= 8, "{s}");
            assert!(
                t.align(i) >= 16 && t.align(i).is_power_of_two() && s.is_multiple_of(t.align(i))
            );
        }
        // Alignment grows with the class's power-of-two factor.
        assert_eq!(t.count(), 39);
        assert_eq!(t.align(t.index(48).unwrap()), 16);
        assert_eq!(t.align(t.index(192).unwrap()), 64);
        assert_eq!(t.align(t.index(1536).unwrap()), 512);
        assert_eq!(t.align(t.index(4096).unwrap()), 4096);
    }

    /// What `TypedBox` and a Rust `Layout` rely on: a request whose size is a multiple of a power
    /// of two `a` (up to a page) gets a piece aligned to `a`, in both modes (a Rust type's size
    /// is a multiple of its alignment).
    #[test]
    fn a_size_that_is_a_multiple_of_a_power_of_two_gets_that_alignment() {
        for mode in MODES {
            let t = mode.table();
            for shift in MIN_BUCKET_SHIFT..=PAGE_SHIFT {
                let a = 1usize << shift;
                for size in (a..=MAXALLOCSAVE).step_by(a) {
                    let i = t.index(size).unwrap();
                    assert!(t.align(i) >= a, "{mode:?}: {size} B gets {}", t.align(i));
                }
            }
            for size in 1..=MAXALLOCSAVE {
                assert!(t.align_for(size) >= 16);
            }
        }
    }

    #[test]
    fn clusters_waste_little() {
        let t = SizeClasses::Fine.table();
        for i in 0..t.count() {
            let bytes = t.cluster_bytes(i);
            let waste = bytes - t.pieces(i) * t.size(i);
            // 1/16 where some cluster of at most 8 pages allows it, 1/8 everywhere.
            assert!(
                waste * 8 <= bytes,
                "class {} wastes {waste} of {bytes}",
                t.size(i)
            );
        }
    }

    /// Every offset of every cluster of both tables: the reciprocal gives the exact quotient.
    #[test]
    fn piece_index_is_exact_for_every_offset_of_every_cluster() {
        for mode in MODES {
            let t = mode.table();
            for i in 0..t.count() {
                let s = t.size(i);
                for off in 0..t.cluster_bytes(i) {
                    assert_eq!(
                        t.piece_index(i, off),
                        off / s,
                        "{mode:?} size {s} offset {off}"
                    );
                }
            }
        }
    }

    #[test]
    fn position_finds_the_piece_of_every_byte() {
        for mode in MODES {
            let t = mode.table();
            for i in 0..t.count() {
                let bytes = t.cluster_bytes(i);
                let base = 0x7f00_0000_0000 + 5 * bytes;
                for off in (0..bytes).step_by(8) {
                    let p = t.position(i, base + off);
                    assert_eq!(p.head, base >> PAGE_SHIFT);
                    assert_eq!(p.index, off / t.size(i));
                    assert_eq!(p.start, base + off / t.size(i) * t.size(i));
                    let start = off % t.size(i) == 0 && off / t.size(i) < t.pieces(i);
                    assert_eq!(t.is_piece_start(i, base + off), start);
                }
            }
        }
    }

    #[test]
    fn pieces_in_is_exact_up_to_512_kib() {
        for mode in MODES {
            let t = mode.table();
            for i in 0..t.count() {
                for bytes in (0..=EXACT_BYTES).step_by(7).chain([EXACT_BYTES]) {
                    assert_eq!(t.pieces_in(i, bytes), bytes / t.size(i));
                }
            }
        }
    }

    #[test]
    fn parse_accepts_the_two_names_only() {
        assert_eq!(SizeClasses::parse(b"pow2"), Some(SizeClasses::Pow2));
        assert_eq!(SizeClasses::parse(b"fine\n"), Some(SizeClasses::Fine));
        for bad in [&b""[..], b"Fine", b"fine\n\n", b" pow2", b"pow"] {
            assert_eq!(SizeClasses::parse(bad), None);
        }
        for mode in MODES {
            assert_eq!(SizeClasses::parse(mode.name().as_bytes()), Some(mode));
            assert_eq!(mode.table().mode(), mode);
        }
    }
}
