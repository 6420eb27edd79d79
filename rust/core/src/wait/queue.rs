// SPDX-License-Identifier: GPL-2.0

//! The state of a wait queue, kept under the caller's lock.
//!
//! A sleeper registers with [`WaitQueue::enqueue`] under the lock and gets a [`Ticket`] (the wake
//! sequence it saw). It may then release its locks before it sleeps (the kernel heap must: it
//! holds per-CPU slot locks that come before the heap lock). Under the lock again, it sleeps only
//! if [`WaitQueue::woke_since`] says no wake happened meanwhile, so no wake is lost, and leaves
//! with [`WaitQueue::leave`]. A waker calls [`WaitQueue::wake`] under the lock and notifies the
//! condition variable only if someone waits.

/// The wake sequence a sleeper saw when it registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(usize);

/// Sleepers and wakes of one wait queue (the caller's lock protects it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitQueue {
    waiting: usize,
    seq: usize,
}

impl WaitQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        Self { waiting: 0, seq: 0 }
    }

    /// Registers a sleeper; it must [`leave`](Self::leave) once, after sleeping or not.
    pub fn enqueue(&mut self) -> Ticket {
        self.waiting += 1;
        Ticket(self.seq)
    }

    /// Whether a wake happened since `ticket` was taken (then the sleeper must not sleep).
    pub fn woke_since(&self, ticket: Ticket) -> bool {
        self.seq != ticket.0
    }

    /// A registered sleeper left.
    pub fn leave(&mut self) {
        self.waiting = self.waiting.saturating_sub(1);
    }

    /// Sleepers registered now.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Wakes every sleeper: `true` if there is one (then notify the condition variable).
    pub fn wake(&mut self) -> bool {
        if self.waiting == 0 {
            return false;
        }
        self.seq = self.seq.wrapping_add(1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_between_enqueue_and_sleep_is_not_lost() {
        let mut q = WaitQueue::new();
        assert!(!q.wake(), "nobody to wake");
        let t = q.enqueue();
        assert!(!q.woke_since(t));
        assert!(q.wake());
        assert!(q.woke_since(t));
        q.leave();
        assert_eq!(q.waiting(), 0);
        let t2 = q.enqueue();
        assert!(!q.woke_since(t2), "a later ticket sees no old wake");
    }
}
