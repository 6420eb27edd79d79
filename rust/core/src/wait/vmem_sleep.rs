// SPDX-License-Identifier: GPL-2.0

//! The vmem import/sleep protocol of an arena shared by tasks.
//!
//! An allocation runs under the arena's lock. By the arena's answer:
//!
//! * `ImportNeeded`: release the lock and import a span from the arena's source (which may sleep
//!   with `SLEEP`, or be another arena: arena locks never nest), then add it under the lock and
//!   retry. A span the arena refuses goes back to the source. An import the source refuses is
//!   the call's answer, unless the caches in front of the arena held integers: first, once per
//!   call, the arena reclaims them (as below; illumos reaps its quantum caches after a failed
//!   import too) and the call retries. An arena without a source answers `ImportNeeded` itself.
//! * `NoSpace`: first, once per call, ask the arena to give back what caches in front of it hold
//!   ([`VmemWait::reclaim_cached`]: the quantum caches' per-CPU magazines and depots, as illumos
//!   reaps its quantum caches before an allocation fails) and retry if that gave anything back.
//!   Then, with [`Flags::SLEEP`], count the wait, sleep on the condition variable (the lock
//!   released atomically) until a free or an add wakes it, retry; without, `NoSpace` is the
//!   answer.
//! * anything else is the answer.

use super::queue::WaitQueue;
use crate::vmem::{Arena, Flags, ImportRequest, SpanRelease, TagPageSource, VmemError};

/// An arena's lock, wait queue and span source, as the import/sleep protocol uses them.
pub trait VmemWait {
    /// The arena's boundary-tag page source.
    type Tags: TagPageSource;
    /// The locked arena.
    type Locked<'a>
    where
        Self: 'a;
    /// Why the source refused an import.
    type ImportError;

    /// Takes the arena's lock.
    fn lock(&self) -> Self::Locked<'_>;

    /// The arena under the lock.
    fn arena<'l>(locked: &'l mut Self::Locked<'_>) -> &'l mut Arena<Self::Tags>;

    /// The wait queue under the lock.
    fn queue<'l>(locked: &'l mut Self::Locked<'_>) -> &'l mut WaitQueue;

    /// Sleeps on the condition variable, releasing the lock atomically; returns it re-taken.
    fn wait<'a>(&'a self, locked: Self::Locked<'a>) -> Self::Locked<'a>;

    /// Wakes the condition variable's sleepers (lock held).
    fn notify_all(&self);

    /// Whether the arena has a source to import from.
    fn has_source(&self) -> bool;

    /// Imports a span of `req.size` bytes from the source (lock not held); `sleep` says whether
    /// the source may sleep (the caller's [`Flags::SLEEP`]). Its base, or the source's error.
    fn import(&self, req: &ImportRequest, sleep: bool) -> Result<usize, Self::ImportError>;

    /// Gives a span back to the source (lock not held).
    fn release(&self, span: SpanRelease);

    /// Gives back to the arena what caches in front of it hold (lock held on entry and on
    /// return; an implementation may release it meanwhile, e.g. to give wholly free spans back
    /// to the source). `sleep`: the caller's [`Flags::SLEEP`]. Whether anything came back. By
    /// default there is no cache: `false`.
    fn reclaim_cached<'a>(
        &'a self,
        locked: Self::Locked<'a>,
        sleep: bool,
    ) -> (Self::Locked<'a>, bool) {
        let _ = sleep;
        (locked, false)
    }
}

/// Why a sleeping allocation failed.
#[derive(Debug, PartialEq, Eq)]
pub enum VmemWaitError<E> {
    /// The arena's answer.
    Vmem(VmemError),
    /// The source's answer to an import.
    Import(E),
}

/// Wakes the sleepers of `v`'s queue if there are any (lock held): after a free or an add.
pub fn wake_sleepers<'a, V: VmemWait + ?Sized>(v: &'a V, locked: &mut V::Locked<'a>) {
    if V::queue(locked).wake() {
        v.notify_all();
    }
}

/// Allocates with `op` under `v`'s lock, importing and sleeping as `flags` allow (see the module
/// documentation).
pub fn alloc_sleeping<V: VmemWait + ?Sized>(
    v: &V,
    flags: Flags,
    mut op: impl FnMut(&mut Arena<V::Tags>, Flags) -> Result<usize, VmemError>,
) -> Result<usize, VmemWaitError<V::ImportError>> {
    let sleep = flags.contains(Flags::SLEEP);
    let mut locked = v.lock();
    let mut reclaimed = false;
    loop {
        match op(V::arena(&mut locked), flags) {
            Ok(a) => return Ok(a),
            Err(VmemError::ImportNeeded(req)) => {
                if !v.has_source() {
                    return Err(VmemWaitError::Vmem(VmemError::ImportNeeded(req)));
                }
                drop(locked);
                locked = match import_span(v, &req, sleep) {
                    Ok(l) => l,
                    Err(VmemWaitError::Import(e)) if !reclaimed => {
                        reclaimed = true;
                        let (l, gave) = v.reclaim_cached(v.lock(), sleep);
                        if !gave {
                            return Err(VmemWaitError::Import(e));
                        }
                        l
                    }
                    Err(e) => return Err(e),
                };
            }
            Err(VmemError::NoSpace) if !reclaimed => {
                reclaimed = true;
                let (l, gave) = v.reclaim_cached(locked, sleep);
                locked = l;
                if !gave && !sleep {
                    return Err(VmemWaitError::Vmem(VmemError::NoSpace));
                }
            }
            Err(VmemError::NoSpace) if sleep => {
                V::arena(&mut locked).note_wait();
                V::queue(&mut locked).enqueue();
                locked = v.wait(locked);
                V::queue(&mut locked).leave();
            }
            Err(e) => return Err(VmemWaitError::Vmem(e)),
        }
    }
}

/// Imports the span `req` asks for from `v`'s source (lock not held on entry) and adds it to the
/// arena; returns the arena locked. A span the arena refuses goes straight back to the source.
pub fn import_span<'a, V: VmemWait + ?Sized>(
    v: &'a V,
    req: &ImportRequest,
    sleep: bool,
) -> Result<V::Locked<'a>, VmemWaitError<V::ImportError>> {
    let base = v.import(req, sleep).map_err(VmemWaitError::Import)?;
    let mut locked = v.lock();
    if let Err(e) = V::arena(&mut locked).add_imported(base, req.size) {
        drop(locked);
        v.release(SpanRelease {
            base,
            size: req.size,
        });
        return Err(VmemWaitError::Vmem(e));
    }
    Ok(locked)
}
