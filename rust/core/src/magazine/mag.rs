// SPDX-License-Identifier: GPL-2.0

//! One magazine: a small stack of *rounds* (addresses of free objects of one size class), with
//! a capacity that the depot chooses when the magazine is (re)loaded.
//!
//! The core never allocates: magazines are memory the caller provides (the kernel glue takes them
//! from `kmalloc`, host tests from `Box`) and hands over as a [`MagBox`], an owning pointer that
//! the type system tracks like a `Box` so that a magazine is never in two places at once.

use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use super::depot::MAG_START;
use super::trim::fill_rounds;

/// Rounds in the biggest magazine: with the two header words a magazine is 64 words (512 bytes on
/// 64-bit), one `kmalloc-512` object.
pub const MAG_ROUNDS: usize = 62;

/// A magazine.
///
/// # Invariants
///
/// `len <= cap <= MAG_ROUNDS`; `rounds[..len]` are the rounds, the rest is garbage.
#[repr(C)]
pub struct Magazine {
    /// Link of the depot list the magazine sits on (owned by that list).
    pub(super) next: Option<MagBox>,
    len: u32,
    cap: u32,
    rounds: [usize; MAG_ROUNDS],
}

impl Magazine {
    /// An empty magazine holding at most `cap` rounds (clamped to `1..=MAG_ROUNDS`).
    pub const fn new(cap: usize) -> Self {
        Self {
            next: None,
            len: 0,
            cap: clamp_cap(cap),
            rounds: [0; MAG_ROUNDS],
        }
    }

    /// Rounds held.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Capacity in rounds.
    pub fn cap(&self) -> usize {
        self.cap as usize
    }

    /// Whether the magazine holds no round.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the magazine holds `cap` rounds.
    pub fn is_full(&self) -> bool {
        self.len >= self.cap
    }

    /// Changes the capacity (clamped to `1..=MAG_ROUNDS` and to at least the rounds held).
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = clamp_cap(cap).max(self.len);
    }

    /// Takes the last round pushed.
    #[inline(always)]
    pub fn pop(&mut self) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: `len < cap <= MAG_ROUNDS` before the decrement (type invariant), so the index
        // is in bounds (no bounds check on the fast path).
        Some(unsafe { *self.rounds.get_unchecked(self.len as usize) })
    }

    /// Adds a round; gives it back if the magazine is full.
    #[inline(always)]
    pub fn push(&mut self, round: usize) -> Result<(), usize> {
        if self.is_full() {
            return Err(round);
        }
        // SAFETY: not full, so `len < cap <= MAG_ROUNDS` (type invariant): in bounds.
        unsafe { *self.rounds.get_unchecked_mut(self.len as usize) = round };
        self.len += 1;
        Ok(())
    }

    /// The rounds held.
    pub fn rounds(&self) -> &[usize] {
        &self.rounds[..self.len as usize]
    }

    /// Room for rounds past the ones held, up to the capacity: write `n` rounds into the start of
    /// the slice, then call [`Magazine::commit`]`(n)`.
    pub fn spare(&mut self) -> &mut [usize] {
        let (len, cap) = (self.len as usize, self.cap as usize);
        &mut self.rounds[len..cap]
    }

    /// Room for a fill from the layer below: the first [`MAG_START`] slots of
    /// [`Magazine::spare`] (all of it if it is shorter). A magazine reaches its capacity through
    /// frees; a fill takes at most one first magazine's worth of objects.
    pub fn fill_room(&mut self) -> &mut [usize] {
        self.fill_room_upto(MAG_START)
    }

    /// Room for a fill of objects of `object_bytes` bytes: at most [`fill_rounds`] of them (one
    /// page's worth, at least one, at most [`MAG_START`]) within [`Magazine::spare`].
    pub fn fill_room_for(&mut self, object_bytes: usize) -> &mut [usize] {
        self.fill_room_upto(fill_rounds(object_bytes))
    }

    fn fill_room_upto(&mut self, most: usize) -> &mut [usize] {
        let s = self.spare();
        let n = s.len().min(most);
        &mut s[..n]
    }

    /// Counts `n` rounds written through [`Magazine::spare`] (at most its length).
    pub fn commit(&mut self, n: usize) {
        self.len = (self.len as usize + n).min(self.cap as usize) as u32;
    }

    /// Empties the magazine, returning the rounds it held (to give them back to the layer below).
    pub fn take_rounds(&mut self) -> &[usize] {
        let n = self.len as usize;
        self.len = 0;
        &self.rounds[..n]
    }
}

const fn clamp_cap(cap: usize) -> u32 {
    if cap == 0 {
        1
    } else if cap > MAG_ROUNDS {
        MAG_ROUNDS as u32
    } else {
        cap as u32
    }
}

/// An owning pointer to a [`Magazine`] in memory the caller supplied (`repr(transparent)` over a
/// `NonNull`, so `Option<MagBox>` is one word and all-zero bytes are `None`).
///
/// # Invariants
///
/// The pointer is valid for reads and writes of a `Magazine`, aligned, and no other `MagBox` or
/// reference to it exists while this one lives.
#[repr(transparent)]
pub struct MagBox(NonNull<Magazine>);

// SAFETY: a `MagBox` owns its magazine exclusively (invariant), like a `Box`; the rounds are plain
// addresses.
unsafe impl Send for MagBox {}

impl MagBox {
    /// Takes ownership of the magazine at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for reads and writes of an initialised `Magazine`, aligned, and owned by
    /// nobody else until it is given back with [`MagBox::into_raw`].
    pub unsafe fn from_raw(ptr: NonNull<Magazine>) -> Self {
        Self(ptr)
    }

    /// Gives up ownership (for the caller to free the memory).
    pub fn into_raw(self) -> NonNull<Magazine> {
        let p = self.0;
        core::mem::forget(self);
        p
    }
}

impl core::fmt::Debug for MagBox {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "MagBox({}/{} rounds)", self.len(), self.cap())
    }
}

impl Drop for MagBox {
    fn drop(&mut self) {
        // Dropping a magazine would leak its memory and its rounds: every path hands magazines
        // back explicitly. A debug build says so.
        debug_assert!(false, "magazine dropped instead of being returned");
    }
}

impl Deref for MagBox {
    type Target = Magazine;

    fn deref(&self) -> &Magazine {
        // SAFETY: valid and exclusively owned (type invariant).
        unsafe { self.0.as_ref() }
    }
}

impl DerefMut for MagBox {
    fn deref_mut(&mut self) -> &mut Magazine {
        // SAFETY: valid and exclusively owned (type invariant).
        unsafe { self.0.as_mut() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_pop_is_a_stack_bounded_by_cap() {
        let mut m = Magazine::new(3);
        assert!(m.is_empty());
        for r in [16, 32, 48] {
            m.push(r).unwrap();
        }
        assert!(m.is_full());
        assert_eq!(m.push(64), Err(64));
        assert_eq!(m.pop(), Some(48));
        assert_eq!(m.rounds(), &[16, 32]);
        m.set_cap(1);
        assert_eq!(m.cap(), 2, "capacity never drops below the rounds held");
        assert_eq!(m.take_rounds(), &[16, 32]);
        assert_eq!(m.pop(), None);
    }

    #[test]
    fn caps_are_clamped() {
        assert_eq!(Magazine::new(0).cap(), 1);
        assert_eq!(Magazine::new(1000).cap(), MAG_ROUNDS);
    }

    #[test]
    fn spare_and_commit_fill_in_place() {
        let mut m = Magazine::new(4);
        m.push(1).unwrap();
        let s = m.spare();
        assert_eq!(s.len(), 3);
        s[0] = 2;
        s[1] = 3;
        m.commit(2);
        assert_eq!(m.rounds(), &[1, 2, 3]);
    }

    #[test]
    fn a_fill_can_take_less_than_the_room_left() {
        let mut m = Magazine::new(60);
        m.push(1).unwrap();
        assert_eq!(m.fill_room().len(), MAG_START);
        let s = m.fill_room();
        s[0] = 2;
        s[1] = 3;
        m.commit(2);
        assert_eq!(m.rounds(), &[1, 2, 3]);
        assert_eq!(m.cap(), 60, "the capacity stays for the frees");
        m.set_cap(4);
        assert_eq!(m.fill_room().len(), 1, "never past the capacity");
    }
}
