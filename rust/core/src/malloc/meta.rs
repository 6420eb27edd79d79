// SPDX-License-Identifier: GPL-2.0

//! A tiny slab of fixed-size, zeroed blocks carved from metadata pages: the storage of page-map
//! leaves and DIAGNOSTIC tag arrays. No heap is involved.
//!
//! Each metadata page spends its first block on a header `{next, prev, free_head, used}`. Pages
//! with a free block sit on a doubly linked "available" list; a page whose last block is freed is
//! returned to the page supply at once, so bookkeeping shrinks with the memory it describes.

use super::kmem::KmemPages;
use super::raw::{fill, read_word, write_word};
use super::PAGE_SIZE;

const W: usize = core::mem::size_of::<usize>();
const NEXT: usize = 0;
const PREV: usize = W;
const FREE: usize = 2 * W;
const USED: usize = 3 * W;

/// Fixed-size block allocator over metadata pages.
///
/// # Invariants
///
/// Every page on the available list is a metadata page owned by this slab with at least one free
/// block; `pages` counts all pages owned, `blocks` all blocks handed out.
pub(super) struct MetaSlab {
    block: usize,
    avail: usize,
    pages: usize,
    blocks: usize,
}

impl MetaSlab {
    /// A slab of `block`-byte blocks (a power of two, at least four words, at most a page / 2).
    pub(super) const fn new(block: usize) -> Self {
        Self {
            block,
            avail: 0,
            pages: 0,
            blocks: 0,
        }
    }

    /// Metadata pages owned.
    pub(super) fn pages(&self) -> usize {
        self.pages
    }

    /// Blocks handed out.
    pub(super) fn blocks(&self) -> usize {
        self.blocks
    }

    /// A zeroed block, or `None` if the page supply is exhausted.
    pub(super) fn alloc<K: KmemPages>(&mut self, kmem: &mut K) -> Option<usize> {
        if self.avail == 0 {
            let page = kmem.alloc_meta_page()?;
            // SAFETY: the page is ours, page-aligned and writable (KmemPages contract).
            unsafe {
                fill(page, PAGE_SIZE, 0);
                // Chain blocks 1.. into the page's free list, lowest first.
                let mut b = page + PAGE_SIZE - self.block;
                let mut next = 0;
                while b > page {
                    write_word(b, next);
                    next = b;
                    b -= self.block;
                }
                write_word(page + FREE, next);
            }
            self.push_avail(page);
            self.pages += 1;
        }
        let page = self.avail;
        // SAFETY: `page` is on the available list, so it is ours and has a free block whose
        // first word links the next free block.
        let block = unsafe {
            let block = read_word(page + FREE);
            write_word(page + FREE, read_word(block));
            write_word(block, 0);
            write_word(page + USED, read_word(page + USED) + 1);
            if read_word(page + FREE) == 0 {
                self.unlink(page);
            }
            block
        };
        self.blocks += 1;
        Some(block)
    }

    /// Returns a block; its page goes back to the supply if it was the page's last block.
    ///
    /// # Safety
    ///
    /// `block` must come from [`alloc`](Self::alloc) of this slab and not be freed yet.
    pub(super) unsafe fn free<K: KmemPages>(&mut self, kmem: &mut K, block: usize) {
        let page = block & !(PAGE_SIZE - 1);
        // SAFETY: the caller guarantees `block` is a live block of ours, so `page` is one of our
        // metadata pages with a valid header.
        unsafe {
            fill(block, self.block, 0);
            let was_full = read_word(page + FREE) == 0;
            write_word(block, read_word(page + FREE));
            write_word(page + FREE, block);
            let used = read_word(page + USED) - 1;
            write_word(page + USED, used);
            if was_full {
                self.push_avail(page);
            }
            if used == 0 {
                self.unlink(page);
                self.pages -= 1;
                kmem.free_meta_page(page);
            }
        }
        self.blocks -= 1;
    }

    fn push_avail(&mut self, page: usize) {
        // SAFETY: `page` is one of our metadata pages; its header words are ours to write, and so
        // is the header of the current list head.
        unsafe {
            write_word(page + NEXT, self.avail);
            write_word(page + PREV, 0);
            if self.avail != 0 {
                write_word(self.avail + PREV, page);
            }
        }
        self.avail = page;
    }

    fn unlink(&mut self, page: usize) {
        // SAFETY: `page` is on the available list; its neighbours are our pages too.
        unsafe {
            let next = read_word(page + NEXT);
            let prev = read_word(page + PREV);
            if prev == 0 {
                self.avail = next;
            } else {
                write_word(prev + NEXT, next);
            }
            if next != 0 {
                write_word(next + PREV, prev);
            }
        }
    }
}
