// SPDX-License-Identifier: GPL-2.0

//! The arena: spans, segments, allocation, freeing, coalescing and span release.

use core::mem::MaybeUninit;
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
#[inline(always)]
pub(super) unsafe fn tag<'a>(p: NonNull<Seg>) -> &'a Seg {
    // SAFETY: see the function contract.
    unsafe { &*p.as_ptr() }
}

/// Exclusive reference to a tag.
///
/// # Safety
///
/// `p` is a valid tag of the arena and no other reference to it is alive.
#[inline(always)]
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
    ///
    /// An arena is about 1 KiB (mostly the freelist heads): callers on a small stack (the
    /// kernel) should build it where it lives with [`Arena::init_in_place`] instead.
    pub fn new(cfg: &ArenaConfig<'_>, pages: P) -> Result<Self, VmemError> {
        let mut slot = MaybeUninit::<Self>::uninit();
        // SAFETY: `slot` is valid for writes of `Self` and aligned.
        unsafe { Self::init_in_place(slot.as_mut_ptr(), cfg, pages)? };
        // SAFETY: `init_in_place` succeeded, so the slot holds an initialised arena.
        Ok(unsafe { slot.assume_init() })
    }

    /// Initialises at `slot` the arena [`Arena::new`] returns, field by field, with no copy of
    /// the arena on the stack.
    ///
    /// The arena holds no pointer to itself, so it may be moved afterwards.
    ///
    /// # Safety
    ///
    /// `slot` must be valid for writes of `Self` and aligned; its previous contents are
    /// overwritten without being dropped. On `Ok(())` the slot holds an initialised arena that
    /// the caller owns (and must drop); on `Err` it is left uninitialised (nothing to drop; the
    /// page source was dropped and got back any page taken).
    pub unsafe fn init_in_place(
        slot: *mut Self,
        cfg: &ArenaConfig<'_>,
        pages: P,
    ) -> Result<(), VmemError> {
        let q = cfg.quantum;
        if !q.is_power_of_two()
            || cfg.qcache_max & (q - 1) != 0
            || (cfg.qcache_max >> q.trailing_zeros()) > MAX_QCACHES
            || cfg
                .import_quantum
                .is_some_and(|iq| iq == 0 || iq & (q - 1) != 0)
        {
            return Err(VmemError::BadConfig);
        }
        let mut name_len = cfg.name.len().min(NAME_MAX);
        while !cfg.name.is_char_boundary(name_len) {
            name_len -= 1;
        }
        let mut name = [0u8; NAME_MAX];
        name[..name_len].copy_from_slice(&cfg.name.as_bytes()[..name_len]);
        // SAFETY: `slot` is valid for writes (contract); every field is written once before the
        // arena is used as a whole.
        unsafe {
            (&raw mut (*slot).name).write(name);
            (&raw mut (*slot).name_len).write(name_len);
            (&raw mut (*slot).quantum).write(q);
            (&raw mut (*slot).qcache_max).write(cfg.qcache_max);
            (&raw mut (*slot).import_quantum).write(cfg.import_quantum);
            (&raw mut (*slot).pages).write(pages);
            (&raw mut (*slot).tags).write(TagPool::new());
            (&raw mut (*slot).ahead).write(None);
            (&raw mut (*slot).atail).write(None);
            (&raw mut (*slot).spans).write(None);
            (&raw mut (*slot).free).write(FreeLists::new());
            (&raw mut (*slot).hash).write(AllocHash::new(q.trailing_zeros()));
            (&raw mut (*slot).depots).write(Depots::new());
            (&raw mut (*slot).rotor).write(None);
            (&raw mut (*slot).rotor_addr).write(0);
            (&raw mut (*slot).stats).write(Stats::default());
        }
        // SAFETY: every field is initialised above.
        let arena = unsafe { &mut *slot };
        let ncaches = cfg.qcache_max >> q.trailing_zeros();
        let r = if ncaches > 0 && !arena.depots.init(ncaches, &mut arena.pages) {
            Err(VmemError::NoTags)
        } else if let Some((base, size)) = cfg.span {
            arena.add(base, size)
        } else {
            Ok(())
        };
        if r.is_err() {
            // SAFETY: the arena is initialised; dropping it gives its pages back and leaves the
            // slot uninitialised, as documented.
            unsafe { core::ptr::drop_in_place(slot) };
        }
        r
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

    /// Depot index of a quantum-cached `size` (a non-zero multiple of the quantum): a shift,
    /// not a division (the kernel build avoids runtime divisors).
    #[inline]
    fn qcache_index(&self, size: usize) -> usize {
        (size >> self.quantum.trailing_zeros()).saturating_sub(1)
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
    #[inline]
    fn populate(&mut self, need_hash: bool) -> Result<(), VmemError> {
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
    fn get_tag(&mut self) -> Result<NonNull<Seg>, VmemError> {
        self.tags.get().ok_or(VmemError::NoTags)
    }

    /// Returns an unlinked tag; moves the rotor to `replacement` if it pointed there.
    #[inline]
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
    #[inline]
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

    /// Links `new` into the address list right before `t`.
    ///
    /// # Safety
    ///
    /// `new` is a valid tag on no address list; `t` is on the list.
    #[inline]
    unsafe fn insert_before(&mut self, t: NonNull<Seg>, new: NonNull<Seg>) {
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
    fn xalloc_seg(
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
    fn maybe_rescale(&mut self) {
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
    fn note_lookup(&mut self, steps: usize) {
        self.stats.lookup += 1;
        self.stats.lookup_steps += steps;
        if steps > self.stats.lookup_max_chain {
            self.stats.lookup_max_chain = steps;
        }
    }

    /// Frees the allocated segment `[addr, addr + size)` (one held by a quantum cache only if
    /// `CACHED_OK`); returns the imported span that became wholly free and was removed.
    #[inline]
    fn free_seg<const CACHED_OK: bool>(
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
                if let Ok(Some(r)) = self.free_seg::<true>(addr, size) {
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
        let i = self.qcache_index(size);
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
        let i = self.qcache_index(size);
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
                if let Ok(Some(r)) = self.free_seg::<true>(addr, size) {
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
    #[inline]
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

    #[inline]
    fn instant_fit(&mut self, pl: &Placement) -> Option<(NonNull<Seg>, usize)> {
        let g = guaranteed_list(pl.size);
        if pl.is_trivial() {
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
            // (tag, placed address, segment size, segment start) of the best fit so far.
            let mut best: Option<(NonNull<Seg>, usize, usize, usize)> = None;
            let mut cur = self.free.heads[l];
            while let Some(p) = cur {
                self.stats.search += 1;
                // SAFETY: freelist tags are valid.
                let s = unsafe { tag(p) };
                if let Some(a) = pl.place(s.start, s.size) {
                    let better = match best {
                        None => true,
                        Some((_, _, bsize, bstart)) => {
                            s.size < bsize || (s.size == bsize && s.start < bstart)
                        }
                    };
                    if better {
                        best = Some((p, a, s.size, s.start));
                    }
                    if s.size == pl.size {
                        break; // nothing can fit better than an exact fit
                    }
                }
                cur = s.knext;
            }
            if let Some((p, a, _, _)) = best {
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
            trivial: false,
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
