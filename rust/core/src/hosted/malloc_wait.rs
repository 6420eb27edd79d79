// SPDX-License-Identifier: GPL-2.0

//! The sleeping wrapper around the malloc core, host edition: the kernel's `WAITOK` protocol
//! ([`crate::wait::waitok`]) over `Mutex`, `Condvar` and a page allocator tests can make fail.
//!
//! The core never sleeps: a `WAITOK` allocation that meets a type limit or finds no page returns
//! [`MallocError::WouldBlock`]. The protocol then sleeps on the condition variable until a free or
//! a limit change wakes it, or takes a chunk from the [`HostPageAllocator`] (the kernel's
//! `GFP_KERNEL` pages) and deposits it in the [`HostPages`] reserve, exactly as `rust/glue/heap.rs`
//! does with its spinlock, wait queue and page allocator.

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::hosted::malloc_host_pages::{HostPageAllocator, HostPages};
use crate::malloc::{Malloc, MallocError, MallocFlags, MallocType};
use crate::wait::{self, ChunkSupply, Ticket, WaitQueue, Waitok};

/// What the wrapper's lock protects.
pub struct HeapState {
    /// The malloc core.
    pub malloc: Malloc<HostPages>,
    /// Tasks asleep at a limit, and the wakes.
    pub queue: WaitQueue,
}

/// A thread-safe malloc whose `WAITOK` calls follow the kernel's protocol.
pub struct WaitingMalloc {
    inner: Mutex<HeapState>,
    wake: Condvar,
    pages: Arc<HostPageAllocator>,
    repaired: AtomicUsize,
    /// Every [`Waitok::enqueued`] call: the type, and whether the caller still held its lock.
    prepared: Mutex<Vec<(MallocType, bool)>>,
}

thread_local! {
    /// Whether this thread holds the wrapper's lock through [`Waitok::lock`].
    static LOCKED: Cell<bool> = const { Cell::new(false) };
}

/// A pointer handed across threads in tests (the memory is the caller's to use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendPtr(pub NonNull<u8>);

// SAFETY: the address is just a value here; whoever dereferences it takes responsibility.
unsafe impl Send for SendPtr {}

impl WaitingMalloc {
    /// Wraps an allocator, with a page allocator of its own that succeeds.
    pub fn new(m: Malloc<HostPages>) -> Self {
        Self::with_page_allocator(m, Arc::new(HostPageAllocator::new()))
    }

    /// Wraps an allocator; arena shortages take chunks from `pages`.
    pub fn with_page_allocator(m: Malloc<HostPages>, pages: Arc<HostPageAllocator>) -> Self {
        Self {
            inner: Mutex::new(HeapState {
                malloc: m,
                queue: WaitQueue::new(),
            }),
            wake: Condvar::new(),
            pages,
            repaired: AtomicUsize::new(0),
            prepared: Mutex::new(Vec::new()),
        }
    }

    fn state(&self) -> MutexGuard<'_, HeapState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The page allocator arena shortages take chunks from.
    pub fn page_allocator(&self) -> &Arc<HostPageAllocator> {
        &self.pages
    }

    /// `malloc`; with [`MallocFlags::WAITOK`] it sleeps at a limit and grows on a shortage.
    pub fn malloc(
        &self,
        size: usize,
        ty: MallocType,
        flags: MallocFlags,
    ) -> Result<SendPtr, MallocError> {
        wait::run(self, size, false, |s| s.malloc.malloc(size, ty, flags)).map(SendPtr)
    }

    /// `realloc` (waking sleepers on success, as the kernel does); on error `p` stays valid.
    pub fn realloc(
        &self,
        p: SendPtr,
        size: usize,
        ty: MallocType,
        flags: MallocFlags,
    ) -> Result<SendPtr, MallocError> {
        wait::run(self, size, true, |s| s.malloc.realloc(p.0, size, ty, flags)).map(SendPtr)
    }

    /// Threads asleep at a limit right now: what a test waits on to know that a thread blocked
    /// (never a sleep).
    pub fn waiters(&self) -> usize {
        self.state().queue.waiting()
    }

    /// The sleeps prepared so far ([`Waitok::enqueued`]): the type each sleeper waits at, and
    /// whether it still held the lock then (it must not: the kernel heap takes its per-CPU slots
    /// there, which come before the heap lock).
    pub fn prepared(&self) -> Vec<(MallocType, bool)> {
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Free lists the core repaired and the protocol retried after.
    pub fn repaired(&self) -> usize {
        self.repaired.load(SeqCst)
    }

    /// `free`, waking sleepers.
    pub fn free(&self, p: SendPtr, ty: MallocType) -> Result<(), MallocError> {
        wait::run(self, 0, true, |s| s.malloc.free(p.0, ty))
    }

    /// Changes a type's limit and wakes sleepers.
    pub fn set_limit(&self, ty: MallocType, limit: usize) -> Result<(), MallocError> {
        let mut s = self.state();
        s.malloc.set_limit(ty, limit)?;
        wait::wake_all(self, &mut s);
        Ok(())
    }

    /// Runs `f` on the locked allocator, then wakes sleepers (it may have freed or grown).
    pub fn with<R>(&self, f: impl FnOnce(&mut Malloc<HostPages>) -> R) -> R {
        let mut s = self.state();
        let r = f(&mut s.malloc);
        wait::wake_all(self, &mut s);
        r
    }
}

impl ChunkSupply for WaitingMalloc {
    fn chunk_order(&self, bytes: usize) -> Option<u32> {
        self.state().malloc.kmem().chunk_order(bytes)
    }

    fn take_chunk(&self, order: u32, _may_sleep: bool) -> Option<usize> {
        self.pages.take(order)
    }

    unsafe fn deposit(&self, addr: usize, order: u32) {
        // SAFETY: the caller's guarantee: a fresh chunk from `self.pages`, unused.
        unsafe { self.state().malloc.kmem_mut().deposit(addr, order) };
    }
}

impl Waitok for WaitingMalloc {
    type Locked<'a> = MutexGuard<'a, HeapState>;

    fn lock(&self) -> Self::Locked<'_> {
        let s = self.state();
        LOCKED.with(|l| l.set(true));
        s
    }

    fn unlock<'a>(&'a self, locked: Self::Locked<'a>) {
        LOCKED.with(|l| l.set(false));
        drop(locked);
    }

    fn enqueued(&self, ty: MallocType) {
        let held = LOCKED.with(Cell::get);
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((ty, held));
    }

    fn queue<'l>(locked: &'l mut Self::Locked<'_>) -> &'l mut WaitQueue {
        &mut locked.queue
    }

    fn sleep(&self, ticket: Ticket) {
        let mut s = self.state();
        if !s.queue.woke_since(ticket) {
            s = self.wake.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.queue.leave();
    }

    fn notify_all(&self) {
        self.wake.notify_all();
    }

    fn repaired(&self, _offset: usize) {
        self.repaired.fetch_add(1, SeqCst);
    }
}
