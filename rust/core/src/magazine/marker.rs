// SPDX-License-Identifier: GPL-2.0

//! The mark of a round: what tells, in one load and without any lookup, that a piece handed to
//! `free` sits in a magazine (a double free).
//!
//! A round's first word holds its own address XORed with a [`RoundKey`] while it is in a
//! magazine, and the word is cleared when the round is handed out. `free` reads the word: no mark
//! means the piece is in no magazine (every round carries the mark), so the common case costs one
//! load and, on the way in, one store.
//!
//! The key is a per-boot secret ([`RoundKey::from_random`]: 60 random bits from
//! `get_random_u64()` at module load, the low nibble forced to 3), so a mark is a verdict: a first
//! word equal to the mark is a double free, with no search of the magazines. A live piece carries
//! the mark only if its client wrote it: by chance, with probability 2^-60 per free, or because
//! the client learnt the key (a use-after-free read of a round's first word); either way only
//! that client's own free is refused (the piece leaks and the refusal is reported), and no piece
//! can be handed out twice. The low nibble 3 keeps the residue that matters in practice at zero:
//! a mark never equals zero or a 16-byte-aligned pointer (an empty `list_head`, a pointer to
//! another object), whatever the random bits. The bucket free list's links (module
//! `malloc::bucket`) use another key, whose decoded links end in another nibble, so a piece on the
//! list is never taken for a round.
//!
//! The key is passed to every call (a module keeps its per-boot key in a [`KeyCell`] and reads it
//! with one load), so that host tests run with several keys side by side.

use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The key of the round mark: a word whose low nibble is 3.
///
/// # Invariants
///
/// `self.0 & 0xf == 3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub struct RoundKey(usize);

impl RoundKey {
    /// A key with no secret, for a module before its per-boot key is set and for host tools:
    /// the key every round used before the per-boot one (a format, like the free-list link key).
    pub const PUBLIC: Self = Self::from_random(0x5be0_cd19_137e_2173);

    /// The key made of `random` (`get_random_u64()` at module load): its bits but the low
    /// nibble, which is forced to 3 (60 random bits).
    pub const fn from_random(random: u64) -> Self {
        Self((random as usize & !0xf) | 3)
    }

    /// The key as a word.
    pub const fn get(self) -> usize {
        self.0
    }

    /// The mark a round at `addr` carries.
    #[inline(always)]
    pub const fn mark_of(self, addr: usize) -> usize {
        addr ^ self.0
    }
}

/// Where a module keeps its per-boot [`RoundKey`]: set once (at module load, before any piece can
/// be a round), read with one plain load on the fast paths.
///
/// # Invariants
///
/// The word always holds a [`RoundKey`]'s value.
pub struct KeyCell(AtomicUsize);

impl KeyCell {
    /// A cell holding [`RoundKey::PUBLIC`] until [`KeyCell::set`].
    pub const fn new() -> Self {
        Self(AtomicUsize::new(RoundKey::PUBLIC.0))
    }

    /// Replaces the key. Only while no round exists: a round marked with the old key would no
    /// longer be recognised (its double free would go unnoticed).
    pub fn set(&self, key: RoundKey) {
        self.0.store(key.0, Relaxed);
    }

    /// The key.
    #[inline(always)]
    pub fn get(&self) -> RoundKey {
        RoundKey(self.0.load(Relaxed))
    }
}

impl Default for KeyCell {
    fn default() -> Self {
        Self::new()
    }
}

/// Marks `addr` as a round under `key`.
///
/// # Safety
///
/// `addr` must be word-aligned and writable (a free piece the caller owns).
#[inline]
pub unsafe fn mark(addr: usize, key: RoundKey) {
    // SAFETY: the caller's guarantee.
    unsafe { (addr as *mut usize).write(key.mark_of(addr)) }
}

/// Clears the mark of a round being handed out.
///
/// # Safety
///
/// As [`mark`].
#[inline]
pub unsafe fn unmark(addr: usize) {
    // SAFETY: the caller's guarantee.
    unsafe { (addr as *mut usize).write(0) }
}

/// Whether `addr` carries the mark of a round under `key` (then it sits in a magazine, unless its
/// client wrote the mark: see the module documentation).
///
/// # Safety
///
/// `addr` must be word-aligned and readable.
#[inline]
pub unsafe fn is_marked(addr: usize, key: RoundKey) -> bool {
    // SAFETY: the caller's guarantee.
    unsafe { (addr as *const usize).read() == key.mark_of(addr) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys of every shape: the public one, random-looking ones, and the edges of the random
    /// bits (all zero, all one, each nibble value in the low bits, the top bit alone).
    fn keys() -> impl Iterator<Item = RoundKey> {
        [
            0x5be0_cd19_137e_2173_u64,
            0,
            u64::MAX,
            0xf,
            0x3,
            0x10,
            1 << 63,
            0x9e37_79b9_7f4a_7c15,
            0xdead_beef_cafe_f00d,
        ]
        .into_iter()
        .chain((0..16).map(|n| 0x0123_4567_89ab_cde0 | n))
        .map(RoundKey::from_random)
        .chain([RoundKey::PUBLIC])
    }

    #[test]
    fn the_low_nibble_is_always_3_and_the_other_bits_are_the_random_ones() {
        for r in [0u64, u64::MAX, 0xf, 0x10, 1 << 63, 0x0123_4567_89ab_cdef] {
            let k = RoundKey::from_random(r);
            assert_eq!(k.get() & 0xf, 3);
            assert_eq!(k.get() & !0xf, r as usize & !0xf);
        }
        assert_eq!(RoundKey::PUBLIC.get(), 0x5be0_cd19_137e_2173);
    }

    #[test]
    fn mark_round_trip_under_every_key() {
        for key in keys() {
            let mut buf = [0usize; 2];
            let a = buf.as_mut_ptr() as usize;
            // SAFETY: `a` is a live, aligned local buffer.
            unsafe {
                assert!(!is_marked(a, key));
                mark(a, key);
                assert!(is_marked(a, key));
                assert!(!is_marked(a + 8, key), "a mark is tied to its address");
                unmark(a);
                assert!(!is_marked(a, key));
            }
        }
    }

    #[test]
    fn a_mark_under_one_key_is_no_mark_under_another() {
        let all: [RoundKey; 4] = [
            RoundKey::PUBLIC,
            RoundKey::from_random(0),
            RoundKey::from_random(u64::MAX),
            RoundKey::from_random(0x9e37_79b9_7f4a_7c15),
        ];
        let mut buf = [0usize; 1];
        let a = buf.as_mut_ptr() as usize;
        for k in all {
            // SAFETY: `a` is a live, aligned local buffer.
            unsafe { mark(a, k) };
            for other in all {
                // SAFETY: as above.
                assert_eq!(unsafe { is_marked(a, other) }, k == other);
            }
        }
    }

    #[test]
    fn zero_and_aligned_pointers_are_never_marks_under_any_key() {
        for key in keys() {
            for a in (0..64usize)
                .map(|i| 0x1000 + i * 16)
                .chain([0, usize::MAX & !0xf])
            {
                assert_ne!(key.mark_of(a), 0, "zeroed memory is no mark");
                for v in (0..64usize).map(|i| i * 16).chain([a, usize::MAX & !0xf]) {
                    assert_ne!(v, key.mark_of(a), "an aligned pointer is no mark");
                }
            }
        }
    }

    #[test]
    fn a_key_cell_holds_the_public_key_until_set_then_the_one_set() {
        let cell = KeyCell::new();
        assert_eq!(cell.get(), RoundKey::PUBLIC);
        for key in keys() {
            cell.set(key);
            assert_eq!(cell.get(), key);
        }
        assert_eq!(KeyCell::default().get(), RoundKey::PUBLIC);
    }
}
