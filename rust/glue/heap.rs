// SPDX-License-Identifier: GPL-2.0

//! A heap: the BSD malloc core on a kmem arena on a page arena, under one lock.
//!
//! # Locking
//!
//! One `SpinLockIrq` guards the whole allocator state: the malloc core, the kmem arena and the
//! page arena (the 4.3BSD kernel did the same with `splimp()` around `malloc`). Interrupts are
//! disabled while it is held, so `NOWAIT` calls and `free` work in any context, hardirq included.
//! Nothing under the lock sleeps: page imports under it use `GFP_NOWAIT | __GFP_NOWARN`, chunks
//! that become free are queued and given back to the page allocator after the lock is dropped.
//!
//! The seam for scaling is the per-CPU magazine layer of vmem (`Arena::magazine_fill/drain`) and,
//! for malloc, per-CPU bucket caches in front of this lock: a fast path that pops from a per-CPU
//! cache with preemption disabled and takes this lock only to refill or drain.
//!
//! # Waiting
//!
//! A `WAITOK` call that the core answers with `WouldBlock { Limit }` sleeps on [`Heap`]'s condition
//! variable (releasing the lock) and retries when woken; frees and limit changes wake the sleepers
//! (all of them: one wait queue per heap, simplest correct; per-type queues are a refinement).
//! `WouldBlock { Arena }` (no page for the kmem arena without sleeping) drops the lock, takes a
//! chunk with `GFP_KERNEL` (which may sleep and reclaim), deposits it in the page arena's reserve
//! under the lock and retries; only if the page allocator fails even then does the call fail.

use core::ptr::NonNull;

use kernel::{
    bindings,
    init::InPlaceInit,
    new_condvar, new_spinlock_irq,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, CondVar, SpinLockIrq,
    },
};

use crate::malloc::{
    BlockReason, Malloc, MallocError, MallocFlags, MallocType, SizeClasses, TypeStats, VmemKmem,
    CHUNK_PAGES, MAXALLOCSAVE,
};
use crate::pages::{chunk_order_for, PageArena, PageCounters, TagPages, MAX_CHUNK_ORDER};
use crate::vmem::{Arena, ArenaConfig, VmemError, PAGE_SIZE};

extern "C" {
    /// `might_sleep()` (in `kmalloc43_exports.c`: it is a macro in C).
    fn kmalloc43_c_might_sleep();
}

/// Checks (with `CONFIG_DEBUG_ATOMIC_SLEEP`) that the caller may sleep.
pub(crate) fn might_sleep() {
    // SAFETY: FFI call without arguments.
    unsafe { kmalloc43_c_might_sleep() };
}

/// The kmem arena with its page-level source: the page supply of the malloc core.
pub(crate) type Kmem = VmemKmem<TagPages, PageArena>;

/// How often a `WAITOK` call takes a chunk with `GFP_KERNEL` and retries before failing.
const ARENA_RETRIES: usize = 4;

/// Everything the heap lock protects.
pub(crate) struct HeapState {
    /// The malloc core, which owns the kmem arena, which owns the page arena (boxed: see
    /// [`Heap::new`]).
    pub(crate) malloc: KBox<Malloc<Kmem>>,
    /// Tasks sleeping on the condition variable.
    waiting: usize,
}

impl HeapState {
    /// The page arena.
    pub(crate) fn pages(&self) -> &PageArena {
        self.malloc.kmem().source()
    }

    /// The kmem arena.
    pub(crate) fn kmem(&self) -> &Arena<TagPages> {
        self.malloc.kmem().arena()
    }
}

/// A heap instance (the module has one; KUnit tests make private ones).
#[pin_data]
pub(crate) struct Heap {
    #[pin]
    state: SpinLockIrq<HeapState>,
    #[pin]
    wakeup: CondVar,
    counters: Arc<PageCounters>,
    errors: Atomic<usize>,
}

/// The errno for a vmem error during set-up.
fn setup_errno(_: VmemError) -> Error {
    ENOMEM
}

/// An initialiser of the malloc core on a kmem arena on a page arena importing chunks of at
/// least `2^chunk_order` pages (`chunk_order <= MAX_CHUNK_ORDER`), each built in place in the
/// slot of the one before: the page arena inside the kmem backend inside the malloc core. No
/// part of the chain (14 KiB in all) is built on the stack and moved.
fn new_malloc(
    chunk_order: u32,
    classes: SizeClasses,
    counters: &Arc<PageCounters>,
) -> impl Init<Malloc<Kmem>, Error> + '_ {
    let init = move |slot: *mut Malloc<Kmem>| {
        let kmem_cfg = ArenaConfig {
            name: "kmalloc43_kmem",
            quantum: PAGE_SIZE,
            import_quantum: Some(PAGE_SIZE << chunk_order),
            ..ArenaConfig::default()
        };
        let init_pages = |pages: *mut PageArena| {
            // SAFETY: `VmemKmem::init_in_place` passes its source field, valid for writes and
            // aligned; `PageArena::init_in_place` initialises it or leaves it empty.
            unsafe { PageArena::init_in_place(pages, "kmalloc43_pages", chunk_order, counters) }
        };
        let init_kmem = |kmem: *mut Kmem| {
            // SAFETY: `Malloc::init_in_place_with` passes its supply field, valid for writes and
            // aligned. The page arena imports chunks of real memory from the page allocator,
            // owned by it until released, that nothing else uses.
            unsafe { VmemKmem::init_in_place(kmem, &kmem_cfg, TagPages::new(counters), init_pages) }
        };
        // SAFETY: `slot` is valid for writes and aligned (pin-init contract); `init_kmem`
        // initialises the supply or leaves it empty (`VmemKmem::init_in_place`), and on `Err`
        // the slot is left uninitialised, as `init_from_closure` requires.
        unsafe { Malloc::init_in_place_with(slot, classes, init_kmem) }.map_err(setup_errno)
    };
    // SAFETY: the closure initialises every field of the slot on `Ok` and leaves it
    // uninitialised on `Err` (above); `Malloc` is not pinned.
    unsafe { pin_init::init_from_closure(init) }
}

impl Heap {
    /// A new, empty heap with the default size classes, importing chunks of at least
    /// `2^chunk_order` pages.
    #[cfg_attr(
        not(CONFIG_KMALLOC43_KUNIT_TEST),
        expect(dead_code, reason = "used by the KUnit suites")
    )]
    pub(crate) fn new(chunk_order: u32, diagnostic: bool) -> Result<Arc<Self>> {
        Self::with_classes(chunk_order, SizeClasses::DEFAULT, diagnostic)
    }

    /// A new, empty heap with the size classes `classes`, importing chunks of at least
    /// `2^chunk_order` pages.
    pub(crate) fn with_classes(
        chunk_order: u32,
        classes: SizeClasses,
        diagnostic: bool,
    ) -> Result<Arc<Self>> {
        if chunk_order > MAX_CHUNK_ORDER {
            return Err(EINVAL);
        }
        let counters = PageCounters::new()?;
        // The core has a box of its own: the heap's lock takes its data by an infallible
        // initialiser (`Lock::new`), and building the core can fail.
        let malloc = KBox::init(new_malloc(chunk_order, classes, &counters), GFP_KERNEL)?;
        let heap = Arc::pin_init(
            pin_init!(Heap {
                state <- new_spinlock_irq!(HeapState { malloc, waiting: 0 }, "kmalloc43_heap"),
                wakeup <- new_condvar!("kmalloc43_heap_wait"),
                counters,
                errors: Atomic::new(0),
            }),
            GFP_KERNEL,
        )?;
        if diagnostic {
            heap.with(|s| s.malloc.set_diagnostic(true))
                .map_err(|_| ENOMEM)?;
        }
        Ok(heap)
    }

    /// The page counters (they outlive the heap).
    pub(crate) fn counters(&self) -> &Arc<PageCounters> {
        &self.counters
    }

    /// Counts a call rejected with an error (shown in `totals`).
    pub(crate) fn note_error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    /// Calls rejected with an error.
    pub(crate) fn errors(&self) -> usize {
        self.errors.load(Relaxed)
    }

    /// Runs `f` under the lock, then gives back chunks that became free.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut HeapState) -> R) -> R {
        let mut g = self.state.lock();
        let r = f(&mut g);
        let released = g.pages().take_released();
        drop(g);
        released.give_back(&self.counters);
        r
    }

    /// Runs a malloc-core operation with the `WAITOK` protocol (see the module documentation).
    /// `want_bytes` sizes a chunk for an arena shortage; `wake` wakes sleepers on success.
    fn run<R>(
        &self,
        want_bytes: usize,
        wake: bool,
        mut op: impl FnMut(&mut Malloc<Kmem>) -> Result<R, MallocError>,
    ) -> Result<R, MallocError> {
        let mut g = self.state.lock();
        let mut arena_retries = 0;
        let mut repaired = false;
        let result = loop {
            match op(&mut g.malloc) {
                Err(MallocError::WouldBlock {
                    reason: BlockReason::Limit,
                    ..
                }) => {
                    g.waiting += 1;
                    self.wakeup.wait(&mut g);
                    g.waiting -= 1;
                }
                Err(MallocError::WouldBlock {
                    ty,
                    reason: BlockReason::Arena,
                }) => {
                    // A bucket refill may import a whole cluster chunk (the core's chunk layer)
                    // and then metadata pages to register it and its pages: twice a chunk.
                    let need = if want_bytes <= MAXALLOCSAVE {
                        want_bytes.max(2 * CHUNK_PAGES * PAGE_SIZE)
                    } else {
                        want_bytes
                    };
                    let order = chunk_order_for(need, PAGE_SIZE, g.pages().chunk_order());
                    let (Some(order), true) = (order, arena_retries < ARENA_RETRIES) else {
                        break Err(MallocError::NoMemory {
                            ty,
                            size: want_bytes,
                        });
                    };
                    arena_retries += 1;
                    let released = g.pages().take_released();
                    drop(g);
                    released.give_back(&self.counters);
                    let chunk = self.counters.take(order, bindings::GFP_KERNEL);
                    g = self.state.lock();
                    let Some(addr) = chunk else {
                        break Err(MallocError::NoMemory {
                            ty,
                            size: want_bytes,
                        });
                    };
                    // SAFETY: a fresh chunk of `2^order` pages that nothing else uses.
                    unsafe { g.pages().deposit(addr, order) };
                }
                Err(MallocError::ModifiedAfterFree { offset, .. }) if !repaired => {
                    // The core repaired the free list; the piece stays free. Say so, retry once.
                    pr_err!("free piece modified after free at offset {offset}; repaired\n");
                    repaired = true;
                }
                other => break other,
            }
        };
        if wake && result.is_ok() && g.waiting > 0 {
            self.wakeup.notify_all();
        }
        let released = g.pages().take_released();
        drop(g);
        released.give_back(&self.counters);
        result
    }

    /// Allocates `size` bytes charged to `ty`. `WAITOK` may sleep (process context only);
    /// `NOWAIT` never sleeps (any context). `ZERO` zeroes outside the lock.
    pub(crate) fn malloc(
        &self,
        size: usize,
        ty: MallocType,
        flags: MallocFlags,
    ) -> Result<NonNull<u8>, MallocError> {
        if flags.contains(MallocFlags::WAITOK) {
            might_sleep();
        }
        let zero = flags.contains(MallocFlags::ZERO);
        let core_flags = MallocFlags::from_bits(flags.bits() & !MallocFlags::ZERO.bits());
        let (ptr, len) = self.run(size, false, |m| {
            let p = m.malloc(size, ty, core_flags)?;
            // Only ZERO needs the usable size: spare the page-map lookup otherwise.
            let len = if zero {
                m.usable_size(p).unwrap_or(0)
            } else {
                0
            };
            Ok((p, len))
        })?;
        if zero {
            // SAFETY: `ptr` is a fresh allocation of `len` usable bytes owned by the caller.
            unsafe { core::ptr::write_bytes(ptr.as_ptr(), 0, len) };
        }
        Ok(ptr)
    }

    /// Frees an allocation of type `ty` (any context). Wakes tasks waiting at a limit.
    pub(crate) fn free(&self, ptr: NonNull<u8>, ty: MallocType) -> Result<(), MallocError> {
        self.run(0, true, |m| m.free(ptr, ty))
    }

    /// Resizes an allocation (same contexts as [`Heap::malloc`]); on error `ptr` stays valid.
    pub(crate) fn realloc(
        &self,
        ptr: NonNull<u8>,
        size: usize,
        ty: MallocType,
        flags: MallocFlags,
    ) -> Result<NonNull<u8>, MallocError> {
        if flags.contains(MallocFlags::WAITOK) {
            might_sleep();
        }
        self.run(size, true, |m| m.realloc(ptr, size, ty, flags))
    }

    /// Bytes usable at `ptr`.
    pub(crate) fn usable_size(&self, ptr: NonNull<u8>) -> Result<usize, MallocError> {
        self.with(|s| s.malloc.usable_size(ptr))
    }

    /// Defines a type. `name` and `description` must stay valid until the type is undefined
    /// (they are `'static` for the core; the type registry keeps them in memory it frees only
    /// after [`Heap::undefine_type`] succeeded).
    pub(crate) fn define_type(
        &self,
        name: &'static str,
        description: &'static str,
        limit: usize,
    ) -> Result<MallocType, MallocError> {
        self.with(|s| s.malloc.define_type(name, description, limit))
    }

    /// Undefines a type with no live allocation.
    pub(crate) fn undefine_type(&self, ty: MallocType) -> Result<TypeStats, MallocError> {
        self.with(|s| s.malloc.undefine_type(ty))
    }

    /// Changes a type's limit and wakes the tasks waiting at it.
    pub(crate) fn set_limit(&self, ty: MallocType, limit: usize) -> Result<(), MallocError> {
        let mut g = self.state.lock();
        g.malloc.set_limit(ty, limit)?;
        if g.waiting > 0 {
            self.wakeup.notify_all();
        }
        Ok(())
    }

    /// Statistics of a type.
    pub(crate) fn type_stats(&self, ty: MallocType) -> Result<TypeStats, MallocError> {
        self.with(|s| s.malloc.type_stats(ty))
    }

    /// Makes page imports under the lock fail as if `GFP_NOWAIT` found no page (`false`), so that
    /// tests reach the `GFP_KERNEL` path; `true` restores normal operation.
    #[cfg_attr(
        not(CONFIG_KMALLOC43_KUNIT_TEST),
        expect(dead_code, reason = "used by the KUnit suites")
    )]
    pub(crate) fn set_atomic_imports(&self, on: bool) {
        self.with(|s| s.pages().set_atomic_imports(on));
    }

    /// Tasks currently sleeping in this heap.
    #[cfg_attr(
        not(CONFIG_KMALLOC43_KUNIT_TEST),
        expect(dead_code, reason = "used by the KUnit suites")
    )]
    pub(crate) fn waiters(&self) -> usize {
        self.with(|s| s.waiting)
    }

    /// Checks every invariant of the malloc core and both arenas.
    #[cfg_attr(
        not(CONFIG_KMALLOC43_KUNIT_TEST),
        expect(dead_code, reason = "used by the KUnit suites")
    )]
    pub(crate) fn audit(&self) -> Result<(), &'static str> {
        self.with(|s| {
            s.malloc.audit().map_err(|e| e.what)?;
            s.kmem().audit().map_err(|e| e.what)?;
            s.pages().arena().audit().map_err(|e| e.what)
        })
    }
}
