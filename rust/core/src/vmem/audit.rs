// SPDX-License-Identifier: GPL-2.0

//! `audit`: walks every structure of an arena and checks every invariant.

use super::arena::{tag, Arena};
use super::freelist::{list_of, NLISTS};
use super::seg::SegKind;
use super::tags::{TagPageSource, TAGS_PER_PAGE};

/// The first broken invariant found by [`Arena::audit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditFailure {
    /// Which invariant.
    pub what: &'static str,
    /// The address (or count) it concerns.
    pub at: usize,
}

fn fail(what: &'static str, at: usize) -> Result<(), AuditFailure> {
    Err(AuditFailure { what, at })
}

impl<P: TagPageSource> Arena<P> {
    /// Checks every invariant: address order, span tiling, coalescing, freelists and bitmap,
    /// hash contents, span list, counters and tag accounting. Linear in the arena size.
    pub fn audit(&self) -> Result<(), AuditFailure> {
        let q = self.quantum();
        let (mut nfree, mut nalloc, mut nspans, mut ntags) = (0usize, 0usize, 0usize, 0usize);
        let (mut inuse, mut total, mut import) = (0usize, 0usize, 0usize);
        let mut rotor_seen = self.rotor.is_none();
        // Address list: spans in order, each tiled exactly by its segments.
        let mut cur = self.ahead;
        let mut prev = None;
        let mut span_end: Option<usize> = None; // end of the current span
        let mut next_start = 0usize; // where the next segment of the current span must start
        let mut last_free = false;
        let mut last_span_end = 0usize;
        while let Some(p) = cur {
            // SAFETY: address-list tags are valid (type invariant).
            let s = unsafe { tag(p) };
            ntags += 1;
            if s.aprev != prev {
                return fail("aprev link broken", s.start);
            }
            if Some(p) == self.rotor {
                rotor_seen = true;
            }
            if s.size == 0
                || s.start & (q - 1) != 0
                || s.size & (q - 1) != 0
                || s.start.checked_add(s.size).is_none()
            {
                return fail("bad segment bounds", s.start);
            }
            if s.kind.is_span() {
                if span_end.is_some_and(|e| next_start != e) {
                    return fail("span not tiled to its end", next_start);
                }
                if nspans > 0 && s.start < last_span_end {
                    return fail("spans out of order or overlapping", s.start);
                }
                nspans += 1;
                total += s.size;
                if s.kind == SegKind::ImportedSpan {
                    import += s.size;
                }
                span_end = Some(s.end());
                last_span_end = s.end();
                next_start = s.start;
                last_free = false;
            } else {
                if span_end.is_none() {
                    return fail("segment before any span", s.start);
                }
                if s.start != next_start || span_end.is_some_and(|e| s.end() > e) {
                    return fail("segments do not tile the span", s.start);
                }
                next_start = s.end();
                match s.kind {
                    SegKind::Free => {
                        if last_free {
                            return fail("adjacent free segments not coalesced", s.start);
                        }
                        nfree += 1;
                        last_free = true;
                    }
                    SegKind::Alloc | SegKind::Cached => {
                        nalloc += 1;
                        inuse += s.size;
                        last_free = false;
                        if self.hash.find(s.start).0 != Some(p) {
                            return fail("allocated segment missing from hash", s.start);
                        }
                    }
                    _ => return fail("unused tag on the address list", s.start),
                }
            }
            prev = Some(p);
            cur = s.anext;
        }
        if self.atail != prev {
            return fail("address list tail wrong", 0);
        }
        if span_end.is_some_and(|e| next_start != e) {
            return fail("last span not tiled to its end", next_start);
        }
        if !rotor_seen {
            return fail("rotor not on the address list", 0);
        }
        // Span list: sorted, complete, doubly linked.
        let (mut n, mut kprev, mut last) = (0usize, None, None::<usize>);
        let mut cur = self.spans;
        while let Some(p) = cur {
            // SAFETY: span-list tags are valid.
            let s = unsafe { tag(p) };
            if !s.kind.is_span() || s.kprev != kprev || last.is_some_and(|l| l >= s.start) {
                return fail("span list broken", s.start);
            }
            n += 1;
            last = Some(s.start);
            kprev = Some(p);
            cur = s.knext;
        }
        if n != nspans {
            return fail("span list count", n);
        }
        // Freelists and bitmap.
        let mut on_lists = 0usize;
        for k in 0..NLISTS {
            let head = self.free.heads[k];
            if head.is_some() != (self.free.map & (1 << k) != 0) {
                return fail("freelist bitmap bit wrong", k);
            }
            let (mut cur, mut kprev) = (head, None);
            while let Some(p) = cur {
                // SAFETY: freelist tags are valid.
                let s = unsafe { tag(p) };
                if s.kind != SegKind::Free || list_of(s.size) != k || s.kprev != kprev {
                    return fail("segment on the wrong freelist", s.start);
                }
                on_lists += 1;
                kprev = Some(p);
                cur = s.knext;
            }
        }
        if on_lists != nfree {
            return fail("freelists do not hold exactly the free segments", on_lists);
        }
        // Hash: exactly the allocated segments, each in its bucket.
        let mut hashed = 0usize;
        let mut bad = None;
        self.hash.for_each(|p, b| {
            // SAFETY: hash tags are valid.
            let s = unsafe { tag(p) };
            hashed += 1;
            if bad.is_none() && (!s.kind.is_alloc() || !self.hash.in_right_bucket(s.start, b)) {
                bad = Some(s.start);
            }
        });
        if let Some(a) = bad {
            return fail("hash holds a wrong or misplaced segment", a);
        }
        if hashed != nalloc || self.hash.count != nalloc {
            return fail("hash count differs from allocated segments", hashed);
        }
        // Depots hold cached segments of their size.
        for i in 0..self.depots.ncaches {
            for j in 0..self.depots.len[i] {
                let Some(a) = self.depots.get(i, j) else {
                    return fail("depot slot unreadable", j);
                };
                let (found, _) = self.hash.find(a);
                // SAFETY: hash tags are valid.
                let ok = found.is_some_and(|p| unsafe {
                    tag(p).kind == SegKind::Cached && tag(p).size == (i + 1) * q
                });
                if !ok {
                    return fail("depot entry is not a cached segment of its size", a);
                }
            }
        }
        // Counters.
        let st = self.stats();
        if st.mem_inuse != inuse || st.mem_total != total || st.mem_import != import {
            return fail("memory counters differ from the sums", inuse);
        }
        // Tags.
        if self.tags.count_free() != self.tags.nfree
            || self.tags.nfree > self.tags.npages * TAGS_PER_PAGE
            || self.tags.in_use() != ntags
        {
            return fail("tag accounting", ntags);
        }
        Ok(())
    }
}
