// SPDX-License-Identifier: GPL-2.0

//! Supplying boundary tags without recursion: tag pages and the per-arena tag reserve.
//!
//! An allocator cannot allocate its own metadata from itself without risking recursion, and it
//! must not discover half-way through a split that it has no tag for the remainder. So the arena
//! takes whole pages from a [`TagPageSource`], carves them into tags, and before every operation
//! that can consume tags it *tops up* a reserve large enough for the worst case of that operation
//! ([`TAG_RESERVE`]). Only then does it mutate anything. Frees never need a tag: coalescing only
//! gives tags back.

use core::mem::{align_of, size_of};
use core::ptr::NonNull;

use super::error::VmemError;
use super::seg::{Link, Seg, SegKind};

/// log2 of the page size: the one definition of the page size in the cores (the malloc core
/// derives its geometry from it). The kernel build asserts at compile time that it is the
/// kernel's (`rust/glue/abi_check.rs`), and the module's Kconfig accepts 4 KiB pages only.
pub const PAGE_SHIFT: u32 = 12;

/// Size of the pages a [`TagPageSource`] hands out.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;

/// Tags any single operation may consume (a split of one free segment into three pieces, or a
/// span marker plus its free segment).
pub(super) const TAG_RESERVE: usize = 2;

/// Where an arena gets whole pages for its boundary tags, hash buckets and cache depots.
///
/// The kernel implements it with page allocation that does not sleep (the arena lock is held);
/// the host uses the global allocator.
pub trait TagPageSource {
    /// Returns a page of [`PAGE_SIZE`] bytes aligned to at least `align_of::<usize>()` (its
    /// contents need not be initialised), or `None` when none is available.
    fn alloc_page(&mut self) -> Option<NonNull<u8>>;

    /// Gives a page back.
    ///
    /// # Safety
    ///
    /// `page` came from `alloc_page` of this source and is no longer used.
    unsafe fn free_page(&mut self, page: NonNull<u8>);
}

/// Header at the start of every tag page: links the arena's tag pages together.
#[repr(C)]
struct PageHeader {
    next: Option<NonNull<PageHeader>>,
}

/// Byte offset of the first tag in a tag page.
const FIRST_TAG: usize = size_of::<PageHeader>().next_multiple_of(align_of::<Seg>());

/// Number of tags one page provides.
pub(super) const TAGS_PER_PAGE: usize = (PAGE_SIZE - FIRST_TAG) / size_of::<Seg>();

/// The tag pages of one arena and its free tags.
///
/// # Invariants
///
/// `nfree` tags are on the `free` list (linked by `knext`, kind [`SegKind::Unused`]); every
/// other tag of the `npages` pages is in use (see [`TagPool::in_use`]).
pub(super) struct TagPool {
    free: Link,
    pub(super) nfree: usize,
    pages: Option<NonNull<PageHeader>>,
    pub(super) npages: usize,
}

impl TagPool {
    /// An empty pool.
    pub(super) const fn new() -> Self {
        TagPool {
            free: None,
            nfree: 0,
            pages: None,
            npages: 0,
        }
    }

    /// Tops the free list up to at least `want` tags, taking pages from `src`.
    pub(super) fn reserve<P: TagPageSource>(
        &mut self,
        src: &mut P,
        want: usize,
    ) -> Result<(), VmemError> {
        while self.nfree < want {
            let page = src.alloc_page().ok_or(VmemError::NoTags)?;
            let header = page.cast::<PageHeader>();
            // SAFETY: `page` is a fresh page of PAGE_SIZE bytes aligned for usize (the
            // `TagPageSource` contract), so the header and every tag slot below are in bounds,
            // aligned (Seg contains only usize-aligned fields) and exclusively ours.
            unsafe {
                header.as_ptr().write(PageHeader { next: self.pages });
                for i in 0..TAGS_PER_PAGE {
                    let tag = page
                        .as_ptr()
                        .add(FIRST_TAG + i * size_of::<Seg>())
                        .cast::<Seg>();
                    tag.write(Seg {
                        start: 0,
                        size: 0,
                        kind: SegKind::Unused,
                        anext: None,
                        aprev: None,
                        knext: self.free,
                        kprev: None,
                    });
                    self.free = Some(NonNull::new_unchecked(tag));
                }
            }
            self.pages = Some(header);
            self.npages += 1;
            self.nfree += TAGS_PER_PAGE;
        }
        Ok(())
    }

    /// Tags in use (on the arena's address list): derived, so taking and giving back a tag
    /// update one counter.
    pub(super) fn in_use(&self) -> usize {
        self.npages * TAGS_PER_PAGE - self.nfree
    }

    /// Takes a tag from the reserve (`None` only if the reserve is empty). The tag's fields are
    /// stale: the caller writes every field it relies on.
    #[inline]
    pub(super) fn get(&mut self) -> Option<NonNull<Seg>> {
        let tag = self.free?;
        // SAFETY: tags on the free list are valid tags of our pages (type invariant).
        self.free = unsafe { (*tag.as_ptr()).knext };
        self.nfree -= 1;
        Some(tag)
    }

    /// Puts a tag that is on no list back into the reserve.
    #[inline]
    pub(super) fn put(&mut self, tag: NonNull<Seg>) {
        // SAFETY: the caller gives back one of our tags, unlinked from every list.
        unsafe {
            // Only the free-list link and the kind matter: `get` callers overwrite the rest.
            let t = &mut *tag.as_ptr();
            t.kind = SegKind::Unused;
            t.knext = self.free;
        }
        self.free = Some(tag);
        self.nfree += 1;
    }

    /// Counts the free list (for audits).
    pub(super) fn count_free(&self) -> usize {
        let mut n = 0;
        let mut cur = self.free;
        while let Some(t) = cur {
            n += 1;
            // SAFETY: free-list tags are valid (type invariant).
            cur = unsafe { (*t.as_ptr()).knext };
        }
        n
    }

    /// Returns every page to `src`; all tags become invalid.
    pub(super) fn release_all<P: TagPageSource>(&mut self, src: &mut P) {
        let mut cur = self.pages.take();
        while let Some(h) = cur {
            // SAFETY: `h` is the header of one of our pages; read the link before freeing it.
            unsafe {
                cur = (*h.as_ptr()).next;
                src.free_page(h.cast());
            }
        }
        *self = TagPool::new();
    }
}
