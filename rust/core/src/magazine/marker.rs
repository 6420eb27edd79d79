// SPDX-License-Identifier: GPL-2.0

//! The mark of a round: what tells, in one load and without any lookup, that a piece handed to
//! `free` may already sit in a magazine (a double free).
//!
//! A round's first word holds its own address XORed with [`ROUND_KEY`] while it is in a magazine,
//! and the word is cleared when the round is handed out. `free` reads the word: no mark means the
//! piece is in no magazine (every round carries the mark), so the common case costs one load and,
//! on the way in, one store. A mark is checked exactly by the caller (a search of the magazines,
//! on the slow path), because a live piece can carry the pattern if the client wrote it: the key's
//! low nibble (3) makes a stored mark never equal a 16-byte-aligned pointer or zero, so neither
//! a client's own pointers nor zeroed memory look like a mark, and the search keeps the verdict
//! exact in the residual case. The bucket free list's links (module `malloc::bucket`) use another
//! key, so a piece on the list is never taken for a round.

/// Key of the round mark. Not a secret (a format, like the free-list link key).
pub const ROUND_KEY: usize = 0x5be0_cd19_137e_2173_u64 as usize;

/// Marks `addr` as a round.
///
/// # Safety
///
/// `addr` must be word-aligned and writable (a free piece the caller owns).
#[inline]
pub unsafe fn mark(addr: usize) {
    // SAFETY: the caller's guarantee.
    unsafe { (addr as *mut usize).write(addr ^ ROUND_KEY) }
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

/// Whether `addr` carries the mark of a round (then it may be in a magazine: check exactly).
///
/// # Safety
///
/// `addr` must be word-aligned and readable.
#[inline]
pub unsafe fn is_marked(addr: usize) -> bool {
    // SAFETY: the caller's guarantee.
    unsafe { (addr as *const usize).read() == addr ^ ROUND_KEY }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_round_trip() {
        let mut buf = [0usize; 2];
        let a = buf.as_mut_ptr() as usize;
        // SAFETY: `a` is a live, aligned local buffer.
        unsafe {
            assert!(!is_marked(a));
            mark(a);
            assert!(is_marked(a));
            assert!(!is_marked(a + 8), "a mark is tied to its address");
            unmark(a);
            assert!(!is_marked(a));
        }
    }

    #[test]
    fn aligned_pointers_are_never_marks() {
        for a in (0..64usize).map(|i| 0x1000 + i * 16) {
            for v in (0..64usize).map(|i| i * 16) {
                assert_ne!(v, a ^ ROUND_KEY);
            }
        }
        assert_eq!(ROUND_KEY & 0xf, 3);
    }
}
