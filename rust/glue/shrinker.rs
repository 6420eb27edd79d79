// SPDX-License-Identifier: GPL-2.0

//! The heap's shrinker: free memory back to the kernel under memory pressure.
//!
//! A [`HeapShrinker`] registers a `struct shrinker` (C-only API: `shrinker_alloc`,
//! `shrinker_register`, `shrinker_free`, in `kmalloc43_exports.c`) whose private data is its heap.
//!
//! * `count_objects` ([`Heap::reclaimable_pages`]): pages a pass can give back now, counted by the
//!   core ([`crate::malloc::Malloc::reclaimable`]): parked clusters (over the buckets' high
//!   water), the kmem backend's spare chunk, and what the magazines and depots hold.
//! * `scan_objects` ([`Heap::shrink`]): flushes the magazines (the `drain` path), then gives the
//!   parked clusters and the spare chunk back ([`crate::malloc::Malloc::shrink`]) and the chunks
//!   that became wholly free to the page allocator. It gives everything counted at once (a pass
//!   is O(classes + parked clusters), far below the cost of splitting it by `nr_to_scan`) and
//!   returns the pages the page allocator got back, the drain's included: a round going back can
//!   empty a chunk (a page run that was its last allocation, or a cluster the give-back window
//!   returns meanwhile), which goes to the page allocator during the drain, before the parked
//!   clusters do.
//!
//! # Locking
//!
//! Reclaim may run in any task that allocates memory with direct reclaim, and in kswapd. The
//! shrinker takes only the per-CPU slot locks (every slot: task context), the depot locks and the
//! heap lock, all spinlocks, which no path holds while it allocates with a reclaiming GFP mask
//! (the heap drops them before `GFP_KERNEL`), so lockdep's `fs_reclaim` ordering holds. It takes no
//! mutex (the type registry's, the client arenas' list). One pass at a time: a second CPU that
//! finds a pass running returns `SHRINK_STOP` rather than wait for it; so does a pass that finds
//! nothing to give back.

use core::{cell::Cell, ffi::c_void, ptr::NonNull};

use kernel::{
    ffi::{c_char, c_ulong},
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Relaxed, Release},
        Arc,
    },
};

use crate::heap::Heap;
use crate::magazines::Front;

/// The C side's `struct shrinker` (opaque).
#[repr(C)]
pub(crate) struct CShrinker {
    _opaque: [u8; 0],
}

extern "C" {
    fn kmalloc43_c_shrinker_new(data: *mut c_void, name: *const c_char) -> *mut CShrinker;
    fn kmalloc43_c_shrinker_free(s: *mut CShrinker);
}

/// The shrinker's counters (shown in `totals` and by kmstat).
pub(crate) struct ShrinkStats {
    /// `count_objects` calls.
    pub(crate) counts: Atomic<usize>,
    /// `scan_objects` calls.
    pub(crate) scans: Atomic<usize>,
    /// Pages the scans gave back to the page allocator.
    pub(crate) pages: Atomic<usize>,
    /// A scan is running (the one-pass-at-a-time try-lock).
    busy: Atomic<u32>,
}

impl ShrinkStats {
    /// No calls yet.
    pub(crate) fn new() -> Self {
        Self {
            counts: Atomic::new(0),
            scans: Atomic::new(0),
            pages: Atomic::new(0),
            busy: Atomic::new(0),
        }
    }
}

impl Heap {
    /// Pages a shrinker pass can give back now (the core's count, with the magazines' rounds read
    /// under every slot lock).
    pub(crate) fn reclaimable_pages(&self) -> usize {
        let mut all = self.front.cpus.all();
        let (cached, _) = Front::tally(&mut all);
        self.with(|s| s.malloc.reclaimable(&cached).total())
    }

    /// A shrinker pass (see the module documentation): `None` if another pass is running, else
    /// the pages given back to the page allocator.
    pub(crate) fn shrink(&self) -> Option<usize> {
        let st = &self.shrink;
        if st.busy.cmpxchg(0, 1, Acquire).is_err() {
            return None;
        }
        st.scans.fetch_add(1, Relaxed);
        // The drain gives pages back too: a round going back can empty a chunk.
        let given = Cell::new(0);
        self.drain_giving(&given);
        self.with_giving(&given, |s| s.malloc.shrink());
        let pages = given.get();
        st.pages.fetch_add(pages, Relaxed);
        st.busy.store(0, Release);
        Some(pages)
    }
}

/// `count_objects` of a heap's shrinker.
///
/// # Safety
///
/// `heap` is the private data of a shrinker of [`HeapShrinker::new`], alive until
/// `shrinker_free` returned (which waits for running callbacks).
#[no_mangle]
pub(crate) unsafe extern "C" fn kmalloc43_rust_shrink_count(heap: *const c_void) -> c_ulong {
    // SAFETY: the caller's guarantee: a live heap.
    let heap = unsafe { &*heap.cast::<Heap>() };
    heap.shrink.counts.fetch_add(1, Relaxed);
    heap.reclaimable_pages() as c_ulong
}

/// `scan_objects` of a heap's shrinker: the pages freed, 0 when another pass runs or this one freed
/// nothing (the C side returns `SHRINK_STOP` then).
///
/// # Safety
///
/// As [`kmalloc43_rust_shrink_count`].
#[no_mangle]
pub(crate) unsafe extern "C" fn kmalloc43_rust_shrink_scan(heap: *const c_void) -> c_ulong {
    // SAFETY: the caller's guarantee: a live heap.
    let heap = unsafe { &*heap.cast::<Heap>() };
    heap.shrink().unwrap_or(0) as c_ulong
}

/// A registered shrinker of a heap.
///
/// # Invariants
///
/// `raw` is a registered shrinker from `kmalloc43_c_shrinker_new` whose private data is the heap
/// that `_heap` keeps alive; it is freed (and its callbacks finished) before `heap` is dropped.
pub(crate) struct HeapShrinker {
    raw: NonNull<CShrinker>,
    /// Keeps the shrinker's private data alive.
    _heap: Arc<Heap>,
}

// SAFETY: the shrinker is only freed through `&mut self` (drop); the heap is `Sync`.
unsafe impl Send for HeapShrinker {}
// SAFETY: `&HeapShrinker` gives access only to the heap.
unsafe impl Sync for HeapShrinker {}

impl HeapShrinker {
    /// Registers a shrinker named `name` for `heap` (process context: allocates).
    pub(crate) fn new(heap: Arc<Heap>, name: &'static CStr) -> Result<Self> {
        let data = Arc::as_ptr(&heap).cast_mut().cast::<c_void>();
        // SAFETY: `data` stays valid while the shrinker is registered (`heap` is kept until
        // `drop` freed it); `name` is a NUL-terminated string (copied by `shrinker_alloc`).
        let raw = unsafe { kmalloc43_c_shrinker_new(data, name.as_char_ptr()) };
        let raw = NonNull::new(raw).ok_or(ENOMEM)?;
        Ok(Self { raw, _heap: heap })
    }
}

impl Drop for HeapShrinker {
    fn drop(&mut self) {
        // SAFETY: registered by `new` (type invariant) and freed once, here; `shrinker_free`
        // returns after every running callback finished, before `_heap` is dropped.
        unsafe { kmalloc43_c_shrinker_free(self.raw.as_ptr()) };
    }
}
