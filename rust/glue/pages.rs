// SPDX-License-Identifier: GPL-2.0

//! Pages from the kernel's page allocator, and the page-level vmem arena built on them.
//!
//! * [`PageCounters`]: every page the module takes from (and gives back to) the buddy allocator
//!   is counted here; after a heap is torn down, `taken == given`.
//! * [`TagPages`]: single pages for vmem boundary tags and hash tables, taken atomically
//!   (`GFP_NOWAIT`: they are asked for under the heap's spinlock).
//! * [`PageArena`]: the bottom vmem arena (quantum one page). Its spans are naturally aligned
//!   chunks of `2^order` pages from the buddy allocator (`order >= chunk_order`, larger for
//!   larger or more aligned requests), each added as one imported span, and a span that becomes
//!   wholly free is given back as the same chunk. It is the [`SpanSource`] of the kmem arena.
//!
//! Page flow under the lock: an import that finds the arena empty first uses a chunk from the
//! *reserve* (chunks a sleeping caller took with `GFP_KERNEL` outside the lock and deposited), then
//! tries `GFP_NOWAIT | __GFP_NOWARN`. A chunk that becomes free is not given to the buddy allocator
//! under the lock either: it is linked into the *released* list through its own (free) memory, and
//! the heap frees the list after dropping its lock ([`ChunkList::give_back`]), and the page
//! allocator gets it only after an RCU grace period (`call_rcu`): `free`'s fast path reads a page's
//! hint in `struct page` (`hint.rs`) with preemption off, and a page it finds marked as ours must
//! not be anybody else's before that section ends (`hint.rs` proves what this buys).

use core::{cell::Cell, ptr::NonNull};

use kernel::{
    bindings,
    ffi::{c_uint, c_ulong},
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc,
    },
};

use crate::vmem::{
    Arena, ArenaConfig, Flags, ImportRequest, SpanRelease, SpanSource, TagPageSource, VmemError,
    PAGE_SIZE,
};

extern "C" {
    /// `__get_free_pages(gfp, order)` (in `kmalloc43_exports.c`: it is a macro in C).
    fn kmalloc43_c_get_pages(gfp: bindings::gfp_t, order: c_uint) -> c_ulong;
}

/// Largest chunk order the module asks the buddy allocator for (`MAX_PAGE_ORDER` on x86 is 10).
pub(crate) const MAX_CHUNK_ORDER: u32 = 10;

/// GFP flags for page imports under the lock: never sleep, never warn (a failure is handled).
pub(crate) fn gfp_atomic() -> bindings::gfp_t {
    bindings::GFP_NOWAIT | bindings::__GFP_NOWARN
}

/// Counters of pages taken from and given back to the page allocator.
///
/// A chunk list given back after a grace period ([`ChunkList::give_back`]) counts in `given` when
/// it is handed over (irrevocably: nothing can take it back) and in `deferred` until the page
/// allocator has it; after `rcu_barrier()`, `deferred` is 0.
pub(crate) struct PageCounters {
    taken: Atomic<usize>,
    given: Atomic<usize>,
    deferred: Atomic<usize>,
    tag_pages: Atomic<usize>,
}

impl PageCounters {
    /// Zeroed counters.
    pub(crate) fn new() -> Result<Arc<Self>> {
        Ok(Arc::new(
            Self {
                taken: Atomic::new(0),
                given: Atomic::new(0),
                deferred: Atomic::new(0),
                tag_pages: Atomic::new(0),
            },
            GFP_KERNEL,
        )?)
    }

    /// Pages taken since creation.
    pub(crate) fn taken(&self) -> usize {
        self.taken.load(Relaxed)
    }

    /// Pages given back since creation.
    pub(crate) fn given(&self) -> usize {
        self.given.load(Relaxed)
    }

    /// Pages given back whose grace period has not ended yet: counted in [`PageCounters::given`],
    /// not yet in the page allocator.
    pub(crate) fn deferred(&self) -> usize {
        self.deferred.load(Relaxed)
    }

    /// Tag/hash pages currently held by the arenas counted here.
    pub(crate) fn tag_pages(&self) -> usize {
        self.tag_pages.load(Relaxed)
    }

    /// Takes a naturally aligned chunk of `2^order` pages; its address, or `None`.
    pub(crate) fn take(&self, order: u32, gfp: bindings::gfp_t) -> Option<usize> {
        if order > MAX_CHUNK_ORDER {
            return None;
        }
        // SAFETY: FFI call with valid flags and an order the page allocator accepts.
        let addr = unsafe { kmalloc43_c_get_pages(gfp, order) } as usize;
        if addr == 0 {
            return None;
        }
        self.taken.fetch_add(1 << order, Relaxed);
        Some(addr)
    }

    /// Gives back a chunk from [`PageCounters::take`].
    ///
    /// # Safety
    ///
    /// `addr` and `order` are those of a chunk from `take` not given back yet, unused from now on.
    pub(crate) unsafe fn give(&self, addr: usize, order: u32) {
        // SAFETY: the caller guarantees the chunk came from `__get_free_pages` with this order.
        unsafe { bindings::free_pages(addr as c_ulong, order) };
        self.given.fetch_add(1 << order, Relaxed);
    }
}

/// Single pages for vmem boundary tags, hash tables and quantum-cache depots.
pub(crate) struct TagPages {
    counters: Arc<PageCounters>,
}

impl TagPages {
    /// A tag page source counting into `counters`.
    pub(crate) fn new(counters: &Arc<PageCounters>) -> Self {
        Self {
            counters: counters.clone(),
        }
    }
}

impl TagPageSource for TagPages {
    fn alloc_page(&mut self) -> Option<NonNull<u8>> {
        let addr = self.counters.take(0, gfp_atomic())?;
        self.counters.tag_pages.fetch_add(1, Relaxed);
        NonNull::new(addr as *mut u8)
    }

    unsafe fn free_page(&mut self, page: NonNull<u8>) {
        self.counters.tag_pages.fetch_sub(1, Relaxed);
        // SAFETY: vmem only returns pages from `alloc_page`, which are order-0 chunks.
        unsafe { self.counters.give(page.as_ptr() as usize, 0) };
    }
}

/// Order of the chunk holding `pages` pages aligned to `align` bytes, at least `min_order`.
pub(crate) fn chunk_order_for(bytes: usize, align: usize, min_order: u32) -> Option<u32> {
    let need = bytes.max(align).div_ceil(PAGE_SIZE).max(1);
    let order = need
        .checked_next_power_of_two()?
        .trailing_zeros()
        .max(min_order);
    (order <= MAX_CHUNK_ORDER).then_some(order)
}

/// A singly linked list of free chunks, linked through their own first two words (next, order).
///
/// # Invariants
///
/// Every chunk on the list is a chunk from [`PageCounters::take`] that nobody else uses, whose
/// first word is the next chunk (0 ends the list) and second word its order.
pub(crate) struct ChunkList {
    head: usize,
}

impl Default for ChunkList {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkList {
    /// The empty list.
    pub(crate) const fn new() -> Self {
        Self { head: 0 }
    }

    /// Adds a chunk.
    ///
    /// # Safety
    ///
    /// `addr` is a chunk of `2^order` pages from [`PageCounters::take`] that nobody uses any more.
    pub(crate) unsafe fn push(&mut self, addr: usize, order: u32) {
        let link = addr as *mut usize;
        // SAFETY: the chunk is at least one page, owned by us and unused (caller).
        unsafe {
            link.write(self.head);
            link.add(1).write(order as usize);
        }
        self.head = addr;
    }

    /// Removes a chunk: `(addr, order)`.
    pub(crate) fn pop(&mut self) -> Option<(usize, u32)> {
        if self.head == 0 {
            return None;
        }
        let addr = self.head;
        let link = addr as *const usize;
        // SAFETY: by the invariants the head chunk holds (next, order).
        let (next, order) = unsafe { (link.read(), link.add(1).read() as u32) };
        self.head = next;
        Some((addr, order))
    }

    /// Gives every chunk back to the page allocator at once (chunks that never carried a page
    /// hint: the reserve's). Returns the pages.
    pub(crate) fn give_back_now(mut self, counters: &PageCounters) -> usize {
        let mut pages = 0;
        while let Some((addr, order)) = self.pop() {
            // SAFETY: by the invariants, a chunk from `take` with this order, unused.
            unsafe { counters.give(addr, order) };
            pages += 1 << order;
        }
        pages
    }

    /// Gives every chunk back to the page allocator after an RCU grace period (any context but
    /// NMI; call without any spinlock held, by convention): one `call_rcu` for the list, its
    /// `rcu_head` in the first chunk's own memory ([`Deferred`]). Returns the pages, counted as
    /// given at once and as deferred until the callback frees them.
    ///
    /// Why: a page of the kmem arena carries a hint that `free`'s fast path reads (the bitmap's
    /// bit, then `struct page`'s `private`) with preemption off; its hint is cleared, under the
    /// heap lock, before its chunk can be released. A reader that saw the bit set is in a
    /// read-side section that began before this call, so the page allocator cannot hand the page
    /// to another owner (who may write `private`) before that reader is done (`hint.rs`).
    pub(crate) fn give_back(self, counters: &Arc<PageCounters>) -> usize {
        if self.head == 0 {
            return 0;
        }
        let mut pages = 0;
        let mut at = self.head;
        while at != 0 {
            let link = at as *const usize;
            // SAFETY: by the invariants, every chunk on the list holds (next, order).
            let (next, order) = unsafe { (link.read(), link.add(1).read()) };
            pages += 1usize << order;
            at = next;
        }
        counters.given.fetch_add(pages, Relaxed);
        counters.deferred.fetch_add(pages, Relaxed);
        let d = self.head as *mut Deferred;
        // SAFETY: the first chunk is at least a page, owned by us and unused (invariants): its
        // first words become the `Deferred` record, the list's links kept as they are. The
        // callback owns the list and the counters' reference from here on.
        unsafe {
            (&raw mut (*d).pages).write(pages);
            (&raw mut (*d).counters).write(Arc::into_raw(counters.clone()));
            bindings::call_rcu(&raw mut (*d).rcu, Some(give_back_after_gp));
        }
        pages
    }
}

/// The record a deferred chunk list keeps in its first chunk: the list's own links (the first
/// two words, [`ChunkList`]'s invariants), the `rcu_head`, the pages and the counters.
#[repr(C)]
struct Deferred {
    next: usize,
    order: usize,
    rcu: bindings::callback_head,
    pages: usize,
    counters: *const PageCounters,
}

const _: () = assert!(core::mem::size_of::<Deferred>() <= PAGE_SIZE);

/// The `call_rcu` callback of [`ChunkList::give_back`]: a grace period has passed since the list
/// was handed over; gives its chunks to the page allocator (softirq or the RCU callback kthread).
///
/// # Safety
///
/// `head` is the `rcu` field of a [`Deferred`] record written by [`ChunkList::give_back`].
unsafe extern "C" fn give_back_after_gp(head: *mut bindings::callback_head) {
    let d = head
        .cast::<u8>()
        .wrapping_sub(core::mem::offset_of!(Deferred, rcu))
        .cast::<Deferred>();
    // SAFETY: `head` is the `rcu` field of a record at the start of the list's first chunk
    // (caller); `counters` came from `Arc::into_raw`, and this is its only release.
    let (pages, counters) = unsafe { ((*d).pages, Arc::from_raw((*d).counters)) };
    let mut list = ChunkList { head: d as usize };
    while let Some((addr, order)) = list.pop() {
        // SAFETY: by the invariants, a chunk from `take` with this order, unused; counted as
        // given already.
        unsafe { bindings::free_pages(addr as c_ulong, order) };
    }
    counters.deferred.fetch_sub(pages, Relaxed);
}

/// Waits until every chunk list given back so far is in the page allocator (`rcu_barrier()`:
/// every pending `call_rcu` callback has run). Task context; before the module's text goes
/// (the callbacks are its code) and wherever a caller must see [`PageCounters::deferred`] at 0.
pub(crate) fn wait_for_give_backs() {
    kernel::sync::rcu::rcu_barrier();
}

/// The page-level arena: naturally aligned page chunks from the buddy allocator.
///
/// Used only under the owning heap's lock (it is `Send`, not `Sync`: the `Cell`s are for the
/// heap's shared access through `Malloc::kmem().source()`).
pub(crate) struct PageArena {
    arena: Arena<TagPages>,
    counters: Arc<PageCounters>,
    chunk_order: u32,
    /// Chunks deposited by sleeping callers, used before asking for atomic pages.
    reserve: Cell<ChunkList>,
    /// Chunks that became wholly free, to give back after the lock is dropped.
    released: Cell<ChunkList>,
    /// Whether imports under the lock may ask for atomic pages (false only to test the
    /// sleeping path, as if `GFP_NOWAIT` always failed).
    atomic_imports: Cell<bool>,
}

// SAFETY: the chunk lists only hold addresses of memory owned by the arena; nothing in a
// `PageArena` is tied to the thread that created it.
unsafe impl Send for PageArena {}

impl PageArena {
    /// Initialises at `slot` an empty page arena importing chunks of at least `2^chunk_order`
    /// pages (`chunk_order <= MAX_CHUNK_ORDER`), building its vmem arena in place: nothing of it
    /// is built on the stack (the vmem arena is about 1 KiB).
    ///
    /// # Safety
    ///
    /// `slot` must be valid for writes of `Self` and aligned; its previous contents are
    /// overwritten without being dropped. On `Ok(())` it holds a page arena the caller owns (and
    /// must drop); on `Err` it is left uninitialised (nothing to drop).
    pub(crate) unsafe fn init_in_place(
        slot: *mut Self,
        name: &str,
        chunk_order: u32,
        counters: &Arc<PageCounters>,
    ) -> Result<(), VmemError> {
        if chunk_order > MAX_CHUNK_ORDER {
            return Err(VmemError::BadConfig);
        }
        let cfg = ArenaConfig {
            name,
            quantum: PAGE_SIZE,
            import_quantum: Some(PAGE_SIZE << chunk_order),
            ..ArenaConfig::default()
        };
        // SAFETY: `slot` is valid for writes and aligned (contract), so is its `arena` field; on
        // `Err` the field, and so the slot, is left uninitialised.
        unsafe { Arena::init_in_place(&raw mut (*slot).arena, &cfg, TagPages::new(counters)) }?;
        // SAFETY: as above; the remaining fields are written once each, after which every field
        // of the slot is initialised.
        unsafe {
            (&raw mut (*slot).counters).write(counters.clone());
            (&raw mut (*slot).chunk_order).write(chunk_order);
            (&raw mut (*slot).reserve).write(Cell::new(ChunkList::new()));
            (&raw mut (*slot).released).write(Cell::new(ChunkList::new()));
            (&raw mut (*slot).atomic_imports).write(Cell::new(true));
        }
        Ok(())
    }

    /// The vmem arena (for statistics, walks and audits).
    pub(crate) fn arena(&self) -> &Arena<TagPages> {
        &self.arena
    }

    /// The minimum chunk order.
    pub(crate) fn chunk_order(&self) -> u32 {
        self.chunk_order
    }

    /// Lets imports under the lock use `GFP_NOWAIT` pages (`true`, the default) or not (fault
    /// injection for tests: every import then needs a deposited chunk).
    pub(crate) fn set_atomic_imports(&self, on: bool) {
        self.atomic_imports.set(on);
    }

    /// Deposits a chunk taken outside the lock; the next import uses it.
    ///
    /// # Safety
    ///
    /// As [`ChunkList::push`].
    pub(crate) unsafe fn deposit(&self, addr: usize, order: u32) {
        let mut list = self.reserve.take();
        // SAFETY: the caller's guarantee.
        unsafe { list.push(addr, order) };
        self.reserve.set(list);
    }

    /// Takes the chunks to give back (after the lock is dropped).
    pub(crate) fn take_released(&self) -> ChunkList {
        self.released.take()
    }

    /// Adds the chunk `(addr, order)` as an imported span, or queues it for release.
    fn add_chunk(&mut self, addr: usize, order: u32) -> Result<(), VmemError> {
        match self.arena.add_imported(addr, PAGE_SIZE << order) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.queue_release(addr, order);
                Err(e)
            }
        }
    }

    fn queue_release(&self, addr: usize, order: u32) {
        let mut list = self.released.take();
        // SAFETY: a chunk we own that is wholly free.
        unsafe { list.push(addr, order) };
        self.released.set(list);
    }

    /// Finds a chunk for `req`: from the reserve if one is big enough, else atomically.
    fn grow(&mut self, req: &ImportRequest) -> Result<(), VmemError> {
        let order = chunk_order_for(req.size, req.constraints.align, self.chunk_order)
            .ok_or(VmemError::NoSpace)?;
        let mut reserve = self.reserve.take();
        let mut keep = ChunkList::new();
        let mut found = None;
        while let Some((addr, o)) = reserve.pop() {
            if found.is_none() && o >= order {
                found = Some((addr, o));
            } else {
                // SAFETY: moved from one list of unused chunks to another.
                unsafe { keep.push(addr, o) };
            }
        }
        self.reserve.set(keep);
        let (addr, o) = match found {
            Some(c) => c,
            None if self.atomic_imports.get() => (
                self.counters
                    .take(order, gfp_atomic())
                    .ok_or(VmemError::NoSpace)?,
                order,
            ),
            None => return Err(VmemError::NoSpace),
        };
        self.add_chunk(addr, o)
    }

    /// Allocates `size` bytes aligned as `req` asks, importing a chunk if needed (never sleeps).
    fn xalloc_growing(&mut self, req: &ImportRequest) -> Result<usize, VmemError> {
        for _ in 0..2 {
            match self
                .arena
                .xalloc(req.size, &req.constraints, Flags::NOSLEEP)
            {
                Err(VmemError::ImportNeeded(r)) => self.grow(&r)?,
                other => return other,
            }
        }
        Err(VmemError::NoSpace)
    }

    /// Gives back a span released by the arena (a whole chunk).
    fn release_span(&self, span: SpanRelease) {
        let pages = span.size / PAGE_SIZE;
        // A mask, not `%`: objtool does not know the divide-by-zero panic of `%` never returns.
        if pages.is_power_of_two() && span.base & (span.size - 1) == 0 {
            self.queue_release(span.base, pages.trailing_zeros());
        } else {
            pr_err!(
                "page arena released a span that is not a chunk ({} bytes); leaked\n",
                span.size
            );
        }
    }
}

impl SpanSource for PageArena {
    fn import(&mut self, req: &ImportRequest) -> Result<usize, VmemError> {
        self.xalloc_growing(req)
    }

    fn release(&mut self, span: SpanRelease) {
        match self.arena.xfree(span.base, span.size) {
            Ok(Some(chunk)) => self.release_span(chunk),
            Ok(None) => {}
            Err(e) => pr_err!(
                "page arena refused a release from kmem: {}\n",
                crate::arenas::vmem_what(&e)
            ),
        }
    }
}

impl Drop for PageArena {
    fn drop(&mut self) {
        let mut chunks = self.released.take();
        let mut leaked = None;
        let result = self.arena.destroy(&mut |span| {
            let pages = span.size / PAGE_SIZE;
            // SAFETY: spans of this arena are whole chunks from `take`, wholly free here.
            unsafe { chunks.push(span.base, pages.trailing_zeros()) };
        });
        if let Err(e) = result {
            leaked = Some(e);
        }
        chunks.give_back(&self.counters);
        self.reserve.take().give_back_now(&self.counters);
        if let Some(e) = leaked {
            pr_warn!(
                "page arena still has live memory at teardown ({}): leaked, not freed\n",
                crate::arenas::vmem_what(&e)
            );
        }
    }
}
