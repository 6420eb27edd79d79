// SPDX-License-Identifier: GPL-2.0

//! Power-of-two freelists and the bitmap of non-empty lists.
//!
//! Free segment sizes in `[2^k, 2^(k+1))` live on list `k`. A request of `size` is *guaranteed*
//! to fit any segment on a list `k` with `2^k >= size`, that is `k >= ceil(log2(size))`. Finding
//! the lowest such non-empty list is one mask and one count-trailing-zeros on the bitmap, so
//! instant-fit is constant time whatever the number of free segments.

use core::ptr::NonNull;

use super::seg::{Link, Seg};

/// Number of freelists (one per bit of `usize`).
pub(super) const NLISTS: usize = usize::BITS as usize;

/// Index of the list holding free segments of `size` (`size > 0`): `floor(log2(size))`.
#[inline]
pub(super) fn list_of(size: usize) -> usize {
    (usize::BITS - 1 - size.leading_zeros()) as usize
}

/// Lowest list whose every segment holds `size` (`size > 0`): `ceil(log2(size))`, may be `NLISTS`.
#[inline]
pub(super) fn guaranteed_list(size: usize) -> usize {
    // floor(log2(size - 1)) + 1 without a branch; size 1 gives list 0.
    (usize::BITS - (size - 1).leading_zeros()) as usize
}

/// The freelists of an arena.
///
/// # Invariants
///
/// Bit `k` of `map` is set iff `heads[k]` is `Some`; every segment on list `k` is free and its
/// size has `list_of(size) == k`; lists are doubly linked through `knext`/`kprev`, the head has
/// no `kprev`.
pub(super) struct FreeLists {
    pub(super) heads: [Link; NLISTS],
    pub(super) map: usize,
}

impl FreeLists {
    /// Empty freelists.
    pub(super) const fn new() -> Self {
        FreeLists {
            heads: [None; NLISTS],
            map: 0,
        }
    }

    /// Pushes free segment `seg` on the head of its list.
    ///
    /// # Safety
    ///
    /// `seg` is a valid tag of this arena, marked free and on no kind list.
    #[inline]
    pub(super) unsafe fn insert(&mut self, seg: NonNull<Seg>) {
        // SAFETY: valid tags (caller contract and type invariant).
        unsafe {
            let k = list_of((*seg.as_ptr()).size);
            let old = self.heads[k];
            (*seg.as_ptr()).knext = old;
            (*seg.as_ptr()).kprev = None;
            if let Some(o) = old {
                (*o.as_ptr()).kprev = Some(seg);
            }
            self.heads[k] = Some(seg);
            self.map |= 1 << k;
        }
    }

    /// Unlinks free segment `seg` from its list (its size must be the one it was inserted with).
    ///
    /// # Safety
    ///
    /// `seg` is on one of these lists.
    #[inline]
    pub(super) unsafe fn remove(&mut self, seg: NonNull<Seg>) {
        // SAFETY: valid tags (caller contract and type invariant).
        unsafe {
            let s = &mut *seg.as_ptr();
            let k = list_of(s.size);
            match s.kprev {
                Some(p) => (*p.as_ptr()).knext = s.knext,
                None => self.heads[k] = s.knext,
            }
            if let Some(n) = s.knext {
                (*n.as_ptr()).kprev = s.kprev;
            }
            s.knext = None;
            s.kprev = None;
            if self.heads[k].is_none() {
                self.map &= !(1 << k);
            }
        }
    }

    /// Gives free segment `seg` (on a list) the extent `[start, start + size)`, moving it to
    /// another list only if `size` belongs to another one.
    ///
    /// # Safety
    ///
    /// `seg` is on one of these lists; `size > 0` and `start + size` does not overflow.
    #[inline]
    pub(super) unsafe fn set_extent(&mut self, seg: NonNull<Seg>, start: usize, size: usize) {
        // SAFETY: valid tags (caller contract and type invariant).
        unsafe {
            let s = seg.as_ptr();
            let old = (*s).size;
            // Same highest bit (same list) iff the differing bits are below the common ones.
            if old ^ size < old & size {
                (*s).start = start;
                (*s).size = size;
            } else {
                self.remove(seg);
                (*s).start = start;
                (*s).size = size;
                self.insert(seg);
            }
        }
    }

    /// Head of the lowest non-empty list whose every segment holds `size` (`size > 0`).
    ///
    /// The lists that guarantee a fit are those with `2^k > size - 1`: above the highest set
    /// bit `f` of `size - 1` (all of them for size 1), an all-ones word shifted by `f + 1` (in
    /// two steps, so `f = 63` leaves no list instead of overflowing the shift).
    #[inline]
    pub(super) fn first_guaranteed(&self, size: usize) -> Link {
        let fits = match (size - 1).checked_ilog2() {
            Some(f) => (usize::MAX << f) << 1,
            None => usize::MAX,
        };
        let m = self.map & fits;
        if m == 0 {
            return None;
        }
        // `m != 0`, so the index is below NLISTS; the mask only spares a bounds check.
        self.heads[m.trailing_zeros() as usize & (NLISTS - 1)]
    }

    /// Lowest non-empty list at index `>= k`, if any.
    #[inline]
    pub(super) fn first_nonempty_from(&self, k: usize) -> Option<usize> {
        // A shift by NLISTS or more leaves no list.
        let above = u32::try_from(k)
            .ok()
            .and_then(|k| usize::MAX.checked_shl(k))
            .unwrap_or(0);
        let m = self.map & above;
        (m != 0).then(|| m.trailing_zeros() as usize)
    }
}
