// SPDX-License-Identifier: GPL-2.0

//! The object-start tests of the magazine classes: whether an address in a cluster of a class
//! (or in a run's first page) is where an object starts, with one `and` and one multiply by
//! operands loaded from the table, then a test of the low bits and one compare: no division, no
//! rotate, no variable shift.
//!
//! For a piece size `d = m * 2^k` (`m` odd, `k <= 13`: `d <= 8 KiB`) and `n <= 256` pieces per
//! cluster, with `inv` the inverse of `m` modulo `2^32` and `M = inv * 2^(13-k) (mod 2^32)`, an
//! offset `x` in the cluster (below `2^15`, the largest cluster, 32 KiB; clusters are naturally
//! aligned, so `x` is the address and the cluster size minus one) starts a piece iff
//! `p = x * M (mod 2^32)` has its low 13 bits clear and `p < n * 2^13`, that is iff
//! `rotr32(p, 13) < n` (Granlund and Montgomery's divisibility test, bounded, with the rotation
//! by 13 for every class):
//!
//! * `d` divides `x = q * d`: `p = q * 2^13 (mod 2^32)`, and `q * 2^13 < 2^32`, so `p >> 13` is
//!   `q`, the piece index, which is below `n` unless `x` is in the cluster's tail.
//! * `2^k` does not divide `x = 2^j * o` (`o` odd, `j < k`): `p` is `2^(13-k+j)` times an odd
//!   number, so one of its low 13 bits is set.
//! * `2^k` divides `x` but `m` does not divide `x' = x >> k`: `p >> 13 = x' * inv (mod 2^19)`;
//!   were it `q < n <= 256`, then `x' = q * m (mod 2^19)`, and both sides are below `2^19`
//!   (`x' < 2^11`, `q * m < 2^8 * 2^9`), so `x' = q * m`: a contradiction.
//!
//! Why no rotate: QEMU's TCG computes every flag of a rotate with a helper call (a rotate by `k`
//! from the table, measured, made `free` slower than the reciprocal test it replaced, with fewer
//! instructions: `Documentation/performance.rst`, *Page codes*).
//!
//! The unit tests check every offset of every size and cluster against the division, and the
//! page code's tests every address of every cluster of both class tables.

/// Entries of a table: one per magazine class (`pieces.rs`: the size classes, then from
/// `MAX_CLASSES` on the page runs), and none for the codes above them (a page code's 7-bit class
/// field names `NCLASSES` for a run too big for a magazine).
pub const START_TESTS: usize = 128;

/// The object-start tests of every magazine class of a class table ([`StartTests::starts_at`]).
///
/// # Invariants
///
/// For every entry: `mask + 1` is the cluster's size (a power of two of at most 32 KiB); `mul` is
/// `inv * 2^(13-k) (mod 2^32)` for the class's object size `d = m * 2^k` (at most 8 KiB; `m` odd,
/// `inv * m = 1 (mod 2^32)`); `limit` is `2^13` times the number of objects of a cluster (at most
/// 256; 0: no object starts anywhere, a class the table does not have).
pub struct StartTests {
    mask: [u32; START_TESTS],
    mul: [u32; START_TESTS],
    limit: [u32; START_TESTS],
}

/// The fixed rotation of the test: `log2` of the largest object size.
const ROT: u32 = 13;

/// The inverse of odd `m` modulo `2^32` (Newton's iteration: each step doubles the correct low
/// bits, from the 3 that `m` itself has).
const fn odd_inverse(m: u32) -> u32 {
    let mut x = m;
    let mut i = 0;
    while i < 4 {
        x = x.wrapping_mul(2u32.wrapping_sub(m.wrapping_mul(x)));
        i += 1;
    }
    x
}

impl StartTests {
    /// No object starts anywhere, for any class.
    pub const fn none() -> StartTests {
        StartTests {
            mask: [0; START_TESTS],
            mul: [1; START_TESTS],
            limit: [0; START_TESTS],
        }
    }

    /// Sets class `c`'s test: `pieces` objects of `size` bytes (a multiple of 16, at most
    /// 8 KiB) from the start of a cluster of `cluster` bytes (a power of two of at most 32 KiB,
    /// at most 256 pieces): panics otherwise (at compile time for the static class tables).
    pub const fn set(&mut self, c: usize, size: usize, pieces: usize, cluster: usize) {
        assert!(
            size >= 16 && size <= 1 << ROT,
            "object sizes the test is exact for"
        );
        assert!(
            cluster.is_power_of_two() && cluster <= 1 << 15,
            "cluster sizes"
        );
        assert!(
            pieces >= 1 && pieces <= 256 && pieces * size <= cluster,
            "objects per cluster"
        );
        let twos = size.trailing_zeros();
        let inv = odd_inverse((size >> twos) as u32);
        assert!(inv.wrapping_mul((size >> twos) as u32) == 1);
        self.mask[c] = (cluster - 1) as u32;
        self.mul[c] = inv.wrapping_mul(1 << (ROT - twos));
        self.limit[c] = (pieces as u32) << ROT;
    }

    /// Whether `addr` starts an object of class `c` (taken modulo [`START_TESTS`], so no bounds
    /// check), `addr` being in a cluster of that class (see the module documentation).
    #[inline(always)]
    pub fn starts_at(&self, c: usize, addr: usize) -> bool {
        let c = c % START_TESTS;
        let p = (addr as u32 & self.mask[c]).wrapping_mul(self.mul[c]);
        p & ((1 << ROT) - 1) == 0 && p < self.limit[c]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_inverses_are_inverses() {
        for m in (1..1 << 16).step_by(2) {
            assert_eq!(odd_inverse(m).wrapping_mul(m), 1, "{m}");
        }
    }

    #[test]
    fn every_size_and_offset_agrees_with_the_division() {
        let mut t = StartTests::none();
        for size in (16..=1 << 13).step_by(16) {
            for cluster_shift in 0..=3 {
                let bytes = 4096usize << cluster_shift;
                let pieces = bytes / size;
                if pieces == 0 || pieces > 256 {
                    continue;
                }
                t.set(5, size, pieces, bytes);
                // Two clusters: the offset is the address modulo the cluster.
                for addr in 0x10_0000..0x10_0000 + 2 * bytes {
                    let x = addr % bytes;
                    let want = x.is_multiple_of(size) && x / size < pieces;
                    assert_eq!(t.starts_at(5, addr), want, "size {size} offset {x}");
                    assert_eq!(t.starts_at(5 + START_TESTS, addr), want);
                }
            }
        }
    }

    #[test]
    fn no_start_in_none() {
        let t = StartTests::none();
        for c in 0..START_TESTS {
            for addr in 0..1 << 15 {
                assert!(!t.starts_at(c, addr));
            }
        }
    }
}
