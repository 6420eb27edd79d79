// SPDX-License-Identifier: GPL-2.0

//! Page chunks: small page runs (bucket clusters of 1 to 8 pages) carved by a buddy allocator out
//! of big, naturally aligned chunks of the kmem arena.
//!
//! Why: a vmem arena keeps one boundary tag (and one hash entry) per allocated segment, and a
//! free segment between allocated ones costs another tag. With one `xalloc` per one-page cluster
//! that is 64-128 bytes of tags per 4 KiB page: about 16 KB per MiB held, four times the whole
//! metadata budget (issue 9: at most 4 KB per MiB for the page map, vmem tags and hash and the
//! diagnostic tables together). Taking [`CHUNK_PAGES`] pages (256 KiB) at a time costs vmem one
//! segment per chunk, about 0.5 KB per MiB, plus this module's registry: one hash slot (16 bytes)
//! per chunk.
//!
//! The buddy allocator is the classic one. A chunk is naturally aligned, so every block of `2^k`
//! pages in it is aligned to its size, as bucket clusters need. Free blocks are on one doubly
//! linked list per order, linked through their own first words (the pages are free and ours).
//! The registry maps a chunk's number to its bitmap of free pages; on free, a block merges with
//! its buddy while the buddy's pages are all free (with eager merging, a wholly free buddy range
//! is exactly one free block of that order). A chunk that becomes wholly free is kept as the one
//! spare (so a heap breathing around a chunk boundary does not take and return a chunk on every
//! cluster), and a second wholly free chunk goes back to the arena.
//!
//! Everything is O(1) per call but the chunk import itself (an arena `xalloc`).

use crate::vmem::{Arena, Constraints, Flags, SpanSource, TagPageSource};

use super::kmem::KmemPages;
use super::params::{PAGE_SHIFT, PAGE_SIZE};
use super::raw::{read_word, write_word};
use super::table::HashTable;

/// log2 of the pages of one chunk.
pub const CHUNK_ORDER: u32 = 6;
/// Pages of one chunk (256 KiB).
pub const CHUNK_PAGES: usize = 1 << CHUNK_ORDER;
/// Largest run served from chunks, as log2 of its pages (8 pages: the largest cluster).
pub(super) const MAX_RUN_ORDER: u32 = 3;

const CHUNK_BYTES: usize = CHUNK_PAGES << PAGE_SHIFT;
const ALL_FREE: usize = if CHUNK_PAGES == usize::BITS as usize {
    usize::MAX
} else {
    (1 << CHUNK_PAGES) - 1
};
const W: usize = core::mem::size_of::<usize>();

const _: () = assert!(
    CHUNK_PAGES <= usize::BITS as usize,
    "a chunk's bitmap is one word"
);

/// Allocates metadata pages for the registry straight from the arena (not from chunks: the
/// registry must not depend on itself).
struct ArenaMeta<'a, P: TagPageSource, S: SpanSource> {
    arena: &'a mut Arena<P>,
    source: &'a mut S,
}

// SAFETY: pages come from an arena of real memory (the `VmemKmem` contract) with a quantum of
// one page; vmem never hands out overlapping segments, so each page is exclusive until freed.
unsafe impl<P: TagPageSource, S: SpanSource> KmemPages for ArenaMeta<'_, P, S> {
    fn alloc_pages(&mut self, _npages: usize, _align_pages: usize) -> Option<usize> {
        None
    }

    unsafe fn free_pages(&mut self, _addr: usize, _npages: usize) {}

    fn alloc_meta_page(&mut self) -> Option<usize> {
        let c = Constraints::default();
        match self
            .arena
            .xalloc_importing(PAGE_SIZE, &c, Flags::NOSLEEP, self.source)
        {
            Ok(0) => {
                let _ = self.arena.xfree_releasing(0, PAGE_SIZE, self.source);
                None
            }
            Ok(a) => Some(a),
            Err(_) => None,
        }
    }

    unsafe fn free_meta_page(&mut self, addr: usize) {
        let _ = self.arena.xfree_releasing(addr, PAGE_SIZE, self.source);
    }
}

/// The chunk layer (see the module documentation).
///
/// # Invariants
///
/// `registry` maps the number (`addr / CHUNK_BYTES`) of every chunk taken from the arena and not
/// given back to its bitmap of free pages. Every free block of `2^k` pages of a registered chunk
/// is on `free[k]` exactly once, aligned to its size, its pages' bits set, and its buddy not a
/// free block of the same order (merged eagerly); a wholly free chunk is `spare` (at most one).
pub(super) struct Chunks {
    free: [usize; CHUNK_ORDER as usize],
    registry: HashTable,
    spare: usize,
    free_pages: usize,
}

impl Chunks {
    /// No chunks.
    pub(super) const fn new() -> Self {
        Self {
            free: [0; CHUNK_ORDER as usize],
            registry: HashTable::new(),
            spare: 0,
            free_pages: 0,
        }
    }

    /// Chunks held (in use or spare).
    pub(super) fn chunks(&self) -> usize {
        self.registry.len()
    }

    /// Free pages inside the chunks held (including the spare).
    pub(super) fn free_pages(&self) -> usize {
        self.free_pages
    }

    /// Pages of the spare chunk (0 or [`CHUNK_PAGES`]): what [`Chunks::release_spare`] gives back.
    pub(super) fn spare_pages(&self) -> usize {
        if self.spare == 0 {
            0
        } else {
            CHUNK_PAGES
        }
    }

    /// Pages of the registry (its hash table).
    pub(super) fn registry_pages(&self) -> usize {
        self.registry.pages()
    }

    /// Whether `addr` lies in a chunk of ours.
    pub(super) fn owns(&self, addr: usize) -> bool {
        self.registry.get(addr / CHUNK_BYTES).is_some()
    }

    /// The order of a run of `npages` pages aligned to `align_pages`, if chunks serve it.
    pub(super) fn order_for(npages: usize, align_pages: usize) -> Option<u32> {
        let ok = npages.is_power_of_two()
            && npages <= 1 << MAX_RUN_ORDER
            && align_pages.is_power_of_two()
            && align_pages <= npages;
        ok.then(|| npages.trailing_zeros())
    }

    fn push(&mut self, order: u32, block: usize) {
        let head = self.free[order as usize];
        // SAFETY: `block` and `head` (if any) are free blocks of our chunks: their first words
        // are ours to use as links.
        unsafe {
            write_word(block, head);
            write_word(block + W, 0);
            if head != 0 {
                write_word(head + W, block);
            }
        }
        self.free[order as usize] = block;
    }

    fn unlink(&mut self, order: u32, block: usize) {
        // SAFETY: `block` is on list `order` (invariant), so its links and its neighbours' are
        // valid free blocks of ours.
        unsafe {
            let next = read_word(block);
            let prev = read_word(block + W);
            if prev == 0 {
                self.free[order as usize] = next;
            } else {
                write_word(prev, next);
            }
            if next != 0 {
                write_word(next + W, prev);
            }
        }
    }

    fn bits(order: u32, block: usize) -> usize {
        let first = (block & (CHUNK_BYTES - 1)) >> PAGE_SHIFT;
        let n = 1usize << order;
        (if n == usize::BITS as usize {
            usize::MAX
        } else {
            (1 << n) - 1
        }) << first
    }

    fn set_bitmap(&mut self, chunk: usize, map: usize) {
        self.registry.set(chunk, map);
    }

    /// A block of `2^order` pages (`order <= MAX_RUN_ORDER`), importing a chunk if needed.
    pub(super) fn alloc<P: TagPageSource, S: SpanSource>(
        &mut self,
        arena: &mut Arena<P>,
        source: &mut S,
        order: u32,
    ) -> Option<usize> {
        let mut k = order;
        while (k as usize) < self.free.len() && self.free[k as usize] == 0 {
            k += 1;
        }
        let block = if (k as usize) < self.free.len() {
            let b = self.free[k as usize];
            self.unlink(k, b);
            b
        } else {
            k = CHUNK_ORDER;
            self.take_chunk(arena, source)?
        };
        // Split down to the order asked, the upper halves going on their lists.
        while k > order {
            k -= 1;
            self.push(k, block + (PAGE_SIZE << k));
        }
        let chunk = block / CHUNK_BYTES;
        let map = self.registry.get(chunk)?;
        self.set_bitmap(chunk, map & !Self::bits(order, block));
        self.free_pages -= 1 << order;
        Some(block)
    }

    /// A wholly free chunk: the spare, or a new one from the arena (registered, all pages
    /// counted free).
    fn take_chunk<P: TagPageSource, S: SpanSource>(
        &mut self,
        arena: &mut Arena<P>,
        source: &mut S,
    ) -> Option<usize> {
        if self.spare != 0 {
            let c = self.spare;
            self.spare = 0;
            return Some(c);
        }
        let base = Self::import_chunk(arena, source)?;
        let mut meta = ArenaMeta { arena, source };
        if self
            .registry
            .insert(&mut meta, base / CHUNK_BYTES, ALL_FREE)
            .is_err()
        {
            let _ = meta.arena.xfree_releasing(base, CHUNK_BYTES, meta.source);
            return None;
        }
        self.free_pages += CHUNK_PAGES;
        Some(base)
    }

    /// Takes `CHUNK_BYTES`, naturally aligned, from the arena. Asked for with an alignment
    /// constraint, vmem imports `size + align - quantum` (it cannot know the source aligns
    /// naturally), and the extra span half would outlive the chunk as slack pinned by whatever
    /// lands there; so the chunk is first asked for without one (the source's imports are
    /// naturally aligned powers of two, so a fresh import is aligned), and only a misaligned
    /// answer is retried with the constraint.
    fn import_chunk<P: TagPageSource, S: SpanSource>(
        arena: &mut Arena<P>,
        source: &mut S,
    ) -> Option<usize> {
        let plain = Constraints::default();
        let aligned = Constraints {
            align: CHUNK_BYTES,
            ..Constraints::default()
        };
        for c in [&plain, &aligned] {
            match arena.xalloc_importing(CHUNK_BYTES, c, Flags::NOSLEEP, source) {
                Ok(a) if a != 0 && a & (CHUNK_BYTES - 1) == 0 => return Some(a),
                Ok(a) => {
                    let _ = arena.xfree_releasing(a, CHUNK_BYTES, source);
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// Frees a block of `2^order` pages from [`alloc`](Self::alloc), merging it with its free
    /// buddies; a chunk left wholly free becomes the spare, or goes back to the arena if there
    /// is one already.
    ///
    /// # Safety
    ///
    /// `block` and `order` must be those of a block from `alloc` not freed since, unused from
    /// now on.
    pub(super) unsafe fn free<P: TagPageSource, S: SpanSource>(
        &mut self,
        arena: &mut Arena<P>,
        source: &mut S,
        block: usize,
        order: u32,
    ) {
        let chunk = block / CHUNK_BYTES;
        let Some(mut map) = self.registry.get(chunk) else {
            return;
        };
        map |= Self::bits(order, block);
        self.free_pages += 1 << order;
        let mut b = block;
        let mut k = order;
        while k < CHUNK_ORDER {
            let buddy = b ^ (PAGE_SIZE << k);
            let bb = Self::bits(k, buddy);
            if map & bb != bb {
                break;
            }
            self.unlink(k, buddy);
            b &= !(PAGE_SIZE << k);
            k += 1;
        }
        self.set_bitmap(chunk, map);
        if k < CHUNK_ORDER {
            self.push(k, b);
            return;
        }
        // Wholly free.
        if self.spare == 0 {
            self.spare = b;
            return;
        }
        self.release_chunk(arena, source, b);
    }

    fn release_chunk<P: TagPageSource, S: SpanSource>(
        &mut self,
        arena: &mut Arena<P>,
        source: &mut S,
        base: usize,
    ) {
        self.registry.remove(base / CHUNK_BYTES);
        self.free_pages -= CHUNK_PAGES;
        let _ = arena.xfree_releasing(base, CHUNK_BYTES, source);
        if self.registry.len() == 0 {
            let mut meta = ArenaMeta { arena, source };
            self.registry.clear(&mut meta);
        }
    }

    /// Gives the spare chunk back to the arena (memory pressure, teardown).
    pub(super) fn release_spare<P: TagPageSource, S: SpanSource>(
        &mut self,
        arena: &mut Arena<P>,
        source: &mut S,
    ) {
        if self.spare != 0 {
            let s = self.spare;
            self.spare = 0;
            self.release_chunk(arena, source, s);
        }
    }
}
