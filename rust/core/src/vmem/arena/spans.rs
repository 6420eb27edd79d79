// SPDX-License-Identifier: GPL-2.0

//! Spans: adding them (`add`, imports) and releasing wholly free imported ones.

use super::*;

impl<P: TagPageSource> Arena<P> {
    /// Adds the span `[base, base + size)` to the arena.
    pub fn add(&mut self, base: usize, size: usize) -> Result<(), VmemError> {
        self.add_span(base, size, false)
    }

    /// Adds a span imported from the source; it is released (returned by a free) as soon as it
    /// becomes wholly free.
    pub fn add_imported(&mut self, base: usize, size: usize) -> Result<(), VmemError> {
        self.add_span(base, size, true)
    }

    fn add_span(&mut self, base: usize, size: usize, imported: bool) -> Result<(), VmemError> {
        let q = self.quantum;
        if size == 0
            || base & (q - 1) != 0
            || size & (q - 1) != 0
            || base.checked_add(size).is_none()
        {
            return Err(VmemError::BadSpan { base, size });
        }
        // Find the spans around `base` on the sorted span list.
        let mut prev_span: Link = None;
        let mut next_span = self.spans;
        while let Some(s) = next_span {
            // SAFETY: span-list tags are valid.
            let st = unsafe { tag(s) };
            if st.start > base {
                break;
            }
            prev_span = Some(s);
            next_span = st.knext;
        }
        // SAFETY: span-list tags are valid.
        let overlaps = unsafe {
            prev_span.is_some_and(|p| tag(p).end() > base)
                || next_span.is_some_and(|n| base + size > tag(n).start)
        };
        if overlaps {
            return Err(VmemError::Overlap { base, size });
        }
        self.populate(false)?;
        let span = self.get_tag()?;
        let seg = match self.get_tag() {
            Ok(s) => s,
            Err(e) => {
                self.tags.put(span);
                return Err(e);
            }
        };
        // SAFETY: `span` and `seg` are fresh tags; `prev`/`next_span` are valid list members.
        unsafe {
            *tag_mut(span) = Seg {
                start: base,
                size,
                kind: if imported {
                    SegKind::ImportedSpan
                } else {
                    SegKind::Span
                },
                anext: None,
                aprev: None,
                knext: next_span,
                kprev: prev_span,
            };
            match prev_span {
                Some(p) => tag_mut(p).knext = Some(span),
                None => self.spans = Some(span),
            }
            if let Some(n) = next_span {
                tag_mut(n).kprev = Some(span);
            }
            // In address order the new span goes right before the next span's marker.
            let before = match next_span {
                Some(n) => tag(n).aprev,
                None => self.atail,
            };
            self.insert_after(before, span);
            *tag_mut(seg) = Seg {
                start: base,
                size,
                kind: SegKind::Free,
                anext: None,
                aprev: None,
                knext: None,
                kprev: None,
            };
            self.insert_after(Some(span), seg);
            self.free.insert(seg);
        }
        self.stats.mem_total += size;
        if imported {
            self.stats.mem_import += size;
            self.stats.import += 1;
        }
        Ok(())
    }

    /// If `seg` is a free segment filling a whole imported span, removes both and returns the span.
    ///
    /// # Safety
    ///
    /// `seg` is a valid free tag on the address list and on no freelist.
    pub(super) unsafe fn take_span_if_whole(&mut self, seg: NonNull<Seg>) -> Option<SpanRelease> {
        // SAFETY: valid tags (contract and type invariant).
        unsafe {
            let sp = tag(seg).aprev?;
            let s = tag(seg);
            if tag(sp).kind != SegKind::ImportedSpan || tag(sp).size != s.size {
                return None;
            }
            let release = SpanRelease {
                base: s.start,
                size: s.size,
            };
            let after = s.anext;
            self.unlink(seg);
            self.unlink(sp);
            let (kp, kn) = (tag(sp).kprev, tag(sp).knext);
            match kp {
                Some(p) => tag_mut(p).knext = kn,
                None => self.spans = kn,
            }
            if let Some(n) = kn {
                tag_mut(n).kprev = kp;
            }
            tag_mut(sp).knext = None;
            tag_mut(sp).kprev = None;
            self.put_tag(seg, after);
            self.put_tag(sp, after);
            self.stats.mem_total -= release.size;
            self.stats.mem_import -= release.size;
            self.stats.release += 1;
            Some(release)
        }
    }
}
