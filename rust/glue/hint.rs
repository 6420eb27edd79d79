// SPDX-License-Identifier: GPL-2.0

//! Page hints: the immutable part of a run's usage record kept in `struct page` (`private`), so
//! that `free`'s fast path finds a piece's size class in O(1), without the page map's hash and
//! without the heap lock.
//!
//! [`HintedKmem`] wraps the kmem supply of the malloc core: the core tells it when the page map
//! registers or clears a run ([`KmemPages::note_run`]), and it writes or clears the hint of every
//! page of the run (the pages are the heap's own, from the page allocator, so the field is free to
//! use until they go back; it is cleared before). A hint is `check << 32 | code`: the check is a
//! hash of the page's address, so a page that is not ours (another owner's `private`) passes only
//! by a 2^-32 accident, and then only on the fast path (every other path uses the page map).
//! The code is the core's [`PageCode`], pre-decoded for `free`'s fast path: every page of a
//! bucket cluster names its class, its owner and its index in the cluster; the later pages of a
//! page run get [`PageCode::NONE`] (no class: the slow path answers interior pointers).
//!
//! The check stays although the bitmap below already says whether a page is ours: a reader tests
//! the bit and then reads `private`, and between the two (preemptible on `free`'s fast path) the
//! page may be given back and reused by another owner, whose `private` the check then refuses.
//! Nothing makes the page wait for such a reader (no RCU grace period before the page allocator
//! gets it back), so without the check a racing bad free could put another owner's page into a
//! magazine.
//!
//! The C helper that writes a hint also keeps a bitmap of the pages that carry one (one bit per
//! page frame of the direct map), and the readers ([`page_hint`], `PerCpu::try_local_hint`) read
//! `struct page` only for a page whose bit is set: a foreign pointer costs one bit test and never
//! touches a `struct page` that may not exist. Where `struct page` sits in a virtual memmap at
//! `vmemmap_base` (Kbuild sets `kmalloc43_inline_page_hint`: x86-64 with
//! `CONFIG_SPARSEMEM_VMEMMAP`), [`raw_page_hint`] does the same reads inline, without a C call.

use core::ops::{Deref, DerefMut};

use kernel::ffi::c_ulong;

use crate::malloc::{KmemPages, PageCode, PageHint, VmemKmem, PAGE_SHIFT};
use crate::pages::{PageArena, TagPages};

extern "C" {
    #[cfg(not(kmalloc43_inline_page_hint))]
    fn kmalloc43_c_page_hint(addr: c_ulong) -> c_ulong;
    fn kmalloc43_c_set_page_hint(addr: c_ulong, hint: c_ulong);
    /// The C side's bitmap of the page frames that carry a hint of ours (`NULL` while no heap
    /// exists), and its length in bits: set before the first heap is published, cleared after
    /// the last one is gone.
    #[cfg(kmalloc43_inline_page_hint)]
    static kmalloc43_ours: *const c_ulong;
    #[cfg(kmalloc43_inline_page_hint)]
    static kmalloc43_ours_bits: c_ulong;
}

/// Where `private` sits in `struct page`.
#[cfg(kmalloc43_inline_page_hint)]
const PAGE_PRIVATE: usize = core::mem::offset_of!(
    kernel::bindings::page,
    __bindgen_anon_1.__bindgen_anon_1.private
);

/// The kmem supply of the heap: the vmem kmem arena, publishing page hints.
#[repr(transparent)]
pub(crate) struct HintedKmem(pub(crate) VmemKmem<TagPages, PageArena>);

#[inline]
fn check(page_addr: usize) -> u64 {
    let h = ((page_addr >> PAGE_SHIFT) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 32) ^ 0x6b34_3321
}

fn write_hint(page: usize, code: u32) {
    let addr = page << PAGE_SHIFT;
    let value = (check(addr) << 32) | u64::from(code);
    // SAFETY: `addr` is a page of the heap's own (a run the page map is registering or clearing),
    // in the direct map.
    unsafe { kmalloc43_c_set_page_hint(addr as c_ulong, value as c_ulong) };
}

fn clear_hint(page: usize) {
    // SAFETY: as in `write_hint`.
    unsafe { kmalloc43_c_set_page_hint((page << PAGE_SHIFT) as c_ulong, 0) };
}

/// The code of the page holding `addr`, if it carries one of ours (not [`PageCode::NONE`]).
#[inline]
pub(crate) fn page_hint(addr: usize) -> Option<PageCode> {
    decode_hint(addr, raw_page_hint(addr)).filter(|code| code.is_some())
}

/// The raw `private` word of the page holding `addr`, 0 unless the page is one of ours (one C
/// call; [`decode_hint`] checks and decodes it).
#[cfg(not(kmalloc43_inline_page_hint))]
#[inline]
pub(crate) fn raw_page_hint(addr: usize) -> u64 {
    // SAFETY: the C helper reads `struct page` only for a page of ours (its bit in the hint
    // bitmap is set), whose `struct page` exists.
    unsafe { kmalloc43_c_page_hint(addr as c_ulong) as u64 }
}

/// The raw `private` word of the page holding `addr`, 0 unless the page is one of ours: the C
/// helper's `kmalloc43_hint_of()`, inline (the bit, then `virt_to_page(addr)->private`).
#[cfg(kmalloc43_inline_page_hint)]
#[inline(always)]
pub(crate) fn raw_page_hint(addr: usize) -> u64 {
    use core::sync::atomic::{AtomicUsize, Ordering::Acquire};
    // SAFETY: plain reads of kernel variables that do not change while a heap exists (the
    // direct map's and the memmap's bases), and of the bitmap's, which the C side sets before
    // the first heap can hand out a piece and clears after the last one is gone.
    let (offset, memmap, map, bits) = unsafe {
        (
            kernel::bindings::page_offset_base,
            kernel::bindings::vmemmap_base,
            kmalloc43_ours,
            kmalloc43_ours_bits,
        )
    };
    // The page frame in the direct map (an address below it wraps past the bitmap).
    let pfn = addr.wrapping_sub(offset) >> PAGE_SHIFT;
    if pfn >= bits {
        return 0;
    }
    // SAFETY: `pfn < bits`, so the word is in the bitmap; its bits are set and cleared with
    // atomic bit operations. Acquire, so `private` is read after the bit (`test_bit` and
    // `READ_ONCE` in C: the C side sets the bit after the hint and clears it before).
    let word = unsafe { AtomicUsize::from_ptr(map.add(pfn / 64).cast_mut().cast::<usize>()) }
        .load(Acquire);
    if (word >> (pfn % 64)) & 1 == 0 {
        return 0;
    }
    // Wrapping arithmetic: the bit says the frame is in the direct map, so this is the address
    // of its `struct page`'s `private`, which cannot overflow (no check needed).
    let private = memmap
        .wrapping_add(pfn.wrapping_mul(core::mem::size_of::<kernel::bindings::page>()))
        .wrapping_add(PAGE_PRIVATE);
    // SAFETY: the bit says the page is a heap's, in the direct map: its `struct page` exists, at
    // `virt_to_page(addr)`; `READ_ONCE(page->private)`.
    unsafe { (private as *const c_ulong).read_volatile() as u64 }
}

/// The code of `addr`'s page from the raw `private` value `v` read from it, if its check word
/// says it is ours (`PerCpu::try_local_hint` reads it in the same C call as the slot lock). It
/// may be [`PageCode::NONE`] (a run's later page): its readers' tests refuse that themselves
/// (`PageCode::object_of`, `class`, `owner_slot`), so this costs no test of its own.
#[inline]
pub(crate) fn decode_hint(addr: usize, v: u64) -> Option<PageCode> {
    if v >> 32 != check(addr & !((1 << PAGE_SHIFT) - 1)) {
        return None;
    }
    Some(PageCode::from_raw(v as u32))
}

// SAFETY: every call is forwarded to the wrapped supply, which upholds the contract; `note_run`
// only writes `struct page` fields of pages the supply handed out.
unsafe impl KmemPages for HintedKmem {
    fn alloc_pages(&mut self, npages: usize, align_pages: usize) -> Option<usize> {
        self.0.alloc_pages(npages, align_pages)
    }

    unsafe fn free_pages(&mut self, addr: usize, npages: usize) {
        // SAFETY: the caller's guarantee, forwarded.
        unsafe { self.0.free_pages(addr, npages) }
    }

    fn alloc_meta_page(&mut self) -> Option<usize> {
        self.0.alloc_meta_page()
    }

    unsafe fn free_meta_page(&mut self, addr: usize) {
        // SAFETY: the caller's guarantee, forwarded.
        unsafe { self.0.free_meta_page(addr) }
    }

    fn trim(&mut self) {
        self.0.trim();
    }

    fn reclaimable_pages(&self) -> usize {
        self.0.reclaimable_pages()
    }

    fn meta_pages(&self) -> usize {
        self.0.meta_pages()
    }

    fn note_run(&mut self, first: usize, npages: usize, hint: Option<PageHint>) {
        match hint {
            // Every page of a cluster names its class and its place in the cluster: a piece
            // anywhere in it is found. Only the first page of a run starts an object; the
            // others carry no class (`PageCode::NONE`).
            Some(h) => (0..npages).for_each(|i| write_hint(first + i, PageCode::of(h, i).raw())),
            None => (0..npages).for_each(|i| clear_hint(first + i)),
        }
    }
}

impl Deref for HintedKmem {
    type Target = VmemKmem<TagPages, PageArena>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for HintedKmem {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}
