// SPDX-License-Identifier: GPL-2.0

//! The real backend: a vmem kmem arena (quantum = one page) importing from a page-level source.
//!
//! Bucket clusters (1 to 8 pages) are carved from 256 KiB chunks of the arena by a buddy
//! allocator (module `chunks`: one vmem segment per chunk rather than per cluster, which is what
//! keeps vmem's tags within the metadata budget); other runs (large allocations) and metadata
//! pages (few, long-lived) are `xalloc`s of their own. vmem coalesces freed runs and chunks and gives wholly free
//! imported spans back to the source, so pages a bucket returns travel all the way down.
//!
//! Both the arena and the source are driven under the caller's lock (the `*_importing` and
//! `*_releasing` conveniences), so the source must not sleep either (in the kernel: atomic page
//! allocation; the glue pre-fills the arena before sleeping allocations if it wants more).

use crate::vmem::{Arena, ArenaConfig, Constraints, Flags, SpanSource, TagPageSource, VmemError};

use super::chunks::Chunks;
use super::kmem::KmemPages;
use super::params::PAGE_SIZE;

/// A [`KmemPages`] over a vmem arena and its span source.
///
/// # Invariants
///
/// `arena` has a quantum of [`PAGE_SIZE`] and hands out memory that is real, writable and owned
/// by this backend until freed (the source's spans are real memory).
pub struct VmemKmem<P: TagPageSource, S: SpanSource> {
    arena: Arena<P>,
    source: S,
    chunks: Chunks,
}

impl<P: TagPageSource, S: SpanSource> VmemKmem<P, S> {
    /// A backend over `arena` (quantum [`PAGE_SIZE`]) importing from `source`, whose spans must be
    /// real memory owned by the source. Returns `None` if the quantum is not one page.
    ///
    /// # Safety
    ///
    /// Every span `source` imports (and every span added to `arena`) must be memory that is valid
    /// for reads and writes and used by nobody else while the arena holds it.
    pub unsafe fn new(arena: Arena<P>, source: S) -> Option<Self> {
        if arena.quantum() != PAGE_SIZE {
            return None;
        }
        Some(Self {
            arena,
            source,
            chunks: Chunks::new(),
        })
    }

    /// Initialises at `slot` a backend whose arena is built from `cfg` and `pages` (as
    /// [`Arena::init_in_place`]) and whose source `init_source` initialises in place, so that
    /// neither the arena (about 1 KiB) nor the backend is ever built on the stack and moved.
    ///
    /// The arena is initialised first, then the source. Returns `Err(VmemError::BadConfig)`
    /// (before anything is built) if `cfg.quantum` is not [`PAGE_SIZE`], the arena's error if it
    /// cannot be built, or `init_source`'s error, in which case the arena is dropped again (its
    /// pages go back to `pages`' owner).
    ///
    /// # Safety
    ///
    /// * `slot` must be valid for writes of `Self` and aligned; its previous contents are
    ///   overwritten without being dropped. On `Ok(())` it holds a backend the caller owns (and
    ///   must drop); on `Err` it is left uninitialised (nothing to drop).
    /// * `init_source` is called with a pointer to the source field (valid for writes, aligned,
    ///   uninitialised). On `Ok(())` it must have initialised it; on `Err` it must have left it
    ///   uninitialised, owning nothing.
    /// * As for [`VmemKmem::new`]: every span the source imports (and every span of
    ///   `cfg.span`) must be memory that is valid for reads and writes and used by nobody else
    ///   while the arena holds it.
    pub unsafe fn init_in_place(
        slot: *mut Self,
        cfg: &ArenaConfig<'_>,
        pages: P,
        init_source: impl FnOnce(*mut S) -> Result<(), VmemError>,
    ) -> Result<(), VmemError> {
        if cfg.quantum != PAGE_SIZE {
            return Err(VmemError::BadConfig);
        }
        // SAFETY: `slot` is valid for writes and aligned (contract), so is its `arena` field; the
        // place is formed without a reference to the uninitialised backend.
        let arena = unsafe { &raw mut (*slot).arena };
        // SAFETY: `arena` is valid for writes and aligned (above). On `Err` it is left
        // uninitialised, and so is the whole slot, as documented.
        unsafe { Arena::init_in_place(arena, cfg, pages) }?;
        // SAFETY: as for `arena`; `init_source` initialises it or leaves it empty (contract).
        let source = unsafe { &raw mut (*slot).source };
        if let Err(e) = init_source(source) {
            // SAFETY: the arena was initialised above and nothing else refers to it; dropping
            // it leaves the slot wholly uninitialised, as documented.
            unsafe { core::ptr::drop_in_place(arena) };
            return Err(e);
        }
        // SAFETY: `slot` is valid for writes and aligned (contract); the field is written once.
        unsafe { (&raw mut (*slot).chunks).write(Chunks::new()) };
        // Every field is initialised: `slot` holds a backend whose arena has a quantum of one
        // page and whose spans are real memory (contract), as the invariants require.
        Ok(())
    }

    /// The kmem arena.
    pub fn arena(&self) -> &Arena<P> {
        &self.arena
    }

    /// The page-level source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Chunks of [`CHUNK_PAGES`](super::CHUNK_PAGES) pages held for clusters and metadata
    /// pages.
    pub fn chunks(&self) -> usize {
        self.chunks.chunks()
    }

    /// Free pages inside the chunks held (the spare chunk included).
    pub fn chunk_free_pages(&self) -> usize {
        self.chunks.free_pages()
    }

    /// Metadata pages of the chunk registry.
    pub fn chunk_registry_pages(&self) -> usize {
        self.chunks.registry_pages()
    }

    /// Gives the spare chunk back to the arena (and the arena's wholly free spans to the source).
    pub fn trim(&mut self) {
        self.chunks.release_spare(&mut self.arena, &mut self.source);
    }

    fn alloc_run(&mut self, npages: usize, align_pages: usize) -> Option<usize> {
        let size = npages.checked_mul(PAGE_SIZE)?;
        let c = Constraints {
            align: align_pages.checked_mul(PAGE_SIZE)?,
            ..Constraints::default()
        };
        let a = self
            .arena
            .xalloc_importing(size, &c, Flags::NOSLEEP, &mut self.source)
            .ok()?;
        // Address 0 is valid for vmem but means "none" to malloc: never hand it out.
        if a == 0 {
            let _ = self.arena.xfree_releasing(a, size, &mut self.source);
            return None;
        }
        Some(a)
    }

    fn free_run(&mut self, addr: usize, npages: usize) {
        // malloc only frees runs it allocated with the same size, so this cannot fail; if the
        // arena disagrees the run is leaked rather than corrupting anything.
        let _ = self
            .arena
            .xfree_releasing(addr, npages * PAGE_SIZE, &mut self.source);
    }
}

// SAFETY: runs come from an arena whose spans are real memory owned by the backend (the `new`
// contract); vmem never hands out overlapping segments, alignment is passed as a constraint and
// the quantum is a page, so every run is page-aligned, writable and exclusive until freed.
unsafe impl<P: TagPageSource, S: SpanSource> KmemPages for VmemKmem<P, S> {
    fn alloc_pages(&mut self, npages: usize, align_pages: usize) -> Option<usize> {
        match Chunks::order_for(npages, align_pages) {
            Some(order) => self.chunks.alloc(&mut self.arena, &mut self.source, order),
            None => self.alloc_run(npages, align_pages),
        }
    }

    unsafe fn free_pages(&mut self, addr: usize, npages: usize) {
        if self.chunks.owns(addr) {
            // SAFETY: a run inside a chunk came from `chunks.alloc` with this size (the caller
            // returns exactly what it got), and its order is that of `npages`.
            unsafe {
                self.chunks.free(
                    &mut self.arena,
                    &mut self.source,
                    addr,
                    npages.trailing_zeros(),
                )
            };
        } else {
            self.free_run(addr, npages);
        }
    }

    // Metadata pages are few and long-lived (the page map's table outlives most clusters): taken
    // from the arena directly, they never pin a chunk.
    fn alloc_meta_page(&mut self) -> Option<usize> {
        self.alloc_run(1, 1)
    }

    unsafe fn free_meta_page(&mut self, addr: usize) {
        self.free_run(addr, 1);
    }

    fn meta_pages(&self) -> usize {
        self.chunks.registry_pages()
    }

    fn trim(&mut self) {
        VmemKmem::trim(self);
    }

    fn reclaimable_pages(&self) -> usize {
        self.chunks.spare_pages()
    }
}

impl<P: TagPageSource, S: SpanSource> Drop for VmemKmem<P, S> {
    fn drop(&mut self) {
        // Pages of live allocations stay with the arena (as before chunks); the spare goes.
        self.trim();
    }
}
