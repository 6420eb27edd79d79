// SPDX-License-Identifier: GPL-2.0

//! Is a bucket piece free? Answered in O(1), without DIAGNOSTIC and without any extra memory, from
//! the free list's own links (stored in the free pieces) and the page map.
//!
//! This is what catches a double free when DIAGNOSTIC is off (DIAGNOSTIC answers the same question
//! from its side table, and adds the type of the last owner).
//!
//! # The check
//!
//! Let `c` be the cluster of piece `p` of bucket `i`, with `free` free pieces by its usage record.
//!
//! * `free == 0`: nothing in `c` is free, so `p` is live (the common case: no memory is read).
//! * `free == pieces per cluster`: everything in `c` is free, so `p` is free.
//! * Otherwise read `p`'s would-be links `next` and `prev` (decoded, see `bucket`). Each must be 0
//!   or *plausible*: the start of a piece of class `i` (found without dividing, module `classes`), in a cluster whose record says bucket `i` with at
//!   least one free piece, and not `p` itself. Only plausible links are followed (the page map
//!   vouches that they are pieces of ours, so reading them is safe). `p` is on the list iff
//!   `prev`'s `next` (the bucket head when `prev` is 0) is `p` and `next`'s `prev` is `p` (or `next`
//!   is 0).
//!
//! # Why it is exact
//!
//! A listed piece passes: its links are the list's own.
//!
//! A live piece fails, except in one case that needs client data in the allocator's own link
//! format. Suppose live `p` passed. If `prev` is 0, the head is `p`, but the head is always a
//! listed piece. So `prev = g` is a piece of bucket `i` whose first word decodes to `p`. If `g` were
//! listed, its `next` would be a genuine link, and genuine links only point at listed pieces; so
//! `g` is live too, and the client itself stored in `g` and `p` words that decode to each other's
//! addresses. Those words are not plain pointers: a link is stored XORed with its own address and
//! a key whose low nibble is 5, so a 16-byte-aligned pointer (what a client's own doubly linked
//! list of same-sized nodes holds — the pattern that would otherwise pass) never decodes to a
//! piece; nor does zeroed memory. The residual case is a client that writes encoded links on
//! purpose.
//!
//! Stale links of pieces that left the list cannot fool it either: a piece leaves the list only
//! as its head (its `prev` is 0 and the head is now another piece) or with its whole cluster
//! (given back to kmem, no record any more).

use super::allocator::Malloc;
use super::bucket::{Bucket, Parked};
use super::kmem::KmemPages;
use super::params::PAGE_SHIFT;
use super::segregate::BucketId;
use super::usage::Usage;

impl<K: KmemPages> Malloc<K> {
    /// Whether link `v` read from piece `p` of bucket `b` (in the cluster starting at page
    /// `p_head`, which has a free piece) could belong to the free list: 0, or a piece of bucket `b`
    /// (its class and owner) other than `p`, in a cluster with a free piece.
    fn plausible_link(&self, b: BucketId, p: usize, p_head: usize, v: usize) -> bool {
        if v == 0 {
            return true;
        }
        let i = b.class;
        let pos = self.classes.position(i, v);
        if v == p || pos.start != v || pos.index >= self.classes.pieces(i) {
            return false;
        }
        let head = pos.head;
        // A neighbour in `p`'s own cluster needs no lookup: its record is `p`'s.
        head == p_head
            || matches!(self.usage.get(head), Usage::Bucket { index, owner, free }
                if index == i && owner == b.owner && free > 0)
    }

    /// Whether piece `p` of bucket `b`, in the cluster starting at page `head` whose record counts
    /// `free` free pieces, is on the bucket's free list (module documentation: O(1), exact).
    pub(super) fn is_listed(&self, b: BucketId, p: usize, head: usize, free: usize) -> bool {
        if free == 0 {
            return false;
        }
        if free == self.classes.pieces(b.class) {
            return true;
        }
        // SAFETY: `p` was located through the page map as a piece of a cluster of bucket `b`.
        let (next, prev) = unsafe { (Bucket::next(p), Bucket::prev(p)) };
        if !self.plausible_link(b, p, head, next) || !self.plausible_link(b, p, head, prev) {
            return false;
        }
        let from_prev = if prev == 0 {
            self.bucket(b).head
        } else {
            // SAFETY: `prev` is a piece of a cluster of ours (plausible_link checked the map).
            unsafe { Bucket::next(prev) }
        };
        // SAFETY: as above, for `next`.
        from_prev == p && (next == 0 || unsafe { Bucket::prev(next) } == p)
    }

    /// Validates the `next` link of bucket `i`'s head (non-empty list) before it is popped, in
    /// O(1), as SLUB's hardened free list does: it must be 0 exactly when the head is the last
    /// listed piece, else the start of a piece of bucket `i` in a cluster of bucket `i` with a
    /// free piece (one page-map lookup), whose `prev` link points back at the head. A client that
    /// wrote over a freed piece fails this; the bad link is counted, remembered for the glue to
    /// report, and cut: the head becomes the last piece, and the pieces after it are counted
    /// `lost` (still free in their clusters' records, never handed out; the bucket then gives no
    /// cluster back, since giving one back would unlink its lost pieces through their links).
    pub(super) fn check_head_link(&mut self, id: BucketId) {
        let b = self.bucket(id);
        let h = b.head;
        let listed = b.listed(self.classes.pieces(id.class));
        // SAFETY: `h` is the head of bucket `id`'s list, a piece of a cluster of ours.
        let next = unsafe { Bucket::next(h) };
        let good = if next == 0 {
            listed == 1
        } else {
            let h_head = self.classes.position(id.class, h).head;
            listed > 1
                && self.plausible_link(id, h, h_head, next)
                // SAFETY: `next` is a piece of a cluster of ours (plausible_link checked the map).
                && unsafe { Bucket::prev(next) } == h
        };
        if good {
            return;
        }
        let bucket = self.bucket_mut(id);
        // SAFETY: the list is non-empty.
        unsafe { bucket.cut_after_head() };
        let lost = listed - 1;
        bucket.totalfree -= lost;
        bucket.lost += lost;
        self.note_bad_link(id, h);
    }

    /// Whether both links of `x`, a piece the caller believes is on bucket `i`'s free list, are
    /// genuine: each 0 at its end of the list (`prev` 0 only at the head) or a plausible piece
    /// (see `plausible_link`) whose link the other way names `x`. O(1).
    pub(super) fn links_ok(&self, i: BucketId, x: usize) -> bool {
        let xh = self.classes.position(i.class, x).head;
        // SAFETY: `x` is a piece of a cluster of bucket `i` of ours; the neighbours are read only
        // once the page map vouches for them.
        unsafe {
            let (next, prev) = (Bucket::next(x), Bucket::prev(x));
            let next_ok =
                next == 0 || (self.plausible_link(i, x, xh, next) && Bucket::prev(next) == x);
            let prev_ok = if prev == 0 {
                self.bucket(i).head == x
            } else {
                self.plausible_link(i, x, xh, prev) && Bucket::next(prev) == x
            };
            next_ok && prev_ok
        }
    }

    /// Walks bucket `i`'s whole free list validating every link (before a walk that follows
    /// them unchecked: `reclaim`); at the first bad one the list is cut there, as in
    /// [`Malloc::check_head_link`]. O(listed pieces).
    pub(super) fn validate_list(&mut self, i: BucketId) {
        let b = self.bucket(i);
        let listed = b.listed(self.classes.pieces(i.class));
        let mut p = b.head;
        let mut reached = 0;
        while p != 0 {
            reached += 1;
            // SAFETY: `p` was reached through validated links (or is the head).
            let next = unsafe { Bucket::next(p) };
            let good = if next == 0 {
                reached == listed
            } else {
                reached < listed
                    && self.plausible_link(i, p, self.classes.position(i.class, p).head, next)
                    // SAFETY: `next` is a piece of ours (plausible_link checked the map).
                    && unsafe { Bucket::prev(next) } == p
            };
            if !good {
                // SAFETY: `p` is a free piece of ours, at least two words long.
                unsafe { Bucket::cut_after(p) };
                let lost = listed - reached;
                let b = self.bucket_mut(i);
                b.totalfree -= lost;
                b.lost += lost;
                self.note_bad_link(i, p);
                return;
            }
            p = next;
        }
    }

    /// Counts a corrupt link found in piece `piece` of bucket `b`; remembers the first one
    /// (with its class).
    fn note_bad_link(&mut self, b: BucketId, piece: usize) {
        self.counts[b.class].bad_links += 1;
        if !self.bad_link_seen {
            self.bad_link_seen = true;
            self.bad_link = Some((b.class, piece));
        }
    }

    /// Whether parked link `v` read from the first piece `x` of a parked cluster of bucket `i`
    /// could be genuine: 0 exactly when `x` is that end of the list (`end`), otherwise the first
    /// piece of another wholly free cluster of bucket `i` (by the page map) whose link `back` the
    /// other way names `x`.
    fn parked_link_ok(
        &self,
        b: BucketId,
        x: usize,
        v: usize,
        end: bool,
        back: fn(usize) -> usize,
    ) -> bool {
        if v == 0 || end {
            return (v == 0) == end;
        }
        let i = b.class;
        let n = self.classes.pieces(i);
        v != x
            && v & (self.classes.cluster_bytes(i) - 1) == 0
            && matches!(self.usage.get(v >> PAGE_SHIFT), Usage::Bucket { index, owner, free }
                if index == i && owner == b.owner && free == n)
            && back(v) == x
    }

    /// Validates, in O(1), both links of `x`, the first piece of a parked cluster of bucket `i`
    /// at one end of the parked list, before it is unlinked (a client may have written over it
    /// after freeing it). On a bad link the whole parked list is abandoned (counted `lost`, never
    /// followed; `reclaim` gives those clusters back from their records) and false is returned.
    pub(super) fn check_parked(&mut self, i: BucketId, x: usize) -> bool {
        let p = &self.bucket(i).parked;
        let (head, tail) = (p.head, p.tail);
        // SAFETY: `x` is the head or tail of the parked list: the first piece of a cluster of
        // ours; `parked_link_ok` reads the neighbours only once the page map vouches for them.
        let (next, prev) = unsafe { (Parked::next(x), Parked::prev(x)) };
        let back_prev = |v| {
            // SAFETY: `parked_link_ok` calls it only on the first piece of a cluster of ours.
            unsafe { Parked::prev(v) }
        };
        let back_next = |v| {
            // SAFETY: as above.
            unsafe { Parked::next(v) }
        };
        let ok = self.parked_link_ok(i, x, next, x == tail, back_prev)
            && self.parked_link_ok(i, x, prev, x == head, back_next);
        if ok {
            return true;
        }
        let n = self.classes.pieces(i.class);
        let b = self.bucket_mut(i);
        let lost = b.parked.len() * n;
        b.parked = Parked::new();
        b.totalfree -= lost;
        b.lost += lost;
        self.note_bad_link(i, x);
        false
    }

    /// Gives back the clusters of bucket `i` that hold only free pieces, listed or `lost`
    /// (after a cut, see [`Malloc::check_head_link`]): the listed pieces are unlinked through
    /// the list's own (valid) links, the lost ones are never read. Returns the clusters given
    /// back. A slow path (a walk of the list, then one page-map scan per cluster): it runs only
    /// from `reclaim`, and only for a bucket that lost pieces.
    pub(super) fn recover_lost(&mut self, b: BucketId) -> usize {
        let i = b.class;
        let n = self.classes.pieces(i);
        let wholly_free = |u: Usage| {
            matches!(u, Usage::Bucket { index, owner, free }
                if index == i && owner == b.owner && free == n)
        };
        let mut unlinked = 0;
        let mut p = self.bucket(b).head;
        while p != 0 {
            // SAFETY: `p` is on the list (reached through validated links).
            let next = unsafe { Bucket::next(p) };
            if wholly_free(self.usage.get(self.classes.position(i, p).head)) {
                // SAFETY: as above.
                unsafe { self.bucket_mut(b).unlink(p) };
                unlinked += 1;
            }
            p = next;
        }
        let mut released = 0;
        loop {
            let mut found = None;
            self.usage.for_each(|page, u| {
                if found.is_none() && wholly_free(u) {
                    found = Some(page);
                }
            });
            let Some(head) = found else {
                break;
            };
            // `give_back` takes all `n` pieces off `totalfree`; only `unlinked` of them (in all)
            // were counted there, the rest in `lost`.
            self.bucket_mut(b).totalfree += n;
            self.give_back(b, head);
            released += 1;
        }
        let s = self.bucket_mut(b);
        s.totalfree -= unlinked;
        s.lost -= released * n - unlinked;
        released
    }
}
