// SPDX-License-Identifier: GPL-2.0

//! The page supply below malloc: the kmem arena for data pages and a source of metadata pages.

use super::usage::PageHint;

/// Where malloc gets its pages: whole, naturally aligned page runs for buckets and large
/// allocations (the kmem arena), and single pages for its own bookkeeping.
///
/// Calls happen with the allocator's lock held, so no method may sleep: a shortage is `None`, and
/// the core turns it into `WouldBlock`/`NoMemory` for the caller's wrapper to handle.
///
/// # Safety
///
/// Implementors promise that every address returned is non-zero, aligned as asked (at least to
/// [`PAGE_SIZE`](super::PAGE_SIZE)), readable and writable for the whole run, not in use by anyone
/// else, and stays so until it is handed back; runs never overlap each other or metadata pages.
pub unsafe trait KmemPages {
    /// Allocates `npages` contiguous pages whose start is aligned to `align_pages` pages (a power
    /// of two). Returns the start address, or `None` when the arena is exhausted.
    fn alloc_pages(&mut self, npages: usize, align_pages: usize) -> Option<usize>;

    /// Returns a run obtained from [`alloc_pages`](Self::alloc_pages).
    ///
    /// # Safety
    ///
    /// `addr` and `npages` must be exactly those of a run from `alloc_pages` of this supply that
    /// was not returned yet, and nothing may use the run afterwards.
    unsafe fn free_pages(&mut self, addr: usize, npages: usize);

    /// Allocates one page-aligned page for the allocator's bookkeeping (contents arbitrary).
    fn alloc_meta_page(&mut self) -> Option<usize>;

    /// Returns a page obtained from [`alloc_meta_page`](Self::alloc_meta_page).
    ///
    /// # Safety
    ///
    /// `addr` must be a page from `alloc_meta_page` of this supply that was not returned yet, and
    /// nothing may use it afterwards.
    unsafe fn free_meta_page(&mut self, addr: usize);

    /// Pages the supply holds for its own bookkeeping (the kmem backend's chunk registry). None
    /// by default.
    fn meta_pages(&self) -> usize {
        0
    }

    /// Gives back whatever the supply caches for reuse (called by `Malloc::reclaim`: memory
    /// pressure, teardown). Nothing by default.
    fn trim(&mut self) {}

    /// Pages [`trim`](Self::trim) would give back now (memory pressure's count). None by default.
    fn reclaimable_pages(&self) -> usize {
        0
    }

    /// Told when the page map registers a run of `npages` pages from page number `first`
    /// (`Some(hint)`: what its first page holds) and when it clears one (`None`), before the run
    /// goes back. A kernel supply keeps the hint with the pages (`struct page`) for a lock-free
    /// O(1) lookup on `free`'s fast path; the default keeps nothing.
    fn note_run(&mut self, first: usize, npages: usize, hint: Option<PageHint>) {
        let _ = (first, npages, hint);
    }
}
