// SPDX-License-Identifier: GPL-2.0

//! Host page supplies for the malloc core: real, aligned memory from the system allocator.
//!
//! [`HostPages`] is the trivial direct backend (every run is its own system allocation, so runs
//! are scattered like the kernel's direct-map chunks). [`HostSpanSource`] plays the kernel's page
//! allocator below a vmem kmem arena: it hands out naturally aligned power-of-two chunks.
//! [`HostPageAllocator`] plays the page allocator a sleeping `WAITOK` call takes a chunk from
//! (`GFP_KERNEL`), to deposit in [`HostPages`]' reserve (the kernel's page arena reserve).

use std::alloc::{alloc, dealloc, Layout};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

use crate::malloc::{KmemPages, PAGE_SIZE};
use crate::vmem::{ImportRequest, SpanRelease, SpanSource, VmemError};

/// A [`KmemPages`] over `std::alloc`, with optional page budgets to provoke exhaustion.
#[derive(Default)]
pub struct HostPages {
    runs: HashMap<usize, Layout>,
    metas: HashMap<usize, Layout>,
    data_pages: usize,
    data_limit: Option<usize>,
    meta_limit: Option<usize>,
    data_calls: u64,
    /// Deposited chunks `(addr, order)`, used when the budget is exhausted.
    reserve: Vec<(usize, u32)>,
    /// Runs served from a deposited chunk: run address -> the chunk's order.
    reserve_runs: HashMap<usize, u32>,
    /// Whether a deposit vanishes at once (see [`HostPages::set_deposits_stolen`]).
    deposits_stolen: bool,
}

/// The largest chunk order [`HostPageAllocator`] hands out (the kernel's `MAX_PAGE_ORDER`).
pub const HOST_MAX_CHUNK_ORDER: u32 = 10;

/// The layout of a naturally aligned chunk of `2^order` pages.
fn chunk_layout(order: u32) -> Layout {
    let bytes = PAGE_SIZE << order;
    Layout::from_size_align(bytes, bytes).expect("chunk layout")
}

/// The order of the smallest chunk holding `bytes` (at least one page), if one can.
pub fn host_chunk_order(bytes: usize) -> Option<u32> {
    let order = bytes
        .div_ceil(PAGE_SIZE)
        .max(1)
        .checked_next_power_of_two()?
        .trailing_zeros();
    (order <= HOST_MAX_CHUNK_ORDER).then_some(order)
}

impl HostPages {
    /// An unlimited supply.
    pub fn new() -> Self {
        Self::default()
    }

    /// A supply of at most `pages` data pages (metadata pages unlimited).
    pub fn with_limit(pages: usize) -> Self {
        let mut s = Self::default();
        s.data_limit = Some(pages);
        s
    }

    /// Changes the data page budget (`None`: unlimited).
    pub fn set_limit(&mut self, pages: Option<usize>) {
        self.data_limit = pages;
    }

    /// Changes the metadata page budget (`None`: unlimited).
    pub fn set_meta_limit(&mut self, pages: Option<usize>) {
        self.meta_limit = pages;
    }

    /// Data pages currently handed out.
    pub fn data_pages(&self) -> usize {
        self.data_pages
    }

    /// Metadata pages currently handed out.
    pub fn meta_pages(&self) -> usize {
        self.metas.len()
    }

    /// Calls of `alloc_pages` so far.
    pub fn data_calls(&self) -> u64 {
        self.data_calls
    }

    /// Deposited chunks not used yet.
    pub fn reserve_chunks(&self) -> usize {
        self.reserve.len()
    }

    /// Runs currently served from deposited chunks.
    pub fn reserve_runs(&self) -> usize {
        self.reserve_runs.len()
    }

    /// With `true`, a deposited chunk is freed at once, as if another task's import had taken it
    /// before the depositor retried: every retry meets the shortage again.
    pub fn set_deposits_stolen(&mut self, stolen: bool) {
        self.deposits_stolen = stolen;
    }

    /// The order of the chunk a shortage of `bytes` needs.
    pub fn chunk_order(&self, bytes: usize) -> Option<u32> {
        host_chunk_order(bytes)
    }

    /// Deposits a chunk; `alloc_pages` uses it once the budget is exhausted (the kernel's page
    /// arena uses its reserve before asking for atomic pages; here the budget stands for them).
    ///
    /// # Safety
    ///
    /// `addr` is a chunk of `2^order` pages from [`HostPageAllocator::take`] that nothing else
    /// uses; this supply owns it from now on.
    pub unsafe fn deposit(&mut self, addr: usize, order: u32) {
        if self.deposits_stolen {
            // SAFETY: the caller's guarantee: a chunk allocated with this layout, ours.
            unsafe { dealloc(addr as *mut u8, chunk_layout(order)) };
            return;
        }
        self.reserve.push((addr, order));
    }

    /// A run of `npages` aligned to `align_pages` cut from a deposited chunk (the whole chunk:
    /// the tail of a bigger chunk stays unused until the run is freed).
    fn take_reserve(&mut self, npages: usize, align_pages: usize) -> Option<usize> {
        let i = self.reserve.iter().position(|&(addr, order)| {
            npages <= 1 << order && addr % (align_pages * PAGE_SIZE) == 0
        })?;
        let (addr, order) = self.reserve.swap_remove(i);
        self.reserve_runs.insert(addr, order);
        Some(addr)
    }
}

/// The host's page allocator for sleeping callers: naturally aligned chunks of real memory that
/// a test can make fail, counting every attempt.
#[derive(Debug, Default)]
pub struct HostPageAllocator {
    failing: AtomicBool,
    takes: AtomicUsize,
}

impl HostPageAllocator {
    /// An allocator that succeeds.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later [`take`](Self::take) fail (`true`) or succeed (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, SeqCst);
    }

    /// Calls of [`take`](Self::take) so far, failed ones included.
    pub fn takes(&self) -> usize {
        self.takes.load(SeqCst)
    }

    /// A naturally aligned chunk of `2^order` pages, or `None` (failing, or order too big). The
    /// caller owns it: deposit it in a [`HostPages`], which frees it.
    pub fn take(&self, order: u32) -> Option<usize> {
        self.takes.fetch_add(1, SeqCst);
        if self.failing.load(SeqCst) || order > HOST_MAX_CHUNK_ORDER {
            return None;
        }
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc(chunk_layout(order)) } as usize;
        (p != 0).then_some(p)
    }
}

// SAFETY: every run is a fresh system allocation of exactly the size and alignment asked, owned
// by this supply until it is handed back, so runs are valid, writable and disjoint.
unsafe impl KmemPages for HostPages {
    fn alloc_pages(&mut self, npages: usize, align_pages: usize) -> Option<usize> {
        self.data_calls += 1;
        if let Some(limit) = self.data_limit {
            if self.data_pages + npages > limit {
                return self.take_reserve(npages, align_pages);
            }
        }
        let layout = Layout::from_size_align(npages * PAGE_SIZE, align_pages * PAGE_SIZE).ok()?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc(layout) } as usize;
        if p == 0 {
            return None;
        }
        self.runs.insert(p, layout);
        self.data_pages += npages;
        Some(p)
    }

    unsafe fn free_pages(&mut self, addr: usize, npages: usize) {
        if let Some(order) = self.reserve_runs.remove(&addr) {
            assert!(npages <= 1 << order, "free_pages with a wrong size");
            // SAFETY: a deposited chunk allocated with this layout, handed back once.
            unsafe { dealloc(addr as *mut u8, chunk_layout(order)) };
            return;
        }
        let layout = self
            .runs
            .remove(&addr)
            .expect("free_pages of an unknown run");
        assert_eq!(
            layout.size(),
            npages * PAGE_SIZE,
            "free_pages with a wrong size"
        );
        self.data_pages -= npages;
        // SAFETY: `addr` was allocated with `layout` and is handed back once.
        unsafe { dealloc(addr as *mut u8, layout) };
    }

    fn alloc_meta_page(&mut self) -> Option<usize> {
        if let Some(limit) = self.meta_limit {
            if self.metas.len() >= limit {
                return None;
            }
        }
        let layout = Layout::from_size_align(PAGE_SIZE, PAGE_SIZE).ok()?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc(layout) } as usize;
        if p == 0 {
            return None;
        }
        self.metas.insert(p, layout);
        Some(p)
    }

    unsafe fn free_meta_page(&mut self, addr: usize) {
        let layout = self
            .metas
            .remove(&addr)
            .expect("free_meta_page of an unknown page");
        // SAFETY: `addr` was allocated with `layout` and is handed back once.
        unsafe { dealloc(addr as *mut u8, layout) };
    }
}

impl Drop for HostPages {
    fn drop(&mut self) {
        for (&p, &l) in self.runs.iter().chain(self.metas.iter()) {
            // SAFETY: every recorded run was allocated with its layout and not yet freed.
            unsafe { dealloc(p as *mut u8, l) };
        }
        let chunks = self.reserve.iter().copied();
        for (p, order) in self
            .reserve_runs
            .iter()
            .map(|(&a, &o)| (a, o))
            .chain(chunks)
        {
            // SAFETY: deposited chunks, allocated with this layout and not yet freed.
            unsafe { dealloc(p as *mut u8, chunk_layout(order)) };
        }
    }
}

/// The kernel page allocator's stand-in below a vmem kmem arena: every import is a naturally
/// aligned power-of-two chunk of real memory (like `alloc_pages(order)` in the direct map).
#[derive(Default)]
pub struct HostSpanSource {
    chunks: HashMap<usize, Layout>,
    bytes: usize,
    limit: Option<usize>,
}

impl HostSpanSource {
    /// An unlimited source.
    pub fn new() -> Self {
        Self::default()
    }

    /// A source of at most `bytes` bytes outstanding.
    pub fn with_limit(bytes: usize) -> Self {
        let mut s = Self::default();
        s.limit = Some(bytes);
        s
    }

    /// Bytes currently imported.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Chunks currently imported.
    pub fn chunks(&self) -> usize {
        self.chunks.len()
    }
}

impl SpanSource for HostSpanSource {
    fn import(&mut self, req: &ImportRequest) -> Result<usize, VmemError> {
        let size = req
            .size
            .checked_next_power_of_two()
            .ok_or(VmemError::NoSpace)?;
        if let Some(limit) = self.limit {
            if self.bytes + size > limit {
                return Err(VmemError::NoSpace);
            }
        }
        let align = size.max(req.constraints.align).max(PAGE_SIZE);
        let layout = Layout::from_size_align(size, align).map_err(|_| VmemError::NoSpace)?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc(layout) } as usize;
        if p == 0 {
            return Err(VmemError::NoSpace);
        }
        self.chunks.insert(p, layout);
        self.bytes += size;
        Ok(p)
    }

    fn release(&mut self, span: SpanRelease) {
        let layout = self
            .chunks
            .remove(&span.base)
            .expect("release of an unknown chunk");
        self.bytes -= layout.size();
        // SAFETY: the chunk was allocated with `layout` and is handed back once.
        unsafe { dealloc(span.base as *mut u8, layout) };
    }
}

impl Drop for HostSpanSource {
    fn drop(&mut self) {
        for (&p, &l) in &self.chunks {
            // SAFETY: every recorded chunk was allocated with its layout and not yet freed.
            unsafe { dealloc(p as *mut u8, l) };
        }
    }
}

/// A vmem kmem arena (quantum one page, imports of `import_bytes` rounded to powers of two)
/// over a [`HostSpanSource`] of at most `limit` bytes: the real backend, on the host.
pub fn host_vmem_kmem(
    import_bytes: usize,
    limit: Option<usize>,
) -> crate::malloc::VmemKmem<crate::hosted::vmem::HeapPages, HostSpanSource> {
    use crate::vmem::{Arena, ArenaConfig};
    let cfg = ArenaConfig {
        name: "kmem",
        quantum: PAGE_SIZE,
        import_quantum: Some(import_bytes),
        ..Default::default()
    };
    let arena = Arena::new(&cfg, crate::hosted::vmem::HeapPages::new()).expect("kmem arena");
    let source = match limit {
        Some(l) => HostSpanSource::with_limit(l),
        None => HostSpanSource::new(),
    };
    // SAFETY: the source hands out fresh system allocations it owns until they are released.
    unsafe { crate::malloc::VmemKmem::new(arena, source) }.expect("page quantum")
}
