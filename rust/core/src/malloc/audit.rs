// SPDX-License-Identifier: GPL-2.0

//! `audit()`: checks every invariant of the allocator against the memory it manages.

use super::allocator::Malloc;
use super::bucket::{Bucket, Parked};
use super::classes::MAX_CLASSES;
use super::diag::{LIVE, OWNER_UNKNOWN};
use super::kmem::KmemPages;
use super::params::{MAX_LARGE_PAGES, MAX_TYPES, PAGE_SHIFT};
use super::segregate::BucketId;
use super::usage::Usage;

/// A broken invariant found by [`Malloc::audit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditError {
    /// Which invariant.
    pub what: &'static str,
    /// The address, page number or bucket index concerned (0 if none).
    pub at: usize,
}

fn fail(what: &'static str, at: usize) -> Result<(), AuditError> {
    Err(AuditError { what, at })
}

/// Totals gathered from the page map.
struct MapTotals {
    clusters: [usize; MAX_CLASSES],
    free: [usize; MAX_CLASSES],
    large: usize,
    large_pages: usize,
    /// Page runs per owner type slot.
    runs: [usize; MAX_TYPES],
    pages: usize,
    diag_live: [usize; MAX_TYPES],
    diag_unknown: usize,
    diag_entries: usize,
}

impl MapTotals {
    /// All totals zero.
    fn new() -> Self {
        Self {
            clusters: [0; MAX_CLASSES],
            free: [0; MAX_CLASSES],
            large: 0,
            large_pages: 0,
            runs: [0; MAX_TYPES],
            pages: 0,
            diag_live: [0; MAX_TYPES],
            diag_unknown: 0,
            diag_entries: 0,
        }
    }
}

impl<K: KmemPages> Malloc<K> {
    /// Checks every invariant: page-map structure, usage records against clusters and large runs,
    /// free lists (only free pieces of the right bucket, counts matching the records exactly),
    /// bucket and large statistics, per-type counters against the sums of live allocations, and in
    /// DIAGNOSTIC mode the side table and the poison of every free piece.
    ///
    /// Takes `&mut self` because it borrows the records' free counts as scratch counters while
    /// matching free-list pieces to clusters (no heap); they are restored before it returns.
    pub fn audit(&mut self) -> Result<(), AuditError> {
        if !self.usage.check() {
            return fail("page map hash table or leaves malformed", 0);
        }
        // Filled in place: returned by value, the totals (about 2.8 KiB) were copied twice into
        // this frame, which made `audit` and `audit_map` together take 11.6 KiB of a 16 KiB
        // kernel stack.
        let mut t = MapTotals::new();
        self.audit_map(&mut t)?;
        if t.pages != self.data_pages {
            return fail("data pages differ from the records", t.pages);
        }
        if t.large != self.large.inuse || t.large_pages != self.large.pages {
            return fail("large statistics differ from the records", t.large);
        }
        for (slot, &runs) in t.runs.iter().enumerate() {
            if runs != self.seg.runs(slot) || (runs != 0 && self.types.handle(slot).is_none()) {
                return fail("owned page runs differ from the records", slot);
            }
        }
        let mut live_count = self.large.inuse;
        let mut live_bytes = self.large.pages << PAGE_SHIFT;
        let (mut held, mut free) = ([0; MAX_CLASSES], [0; MAX_CLASSES]);
        let mut b = Some(self.first_bucket());
        while let Some(id) = b {
            let s = self.bucket(id);
            let (total, totalfree, lost) = (s.total, s.totalfree, s.lost);
            if id.owner != 0 && self.types.handle(id.owner as usize - 1).is_none() {
                return fail("type bucket of an undefined type", id.class);
            }
            if totalfree + lost > total {
                return fail("bucket counts more free pieces than it holds", id.class);
            }
            self.audit_free_list(id)?;
            held[id.class] += total;
            free[id.class] += totalfree + lost;
            live_count += total - totalfree - lost;
            live_bytes += (total - totalfree - lost) * self.classes.size(id.class);
            b = self.next_bucket(id);
        }
        for i in 0..self.classes.count() {
            let n = self.classes.pieces(i);
            if held[i] != t.clusters[i] * n || free[i] != t.free[i] {
                return fail("bucket totals differ from the records", i);
            }
        }
        let (mut inuse, mut memuse) = (0, 0);
        for (ty, st) in self.types.iter() {
            if st.memuse > st.maxused || (st.inuse == 0) != (st.memuse == 0) {
                return fail("type counters inconsistent", ty.index());
            }
            if self.diag.enabled && t.diag_unknown == 0 && t.diag_live[ty.index()] != st.inuse {
                return fail("type inuse differs from the side table", ty.index());
            }
            inuse += st.inuse;
            memuse += st.memuse;
        }
        if inuse != live_count || memuse != live_bytes {
            return fail("type totals differ from live allocations", inuse);
        }
        if self.diag.enabled && t.diag_entries != self.diag.entries() {
            return fail("side table has stale entries", self.diag.entries());
        }
        Ok(())
    }

    /// Adds every page-map record's totals to `t` (all zero on entry), checking each record.
    #[inline(never)]
    fn audit_map(&self, t: &mut MapTotals) -> Result<(), AuditError> {
        let mut err = Ok(());
        self.usage.for_each(|page, u| {
            if err.is_err() {
                return;
            }
            err = self.audit_record(page, u, t);
        });
        err
    }

    fn audit_record(&self, page: usize, u: Usage, t: &mut MapTotals) -> Result<(), AuditError> {
        t.pages += 1;
        let span = match u {
            Usage::Bucket { index, owner, free } => {
                if index >= self.classes.count() || self.type_bucket(index, owner).is_none() {
                    return fail("bad bucket record", page);
                }
                let np = self.classes.cluster_pages(index);
                let n = self.classes.pieces(index);
                if free > n || page & (np - 1) != 0 {
                    return fail("bad bucket record", page);
                }
                t.clusters[index] += 1;
                t.free[index] += free;
                if self.diag.enabled {
                    t.diag_entries += 1;
                    let mut tagged_free = 0;
                    for k in 0..n {
                        let tag = self.diag.piece_tag(page, k);
                        if tag & LIVE == 0 {
                            tagged_free += 1;
                        } else if tag & !LIVE == OWNER_UNKNOWN {
                            t.diag_unknown += 1;
                        } else if let Some(c) = t.diag_live.get_mut((tag & !LIVE) as usize) {
                            *c += 1;
                        } else {
                            return fail("side table owner out of range", page);
                        }
                    }
                    if tagged_free != free {
                        return fail("side table free count differs from the record", page);
                    }
                }
                np
            }
            Usage::Large { npages, owner } => {
                if npages == 0 || npages > MAX_LARGE_PAGES {
                    return fail("bad large record", page);
                }
                if let Some(slot) = (owner as usize).checked_sub(1) {
                    match t.runs.get_mut(slot) {
                        Some(r) => *r += 1,
                        None => return fail("bad large record", page),
                    }
                }
                t.large += 1;
                t.large_pages += npages;
                if self.diag.enabled {
                    t.diag_entries += 1;
                    let tag = self.diag.large_tag(page);
                    if tag & LIVE == 0 {
                        return fail("large allocation tagged free", page);
                    } else if tag & !LIVE == OWNER_UNKNOWN {
                        t.diag_unknown += 1;
                    } else if let Some(c) = t.diag_live.get_mut((tag & !LIVE) as usize) {
                        *c += 1;
                    }
                }
                npages
            }
            Usage::Cont { back } => {
                let head = page.wrapping_sub(back);
                let span = match self.usage.get(head) {
                    Usage::Bucket { index, .. } if index < self.classes.count() => {
                        self.classes.cluster_pages(index)
                    }
                    Usage::Large { npages, .. } => npages,
                    _ => 0,
                };
                if back == 0 || back >= span {
                    return fail("continuation record without its head", page);
                }
                return Ok(());
            }
            Usage::None => return fail("empty record listed", page),
        };
        for k in 1..span {
            if self.usage.get(page + k) != (Usage::Cont { back: k }) {
                return fail("run lacks a continuation record", page + k);
            }
        }
        Ok(())
    }

    /// Checks bucket `b`: its parked list, its free list (structure, pieces of its own clusters
    /// only, per-cluster counts against the records) and its totals against its records.
    fn audit_free_list(&mut self, b: BucketId) -> Result<(), AuditError> {
        let i = b.class;
        let mine = |u: Usage| matches!(u, Usage::Bucket { index, owner, .. } if index == i && owner == b.owner);
        let size = self.classes.size(i);
        let parked = self.audit_parked(b)?;
        // Parked clusters' pieces are free but on no list.
        let totalfree = self.bucket(b).totalfree - parked * self.classes.pieces(i);
        // Pass 1: structure. Every piece is an aligned piece of a cluster of this bucket, links
        // agree both ways, and the length is exactly `totalfree` (so no cycle, no duplicate).
        let mut p = self.bucket(b).head;
        let mut prev = 0;
        let mut count = 0;
        while p != 0 {
            if count == totalfree {
                return fail("free list longer than totalfree", i);
            }
            let pos = self.classes.position(i, p);
            let (head, k) = (pos.head, pos.index);
            if !self.classes.is_piece_start(i, p) || !mine(self.usage.get(head)) {
                return fail("free list holds a piece of another bucket or no bucket", p);
            }
            // SAFETY: `p` is a piece of a cluster of ours (checked just above).
            if unsafe { Bucket::prev(p) } != prev {
                return fail("free list back link broken", p);
            }
            if self.diag.enabled {
                if self.diag.piece_tag(head, k) & LIVE != 0 {
                    return fail("free list holds a live piece", p);
                }
                // SAFETY: `p` is a free piece of ours.
                if unsafe { super::diag::check_poison(p, size) }.is_some() {
                    return fail("free piece poison overwritten", p);
                }
            }
            prev = p;
            count += 1;
            // SAFETY: `p` is a free piece of ours.
            p = unsafe { Bucket::next(p) };
        }
        if count != totalfree {
            return fail("free list shorter than totalfree", i);
        }
        // Pass 2: count the pieces per cluster by decrementing the records' free counts, check
        // every count reached zero, then restore them.
        let mut taken = 0;
        let mut p = self.bucket(b).head;
        let mut underflow = false;
        while p != 0 {
            let head = self.classes.position(i, p).head;
            match self.usage.get(head) {
                Usage::Bucket { index, owner, free } if free > 0 => {
                    self.usage.update(
                        head,
                        Usage::Bucket {
                            index,
                            owner,
                            free: free - 1,
                        },
                    );
                }
                _ => {
                    underflow = true;
                    break;
                }
            }
            taken += 1;
            // SAFETY: `p` is a free piece of ours.
            p = unsafe { Bucket::next(p) };
        }
        // Parked clusters have every piece free and none listed: zero them too, then restore.
        self.set_parked_free(b, 0);
        // What is left is exactly the pieces cut off the list with a corrupt link (`lost`); the
        // clusters are exactly the bucket's pieces held.
        let (mut left, mut clusters) = (0, 0);
        self.usage.for_each(|_, u| {
            if let Usage::Bucket { free, .. } = u {
                if mine(u) {
                    left += free;
                    clusters += 1;
                }
            }
        });
        let s = self.bucket(b);
        let leftover = left != s.lost || s.total != clusters * self.classes.pieces(i);
        self.set_parked_free(b, self.classes.pieces(i));
        let mut p = self.bucket(b).head;
        for _ in 0..taken {
            let head = self.classes.position(i, p).head;
            if let Usage::Bucket { index, owner, free } = self.usage.get(head) {
                self.usage.update(
                    head,
                    Usage::Bucket {
                        index,
                        owner,
                        free: free + 1,
                    },
                );
            }
            // SAFETY: `p` is a free piece of ours.
            p = unsafe { Bucket::next(p) };
        }
        if underflow || leftover {
            return fail("cluster free counts differ from the free list", i);
        }
        Ok(())
    }

    /// Checks bucket `b`'s parked list: wholly free clusters of the bucket, well linked, `len`
    /// of them, `min <= len`. Returns `len`.
    fn audit_parked(&self, b: BucketId) -> Result<usize, AuditError> {
        let i = b.class;
        let p = &self.bucket(b).parked;
        let n = self.classes.pieces(i);
        let mut first = p.head;
        let mut prev = 0;
        let mut count = 0;
        while first != 0 {
            if count == p.len() {
                return Err(AuditError {
                    what: "parked list longer than its length",
                    at: i,
                });
            }
            let pos = self.classes.position(i, first);
            if pos.index != 0 || pos.start != first {
                return Err(AuditError {
                    what: "parked entry is not a cluster's first piece",
                    at: first,
                });
            }
            let whole = Usage::Bucket {
                index: i,
                owner: b.owner,
                free: n,
            };
            if self.usage.get(pos.head) != whole {
                return Err(AuditError {
                    what: "parked cluster is not a wholly free cluster of the bucket",
                    at: first,
                });
            }
            // SAFETY: `first` is the first piece of a cluster of ours (checked above).
            if unsafe { Parked::prev(first) } != prev {
                return Err(AuditError {
                    what: "parked list back link broken",
                    at: first,
                });
            }
            prev = first;
            count += 1;
            // SAFETY: as above.
            first = unsafe { Parked::next(first) };
        }
        if count != p.len() || prev != p.tail || p.idle() > p.len() {
            return Err(AuditError {
                what: "parked list length, tail or low water wrong",
                at: i,
            });
        }
        Ok(count)
    }

    /// Sets the free count in the records of bucket `b`'s parked clusters (audit scratch).
    fn set_parked_free(&mut self, b: BucketId, free: usize) {
        let mut first = self.bucket(b).parked.head;
        while first != 0 {
            let head = self.classes.position(b.class, first).head;
            let record = Usage::Bucket {
                index: b.class,
                owner: b.owner,
                free,
            };
            self.usage.update(head, record);
            // SAFETY: `first` is parked (checked by `audit_parked` before this is called).
            first = unsafe { Parked::next(first) };
        }
    }
}
