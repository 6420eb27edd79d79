// SPDX-License-Identifier: GPL-2.0

//! Host page source and sleeping wrapper for vmem arenas.
//!
//! [`HeapPages`] gives an arena real pages from the global allocator and counts them, so tests
//! can check that `destroy` returns every page. [`WaitingArena`] is the host model of the kernel
//! glue: the `no_std` arena under a `Mutex`, with a `Condvar` on which [`Flags::SLEEP`] callers
//! wait after [`VmemError::NoSpace`] until a free or an add, then retry.

use std::alloc::{alloc, dealloc, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::vmem::{
    Arena, ArenaConfig, Constraints, Flags, SpanRelease, TagPageSource, VmemError, PAGE_SIZE,
};

/// Page source backed by the global allocator; optionally limited, always counted.
#[derive(Debug, Default, Clone)]
pub struct HeapPages {
    outstanding: Arc<AtomicUsize>,
    limit: Option<usize>,
}

impl HeapPages {
    /// An unlimited page source.
    pub fn new() -> Self {
        Self::default()
    }

    /// A page source that refuses pages once `limit` are outstanding.
    pub fn with_limit(limit: usize) -> Self {
        HeapPages {
            outstanding: Arc::default(),
            limit: Some(limit),
        }
    }

    /// Pages handed out and not yet freed (shared by clones).
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// A counter handle that stays valid after the source moved into an arena.
    pub fn counter(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.outstanding)
    }

    fn layout() -> Layout {
        // PAGE_SIZE is a non-zero power of two.
        Layout::from_size_align(PAGE_SIZE, PAGE_SIZE).unwrap_or(Layout::new::<usize>())
    }
}

impl TagPageSource for HeapPages {
    fn alloc_page(&mut self) -> Option<NonNull<u8>> {
        if self.limit.is_some_and(|l| self.outstanding() >= l) {
            return None;
        }
        // SAFETY: the layout has non-zero size.
        let p = NonNull::new(unsafe { alloc(Self::layout()) })?;
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        Some(p)
    }

    unsafe fn free_page(&mut self, page: NonNull<u8>) {
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: the caller guarantees `page` came from `alloc_page` with this layout.
        unsafe { dealloc(page.as_ptr(), Self::layout()) };
    }
}

/// A thread-safe arena whose sleeping allocations wait for space.
pub struct WaitingArena<P: TagPageSource + Send> {
    arena: Mutex<Arena<P>>,
    space: Condvar,
}

impl<P: TagPageSource + Send> WaitingArena<P> {
    /// Creates the arena (see [`Arena::new`]); the wrapper does not import, so
    /// `cfg.import_quantum` must be `None`.
    pub fn new(cfg: &ArenaConfig<'_>, pages: P) -> Result<Self, VmemError> {
        if cfg.import_quantum.is_some() {
            return Err(VmemError::BadConfig);
        }
        Ok(WaitingArena {
            arena: Mutex::new(Arena::new(cfg, pages)?),
            space: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Arena<P>> {
        self.arena.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `op` and, with [`Flags::SLEEP`], waits for a free or add after every `NoSpace`.
    fn retrying(
        &self,
        flags: Flags,
        mut op: impl FnMut(&mut Arena<P>) -> Result<usize, VmemError>,
    ) -> Result<usize, VmemError> {
        let mut arena = self.lock();
        loop {
            match op(&mut arena) {
                Err(VmemError::NoSpace) if flags.contains(Flags::SLEEP) => {
                    arena.note_wait();
                    arena = self.space.wait(arena).unwrap_or_else(|e| e.into_inner());
                }
                r => return r,
            }
        }
    }

    /// [`Arena::alloc`], sleeping for space with [`Flags::SLEEP`].
    pub fn alloc(&self, size: usize, flags: Flags) -> Result<usize, VmemError> {
        self.retrying(flags, |a| a.alloc(size, flags))
    }

    /// [`Arena::xalloc`], sleeping for space with [`Flags::SLEEP`].
    pub fn xalloc(&self, size: usize, c: &Constraints, flags: Flags) -> Result<usize, VmemError> {
        self.retrying(flags, |a| a.xalloc(size, c, flags))
    }

    /// [`Arena::free`]; wakes sleepers.
    pub fn free(&self, addr: usize, size: usize) -> Result<Option<SpanRelease>, VmemError> {
        let r = self.lock().free(addr, size);
        self.space.notify_all();
        r
    }

    /// [`Arena::xfree`]; wakes sleepers.
    pub fn xfree(&self, addr: usize, size: usize) -> Result<Option<SpanRelease>, VmemError> {
        let r = self.lock().xfree(addr, size);
        self.space.notify_all();
        r
    }

    /// [`Arena::add`]; wakes sleepers.
    pub fn add(&self, base: usize, size: usize) -> Result<(), VmemError> {
        let r = self.lock().add(base, size);
        self.space.notify_all();
        r
    }

    /// Runs `f` on the locked arena (statistics, audit, walk…).
    pub fn with<R>(&self, f: impl FnOnce(&mut Arena<P>) -> R) -> R {
        f(&mut self.lock())
    }
}
