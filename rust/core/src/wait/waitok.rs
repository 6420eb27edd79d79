// SPDX-License-Identifier: GPL-2.0

//! The `WAITOK` protocol of a malloc heap.
//!
//! A call runs the core operation under the heap's locks. By the core's answer:
//!
//! * `WouldBlock { Limit }`: register on the wait queue, release the locks, let the heap prepare
//!   the sleep ([`Waitok::enqueued`]), sleep until a free or a limit change wakes the queue (no
//!   sleep at all if one did meanwhile), retry.
//! * `WouldBlock { Arena }`: release the locks, take a chunk with a sleeping page allocation and
//!   deposit it ([`Growth`]), retry; `NoMemory` after [`ARENA_RETRIES`](super::ARENA_RETRIES)
//!   chunks or when the supply fails.
//! * `ModifiedAfterFree`: the core repaired the free list and the piece stays free; report it and
//!   retry, once per call (a second one is the call's answer).
//! * anything else is the answer; a successful call that may have made room (a free, a realloc)
//!   wakes the queue first.

use super::growth::{ChunkSupply, Growth};
use super::queue::{Ticket, WaitQueue};
use crate::malloc::{BlockReason, MallocError, MallocType};

/// A heap's locks, wait queue and page supply, as the `WAITOK` protocol uses them.
pub trait Waitok: ChunkSupply {
    /// The locked heap: every lock an operation needs, held while it lives.
    type Locked<'a>
    where
        Self: 'a;

    /// Takes the locks.
    fn lock(&self) -> Self::Locked<'_>;

    /// Releases the locks (and does what must wait until then, such as giving back pages).
    fn unlock<'a>(&'a self, locked: Self::Locked<'a>);

    /// The wait queue under the locks.
    fn queue<'l>(locked: &'l mut Self::Locked<'_>) -> &'l mut WaitQueue;

    /// Called with the locks released, right after a sleeper registered at `ty`'s limit and
    /// before it sleeps. The kernel heap takes every per-CPU slot here (task context: only a
    /// `WAITOK` call that must sleep comes here) to tell its fast paths that somebody waits,
    /// and wakes the queue itself if one of them may have kept freed bytes of `ty` as credit
    /// since the verdict. Nothing by default.
    fn enqueued(&self, _ty: MallocType) {}

    /// Sleeps, locks released: takes the wait queue's lock, sleeps on the condition variable
    /// unless [`WaitQueue::woke_since`] `ticket`, then [`WaitQueue::leave`]s and releases it.
    fn sleep(&self, ticket: Ticket);

    /// Wakes the condition variable's sleepers (locks held, after [`WaitQueue::wake`]).
    fn notify_all(&self);

    /// Reports a free list the core repaired (`offset`: the first modified byte in the piece).
    fn repaired(&self, offset: usize);
}

/// Wakes every sleeper of `w`'s queue, if there is one (locks held).
pub fn wake_all<'a, W: Waitok + ?Sized>(w: &'a W, locked: &mut W::Locked<'a>) {
    if W::queue(locked).wake() {
        w.notify_all();
    }
}

/// Runs `attempt` under `w`'s locks with the `WAITOK` protocol (see the module documentation).
/// `want_bytes` sizes a chunk for an arena shortage (and the `NoMemory` answer); `wake` wakes the
/// queue after a success.
pub fn run<'a, W: Waitok + ?Sized, R>(
    w: &'a W,
    want_bytes: usize,
    wake: bool,
    mut attempt: impl FnMut(&mut W::Locked<'a>) -> Result<R, MallocError>,
) -> Result<R, MallocError> {
    let mut growth = Growth::new();
    let mut repaired = false;
    loop {
        let mut locked = w.lock();
        match attempt(&mut locked) {
            Err(MallocError::WouldBlock {
                ty,
                reason: BlockReason::Limit,
            }) => {
                let ticket = W::queue(&mut locked).enqueue();
                w.unlock(locked);
                w.enqueued(ty);
                w.sleep(ticket);
            }
            Err(MallocError::WouldBlock {
                ty,
                reason: BlockReason::Arena,
            }) => {
                w.unlock(locked);
                if !growth.grow(w, want_bytes) {
                    return Err(MallocError::NoMemory {
                        ty,
                        size: want_bytes,
                    });
                }
            }
            Err(MallocError::ModifiedAfterFree { offset, .. }) if !repaired => {
                w.repaired(offset);
                repaired = true;
                w.unlock(locked);
            }
            other => {
                if wake && other.is_ok() {
                    wake_all(w, &mut locked);
                }
                w.unlock(locked);
                return other;
            }
        }
    }
}
