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
//! In front of this lock sits the magazine layer (`magazines`, `fastpath`): per-CPU magazines
//! and per-CPU type ledgers serve most calls without it; it is taken to fill or drain a magazine,
//! to grant or return type credit, and for the calls the magazines do not serve. The per-CPU slot
//! locks and the depot locks come before it in the lock order.
//!
//! # Waiting
//!
//! The `WAITOK` protocol is the core's (`crate::wait`, tested on the host): the heap implements
//! its traits with the heap lock alone, the condition variable and the page allocator; a call
//! that must sleep at a limit takes every per-CPU slot (before the heap lock) once, to tell the
//! fast paths that somebody waits (`Waitok::enqueued`). A `WouldBlock { Limit }` sleeps on [`Heap`]'s condition variable and retries
//! when woken; frees and limit changes wake the sleepers (all of them: one wait queue per heap,
//! simplest correct; per-type queues are a refinement). A `WouldBlock { Arena }` (no page for the
//! kmem arena without sleeping) takes a chunk with `GFP_KERNEL` outside every lock (which may
//! sleep and reclaim), deposits it in the page arena's reserve and retries, at most
//! `wait::ARENA_RETRIES` times; a repaired free list is retried once.

use core::cell::Cell;

use kernel::{
    bindings,
    init::InPlaceInit,
    new_condvar, new_spinlock_irq,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        lock::{spinlock::SpinLockIrqBackend, Guard},
        Arc, CondVar, SpinLockIrq,
    },
};

use crate::aging::AgingStats;
use crate::fallback::Fallbacks;
use crate::hint::HintedKmem;
use crate::magazine::ledger::ReserveAccount;
use crate::magazine::Reserve;
use crate::magazines::{ledger_slot, Front, TypeDepots};
use crate::malloc::{
    Account, Malloc, MallocError, MallocType, SizeClasses, VmemKmem, MAX_TYPES, SEGREGATE_ALL,
};
use crate::pages::{
    chunk_order_for, gfp_atomic, PageArena, PageCounters, TagPages, MAX_CHUNK_ORDER,
};
use crate::shrinker::ShrinkStats;
use crate::vmem::{Arena, ArenaConfig, VmemError, PAGE_SIZE};
use crate::wait::{self, ChunkSupply, Ticket, WaitQueue, Waitok};

extern "C" {
    /// `might_sleep()` (in `kmalloc43_exports.c`: it is a macro in C).
    fn kmalloc43_c_might_sleep();
}

/// Checks (with `CONFIG_DEBUG_ATOMIC_SLEEP`) that the caller may sleep.
pub(crate) fn might_sleep() {
    // SAFETY: FFI call without arguments.
    unsafe { kmalloc43_c_might_sleep() };
}

/// The core's segregation threshold (`Documentation/malloc.rst`): every bucket class is
/// segregated by type, so that every piece and run has an owner in its record and page hint, and a
/// free with the wrong type is refused exactly, on the fast path by the hint, in O(1).
const SEGREGATE_BELOW: usize = SEGREGATE_ALL;

/// The kmem arena with its page-level source, publishing page hints: the page supply of the
/// malloc core.
pub(crate) type Kmem = HintedKmem;

/// Everything the heap lock protects.
pub(crate) struct HeapState {
    /// The malloc core, which owns the kmem arena, which owns the page arena (boxed: see
    /// [`Heap::new`]).
    pub(crate) malloc: KBox<Malloc<Kmem>>,
    /// Tasks sleeping on the condition variable, and the wakes so far (a sleeper that released
    /// its locks before sleeping compares them).
    pub(crate) queue: WaitQueue,
    /// Per type slot: usage plus the credit the CPUs hold (`magazine::ledger`).
    pub(crate) reserves: KVec<Reserve>,
    /// The malloc core's operation count at the last timed pass (`crate::aging`).
    pub(crate) timed_since: u64,
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
#[pin_data(PinnedDrop)]
pub(crate) struct Heap {
    #[pin]
    pub(crate) state: SpinLockIrq<HeapState>,
    #[pin]
    pub(crate) wakeup: CondVar,
    /// The magazine layer in front of the lock.
    pub(crate) front: Front,
    counters: Arc<PageCounters>,
    errors: Atomic<usize>,
    /// The shrinker's counters (`shrinker`).
    pub(crate) shrink: ShrinkStats,
    /// Calls served by the interrupt fall-back (`fallback`).
    pub(crate) fallbacks: Fallbacks,
    /// What the timed passes did (`aging`).
    pub(crate) aging: AgingStats,
}

#[pinned_drop]
impl PinnedDrop for Heap {
    fn drop(self: Pin<&mut Self>) {
        // Magazines hold pieces the core counts as allocated: give them back first, so that the
        // core's teardown returns every page.
        self.drain();
    }
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
            // SAFETY: the supply field `Malloc::init_in_place_with` passes is valid for writes and
            // aligned, also as the inner supply (`HintedKmem` is `repr(transparent)`); the page
            // arena's chunks come from the page allocator and nothing else uses them.
            unsafe {
                VmemKmem::init_in_place(kmem.cast(), &kmem_cfg, TagPages::new(counters), init_pages)
            }
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
        let mut malloc = KBox::init(new_malloc(chunk_order, classes, &counters), GFP_KERNEL)?;
        // A new core holds no page, so this cannot be refused.
        malloc.set_segregation(SEGREGATE_BELOW).map_err(|_| EBUSY)?;
        // An invariant of every heap the glue builds: every piece and run has an owning type in
        // its page hint, so the free paths decide the type by the hint and never need every
        // CPU's counters to judge a free (`free_magazine_slow`); a piece no type owns would.
        if !malloc.segregates_every_class() {
            pr_err!(
                "segregation below {} leaves size classes shared by every type: refused\n",
                SEGREGATE_BELOW
            );
            return Err(EINVAL);
        }
        let reserves = KVec::from_elem(Reserve::default(), MAX_TYPES, GFP_KERNEL)?;
        let front = Front::new(classes.table())?;
        let heap = Arc::pin_init(
            pin_init!(Heap {
                state <- new_spinlock_irq!(
                    HeapState { malloc, queue: WaitQueue::new(), reserves, timed_since: 0 },
                    "kmalloc43_heap"
                ),
                wakeup <- new_condvar!("kmalloc43_heap_wait"),
                front,
                counters,
                errors: Atomic::new(0),
                shrink: ShrinkStats::new(),
                fallbacks: Fallbacks::new(),
                aging: AgingStats::new(),
            }),
            GFP_KERNEL,
        )?;
        if diagnostic {
            heap.set_diagnostic(true).map_err(|_| ENOMEM)?;
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
        self.with_giving(&Cell::new(0), f)
    }

    /// [`Heap::with`], adding to `given` the pages it gave back to the page allocator (a shrinker
    /// pass counts those of every step, `Heap::shrink`).
    pub(crate) fn with_giving<R>(
        &self,
        given: &Cell<usize>,
        f: impl FnOnce(&mut HeapState) -> R,
    ) -> R {
        let mut g = self.state.lock();
        let r = f(&mut g);
        let released = g.pages().take_released();
        let bad_link = g.malloc.take_bad_link();
        let bad_size = bad_link
            .and_then(|(i, _)| g.malloc.bucket_stats(i))
            .map(|b| b.size);
        drop(g);
        given.set(given.get() + released.give_back(&self.counters));
        if let Some(size) = bad_size {
            // Once per heap (the core remembers only the first); every one is counted in the
            // bucket's `bad_links`. No address: `%p` would have to be hashed.
            pr_err!(
                "{size}-byte class: free-list link of a freed piece overwritten (use after free); list cut there, not followed\n"
            );
        }
        r
    }

    /// Runs a malloc-core operation on `ty` with the `WAITOK` protocol (see the module
    /// documentation), under the heap lock alone, from any context: the core checks `ty`'s limit
    /// and counts its usage on the type's reserve (`op`'s account, [`ReserveAccount`]: every
    /// CPU's credit word is revoked by an exchange when the headroom does not cover a charge, no
    /// slot taken), so no per-CPU counter need be folded first. Only a `WAITOK` call that must
    /// sleep takes every slot ([`Waitok::enqueued`]). `want_bytes` sizes a chunk for an arena
    /// shortage; `wake` wakes sleepers on success.
    pub(crate) fn run<R>(
        &self,
        want_bytes: usize,
        wake: bool,
        ty: MallocType,
        mut op: impl FnMut(&mut Malloc<Kmem>, &mut dyn Account) -> Result<R, MallocError>,
    ) -> Result<R, MallocError> {
        wait::run(self, want_bytes, wake, |g| {
            let g = &mut **g;
            // A handle beyond the table: the core refuses it before it asks the account.
            let mut unknown = Reserve::default();
            let res = g.reserves.get_mut(ty.index()).unwrap_or(&mut unknown);
            let mut account = ReserveAccount {
                res,
                credits: self.credits_of(ty.index()),
            };
            op(&mut g.malloc, &mut account)
        })
    }

    /// Wakes every task sleeping at a limit, if there is one (heap lock held).
    pub(crate) fn wake(&self, g: &mut HeapState) {
        if g.queue.wake() {
            self.wakeup.notify_all();
        }
    }

    /// Drops the heap lock, then gives back chunks that became free.
    pub(crate) fn unlock(&self, g: Guard<'_, HeapState, SpinLockIrqBackend>) {
        let released = g.pages().take_released();
        drop(g);
        released.give_back(&self.counters);
    }

    /// Defines a type and gives it its depots (each CPU makes its own magazines of the type when
    /// it first needs one). `name` and `description` must stay valid until the type is undefined
    /// (they are `'static` for the core; the type registry keeps them in memory it frees only
    /// after [`Heap::undefine_type`] succeeded). Process context: the depots are allocated with
    /// `GFP_KERNEL`; without them the type is not defined (`NoMemory`).
    pub(crate) fn define_type(
        &self,
        name: &'static str,
        description: &'static str,
        limit: usize,
    ) -> Result<MallocType, MallocError> {
        might_sleep();
        let ty = self.with(|s| {
            let ty = s.malloc.define_type(name, description, limit)?;
            if let Some(r) = s.reserves.get_mut(ty.index()) {
                *r = Reserve::default();
            }
            Ok(ty)
        })?;
        // Nobody has the handle yet: until the depots are in, a call of the type would find no
        // magazines and take its objects straight from the piece layer.
        let Ok(depots) = self.front.new_depots() else {
            // No allocation of the type can exist, so this cannot fail.
            let _ = self.with(|s| s.malloc.undefine_type(ty));
            return Err(MallocError::NoMemory {
                ty,
                size: core::mem::size_of::<TypeDepots>(),
            });
        };
        if let Some((_, t)) = ledger_slot(ty) {
            Front::install_depots(&mut self.front.cpus.all(), t, &depots);
        }
        Ok(ty)
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
        self.with(|s| s.queue.waiting())
    }

    /// Checks every invariant of the malloc core and both arenas, after a drain (the magazines
    /// emptied and the per-CPU counters folded, which changes no statistic a reader can see), and
    /// that every type's reserve is its usage.
    #[cfg_attr(
        not(CONFIG_KMALLOC43_KUNIT_TEST),
        expect(dead_code, reason = "used by the KUnit suites")
    )]
    pub(crate) fn audit(&self) -> Result<(), &'static str> {
        self.drain();
        self.with(|s| {
            for i in 0..MAX_TYPES {
                if let Some(ty) = s.malloc.type_handle(i) {
                    let used = s.malloc.type_stats(ty).map(|st| st.memuse).unwrap_or(0);
                    if s.reserves[i].reserved != used {
                        return Err("type reserve differs from its usage after a drain");
                    }
                }
            }
            s.malloc.audit().map_err(|e| e.what)?;
            s.kmem().audit().map_err(|e| e.what)?;
            s.pages().arena().audit().map_err(|e| e.what)
        })
    }
}

impl ChunkSupply for Heap {
    fn chunk_order(&self, bytes: usize) -> Option<u32> {
        self.with(|s| chunk_order_for(bytes, PAGE_SIZE, s.pages().chunk_order()))
    }

    fn take_chunk(&self, order: u32, may_sleep: bool) -> Option<usize> {
        let gfp = if may_sleep {
            bindings::GFP_KERNEL
        } else {
            gfp_atomic()
        };
        self.counters.take(order, gfp)
    }

    unsafe fn deposit(&self, addr: usize, order: u32) {
        // SAFETY: the caller's guarantee: a fresh chunk of `2^order` pages, unused.
        self.with(|s| unsafe { s.pages().deposit(addr, order) });
    }
}

impl Waitok for Heap {
    type Locked<'a> = Guard<'a, HeapState, SpinLockIrqBackend>;

    fn lock(&self) -> Self::Locked<'_> {
        self.state.lock()
    }

    fn unlock<'a>(&'a self, locked: Self::Locked<'a>) {
        Heap::unlock(self, locked);
    }

    fn queue<'l>(locked: &'l mut Self::Locked<'_>) -> &'l mut WaitQueue {
        &mut locked.queue
    }

    fn enqueued(&self, ty: MallocType) {
        // Task context (a `WAITOK` call): every slot, so that no fast path is half way. Frees
        // stop keeping their credit from now on, so that the sleeper sees them.
        let mut all = self.front.cpus.all();
        Front::set_waiters(&mut all, true);
        let mut h = self.state.lock();
        // The refusal revoked every credit word of `ty`. A word granted again since (another
        // CPU's charge out of the headroom) may have taken frees of `ty` as credit without
        // waking anybody: the sleeper then does not sleep but asks again (which revokes it).
        if ledger_slot(ty).is_some() && self.credits_of(ty.index()).any(|c| !c.is_revoked()) {
            self.wake(&mut h);
        }
        Heap::unlock(self, h);
        drop(all);
    }

    fn sleep(&self, ticket: Ticket) {
        let mut g = self.state.lock();
        if !g.queue.woke_since(ticket) {
            self.wakeup.wait(&mut g);
        }
        g.queue.leave();
        Heap::unlock(self, g);
        self.waiter_left();
    }

    fn notify_all(&self) {
        self.wakeup.notify_all();
    }

    fn repaired(&self, offset: usize) {
        // The core repaired the free list; the piece stays free.
        pr_err!("free piece modified after free at offset {offset}; repaired\n");
    }
}
