// SPDX-License-Identifier: GPL-2.0

//! Host page source and sleeping wrapper for vmem arenas.
//!
//! [`HeapPages`] gives an arena real pages from the global allocator and counts them, so tests
//! can check that `destroy` returns every page. [`WaitingArena`] runs the kernel glue's
//! import/sleep protocol ([`crate::wait::vmem_sleep`]) over a `Mutex` and a `Condvar`: it imports
//! from its source without the lock held, and [`Flags::SLEEP`] callers wait after
//! [`VmemError::NoSpace`] until a free or an add, then retry.

use std::alloc::{alloc, dealloc, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::vmem::{
    Arena, ArenaConfig, Constraints, Flags, ImportRequest, SpanRelease, SpanSource, TagPageSource,
    VmemError, PAGE_SIZE,
};
use crate::wait::{alloc_sleeping, wake_sleepers, VmemWait, VmemWaitError, WaitQueue};

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

/// What a [`WaitingArena`]'s lock protects.
pub struct ArenaState<P: TagPageSource> {
    arena: Arena<P>,
    queue: WaitQueue,
}

/// A span source shared by the tasks of a [`WaitingArena`] (called without the arena's lock).
pub type SharedSource = Mutex<Box<dyn SpanSource + Send>>;

/// A thread-safe arena with the kernel's import/sleep protocol ([`crate::wait::vmem_sleep`]).
pub struct WaitingArena<P: TagPageSource + Send> {
    state: Mutex<ArenaState<P>>,
    space: Condvar,
    source: Option<SharedSource>,
}

impl<P: TagPageSource + Send> WaitingArena<P> {
    /// Creates an arena without a source (see [`Arena::new`]): `cfg.import_quantum` must be
    /// `None`.
    pub fn new(cfg: &ArenaConfig<'_>, pages: P) -> Result<Self, VmemError> {
        if cfg.import_quantum.is_some() {
            return Err(VmemError::BadConfig);
        }
        Self::build(cfg, pages, None)
    }

    /// Creates an arena importing from `source` (`cfg.import_quantum` must be set).
    pub fn with_source(
        cfg: &ArenaConfig<'_>,
        pages: P,
        source: Box<dyn SpanSource + Send>,
    ) -> Result<Self, VmemError> {
        if cfg.import_quantum.is_none() {
            return Err(VmemError::BadConfig);
        }
        Self::build(cfg, pages, Some(Mutex::new(source)))
    }

    fn build(
        cfg: &ArenaConfig<'_>,
        pages: P,
        source: Option<SharedSource>,
    ) -> Result<Self, VmemError> {
        Ok(WaitingArena {
            state: Mutex::new(ArenaState {
                arena: Arena::new(cfg, pages)?,
                queue: WaitQueue::new(),
            }),
            space: Condvar::new(),
            source,
        })
    }

    fn lock(&self) -> MutexGuard<'_, ArenaState<P>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the arena's lock is free right now (a source checks that it is called without it).
    pub fn is_unlocked(&self) -> bool {
        self.state.try_lock().is_ok()
    }

    /// Tasks asleep for space right now: what a test waits on (never a sleep).
    pub fn waiters(&self) -> usize {
        self.lock().queue.waiting()
    }

    /// Runs `op` with the import/sleep protocol.
    fn retrying(
        &self,
        flags: Flags,
        op: impl FnMut(&mut Arena<P>, Flags) -> Result<usize, VmemError>,
    ) -> Result<usize, VmemError> {
        alloc_sleeping(self, flags, op).map_err(|e| match e {
            VmemWaitError::Vmem(e) | VmemWaitError::Import(e) => e,
        })
    }

    /// Runs `f` under the lock, then wakes sleepers if it succeeded.
    fn waking<R>(
        &self,
        f: impl FnOnce(&mut Arena<P>) -> Result<R, VmemError>,
    ) -> Result<R, VmemError> {
        let mut s = self.lock();
        let r = f(&mut s.arena);
        if r.is_ok() {
            wake_sleepers(self, &mut s);
        }
        r
    }

    /// [`Arena::alloc`], sleeping for space with [`Flags::SLEEP`].
    pub fn alloc(&self, size: usize, flags: Flags) -> Result<usize, VmemError> {
        self.retrying(flags, |a, f| a.alloc(size, f))
    }

    /// [`Arena::xalloc`], sleeping for space with [`Flags::SLEEP`].
    pub fn xalloc(&self, size: usize, c: &Constraints, flags: Flags) -> Result<usize, VmemError> {
        self.retrying(flags, |a, f| a.xalloc(size, c, f))
    }

    /// [`Arena::free`]; wakes sleepers.
    pub fn free(&self, addr: usize, size: usize) -> Result<Option<SpanRelease>, VmemError> {
        let r = self.waking(|a| a.free(addr, size))?;
        if let (Some(span), Some(src)) = (r, &self.source) {
            src.lock().unwrap_or_else(|e| e.into_inner()).release(span);
            return Ok(None);
        }
        Ok(r)
    }

    /// [`Arena::xfree`]; wakes sleepers.
    pub fn xfree(&self, addr: usize, size: usize) -> Result<Option<SpanRelease>, VmemError> {
        let r = self.waking(|a| a.xfree(addr, size))?;
        if let (Some(span), Some(src)) = (r, &self.source) {
            src.lock().unwrap_or_else(|e| e.into_inner()).release(span);
            return Ok(None);
        }
        Ok(r)
    }

    /// [`Arena::add`]; wakes sleepers.
    pub fn add(&self, base: usize, size: usize) -> Result<(), VmemError> {
        self.waking(|a| a.add(base, size))
    }

    /// Runs `f` on the locked arena (statistics, audit, walk…).
    pub fn with<R>(&self, f: impl FnOnce(&mut Arena<P>) -> R) -> R {
        f(&mut self.lock().arena)
    }
}

impl<P: TagPageSource + Send> VmemWait for WaitingArena<P> {
    type Tags = P;
    type Locked<'a>
        = MutexGuard<'a, ArenaState<P>>
    where
        Self: 'a;
    type ImportError = VmemError;

    fn lock(&self) -> Self::Locked<'_> {
        WaitingArena::lock(self)
    }

    fn arena<'l>(locked: &'l mut Self::Locked<'_>) -> &'l mut Arena<P> {
        &mut locked.arena
    }

    fn queue<'l>(locked: &'l mut Self::Locked<'_>) -> &'l mut WaitQueue {
        &mut locked.queue
    }

    fn wait<'a>(&'a self, locked: Self::Locked<'a>) -> Self::Locked<'a> {
        self.space.wait(locked).unwrap_or_else(|e| e.into_inner())
    }

    fn notify_all(&self) {
        self.space.notify_all();
    }

    fn has_source(&self) -> bool {
        self.source.is_some()
    }

    fn import(&self, req: &ImportRequest, _sleep: bool) -> Result<usize, VmemError> {
        let src = self.source.as_ref().ok_or(VmemError::NoSpace)?;
        src.lock().unwrap_or_else(|e| e.into_inner()).import(req)
    }

    fn release(&self, span: SpanRelease) {
        if let Some(src) = &self.source {
            src.lock().unwrap_or_else(|e| e.into_inner()).release(span);
        }
    }
}
