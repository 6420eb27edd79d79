// SPDX-License-Identifier: GPL-2.0

//! A malloc type's limit, seen from two contexts.
//!
//! 1. Module init allocates 256-byte `mbuf`s with `NOWAIT` until kmalloc43 refuses: the type's
//!    limit ([`MBUF_LIMIT`]) is reached and `NOWAIT` fails at once with `ENOMEM`.
//! 2. A workqueue worker asks for one more with `WAITOK`: it blocks on the heap's wait queue.
//!    Module init waits on state, never on time: until the type's `limblocks` counter shows the
//!    worker's refusal at the limit, then checks that the worker has not returned (it cannot
//!    have: nothing was freed). [`WAKE_TIMEOUT_MS`] only bounds the wait and fails the demo.
//! 3. Module init frees one `mbuf`; the free wakes the worker, whose allocation succeeds.

use kernel::{
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Relaxed, Release},
        Arc, Completion,
    },
    time::{delay::fsleep, Delta, Instant, Monotonic},
    workqueue::{self, impl_has_work, new_work, Work, WorkItem},
};

use crate::{
    kmalloc43::{Buffer, Flags},
    M_MBUF,
};

/// Limit of the `mbuf` type.
pub(crate) const MBUF_LIMIT: usize = 8 * 1024;
/// Size of one `mbuf`: a bucket size, so exactly `MBUF_LIMIT / MBUF_SIZE` fit.
const MBUF_SIZE: usize = 256;
/// How long module init waits for the worker to block, and to wake after the free, before it
/// fails the demo (a bound, never a verdict).
const WAKE_TIMEOUT_MS: i64 = 30_000;

/// State shared between module init and the worker.
#[pin_data]
struct Waiter {
    /// The worker is about to call the `WAITOK` allocation.
    started: Atomic<bool>,
    /// The worker's allocation returned.
    returned: Atomic<bool>,
    /// 0 if it succeeded, else the errno.
    result: Atomic<i32>,
    /// Milliseconds the allocation took.
    blocked_ms: Atomic<i64>,
    /// Completed when the worker is done with everything, including freeing its `mbuf`.
    #[pin]
    done: Completion,
    /// The work item that runs [`Waiter::run`] on a workqueue. It has this module's own lock
    /// class (`Queue::try_spawn` would share the kernel crate's class with every other module
    /// using it, under a different name string, which lockdep reports).
    #[pin]
    work: Work<Waiter>,
}

impl_has_work! {
    impl HasWork<Self> for Waiter { self.work }
}

impl WorkItem for Waiter {
    type Pointer = Arc<Waiter>;

    fn run(w: Arc<Waiter>) {
        worker(&w);
    }
}

/// The worker: one `WAITOK` allocation at the limit.
fn worker(w: &Waiter) {
    w.started.store(true, Release);
    let t0 = Instant::<Monotonic>::now();
    let res = Buffer::new(&M_MBUF, MBUF_SIZE, Flags::WAITOK);
    w.blocked_ms.store(t0.elapsed().as_millis(), Relaxed);
    w.result.store(
        match &res {
            Ok(_) => 0,
            Err(e) => e.to_errno(),
        },
        Relaxed,
    );
    w.returned.store(true, Release);
    drop(res);
    w.done.complete_all();
}

/// Sleeps in 1 ms steps until `cond` holds or `ms` milliseconds have passed; whether it holds.
fn wait_until(ms: i64, cond: impl Fn() -> bool) -> bool {
    for _ in 0..ms {
        if cond() {
            return true;
        }
        fsleep(Delta::from_millis(1));
    }
    cond()
}

/// Runs the demo; `EIO` if the limit did not behave as described (after cleaning up).
pub(crate) fn run() -> Result {
    // 1. Fill the type up to its limit with NOWAIT.
    let mut mbufs = KVec::with_capacity(MBUF_LIMIT / MBUF_SIZE + 1, GFP_KERNEL)?;
    let refused = loop {
        match Buffer::new(&M_MBUF, MBUF_SIZE, Flags::NOWAIT) {
            Ok(m) => mbufs.push(m, GFP_KERNEL)?,
            Err(e) => break e,
        }
        if mbufs.len() > MBUF_LIMIT / MBUF_SIZE {
            pr_err!(
                "limit: {} mbufs allocated past the {} B limit\n",
                mbufs.len(),
                MBUF_LIMIT
            );
            return Err(EIO);
        }
    };
    pr_info!(
        "limit: mbuf limit {} B: {} x {} B allocated, then NOWAIT failed with {} (-ENOMEM)\n",
        MBUF_LIMIT,
        mbufs.len(),
        MBUF_SIZE,
        refused.to_errno()
    );
    let mut ok = refused == ENOMEM && mbufs.len() == MBUF_LIMIT / MBUF_SIZE;
    let limblocks = || M_MBUF.stats().map_or(0, |s| s.limblocks);
    let refusals = limblocks();

    // 2. A WAITOK allocation in another context blocks.
    let w = Arc::pin_init(
        pin_init!(Waiter {
            started: Atomic::new(false),
            returned: Atomic::new(false),
            result: Atomic::new(0),
            blocked_ms: Atomic::new(0),
            done <- Completion::new(),
            work <- new_work!("kmalloc43_client::limit_demo"),
        }),
        GFP_KERNEL,
    )?;
    if workqueue::system_unbound().enqueue(w.clone()).is_err() {
        return Err(EBUSY); // a fresh work item cannot already be queued
    }
    // The worker's WAITOK request met the limit once `limblocks` moved past the NOWAIT refusal;
    // it cannot return before a free, which only this context makes.
    let refused_at_limit = wait_until(WAKE_TIMEOUT_MS, || limblocks() > refusals);
    let blocked = refused_at_limit && !w.returned.load(Acquire);
    let state = if blocked { "blocked" } else { "NOT blocked" };
    pr_info!(
        "limit: WAITOK mbuf in a workqueue worker: {} at the limit (limblocks {} -> {})\n",
        state,
        refusals,
        limblocks()
    );
    ok &= blocked;

    // 3. A free in this context wakes it.
    drop(mbufs.pop());
    let woke = wait_until(WAKE_TIMEOUT_MS, || w.returned.load(Acquire));
    if !woke {
        pr_err!(
            "limit: the worker did not wake within {} ms of a free; freeing all mbufs\n",
            WAKE_TIMEOUT_MS
        );
        mbufs.clear();
        ok = false;
    }
    // The worker uses `M_MBUF` until it completes: wait for it whatever happened.
    w.done.wait_for_completion();
    let result = w.result.load(Relaxed);
    let outcome = if result == 0 { "succeeded" } else { "FAILED" };
    pr_info!(
        "limit: freed one mbuf here; the worker woke after {} ms blocked and its allocation {}\n",
        w.blocked_ms.load(Relaxed),
        outcome
    );
    ok &= woke && result == 0;

    drop(mbufs);
    if ok {
        Ok(())
    } else {
        pr_err!("limit: the limit did not behave as expected\n");
        Err(EIO)
    }
}
