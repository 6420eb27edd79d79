// SPDX-License-Identifier: GPL-2.0

//! Giving clusters back to kmem, with hysteresis.
//!
//! 4.3BSD never gave bucket pages back. Our first rule did, at once: a cluster whose last piece
//! came back went to kmem as soon as the bucket held more free pieces than its high water. On a
//! real trace (issue 9) that made the 1 KiB bucket give a cluster back every 24 allocations and
//! take it again: a bucket that breathes by more than its high water pays a kmem round trip (and
//! the carving of a whole cluster) per breath.
//!
//! Now a cluster that becomes wholly free while the bucket holds more than its high water in free
//! pieces is *parked*: its pieces leave the free list (so allocations fill the partly used
//! clusters first, which keeps the heap compact) and the cluster waits on the bucket's parked
//! list, newest first. An allocation that finds the free list empty takes the newest parked
//! cluster back before asking kmem. A cluster goes back to kmem only when the bucket is *idle*:
//!
//! * Time is the allocator's operation count (bucket mallocs and frees, all buckets), cut into
//!   windows of [`WINDOW_OPS`]; every bucket keeps the smallest length its parked list had during
//!   the current window. That many clusters sat unused for a whole window: the bucket's working
//!   set did not need them. When the window ends (checked round robin, one bucket every 32
//!   operations, so an idle bucket ages too and a call pays only an increment and a test), those
//!   clusters, oldest first, go back to kmem. A cluster that has just become free, or was taken back during the window, is
//!   never given back while its bucket is still busy.
//! * A size class gives back at most one cluster per [`ALLOCS_PER_GIVEBACK`] allocations it
//!   served (at most 5 per 1,000, the target), whatever the windows say: a bucket that
//!   breathes slowly (a burst per window) would otherwise still give back and take again once
//!   per burst. The budget is the class's, over all its buckets (type-segregated ones too).
//!   Clusters over that budget stay parked (counted as `deferred`) until the budget allows.
//!
//! [`Malloc::reclaim`] (kmem exhausted, memory pressure, teardown) gives every parked cluster
//! back at once, whatever the windows and budgets.
//!
//! Every step is O(1) but the carving and uncarving of a cluster's pieces, O(pieces), which the
//! old immediate give-back and refill paid too, now paid less often.

use super::allocator::Malloc;
use super::bucket::{segregated_highwat, shared_highwat, ClassCounters, Parked};
use super::diag;
use super::kmem::KmemPages;
use super::params::PAGE_SHIFT;
use super::segregate::BucketId;

/// Operations (bucket mallocs and frees over all buckets) in one give-back window.
pub const WINDOW_OPS: u64 = 4096;

/// Operations between two window checks (a power of two).
const AGE_STRIDE: u64 = 32;

const _: () = assert!(AGE_STRIDE.is_power_of_two());
// Without segregation every bucket is looked at well within a window.
const _: () = assert!(AGE_STRIDE * super::classes::MAX_CLASSES as u64 <= WINDOW_OPS / 2);

/// Allocations a size class must have served for each cluster it gives back (at most 5 per
/// 1,000).
pub const ALLOCS_PER_GIVEBACK: u64 = 200;

impl<K: KmemPages> Malloc<K> {
    /// The cluster of bucket `id` starting at page `head` just became wholly free: park it if
    /// the bucket holds more than its high water in free pieces without it; otherwise it stays
    /// on the free list.
    ///
    /// A type-segregated bucket (high water one cluster) counts only its listed pieces: counting
    /// the parked ones too, a bucket with a parked cluster would park the cluster a hot
    /// malloc/free pair empties and take it back on the next malloc, unlinking and relinking
    /// every piece of it per pair. A shared bucket counts every free piece, as it always did.
    pub(super) fn cluster_emptied(&mut self, id: BucketId, head: usize) {
        let i = id.class;
        let n = self.classes.pieces(i);
        let b = self.bucket(id);
        let parked = if id.owner != 0 { b.parked.len() * n } else { 0 };
        // Free pieces counted against the high water without this cluster's. Every high water
        // is at least a cluster: when fewer are free (a hot pair emptying its cluster each
        // time), the class's high water is not even computed. With `lost` pieces (module
        // `listed`) a wholly free record may count pieces that are on no list: unlinking them
        // would follow stale links.
        let spare = b.totalfree - parked - n;
        if b.lost != 0 || spare < n {
            return;
        }
        let highwat = if id.owner != 0 {
            segregated_highwat(self.classes, i)
        } else {
            shared_highwat(self.classes, i)
        };
        if spare < highwat || !b.parked.has_room() {
            return;
        }
        let size = self.classes.size(i);
        let base = head << PAGE_SHIFT;
        // Every piece's links are checked before any is unlinked: a client may have written
        // over one it freed. Then the cluster stays on the list (the pop that reaches the bad
        // link cuts the list there).
        if !(0..n).all(|k| self.links_ok(id, base + k * size)) {
            return;
        }
        let bucket = self.bucket_mut(id);
        for k in 0..n {
            // SAFETY: the cluster is wholly free, so each of its pieces is on the list.
            unsafe { bucket.unlink(base + k * size) };
        }
        // SAFETY: `base` is the first piece of a wholly free cluster of ours, now on no list,
        // and the parked list has room (checked above).
        unsafe { bucket.parked.push(base) };
    }

    /// Takes the newest parked cluster of bucket `id` back onto its free list (lowest piece
    /// handed out first). False if none is parked.
    pub(super) fn unpark(&mut self, id: BucketId) -> bool {
        let first = self.bucket(id).parked.head;
        if first == 0 || !self.check_parked(id, first) {
            return false;
        }
        let (n, size) = (self.classes.pieces(id.class), self.classes.size(id.class));
        let bucket = self.bucket_mut(id);
        // SAFETY: `first` is parked, its links validated.
        unsafe { bucket.parked.unlink(first) };
        for k in (0..n).rev() {
            // SAFETY: the cluster is wholly free and its pieces are on no list.
            unsafe { bucket.push(first + k * size) };
        }
        true
    }

    /// Counts one bucket operation; every [`AGE_STRIDE`] operations, ends the window of the
    /// next bucket in round-robin order if its window is over. The per-call cost is an increment
    /// and a test; each bucket is looked at every `AGE_STRIDE * buckets` operations (without
    /// segregation at most 1,248, well within a window), so a window lasts between `WINDOW_OPS`
    /// and `WINDOW_OPS` plus one round. With type-segregated buckets the round is longer (32
    /// operations per bucket that exists: 160 types' worth of three classes each is about one
    /// window), and so are idle buckets' windows.
    #[inline]
    pub(super) fn tick(&mut self) {
        self.ops = self.ops.wrapping_add(1);
        if self.ops & (AGE_STRIDE - 1) == 0 {
            self.age_next();
        }
    }

    #[cold]
    fn age_next(&mut self) {
        let j = self.age_cursor;
        self.age_cursor = self.next_bucket(j).unwrap_or(self.first_bucket());
        self.age(j);
    }

    /// Ends bucket `id`'s window if [`WINDOW_OPS`] operations passed since it started: gives
    /// back the clusters that stayed parked all window, oldest first, within the bucket's budget.
    fn age(&mut self, id: BucketId) {
        let p = &self.bucket(id).parked;
        if self.ops.wrapping_sub(p.window_start) < WINDOW_OPS {
            return;
        }
        let idle = p.idle();
        self.give_back_idle_of(id, idle, true);
        let ops = self.ops;
        self.bucket_mut(id).parked.restart_window(ops);
    }

    /// Gives back the oldest `idle` of bucket `id`'s parked clusters (at most the clusters that
    /// stayed parked all window, [`Parked::idle`]); with `budgeted`, only as many as the class's
    /// give-back budget allows, the rest counted as deferred. Returns how many went back.
    fn give_back_idle_of(&mut self, id: BucketId, mut idle: usize, budgeted: bool) -> usize {
        let mut given = 0;
        while idle > 0 {
            let c = &mut self.counts[id.class];
            if budgeted && !c.may_give_back() {
                c.deferred += idle as u64;
                break;
            }
            let tail = self.bucket(id).parked.tail;
            if !self.check_parked(id, tail) {
                break;
            }
            // SAFETY: `tail` is parked (`idle <= min <= len`, so the list is not empty), its
            // links validated.
            unsafe { self.bucket_mut(id).parked.unlink(tail) };
            self.give_back(id, tail >> PAGE_SHIFT);
            idle -= 1;
            given += 1;
        }
        given
    }

    /// The allocator's operation count (bucket mallocs and frees over all buckets), the clock of
    /// the give-back windows. A periodic pass remembers it for its next
    /// [`Malloc::give_back_idle`].
    pub fn op_count(&self) -> u64 {
        self.ops
    }

    /// The timed give-back (`Documentation/magazines.rst`, "Timed aging"): run by a periodic
    /// pass, which passes the operation count [`Malloc::op_count`] returned at its previous run
    /// (`since`). The windows above end with traffic only: after a workload's last free nothing
    /// ends them, and every parked cluster stays. Here every bucket whose window started no later
    /// than `since` (it spans the whole period since the last pass, busy or not) ends it: the
    /// clusters that stayed parked all window go back to kmem, oldest first, and a new window
    /// starts; such a bucket with no live piece gives back its listed clusters too (the high
    /// water keeps a cluster of free pieces for a bucket that breathes: this one held nothing
    /// live at the end of a period in which its window did not move). The class budget ([`ALLOCS_PER_GIVEBACK`]) does not apply: it bounds a class's
    /// kmem round trips per allocation, and a timed pass bounds them per period instead (a
    /// bucket gives back what stayed parked for a whole period, at most once per period). If no
    /// bucket operation ran at all since `since`, the allocator was idle for the whole period
    /// and kmem's spare chunk goes back too. Returns the clusters given back.
    pub fn give_back_idle(&mut self, since: u64) -> usize {
        let period = self.ops.wrapping_sub(since);
        let mut given = 0;
        let mut b = Some(self.first_bucket());
        while let Some(id) = b {
            b = self.next_bucket(id);
            let p = &self.bucket(id).parked;
            if self.ops.wrapping_sub(p.window_start) < period {
                continue;
            }
            let idle = p.idle();
            given += self.give_back_idle_of(id, idle, false);
            let b = self.bucket(id);
            if b.total == b.totalfree && b.total != 0 && b.lost == 0 {
                // Nothing live in it for a whole period: its listed clusters go too (the high
                // water keeps them for a bucket that breathes, and this one does not).
                given += self.release_bucket(id);
            }
            let ops = self.ops;
            self.bucket_mut(id).parked.restart_window(ops);
        }
        if period == 0 {
            self.kmem.trim();
        }
        given
    }

    /// Gives every parked cluster of every bucket back to kmem. Returns how many.
    pub(super) fn release_parked(&mut self) -> usize {
        let mut released = 0;
        let mut b = Some(self.first_bucket());
        while let Some(id) = b {
            released += self.release_parked_of(id);
            b = self.next_bucket(id);
        }
        released
    }

    /// Gives every parked cluster of bucket `id` back to kmem. Returns how many.
    pub(super) fn release_parked_of(&mut self, id: BucketId) -> usize {
        let mut released = 0;
        loop {
            let tail = self.bucket(id).parked.tail;
            if tail == 0 || !self.check_parked(id, tail) {
                break;
            }
            // SAFETY: `tail` is parked, its links validated.
            unsafe { self.bucket_mut(id).parked.unlink(tail) };
            self.give_back(id, tail >> PAGE_SHIFT);
            released += 1;
        }
        self.bucket_mut(id).parked.forget_idle();
        released
    }

    /// Gives a wholly free cluster of bucket `id` (starting at page `head`, none of whose pieces
    /// is on a list any more) back to kmem.
    pub(super) fn give_back(&mut self, id: BucketId, head: usize) {
        let i = id.class;
        let np = self.classes.cluster_pages(i);
        let n = self.classes.pieces(i);
        let base = head << PAGE_SHIFT;
        if self.diag.enabled {
            self.diag.remove_cluster(&mut self.kmem, head);
        }
        self.usage.clear_run(&mut self.kmem, head, np);
        // SAFETY: the run came from kmem with `np` pages and none of it is referenced any more.
        unsafe { self.kmem.free_pages(base, np) };
        self.data_pages -= np;
        self.counts[i].freed += 1;
        let b = self.bucket_mut(id);
        b.total -= n;
        b.totalfree -= n;
    }

    /// DIAGNOSTIC was just switched on: tags and poisons the pieces of every parked cluster as
    /// free (they are on no free list for `set_diagnostic` to find).
    pub(super) fn diag_mark_parked(&mut self) {
        let mut b = Some(self.first_bucket());
        while let Some(id) = b {
            let i = id.class;
            let (n, size) = (self.classes.pieces(i), self.classes.size(i));
            let mut first = self.bucket(id).parked.head;
            while first != 0 {
                let head = first >> PAGE_SHIFT;
                for k in 0..n {
                    self.diag.set_piece_tag(head, k, diag::OWNER_NONE);
                    // SAFETY: every piece of a parked cluster is free and ours; the first
                    // piece's two link words are left alone by `poison`.
                    unsafe { diag::poison(first + k * size, size) };
                }
                // SAFETY: `first` is parked.
                first = unsafe { Parked::next(first) };
            }
            b = self.next_bucket(id);
        }
    }

    /// Forgets bucket `id`'s parked list (its pieces are being put on the free list by a
    /// rebuild).
    pub(super) fn forget_parked(&mut self, id: BucketId) {
        let ops = self.ops;
        let p = &mut self.bucket_mut(id).parked;
        *p = Parked::new();
        p.restart_window(ops);
    }
}

impl ClassCounters {
    /// Whether the class's give-back budget allows one more cluster back to kmem: at most one
    /// per [`ALLOCS_PER_GIVEBACK`] allocations the class served, over all its buckets. A
    /// class-wide budget bounds the class's kmem round trips as one shared bucket did, and lets a
    /// type's idle bucket give back what it parked though it served few allocations itself.
    fn may_give_back(&self) -> bool {
        (self.freed + 1) * ALLOCS_PER_GIVEBACK <= self.calls
    }
}
