// SPDX-License-Identifier: GPL-2.0

//! The arena: spans, segments, allocation, freeing, coalescing and span release.
//!
//! This file holds the arena's state, its construction and the read-only queries; each concern
//! of its behaviour has a file of its own under `arena/`, one `impl` block each: `lists` (tags
//! and the lists they live on), `spans`, `alloc`, `free`, `import` (single-threaded import
//! conveniences), `caches` (quantum caches and the magazine seam), `teardown` and `fit`.

use core::mem::MaybeUninit;
use core::ptr::NonNull;

use super::constraints::{round_size, Constraints, Placement};
use super::error::VmemError;
use super::flags::{Flags, Policy};
use super::freelist::{guaranteed_list, list_of, FreeLists};
use super::hash::AllocHash;
use super::qcache::{Depots, MAX_QCACHES};
use super::seg::{Link, Seg, SegKind};
use super::source::{ImportRequest, SpanRelease, SpanSource};
use super::stats::{SegKindSet, Stats};
use super::tags::{TagPageSource, TagPool, TAG_RESERVE};

mod alloc;
mod caches;
mod fit;
mod free;
mod import;
mod lists;
mod spans;
mod teardown;

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
        self.tag_pages() + self.hash_pages() + usize::from(self.depots.is_active())
    }

    /// Pages held for boundary tags.
    pub fn tag_pages(&self) -> usize {
        self.tags.npages
    }

    /// Pages held for the allocated-segment hash table.
    pub fn hash_pages(&self) -> usize {
        self.hash.pages()
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
