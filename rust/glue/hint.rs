// SPDX-License-Identifier: GPL-2.0

//! Page hints: the immutable part of a run's usage record kept in `struct page` (`private`), so
//! that `free`'s fast path finds a piece's size class in O(1), without the page map's hash and
//! without the heap lock.
//!
//! [`HintedKmem`] wraps the kmem supply of the malloc core: the core tells it when the page map
//! registers or clears a run ([`KmemPages::note_run`]), and it writes or clears the hint of every
//! page of the run (the pages are the heap's own, from the page allocator, so the field is free to
//! use until they go back; it is cleared before). A hint is the core's [`PageCode`], pre-decoded
//! for `free`'s fast path: every page of a bucket cluster names its class, its owner and its index
//! in the cluster; the later pages of a page run get [`PageCode::NONE`] (no class: the slow path
//! answers interior pointers).
//!
//! ## Why a hint needs no check word
//!
//! Until session 8 a hint was `check << 32 | code`, the check a hash of the page's address, so
//! that another owner's `private` passed only by a 2^-32 accident: a reader tests the page's bit
//! in the bitmap below and then reads `private`, and the page could be given back and reused in
//! between. Now every read of a hint is a pair (bit, then `private`) inside one RCU read-side
//! section: [`raw_page_hint`] asks for a [`ReadSide`] witness, a slot guard (preemption or local
//! interrupts off: `free`'s fast path reads the hint *after* taking its slot) or an
//! `rcu_read_lock()` guard. And a page whose hint was cleared reaches the page allocator only
//! after a grace period (`pages.rs`, [`ChunkList::give_back`]: `call_rcu`). So:
//!
//! 1. Only this module writes `private` of a page while its bit is set, and only hints or 0: the
//!    bit is set after the hint is written and cleared before the hint is (`set_bit` after a
//!    full barrier, `clear_bit` then `WRITE_ONCE(private, 0)`; `kmalloc43_c_set_page_hint`), and
//!    a page is given back only after its run was cleared, which clears its bit (`note_run`,
//!    under the heap lock, before the kmem arena can release the span).
//! 2. A reader that sees the bit set (an acquire load) reads `private` later in the same
//!    section. If the page has since been cleared and released, its chunk was handed to
//!    `call_rcu` after the clear, so the page allocator gets it after every read-side section
//!    that began before that call has ended, this reader's included: while it reads, the page
//!    is still the heap's, and `private` holds a hint of ours or 0. A reader whose section began
//!    after the `call_rcu` is ordered after the clear (RCU's memory-ordering guarantee) and
//!    sees the bit clear, unless a heap took the page again and set it: then `private` is that
//!    heap's again.
//! 3. Hence `private` read after a set bit is always a value this module wrote: a code, or 0
//!    ([`PageCode::NONE`]), which every reader's test refuses (`PageCode::object_of`, `class`,
//!    `owner_slot`, `is_some`), as it refuses a later page of a run. The check word could only
//!    ever refuse values outside that set: it is redundant, and `free`'s fast path no longer
//!    computes it (a multiply, shifts, an xor, a compare and a branch).
//!
//! A hint read is, as before, a snapshot: a page's code may change after the section (its run
//! cleared and the page handed out again by the heap). What a caller decides on it is checked
//! again where it matters, as before: `free`'s fast path holds its slot (the section) until the
//! piece is in a magazine; the other paths recheck under the heap lock. A piece the caller
//! still owns cannot have its page cleared at all.
//!
//! The C helper that writes a hint also keeps a bitmap of the pages that carry one (one bit per
//! page frame of the direct map), and the readers ([`page_hint`], `PerCpu::try_local_hint`,
//! `Heap::free_local`) read `struct page` only for a page whose bit is set: a foreign pointer costs one bit test and never
//! touches a `struct page` that may not exist. Where `struct page` sits in a virtual memmap at
//! `vmemmap_base` (Kbuild sets `kmalloc43_inline_page_hint`: x86-64 with
//! `CONFIG_SPARSEMEM_VMEMMAP`), [`raw_page_hint`] does the same reads inline, without a C call.

use core::ops::{Deref, DerefMut};

use kernel::ffi::c_ulong;

use crate::malloc::{KmemPages, PageCode, PageHint, VmemKmem, PAGE_SHIFT};
#[cfg(doc)]
use crate::pages::ChunkList;
use crate::pages::{PageArena, TagPages};
use crate::percpu::{AllGuard, Flavour, LocalGuard};

extern "C" {
    #[cfg(not(kmalloc43_inline_page_hint))]
    fn kmalloc43_c_page_hint(addr: c_ulong) -> c_ulong;
    fn kmalloc43_c_set_page_hint(addr: c_ulong, hint: c_ulong);
}

/// The C side's `struct kmalloc43_hint_map`, part of the fast statics' cache line of the
/// module's data (`crate::service::FastStatics`): the bitmap of the page frames that carry a
/// hint of ours (`NULL` while no heap exists) and its length in bits, and copies of
/// `page_offset_base` and `vmemmap_base` (constant after boot), so that a hint read touches one
/// page of data for them rather than the module's and the kernel's. Set before the first heap
/// is published, cleared after the last one is gone.
#[repr(C)]
#[cfg_attr(
    not(kmalloc43_inline_page_hint),
    expect(dead_code, reason = "read by the inline page hint only")
)]
pub(crate) struct HintMap {
    ours: *const c_ulong,
    bits: c_ulong,
    page_offset: c_ulong,
    memmap: c_ulong,
}

const _: () = assert!(core::mem::size_of::<HintMap>() == 4 * core::mem::size_of::<c_ulong>());

/// Where `private` sits in `struct page`.
#[cfg(kmalloc43_inline_page_hint)]
const PAGE_PRIVATE: usize = core::mem::offset_of!(
    kernel::bindings::page,
    __bindgen_anon_1.__bindgen_anon_1.private
);

/// The kmem supply of the heap: the vmem kmem arena, publishing page hints.
#[repr(transparent)]
pub(crate) struct HintedKmem(pub(crate) VmemKmem<TagPages, PageArena>);

/// A witness that an RCU read-side section is open while it is borrowed: what makes a hint read
/// safe without a check word (module documentation).
///
/// # Safety
///
/// Implemented only by guards that keep preemption or local interrupts disabled, or hold
/// `rcu_read_lock()`, for as long as they live.
pub(crate) unsafe trait ReadSide {}

// SAFETY: `rcu_read_lock()` is held while the guard lives.
unsafe impl ReadSide for kernel::sync::rcu::Guard {}

// SAFETY: a slot guard keeps preemption (`PreemptOff`) or local interrupts (`IrqsOff`) disabled
// on this CPU until it is dropped (`percpu.rs`): a read-side section of RCU (which has waited for
// preemption- and interrupt-disabled regions since Linux 4.20).
unsafe impl<T, S, L: Flavour> ReadSide for LocalGuard<'_, T, S, L> {}

// SAFETY: every slot is held with local interrupts off while the guard lives (`percpu.rs`).
unsafe impl<T, S, L: Flavour> ReadSide for AllGuard<'_, T, S, L> {}

fn write_hint(page: usize, code: u32) {
    // SAFETY: the page is a page of the heap's own (a run the page map is registering or
    // clearing), in the direct map.
    unsafe { kmalloc43_c_set_page_hint((page << PAGE_SHIFT) as c_ulong, code as c_ulong) };
}

fn clear_hint(page: usize) {
    write_hint(page, PageCode::NONE.raw());
}

/// The code of the page holding `addr`, if it carries one of ours (not [`PageCode::NONE`]); read
/// in a read-side section of its own.
#[inline]
pub(crate) fn page_hint(addr: usize) -> Option<PageCode> {
    let rcu = kernel::sync::rcu::read_lock();
    Some(decode_hint(raw_page_hint(addr, &rcu))).filter(|code| code.is_some())
}

/// The raw `private` word of the page holding `addr`, 0 unless the page is one of ours (one C
/// call; [`decode_hint`] decodes it), read inside the read-side section `_in` holds open.
#[cfg(not(kmalloc43_inline_page_hint))]
#[inline]
pub(crate) fn raw_page_hint(addr: usize, _in: &impl ReadSide) -> u64 {
    // SAFETY: the C helper reads `struct page` only for a page of ours (its bit in the hint
    // bitmap is set), whose `struct page` exists.
    unsafe { kmalloc43_c_page_hint(addr as c_ulong) as u64 }
}

/// The raw `private` word of the page holding `addr`, 0 unless the page is one of ours: the C
/// helper's `kmalloc43_hint_of()`, inline (the bit, then `virt_to_page(addr)->private`), inside
/// the read-side section `_in` holds open.
#[cfg(kmalloc43_inline_page_hint)]
#[inline(always)]
pub(crate) fn raw_page_hint(addr: usize, _in: &impl ReadSide) -> u64 {
    use core::sync::atomic::{AtomicUsize, Ordering::Acquire};
    let m = crate::service::hint_map();
    // SAFETY: plain reads of the C side's fields, which it sets before the first heap can hand
    // out a piece and clears after the last one is gone: they do not change while a heap exists.
    let (offset, memmap, map, bits) =
        unsafe { ((*m).page_offset, (*m).memmap, (*m).ours, (*m).bits) };
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

/// The code in the raw `private` value `v` read by [`raw_page_hint`] (`PerCpu::try_local_hint`
/// reads it in the same C call as the slot lock). It may be [`PageCode::NONE`] (a run's later
/// page, a cleared page, or not ours): its readers' tests refuse that themselves
/// (`PageCode::object_of`, `class`, `owner_slot`), so this costs no test of its own; no check
/// word either (module documentation).
#[inline(always)]
pub(crate) fn decode_hint(v: u64) -> PageCode {
    PageCode::from_raw(v as u32)
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
