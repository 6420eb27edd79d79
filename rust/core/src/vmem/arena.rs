// SPDX-License-Identifier: GPL-2.0

//! The arena: spans, segments, allocation, freeing, coalescing and span release.

use core::ptr::NonNull;

use super::constraints::{round_size, Constraints, Placement};
use super::error::VmemError;
use super::flags::{Flags, Policy};
use super::freelist::{guaranteed_list, list_of, FreeLists};
use super::hash::AllocHash;
use super::qcache::{Depots, Magazine, MAX_QCACHES};
use super::seg::{Link, Seg, SegKind};
use super::source::{ImportRequest, SpanRelease, SpanSource};
use super::stats::{SegKindSet, Stats};
use super::tags::{TagPageSource, TagPool, TAG_RESERVE};

/// Longest arena name kept (longer names are truncated).
pub const NAME_MAX: usize = 31;

/// Parameters of [`Arena::new`].
#[derive(Clone, Copy, Debug)]
pub struct ArenaConfig<'a> {
    /// Name, for statistics and messages (copied, truncated to [`NAME_MAX`] bytes).
    pub name: &'a str,
    /// Unit of allocation: a power of two; every size is rounded up to it.
    pub quantum: usize,
    /// Largest size served by the quantum caches (0 = none); at most `16 * quantum`.
    pub qcache_max: usize,
    /// `Some(q)` if the arena imports from a source, importing multiples of `q` (a multiple of
    /// `quantum`); `None` for an arena that only gets spans from [`Arena::add`].
    pub import_quantum: Option<usize>,
    /// Initial span `(base, size)`, as if given to [`Arena::add`].
    pub span: Option<(usize, usize)>,
}

impl Default for ArenaConfig<'_> {
    fn default() -> Self {
        ArenaConfig {
            name: "",
            quantum: 1,
            qcache_max: 0,
            import_quantum: None,
            span: None,
        }
    }
}

/// Shared reference to a tag.
///
/// # Safety
///
/// `p` is a valid tag of the arena and no `&mut` to it is alive.
pub(super) unsafe fn tag<'a>(p: NonNull<Seg>) -> &'a Seg {
    // SAFETY: see the function contract.
    unsafe { &*p.as_ptr() }
}

/// Exclusive reference to a tag.
///
/// # Safety
///
/// `p` is a valid tag of the arena and no other reference to it is alive.
unsafe fn tag_mut<'a>(p: NonNull<Seg>) -> &'a mut Seg {
    // SAFETY: see the function contract.
    unsafe { &mut *p.as_ptr() }
}

/// A vmem arena: a set of integers handed out as segments.
///
/// # Invariants
///
/// The address list (`ahead`..`atail`) holds every span marker, in increasing address order,
/// each followed by free and allocated segments that tile it exactly; no two free segments are
/// adjacent; each free segment is on the freelist of its size, each allocated one on the hash;
/// span markers are also on the sorted span list `spans`; `rotor`, if set, is on the address list;
/// all tags belong to `tags`; the counters in `stats` equal the sums they describe. `audit`
/// checks all of this.
pub struct Arena<P: TagPageSource> {
    name: [u8; NAME_MAX],
    name_len: usize,
    quantum: usize,
    qcache_max: usize,
    import_quantum: Option<usize>,
    pages: P,
    pub(super) tags: TagPool,
    pub(super) ahead: Link,
    pub(super) atail: Link,
    pub(super) spans: Link,
    pub(super) free: FreeLists,
    pub(super) hash: AllocHash,
    pub(super) depots: Depots,
    pub(super) rotor: Link,
    rotor_addr: usize,
    pub(super) stats: Stats,
}

// SAFETY: every pointer in an arena points into pages it owns exclusively (from its own page
// source); nothing is shared with other arenas or threads, so moving the whole arena to another
// thread is sound when the page source itself may move.
unsafe impl<P: TagPageSource + Send> Send for Arena<P> {}

impl<P: TagPageSource> Arena<P> {
    /// Creates an arena, taking ownership of the page source that supplies its tags.
    pub fn new(cfg: &ArenaConfig<'_>, pages: P) -> Result<Self, VmemError> {
        let q = cfg.quantum;
        if !q.is_power_of_two()
            || cfg.qcache_max & (q - 1) != 0
            || cfg.qcache_max / q > MAX_QCACHES
            || cfg.import_quantum.is_some_and(|iq| iq == 0 || iq % q != 0)
        {
            return Err(VmemError::BadConfig);
        }
        let mut name = [0u8; NAME_MAX];
        let mut name_len = cfg.name.len().min(NAME_MAX);
        while !cfg.name.is_char_boundary(name_len) {
            name_len -= 1;
        }
        name[..name_len].copy_from_slice(&cfg.name.as_bytes()[..name_len]);
        let mut arena = Arena {
            name,
            name_len,
            quantum: q,
            qcache_max: cfg.qcache_max,
            import_quantum: cfg.import_quantum,
            pages,
            tags: TagPool::new(),
            ahead: None,
            atail: None,
            spans: None,
            free: FreeLists::new(),
            hash: AllocHash::new(q.trailing_zeros()),
            depots: Depots::new(),
            rotor: None,
            rotor_addr: 0,
            stats: Stats::default(),
        };
        let ncaches = cfg.qcache_max / q;
        if ncaches > 0 && !arena.depots.init(ncaches, &mut arena.pages) {
            arena.stats.populate_fail += 1;
            return Err(VmemError::NoTags);
        }
        if let Some((base, size)) = cfg.span {
            arena.add(base, size)?;
        }
        Ok(arena)
    }

    /// The arena's name.
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("")
    }

    /// The quantum.
    pub fn quantum(&self) -> usize {
        self.quantum
    }

    /// Largest size served by quantum caches (0 = none).
    pub fn qcache_max(&self) -> usize {
        self.qcache_max
    }

    /// The import quantum, if the arena has a source.
    pub fn import_quantum(&self) -> Option<usize> {
        self.import_quantum
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Counts one wait of a sleeping caller (for wrappers).
    pub fn note_wait(&mut self) {
        self.stats.wait += 1;
    }

    /// The page source (e.g. to inspect a test source).
    pub fn page_source(&self) -> &P {
        &self.pages
    }

    /// Pages held for tags, hash buckets and cache depots.
    pub fn pages_held(&self) -> usize {
        self.tags.npages + self.hash.pages() + usize::from(self.depots.is_active())
    }

    /// Size of the allocated, free, or all integers.
    pub fn size(&self, which: SegKindSet) -> usize {
        let mut n = 0;
        if which.contains(SegKindSet::ALLOC) {
            n += self.stats.mem_inuse;
        }
        if which.contains(SegKindSet::FREE) {
            n += self.stats.mem_total - self.stats.mem_inuse;
        }
        n
    }

    /// Calls `f(start, size)` for every allocated and/or free segment, in address order.
    pub fn walk(&self, which: SegKindSet, mut f: impl FnMut(usize, usize)) {
        let mut cur = self.ahead;
        while let Some(p) = cur {
            // SAFETY: address-list tags are valid (type invariant); no `&mut` is alive.
            let s = unsafe { tag(p) };
            let want = match s.kind {
                SegKind::Free => which.contains(SegKindSet::FREE),
                SegKind::Alloc | SegKind::Cached => which.contains(SegKindSet::ALLOC),
                _ => false,
            };
            if want {
                f(s.start, s.size);
            }
            cur = s.anext;
        }
    }

    // ---- tags and lists --------------------------------------------------------------------

    /// Tops up the tag reserve (and the hash table) before a mutation.
    fn populate(&mut self, need_hash: bool) -> Result<(), VmemError> {
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
    fn get_tag(&mut self) -> Result<NonNull<Seg>, VmemError> {
        self.tags.get().ok_or(VmemError::NoTags)
    }

    /// Returns an unlinked tag; moves the rotor to `replacement` if it pointed there.
    fn put_tag(&mut self, t: NonNull<Seg>, replacement: Link) {
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
    unsafe fn insert_after(&mut self, prev: Link, new: NonNull<Seg>) {
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

    /// Unlinks `t` from the address list.
    ///
    /// # Safety
    ///
    /// `t` is on the address list.
    unsafe fn unlink(&mut self, t: NonNull<Seg>) {
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
            tag_mut(t).anext = None;
            tag_mut(t).aprev = None;
        }
    }

    // ---- spans -----------------------------------------------------------------------------

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
    unsafe fn take_span_if_whole(&mut self, seg: NonNull<Seg>) -> Option<SpanRelease> {
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

    // ---- allocation ------------------------------------------------------------------------

    /// Allocates `size` integers (rounded up to the quantum) with policy `flags`; sizes up to
    /// `qcache_max` come from the quantum caches first.
    pub fn alloc(&mut self, size: usize, flags: Flags) -> Result<usize, VmemError> {
        let size = round_size(size, self.quantum).ok_or(VmemError::BadSize)?;
        if size <= self.qcache_max && self.depots.is_active() && !flags.contains(Flags::NO_QCACHE) {
            let i = size / self.quantum - 1;
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
    pub fn xalloc(
        &mut self,
        size: usize,
        c: &Constraints,
        flags: Flags,
    ) -> Result<usize, VmemError> {
        self.xalloc_seg(size, c, flags).map(|(addr, _)| addr)
    }

    fn xalloc_seg(
        &mut self,
        size: usize,
        c: &Constraints,
        flags: Flags,
    ) -> Result<(usize, NonNull<Seg>), VmemError> {
        let pl = c.check(size, self.quantum)?;
        self.populate(true)?;
        let Some((seg, addr)) = self.find_fit(&pl, flags.policy()) else {
            return match self.import_quantum {
                Some(iq) => Err(VmemError::ImportNeeded(self.import_request(&pl, flags, iq))),
                None => {
                    self.stats.fail += 1;
                    Err(VmemError::NoSpace)
                }
            };
        };
        let seg = self.carve(seg, addr, pl.size)?;
        if flags.policy() == Policy::NextFit {
            self.rotor = Some(seg);
            self.rotor_addr = addr + pl.size;
        }
        self.stats.alloc += 1;
        self.stats.mem_inuse += pl.size;
        if self.hash.rescale(&mut self.pages) {
            self.stats.hash_rescale += 1;
        }
        Ok((addr, seg))
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

    /// Splits free segment `seg` so that `[addr, addr + size)` becomes an allocated segment.
    fn carve(
        &mut self,
        seg: NonNull<Seg>,
        addr: usize,
        size: usize,
    ) -> Result<NonNull<Seg>, VmemError> {
        // SAFETY: `seg` is a valid free tag from `find_fit`.
        let (start, end) = unsafe { (tag(seg).start, tag(seg).end()) };
        let left = if addr > start {
            Some(self.get_tag()?)
        } else {
            None
        };
        let right = if addr + size < end {
            match self.get_tag() {
                Ok(t) => Some(t),
                Err(e) => {
                    if let Some(l) = left {
                        self.tags.put(l);
                    }
                    return Err(e);
                }
            }
        } else {
            None
        };
        // SAFETY: `seg` is on its freelist and the address list; `left`/`right` are fresh tags.
        unsafe {
            self.free.remove(seg);
            if let Some(l) = left {
                *tag_mut(l) = Seg {
                    start,
                    size: addr - start,
                    kind: SegKind::Free,
                    anext: None,
                    aprev: None,
                    knext: None,
                    kprev: None,
                };
                let prev = tag(seg).aprev;
                self.insert_after(prev, l);
                self.free.insert(l);
            }
            if let Some(r) = right {
                *tag_mut(r) = Seg {
                    start: addr + size,
                    size: end - addr - size,
                    kind: SegKind::Free,
                    anext: None,
                    aprev: None,
                    knext: None,
                    kprev: None,
                };
                self.insert_after(Some(seg), r);
                self.free.insert(r);
            }
            let s = tag_mut(seg);
            s.start = addr;
            s.size = size;
            s.kind = SegKind::Alloc;
            self.hash.insert(seg);
        }
        Ok(seg)
    }

    // ---- freeing ---------------------------------------------------------------------------

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
                    && self.depots.push(rsize / self.quantum - 1, addr)
                {
                    s.kind = SegKind::Cached;
                    return Ok(None);
                }
            }
        }
        self.free_seg(addr, size, false)
    }

    /// Frees `[addr, addr + size)` straight to the segment lists (pair of `xalloc`).
    pub fn xfree(&mut self, addr: usize, size: usize) -> Result<Option<SpanRelease>, VmemError> {
        self.free_seg(addr, size, false)
    }

    fn note_lookup(&mut self, steps: usize) {
        self.stats.lookup += 1;
        self.stats.lookup_steps += steps;
        self.stats.lookup_max_chain = self.stats.lookup_max_chain.max(steps);
    }

    fn free_seg(
        &mut self,
        addr: usize,
        size: usize,
        cached_ok: bool,
    ) -> Result<Option<SpanRelease>, VmemError> {
        let rsize = round_size(size, self.quantum).ok_or(VmemError::BadSize)?;
        // Unchain first (one pass); put back on the (rare) error paths.
        let (found, steps) = self.hash.remove(addr);
        self.note_lookup(steps);
        let Some(seg) = found else {
            return Err(self.classify_bad_free(addr, size));
        };
        // SAFETY: hash tags are valid.
        let (kind, allocated) = unsafe { (tag(seg).kind, tag(seg).size) };
        let err = if allocated != rsize {
            Some(VmemError::WrongSize {
                addr,
                size: rsize,
                allocated,
            })
        } else if kind == SegKind::Cached && !cached_ok {
            Some(VmemError::DoubleFree { addr })
        } else {
            None
        };
        if let Some(e) = err {
            // SAFETY: `seg` was just unchained and the table has pages.
            unsafe { self.hash.insert(seg) };
            return Err(e);
        }
        self.stats.free += 1;
        self.stats.mem_inuse -= rsize;
        // SAFETY: `seg` is a valid tag, now on no kind list.
        let release = unsafe { self.coalesce(seg) };
        if self.hash.rescale(&mut self.pages) {
            self.stats.hash_rescale += 1;
        }
        Ok(release)
    }

    /// Marks `seg` free, merges it with free neighbours, and releases or files the result.
    ///
    /// # Safety
    ///
    /// `seg` is a valid tag on the address list and on no kind list.
    unsafe fn coalesce(&mut self, seg: NonNull<Seg>) -> Option<SpanRelease> {
        // SAFETY: valid tags (contract and type invariant).
        unsafe {
            tag_mut(seg).kind = SegKind::Free;
            if let Some(n) = tag(seg).anext {
                if tag(n).kind == SegKind::Free {
                    self.free.remove(n);
                    tag_mut(seg).size += tag(n).size;
                    self.unlink(n);
                    self.put_tag(n, Some(seg));
                }
            }
            if let Some(p) = tag(seg).aprev {
                if tag(p).kind == SegKind::Free {
                    self.free.remove(p);
                    tag_mut(seg).start = tag(p).start;
                    tag_mut(seg).size += tag(p).size;
                    self.unlink(p);
                    self.put_tag(p, Some(seg));
                }
            }
            if let Some(r) = self.take_span_if_whole(seg) {
                return Some(r);
            }
            self.free.insert(seg);
        }
        None
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

    // ---- importing conveniences ------------------------------------------------------------

    /// `alloc`, importing from `src` once if the arena has a source and needs a span.
    pub fn alloc_importing(
        &mut self,
        size: usize,
        flags: Flags,
        src: &mut impl SpanSource,
    ) -> Result<usize, VmemError> {
        match self.alloc(size, flags) {
            Err(VmemError::ImportNeeded(req)) => {
                let base = self.import_from(&req, src)?;
                self.retry_after_import(base, src, |a| a.alloc(size, flags))
            }
            r => r,
        }
    }

    /// `xalloc`, importing from `src` once if the arena has a source and needs a span.
    pub fn xalloc_importing(
        &mut self,
        size: usize,
        c: &Constraints,
        flags: Flags,
        src: &mut impl SpanSource,
    ) -> Result<usize, VmemError> {
        match self.xalloc(size, c, flags) {
            Err(VmemError::ImportNeeded(req)) => {
                let base = self.import_from(&req, src)?;
                self.retry_after_import(base, src, |a| a.xalloc(size, c, flags))
            }
            r => r,
        }
    }

    /// `free`, giving a wholly free imported span back to `src`.
    pub fn free_releasing(
        &mut self,
        addr: usize,
        size: usize,
        src: &mut impl SpanSource,
    ) -> Result<(), VmemError> {
        if let Some(r) = self.free(addr, size)? {
            src.release(r);
        }
        Ok(())
    }

    /// `xfree`, giving a wholly free imported span back to `src`.
    pub fn xfree_releasing(
        &mut self,
        addr: usize,
        size: usize,
        src: &mut impl SpanSource,
    ) -> Result<(), VmemError> {
        if let Some(r) = self.xfree(addr, size)? {
            src.release(r);
        }
        Ok(())
    }

    fn import_from(
        &mut self,
        req: &ImportRequest,
        src: &mut impl SpanSource,
    ) -> Result<usize, VmemError> {
        let mut size = req.size;
        let mut imported = src.import(req);
        if imported.is_err() && req.min_size < req.size {
            // The source cannot give the rounded span: try the smallest one that still does.
            size = req.min_size;
            imported = src.import(&ImportRequest { size, ..*req });
        }
        let base = imported.map_err(|e| {
            self.stats.fail += 1;
            match e {
                VmemError::ImportNeeded(_) => VmemError::NoSpace,
                e => e,
            }
        })?;
        if let Err(e) = self.add_imported(base, size) {
            src.release(SpanRelease { base, size });
            return Err(e);
        }
        Ok(base)
    }

    fn retry_after_import(
        &mut self,
        base: usize,
        src: &mut impl SpanSource,
        op: impl FnOnce(&mut Self) -> Result<usize, VmemError>,
    ) -> Result<usize, VmemError> {
        match op(self) {
            Err(VmemError::ImportNeeded(_)) => {
                // The span did not help after all (the source ignored a constraint): give it back.
                if let Some(r) = self.release_span_if_free(base) {
                    src.release(r);
                }
                self.stats.fail += 1;
                Err(VmemError::NoSpace)
            }
            r => r,
        }
    }

    /// Removes the imported span at `base` if it is wholly free.
    fn release_span_if_free(&mut self, base: usize) -> Option<SpanRelease> {
        let mut cur = self.spans;
        while let Some(s) = cur {
            // SAFETY: span-list tags are valid.
            let st = unsafe { tag(s) };
            if st.start == base {
                let seg = st.anext?;
                // SAFETY: address-list tags are valid.
                if unsafe { tag(seg).kind } != SegKind::Free {
                    return None;
                }
                // SAFETY: `seg` is free: take it off its freelist before checking the span.
                unsafe {
                    self.free.remove(seg);
                    let r = self.take_span_if_whole(seg);
                    if r.is_none() {
                        self.free.insert(seg);
                    }
                    return r;
                }
            }
            cur = st.knext;
        }
        None
    }

    // ---- quantum caches and magazines -------------------------------------------------------

    /// Flushes the quantum-cache depots back into the arena; `release` receives imported spans
    /// that became wholly free.
    pub fn reap(&mut self, release: &mut dyn FnMut(SpanRelease)) {
        for i in 0..self.depots.ncaches {
            let size = (i + 1) * self.quantum;
            while let Some(addr) = self.depots.pop(i) {
                if let Ok(Some(r)) = self.free_seg(addr, size, true) {
                    release(r);
                }
            }
        }
    }

    /// Fills `mag` with rounds from the depot (or fresh allocations); returns the rounds held.
    /// Fails only if the magazine's size is not quantum-cached or nothing at all could be had.
    pub fn magazine_fill(&mut self, mag: &mut Magazine) -> Result<usize, VmemError> {
        let size = mag.size();
        if !self.depots.is_active()
            || size == 0
            || size & (self.quantum - 1) != 0
            || size > self.qcache_max
        {
            return Err(VmemError::BadSize);
        }
        let i = size / self.quantum - 1;
        while !mag.is_full() {
            let addr = match self.depots.pop(i) {
                Some(a) => a,
                None => match self.xalloc_seg(size, &Constraints::default(), Flags::INSTANT_FIT) {
                    Ok((a, seg)) => {
                        // SAFETY: a valid, freshly allocated tag.
                        unsafe { tag_mut(seg).kind = SegKind::Cached };
                        a
                    }
                    Err(e) if mag.is_empty() => return Err(e),
                    Err(_) => break,
                },
            };
            if mag.push(addr).is_err() {
                break;
            }
        }
        Ok(mag.len())
    }

    /// Empties `mag` into the depot, freeing what does not fit; `release` receives imported
    /// spans that became wholly free. Rounds that are not cached integers of this arena are
    /// dropped and reported (the first one) as an error after the magazine is emptied.
    pub fn magazine_drain(
        &mut self,
        mag: &mut Magazine,
        release: &mut dyn FnMut(SpanRelease),
    ) -> Result<(), VmemError> {
        let size = mag.size();
        if !self.depots.is_active()
            || size == 0
            || size & (self.quantum - 1) != 0
            || size > self.qcache_max
        {
            return Err(VmemError::BadSize);
        }
        let i = size / self.quantum - 1;
        let mut result = Ok(());
        while let Some(addr) = mag.pop() {
            let (found, steps) = self.hash.find(addr);
            self.note_lookup(steps);
            // SAFETY: hash tags are valid.
            let ok = found
                .is_some_and(|s| unsafe { tag(s).kind == SegKind::Cached && tag(s).size == size });
            if !ok {
                if result.is_ok() {
                    result = Err(VmemError::BadFree { addr, size });
                }
                continue;
            }
            if !self.depots.push(i, addr) {
                if let Ok(Some(r)) = self.free_seg(addr, size, true) {
                    release(r);
                }
            }
        }
        result
    }

    // ---- teardown --------------------------------------------------------------------------

    /// Destroys the arena's contents: flushes the caches, and if nothing is allocated any more,
    /// hands every imported span to `release` and returns all pages to the page source (the
    /// arena is then empty and may be reused, without quantum caches). With live segments it returns
    /// [`VmemError::LiveSegments`] and changes nothing else.
    pub fn destroy(&mut self, release: &mut dyn FnMut(SpanRelease)) -> Result<(), VmemError> {
        self.reap(release);
        if self.hash.count > 0 {
            return Err(VmemError::LiveSegments {
                count: self.hash.count,
                bytes: self.stats.mem_inuse,
            });
        }
        let mut cur = self.spans;
        while let Some(s) = cur {
            // SAFETY: span-list tags are valid.
            let st = unsafe { tag(s) };
            if st.kind == SegKind::ImportedSpan {
                release(SpanRelease {
                    base: st.start,
                    size: st.size,
                });
            }
            cur = st.knext;
        }
        self.release_pages();
        Ok(())
    }

    /// Convenience `destroy` that releases imported spans to `src`.
    pub fn destroy_releasing(&mut self, src: &mut impl SpanSource) -> Result<(), VmemError> {
        self.destroy(&mut |r| src.release(r))
    }

    fn release_pages(&mut self) {
        self.hash.release_all(&mut self.pages);
        self.depots.release(&mut self.pages);
        self.tags.release_all(&mut self.pages);
        self.ahead = None;
        self.atail = None;
        self.spans = None;
        self.rotor = None;
        self.rotor_addr = 0;
        self.free = FreeLists::new();
        let keep = Stats {
            mem_inuse: 0,
            mem_import: 0,
            mem_total: 0,
            ..self.stats
        };
        self.stats = keep;
    }

    // ---- fit policies ----------------------------------------------------------------------

    /// Finds a free segment and the address in it for request `pl` under `policy`.
    fn find_fit(&mut self, pl: &Placement, policy: Policy) -> Option<(NonNull<Seg>, usize)> {
        match policy {
            Policy::InstantFit => self.instant_fit(pl),
            Policy::BestFit => self.best_fit(pl),
            Policy::NextFit => self.next_fit(pl),
        }
    }

    /// First segment (in list order) of list `k` that fits `pl`.
    fn first_fit_in_list(&mut self, k: usize, pl: &Placement) -> Option<(NonNull<Seg>, usize)> {
        let mut cur = self.free.heads[k];
        while let Some(p) = cur {
            self.stats.search += 1;
            // SAFETY: freelist tags are valid.
            let s = unsafe { tag(p) };
            if let Some(a) = pl.place(s.start, s.size) {
                return Some((p, a));
            }
            cur = s.knext;
        }
        None
    }

    fn instant_fit(&mut self, pl: &Placement) -> Option<(NonNull<Seg>, usize)> {
        let g = guaranteed_list(pl.size);
        if pl.is_trivial(self.quantum) {
            // The constant-time path: any segment on list >= g fits, take the head.
            if let Some(k) = self.free.first_nonempty_from(g) {
                let p = self.free.heads[k]?;
                // SAFETY: freelist tags are valid.
                return Some((p, unsafe { tag(p).start }));
            }
        } else {
            let mut k = g;
            while let Some(l) = self.free.first_nonempty_from(k) {
                if let Some(r) = self.first_fit_in_list(l, pl) {
                    return Some(r);
                }
                k = l + 1;
            }
        }
        // Nothing is guaranteed to fit: look at the list holding `size` itself.
        let f = list_of(pl.size);
        if f < g {
            return self.first_fit_in_list(f, pl);
        }
        None
    }

    fn best_fit(&mut self, pl: &Placement) -> Option<(NonNull<Seg>, usize)> {
        let mut k = list_of(pl.size);
        while let Some(l) = self.free.first_nonempty_from(k) {
            let mut best: Option<(NonNull<Seg>, usize, usize)> = None;
            let mut cur = self.free.heads[l];
            while let Some(p) = cur {
                self.stats.search += 1;
                // SAFETY: freelist tags are valid.
                let s = unsafe { tag(p) };
                if let Some(a) = pl.place(s.start, s.size) {
                    let better = match best {
                        None => true,
                        Some((bp, _, bs)) => {
                            s.size < bs || (s.size == bs && s.start < unsafe { tag(bp) }.start)
                        }
                    };
                    if better {
                        best = Some((p, a, s.size));
                    }
                    if s.size == pl.size {
                        break; // nothing can fit better than an exact fit
                    }
                }
                cur = s.knext;
            }
            if let Some((p, a, _)) = best {
                return Some((p, a));
            }
            k = l + 1;
        }
        None
    }

    /// Next-fit: the first fit at or after the rotor address, wrapping around once.
    ///
    /// `rotor` is a hint: a tag at or before the rotor address (kept valid when tags are
    /// merged away); `rotor_addr` is where the last next-fit allocation ended.
    fn next_fit(&mut self, pl: &Placement) -> Option<(NonNull<Seg>, usize)> {
        let start = self.rotor.or(self.ahead)?;
        let after_rotor = Placement {
            min: pl.min.max(self.rotor_addr),
            ..*pl
        };
        let mut cur = start;
        let mut first = true;
        loop {
            // SAFETY: address-list tags are valid.
            let s = unsafe { tag(cur) };
            if s.kind == SegKind::Free {
                self.stats.search += 1;
                let p = if first { &after_rotor } else { pl };
                if let Some(a) = p.place(s.start, s.size) {
                    return Some((cur, a));
                }
            }
            first = false;
            cur = s.anext.or(self.ahead)?;
            if cur == start {
                break;
            }
        }
        // Wrapped around: the part of the starting segment before the rotor.
        // SAFETY: address-list tags are valid.
        let s = unsafe { tag(start) };
        if s.kind == SegKind::Free {
            if let Some(a) = pl.place(s.start, s.size) {
                return Some((start, a));
            }
        }
        None
    }
}

impl<P: TagPageSource> Drop for Arena<P> {
    fn drop(&mut self) {
        self.hash.release_all(&mut self.pages);
        self.depots.release(&mut self.pages);
        self.tags.release_all(&mut self.pages);
    }
}

impl<P: TagPageSource> SpanSource for Arena<P> {
    /// Imports with `xalloc` (the arena must not need to import itself: that is reported as
    /// [`VmemError::NoSpace`]).
    fn import(&mut self, req: &ImportRequest) -> Result<usize, VmemError> {
        match self.xalloc(req.size, &req.constraints, req.flags) {
            Err(VmemError::ImportNeeded(_)) => Err(VmemError::NoSpace),
            r => r,
        }
    }

    /// Releases with `xfree`. A span this arena itself would release in turn is dropped: use
    /// arenas without a source as `SpanSource`s, or nest with the explicit seam.
    fn release(&mut self, span: SpanRelease) {
        let _ = self.xfree(span.base, span.size);
    }
}
