// SPDX-License-Identifier: GPL-2.0

//! The sleeping wrapper around the malloc core, host edition (`Mutex` + `Condvar`), built the way
//! the kernel glue builds it with a spinlock and wait queues.
//!
//! The core never sleeps: a `WAITOK` allocation that meets a type limit or an exhausted arena
//! returns [`MallocError::WouldBlock`]. This wrapper then sleeps on a condition variable, with the
//! lock released atomically, until a `free`, a limit change or a supply change wakes it, and
//! retries. Because the core reports under the same lock that `free` takes, no wakeup is lost.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::malloc::{KmemPages, Malloc, MallocError, MallocFlags, MallocType};

/// A thread-safe malloc whose `WAITOK` calls sleep.
pub struct WaitingMalloc<K: KmemPages> {
    inner: Mutex<Malloc<K>>,
    wake: Condvar,
    /// Threads asleep in [`WaitingMalloc::malloc`] (raised under the lock before sleeping).
    waiters: AtomicUsize,
}

/// A pointer handed across threads in tests (the memory is the caller's to use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendPtr(pub NonNull<u8>);

// SAFETY: the address is just a value here; whoever dereferences it takes responsibility.
unsafe impl Send for SendPtr {}

impl<K: KmemPages> WaitingMalloc<K> {
    /// Wraps an allocator.
    pub fn new(m: Malloc<K>) -> Self {
        Self {
            inner: Mutex::new(m),
            wake: Condvar::new(),
            waiters: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Malloc<K>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `malloc`; with [`MallocFlags::WAITOK`] it sleeps until the request can be met.
    pub fn malloc(
        &self,
        size: usize,
        ty: MallocType,
        flags: MallocFlags,
    ) -> Result<SendPtr, MallocError> {
        let mut m = self.lock();
        loop {
            match m.malloc(size, ty, flags) {
                Err(MallocError::WouldBlock { .. }) => {
                    // Raised with the lock held and the lock released atomically by `wait`:
                    // whoever sees the count raised (under the lock) sees this thread asleep.
                    self.waiters.fetch_add(1, SeqCst);
                    m = self.wake.wait(m).unwrap_or_else(|e| e.into_inner());
                    self.waiters.fetch_sub(1, SeqCst);
                }
                r => return r.map(SendPtr),
            }
        }
    }

    /// Threads asleep in a `WAITOK` [`WaitingMalloc::malloc`] right now: what a test waits on
    /// to know that a thread blocked (never a sleep).
    pub fn waiters(&self) -> usize {
        let _m = self.lock();
        self.waiters.load(SeqCst)
    }

    /// `free`, waking sleepers (the kernel glue wakes the type's wait queue).
    pub fn free(&self, p: SendPtr, ty: MallocType) -> Result<(), MallocError> {
        let r = self.lock().free(p.0, ty);
        self.wake.notify_all();
        r
    }

    /// Changes a type's limit and wakes sleepers.
    pub fn set_limit(&self, ty: MallocType, limit: usize) -> Result<(), MallocError> {
        let r = self.lock().set_limit(ty, limit);
        self.wake.notify_all();
        r
    }

    /// Runs `f` on the locked allocator, then wakes sleepers (it may have freed or grown).
    pub fn with<R>(&self, f: impl FnOnce(&mut Malloc<K>) -> R) -> R {
        let r = f(&mut self.lock());
        self.wake.notify_all();
        r
    }
}
