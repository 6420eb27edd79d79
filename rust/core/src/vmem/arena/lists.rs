// SPDX-License-Identifier: GPL-2.0

//! Boundary tags and the lists they live on: the tag reserve, the address-ordered segment list, the power-of-two free lists and the allocated-segment hash.

use super::*;

impl<P: TagPageSource> Arena<P> {
    /// Tops up the tag reserve (and the hash table) before a mutation.
    #[inline]
    pub(super) fn populate(&mut self, need_hash: bool) -> Result<(), VmemError> {
        if self.tags.nfree >= TAG_RESERVE && (!need_hash || self.hash.is_ready()) {
            return Ok(());
        }
        self.populate_slow(need_hash)
    }

    #[cold]
    fn populate_slow(&mut self, need_hash: bool) -> Result<(), VmemError> {
        let before = self.tags.npages;
        let r = self.tags.reserve(&mut self.pages, TAG_RESERVE);
        self.stats.populate += self.tags.npages - before;
        if r.is_err() || (need_hash && !self.hash.ensure(&mut self.pages)) {
            self.stats.populate_fail += 1;
            return Err(VmemError::NoTags);
        }
        Ok(())
    }

    /// Takes a tag from the (topped-up) reserve.
    #[inline]
    pub(super) fn get_tag(&mut self) -> Result<NonNull<Seg>, VmemError> {
        self.tags.get().ok_or(VmemError::NoTags)
    }

    /// Returns an unlinked tag; moves the rotor to `replacement` if it pointed there.
    #[inline]
    pub(super) fn put_tag(&mut self, t: NonNull<Seg>, replacement: Link) {
        if self.rotor == Some(t) {
            self.rotor = replacement;
        }
        self.tags.put(t);
    }

    /// Links `new` into the address list after `prev` (`None` = at the head).
    ///
    /// # Safety
    ///
    /// `new` is a valid tag on no address list; `prev` is on the list.
    #[inline]
    pub(super) unsafe fn insert_after(&mut self, prev: Link, new: NonNull<Seg>) {
        // SAFETY: valid tags (contract and type invariant), distinct.
        unsafe {
            let next = match prev {
                Some(p) => tag(p).anext,
                None => self.ahead,
            };
            tag_mut(new).aprev = prev;
            tag_mut(new).anext = next;
            match prev {
                Some(p) => tag_mut(p).anext = Some(new),
                None => self.ahead = Some(new),
            }
            match next {
                Some(n) => tag_mut(n).aprev = Some(new),
                None => self.atail = Some(new),
            }
        }
    }

    /// Links `new` into the address list right before `t`.
    ///
    /// # Safety
    ///
    /// `new` is a valid tag on no address list; `t` is on the list.
    #[inline]
    pub(super) unsafe fn insert_before(&mut self, t: NonNull<Seg>, new: NonNull<Seg>) {
        // SAFETY: valid tags (contract and type invariant), distinct.
        unsafe {
            let prev = tag(t).aprev;
            tag_mut(new).aprev = prev;
            tag_mut(new).anext = Some(t);
            tag_mut(t).aprev = Some(new);
            match prev {
                Some(p) => tag_mut(p).anext = Some(new),
                None => self.ahead = Some(new),
            }
        }
    }

    /// Unlinks `t` from the address list (its own links are left stale: it is about to go
    /// back to the tag pool, whose users write every field they rely on).
    ///
    /// # Safety
    ///
    /// `t` is on the address list.
    #[inline]
    pub(super) unsafe fn unlink(&mut self, t: NonNull<Seg>) {
        // SAFETY: valid tags (contract and type invariant).
        unsafe {
            let (prev, next) = (tag(t).aprev, tag(t).anext);
            match prev {
                Some(p) => tag_mut(p).anext = next,
                None => self.ahead = next,
            }
            match next {
                Some(n) => tag_mut(n).aprev = prev,
                None => self.atail = prev,
            }
        }
    }
}
