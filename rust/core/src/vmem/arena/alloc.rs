// SPDX-License-Identifier: GPL-2.0

//! Allocation: `alloc`/`xalloc` with their constraints, the instant-fit fast path and splitting.

use super::*;

impl<P: TagPageSource> Arena<P> {
    /// Allocates `size` integers (rounded up to the quantum) with policy `flags`; sizes up to
    /// `qcache_max` come from the quantum caches first.
    pub fn alloc(&mut self, size: usize, flags: Flags) -> Result<usize, VmemError> {
        let size = round_size(size, self.quantum).ok_or(VmemError::BadSize)?;
        if size <= self.qcache_max && self.depots.is_active() && !flags.contains(Flags::NO_QCACHE) {
            let i = self.qcache_index(size);
            if let Some(addr) = self.depots.pop(i) {
                if let (Some(seg), _) = self.hash.find(addr) {
                    // SAFETY: hash tags are valid.
                    unsafe { tag_mut(seg).kind = SegKind::Alloc };
                    self.stats.qcache_hit += 1;
                    return Ok(addr);
                }
            }
            self.stats.qcache_miss += 1;
        }
        self.xalloc(size, &Constraints::default(), flags)
    }

    /// Allocates `size` integers honouring `c` (never from the quantum caches).
    ///
    /// A small dispatcher, inlined into the caller: with default constraints and instant-fit
    /// it calls the constant-time path, which hands back the address in registers; everything
    /// else (constraints, other policies, errors, topping up tags) takes `xalloc_searching`.
    #[inline]
    pub fn xalloc(
        &mut self,
        size: usize,
        c: &Constraints,
        flags: Flags,
    ) -> Result<usize, VmemError> {
        self.xalloc_seg(size, c, flags).map(|(addr, _)| addr)
    }

    #[inline]
    pub(super) fn xalloc_seg(
        &mut self,
        size: usize,
        c: &Constraints,
        flags: Flags,
    ) -> Result<(usize, NonNull<Seg>), VmemError> {
        if flags.policy() == Policy::InstantFit && c.is_default() {
            if let Some(r) = self.instant_fit_fast(size) {
                return Ok(r);
            }
        }
        self.xalloc_searching(size, c, flags)
    }

    /// The constant-time path of an unconstrained instant-fit allocation, without building a
    /// placement: round, take the head of the lowest non-empty list that is guaranteed to fit,
    /// carve its front. Returns `None`, having changed nothing, when it cannot finish (bad
    /// size, hash table not set up yet, no segment guaranteed to fit, tag reserve empty):
    /// `xalloc_searching` then reports or repairs that.
    #[inline(never)]
    #[cfg_attr(MODULE, link_section = ".text.kmalloc43_vmem")]
    fn instant_fit_fast(&mut self, size: usize) -> Option<(usize, NonNull<Seg>)> {
        let mask = self.quantum - 1;
        // `1 <= size <= usize::MAX - mask` in one compare (size 0 wraps around to the top).
        if size.wrapping_sub(1) >= usize::MAX - mask || !self.hash.is_ready() {
            return None;
        }
        let size = size.wrapping_add(mask) & !mask;
        let seg = self.free.first_guaranteed(size)?;
        // SAFETY: freelist tags are valid.
        let addr = unsafe { tag(seg).start };
        let a = self.carve_front(seg, size)?;
        self.stats.alloc += 1;
        self.stats.mem_inuse += size;
        self.maybe_rescale();
        Some((addr, a))
    }

    /// `xalloc_seg` with constraints, another policy, or no segment guaranteed to fit.
    #[inline(never)]
    fn xalloc_searching(
        &mut self,
        size: usize,
        c: &Constraints,
        flags: Flags,
    ) -> Result<(usize, NonNull<Seg>), VmemError> {
        let pl = c.check(size, self.quantum)?;
        self.populate(true)?;
        let policy = flags.policy();
        let Some((seg, addr)) = self.find_fit(&pl, policy) else {
            return match self.import_quantum {
                Some(iq) => Err(VmemError::ImportNeeded(self.import_request(&pl, flags, iq))),
                None => {
                    self.stats.fail += 1;
                    Err(VmemError::NoSpace)
                }
            };
        };
        let seg = self.carve(seg, addr, pl.size)?;
        if policy == Policy::NextFit {
            self.rotor = Some(seg);
            self.rotor_addr = addr + pl.size;
        }
        self.stats.alloc += 1;
        self.stats.mem_inuse += pl.size;
        self.maybe_rescale();
        Ok((addr, seg))
    }

    /// Resizes the hash table if its load calls for it (two compares on the fast path).
    #[inline]
    pub(super) fn maybe_rescale(&mut self) {
        if self.hash.wants_rescale() && self.hash.rescale(&mut self.pages) {
            self.stats.hash_rescale += 1;
        }
    }

    /// What to import so that the request `pl` fits in the new span.
    ///
    /// Alignment and phase alone are met by slack, as in illumos: any quantum-aligned base is
    /// followed within `align - quantum` by an address of the right phase, so the span is that
    /// much larger and needs no constraint from the source (whose quantum may differ). Address
    /// range and boundary constraints are passed on to the source, for a span that holds the
    /// request at its base.
    fn import_request(&self, pl: &Placement, flags: Flags, iq: usize) -> ImportRequest {
        let q = self.quantum;
        let round = |n: usize| n.checked_next_multiple_of(iq).unwrap_or(n);
        if pl.nocross == 0 && pl.min == 0 && pl.max.is_none() {
            let slack = pl.align.saturating_sub(q);
            let min_size = pl.size.saturating_add(slack);
            return ImportRequest {
                size: round(min_size),
                min_size,
                constraints: Constraints::default(),
                flags,
            };
        }
        let mut size = round(pl.size);
        if pl.nocross != 0 && size > pl.nocross {
            size = pl.size;
        }
        if let Some(max) = pl.max {
            if pl.min.checked_add(size).is_none_or(|e| e > max) {
                size = pl.size;
            }
        }
        ImportRequest {
            size,
            min_size: pl.size,
            constraints: Constraints {
                align: if pl.align > q { pl.align } else { 0 },
                phase: pl.phase,
                nocross: pl.nocross,
                min: pl.min,
                max: pl.max,
            },
            flags,
        }
    }

    /// Splits free segment `seg` so that `[addr, addr + size)` becomes an allocated segment;
    /// returns the allocated segment's tag.
    ///
    /// The free tag keeps describing a free remainder (so the common split, from the start of a
    /// large segment, changes one tag's extent in place and moves it to another freelist only if
    /// its size class changes); a fresh tag describes the allocated piece, and a second one a
    /// free remainder on the other side, if any.
    fn carve(
        &mut self,
        seg: NonNull<Seg>,
        addr: usize,
        size: usize,
    ) -> Result<NonNull<Seg>, VmemError> {
        // SAFETY: `seg` is a valid free tag from `find_fit`.
        let (start, end) = unsafe { (tag(seg).start, tag(seg).end()) };
        if addr == start {
            return self.carve_front(seg, size).ok_or(VmemError::NoTags);
        }
        let aend = addr + size;
        let right = end - aend;
        let a = self.get_tag()?;
        let r = if right > 0 {
            match self.get_tag() {
                Ok(t) => Some(t),
                Err(e) => {
                    self.tags.put(a);
                    return Err(e);
                }
            }
        } else {
            None
        };
        // SAFETY: `seg` is on its freelist and the address list; `a`/`r` are fresh tags.
        unsafe {
            *tag_mut(a) = Seg {
                start: addr,
                size,
                kind: SegKind::Alloc,
                anext: None,
                aprev: None,
                knext: None,
                kprev: None,
            };
            // [free seg][alloc a] and, if `right > 0`, [free r] after it.
            self.insert_after(Some(seg), a);
            self.free.set_extent(seg, start, addr - start);
            if let Some(r) = r {
                *tag_mut(r) = Seg {
                    start: aend,
                    size: right,
                    kind: SegKind::Free,
                    anext: None,
                    aprev: None,
                    knext: None,
                    kprev: None,
                };
                self.insert_after(Some(a), r);
                self.free.insert(r);
            }
            self.hash.insert(a);
        }
        Ok(a)
    }

    /// `carve` of the first `size` integers of free segment `seg` (`size <= seg.size`);
    /// `None`, having changed nothing, if it needs a tag and the reserve is empty.
    #[inline(always)]
    fn carve_front(&mut self, seg: NonNull<Seg>, size: usize) -> Option<NonNull<Seg>> {
        // SAFETY: `seg` is a valid free tag, on its freelist and the address list; `a` is a
        // fresh tag, on no list until linked here (links and hash chain are written below).
        unsafe {
            let (start, rest) = (tag(seg).start, tag(seg).size - size);
            if rest == 0 {
                // Exact fit: the free tag becomes the allocated one.
                self.free.remove(seg);
                tag_mut(seg).kind = SegKind::Alloc;
                self.hash.insert(seg);
                return Some(seg);
            }
            // [alloc a][free seg]: the free tag keeps the remainder.
            let a = self.tags.get()?;
            let t = tag_mut(a);
            t.start = start;
            t.size = size;
            t.kind = SegKind::Alloc;
            self.insert_before(seg, a);
            self.free.set_extent(seg, start + size, rest);
            self.hash.insert(a);
            Some(a)
        }
    }
}
