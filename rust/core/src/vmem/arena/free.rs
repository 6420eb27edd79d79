// SPDX-License-Identifier: GPL-2.0

//! Freeing: `free`/`xfree`, coalescing with the neighbours and span release.

use super::*;

impl<P: TagPageSource> Arena<P> {
    /// Frees `[addr, addr + size)`; sizes up to `qcache_max` go to the quantum caches first.
    /// Returns the imported span that became wholly free and was removed, if any.
    pub fn free(&mut self, addr: usize, size: usize) -> Result<Option<SpanRelease>, VmemError> {
        let rsize = round_size(size, self.quantum).ok_or(VmemError::BadSize)?;
        if rsize <= self.qcache_max && self.depots.is_active() {
            let (found, steps) = self.hash.find(addr);
            self.note_lookup(steps);
            if let Some(seg) = found {
                // SAFETY: hash tags are valid.
                let s = unsafe { tag_mut(seg) };
                if s.kind == SegKind::Alloc
                    && s.size == rsize
                    && self.depots.push(self.qcache_index(rsize), addr)
                {
                    s.kind = SegKind::Cached;
                    return Ok(None);
                }
            }
        }
        self.free_seg::<false>(addr, size)
    }

    /// Frees `[addr, addr + size)` straight to the segment lists (pair of `xalloc`).
    ///
    /// A small dispatcher, inlined into the caller like [`Arena::xalloc`]: the common outcome
    /// (freed, no span to release) comes back in registers.
    #[inline]
    pub fn xfree(&mut self, addr: usize, size: usize) -> Result<Option<SpanRelease>, VmemError> {
        self.free_seg::<false>(addr, size)
    }

    /// Counts one hash lookup of `steps` chain entries.
    #[inline]
    pub(super) fn note_lookup(&mut self, steps: usize) {
        self.stats.lookup += 1;
        self.stats.lookup_steps += steps;
        if steps > self.stats.lookup_max_chain {
            self.stats.lookup_max_chain = steps;
        }
    }

    /// Frees the allocated segment `[addr, addr + size)` (one held by a quantum cache only if
    /// `CACHED_OK`); returns the imported span that became wholly free and was removed.
    #[inline]
    pub(super) fn free_seg<const CACHED_OK: bool>(
        &mut self,
        addr: usize,
        size: usize,
    ) -> Result<Option<SpanRelease>, VmemError> {
        match self.free_tag::<CACHED_OK>(addr, size) {
            Ok(None) => Ok(None),
            Ok(Some(whole)) => Ok(self.release_whole(whole)),
            Err(()) => Err(self.free_error(addr, size, CACHED_OK)),
        }
    }

    /// The work of `free_seg`, with a small result: `Ok(Some(seg))` if the merged free segment
    /// `seg` fills a whole imported span (to release), `Err(())` on bad input, having changed
    /// nothing but the lookup counters (`free_error` then says why).
    #[inline(never)]
    #[cfg_attr(MODULE, link_section = ".text.kmalloc43_vmem")]
    fn free_tag<const CACHED_OK: bool>(&mut self, addr: usize, size: usize) -> Result<Link, ()> {
        let mask = self.quantum - 1;
        // 0 (never an allocated size) for size 0 or a size that overflows when rounded.
        let rsize = size.wrapping_add(mask) & !mask;
        let (link, seg, steps) = match self.hash.find_link(addr) {
            Ok(found) => found,
            Err(steps) => {
                self.note_lookup(steps);
                return Err(());
            }
        };
        self.note_lookup(steps);
        // SAFETY: hash tags are valid.
        let s = unsafe { tag(seg) };
        let kind_ok = if CACHED_OK {
            s.kind.is_alloc()
        } else {
            s.kind == SegKind::Alloc
        };
        if s.size != rsize || !kind_ok {
            return Err(());
        }
        // SAFETY: `link` and `seg` come from `find_link` just above.
        unsafe { self.hash.unchain(link, seg) };
        self.stats.free += 1;
        self.stats.mem_inuse -= rsize;
        // SAFETY: `seg` is a valid allocated tag, now on no kind list.
        let merged = unsafe { self.coalesce(seg) };
        self.maybe_rescale();
        // SAFETY: `merged` is a valid free tag on the address list.
        Ok(unsafe { self.fills_imported_span(merged) }.then_some(merged))
    }

    /// Removes free segment `seg`, which fills a whole imported span, together with its span.
    #[cold]
    fn release_whole(&mut self, seg: NonNull<Seg>) -> Option<SpanRelease> {
        // SAFETY: `seg` is a valid free tag on its freelist and the address list (`free_tag`).
        unsafe {
            self.free.remove(seg);
            self.take_span_if_whole(seg)
        }
    }

    /// Why `free_tag` refused `(addr, size)` (error path: counts nothing, changes nothing).
    #[cold]
    #[inline(never)]
    fn free_error(&self, addr: usize, size: usize, cached_ok: bool) -> VmemError {
        let Some(rsize) = round_size(size, self.quantum) else {
            return VmemError::BadSize;
        };
        let Some(seg) = self.hash.find(addr).0 else {
            return self.classify_bad_free(addr, size);
        };
        // SAFETY: hash tags are valid.
        let (kind, allocated) = unsafe { (tag(seg).kind, tag(seg).size) };
        if allocated != rsize {
            VmemError::WrongSize {
                addr,
                size: rsize,
                allocated,
            }
        } else if kind == SegKind::Cached && !cached_ok {
            VmemError::DoubleFree { addr }
        } else {
            // Not reached: `free_tag` accepts such a segment.
            VmemError::BadFree { addr, size }
        }
    }

    /// Frees `seg`: merges it into its free neighbours (whose tag survives, so a merge into a
    /// large free segment moves no list entry unless the size class changes); returns the
    /// merged free segment.
    ///
    /// # Safety
    ///
    /// `seg` is a valid allocated tag on the address list and on no kind list.
    #[inline]
    #[cfg_attr(MODULE, link_section = ".text.kmalloc43_vmem")]
    unsafe fn coalesce(&mut self, seg: NonNull<Seg>) -> NonNull<Seg> {
        // SAFETY: valid tags (contract and type invariant); span markers are never `Free`, so
        // merges stay inside the span.
        unsafe {
            let (start, size) = (tag(seg).start, tag(seg).size);
            let prev = tag(seg).aprev.filter(|&p| tag(p).kind == SegKind::Free);
            let next = tag(seg).anext.filter(|&n| tag(n).kind == SegKind::Free);
            match (prev, next) {
                (None, None) => {
                    tag_mut(seg).kind = SegKind::Free;
                    self.free.insert(seg);
                    seg
                }
                (Some(p), None) => {
                    self.unlink(seg);
                    self.put_tag(seg, Some(p));
                    self.free.set_extent(p, tag(p).start, tag(p).size + size);
                    p
                }
                (None, Some(n)) => {
                    self.unlink(seg);
                    self.put_tag(seg, Some(n));
                    self.free.set_extent(n, start, tag(n).size + size);
                    n
                }
                (Some(p), Some(n)) => {
                    let total = tag(p).size + size + tag(n).size;
                    self.free.remove(n);
                    self.unlink(seg);
                    self.unlink(n);
                    self.put_tag(seg, Some(p));
                    self.put_tag(n, Some(p));
                    self.free.set_extent(p, tag(p).start, total);
                    p
                }
            }
        }
    }

    /// Whether free segment `seg` is the whole of an imported span.
    ///
    /// # Safety
    ///
    /// `seg` is a valid tag on the address list.
    #[inline]
    unsafe fn fills_imported_span(&self, seg: NonNull<Seg>) -> bool {
        // SAFETY: valid tags (contract and type invariant).
        unsafe {
            tag(seg).aprev.is_some_and(|sp| {
                tag(sp).kind == SegKind::ImportedSpan && tag(sp).size == tag(seg).size
            })
        }
    }

    /// Why `addr` is not an allocated segment (error path: a linear walk is fine).
    fn classify_bad_free(&self, addr: usize, size: usize) -> VmemError {
        let mut cur = self.ahead;
        while let Some(p) = cur {
            // SAFETY: address-list tags are valid.
            let s = unsafe { tag(p) };
            if s.kind == SegKind::Free && s.start <= addr && addr < s.end() {
                return VmemError::DoubleFree { addr };
            }
            cur = s.anext;
        }
        VmemError::BadFree { addr, size }
    }
}
