// SPDX-License-Identifier: GPL-2.0

//! KUnit suite `kmalloc43_slotsync`: the slot lock's fast and slow mode (`crate::percpu`,
//! `crate::magazine::slot_sync`, `Documentation/magazines.rst`, "The slot lock's fast and slow
//! mode").
//!
//! * Remote takers (exact readers, drains, the timed pass's one-CPU locks) race with kthreads
//!   allocating and freeing on every CPU, entering slow mode again and again (the test waits,
//!   bounded, for the mode to turn fast between rounds): every reading is exact and, after,
//!   the statistics, the requests and the pages add up.
//! * The atomic-context reader (`type_stats` from an irq_work): in fast mode it answers busy
//!   and kicks; once the kick established slow mode it answers, exactly; with slow mode held by
//!   a task it answers at once. Then the mode turns fast again.

use kernel::ffi::{c_int, c_uint};

use crate::kunit_support::*;

/// Waits, bounded (about 20 s), for `cond` on the mode; whether it held.
fn wait_long(mut cond: impl FnMut() -> bool) -> bool {
    (0..10).any(|_| wait_until(&mut cond))
}

/// Rounds of remote takers the race runs while the kthreads allocate.
const ROUNDS: usize = 12;
/// A kthread's bound on its allocations (it stops when the test says so, long before).
const MAX_OPS: usize = 50_000_000;

/// The race's state, shared with its kthreads.
struct Busy {
    heap: Arc<Heap>,
    ty: MallocType,
    allocs: Atomic<usize>,
    errors: Atomic<usize>,
    /// Set when the test's rounds are done: the kthreads free what they hold and return.
    stop: Atomic<usize>,
}

/// A kthread: pairs of several classes and a page run, a window of live objects.
fn busy(b: &Arc<Busy>, cpu: c_uint) -> c_int {
    let Ok(mut live) = KVec::<NonNull<u8>>::with_capacity(64, GFP_KERNEL) else {
        return ENOMEM.to_errno();
    };
    let sizes = [16usize, 64, 200, 1000, 2048, 8192];
    for i in 0..MAX_OPS {
        if b.stop.load(Relaxed) != 0 {
            break;
        }
        let size = sizes[(i * 5 + cpu as usize) % sizes.len()];
        match b.heap.malloc(size, b.ty, NOWAIT) {
            Ok(p) => {
                b.allocs.fetch_add(1, Relaxed);
                if live.push(p, GFP_KERNEL).is_err() && b.heap.free(p, b.ty).is_err() {
                    b.errors.fetch_add(1, Relaxed);
                }
            }
            Err(_) => {
                b.errors.fetch_add(1, Relaxed);
            }
        }
        if live.len() >= 32 {
            for p in live.drain_all() {
                if b.heap.free(p, b.ty).is_err() {
                    b.errors.fetch_add(1, Relaxed);
                }
            }
        }
    }
    for p in live.drain_all() {
        if b.heap.free(p, b.ty).is_err() {
            b.errors.fetch_add(1, Relaxed);
        }
    }
    0
}

/// What an irq_work's reading answered.
const NOT_RUN: usize = 0;
const BUSY: usize = 1;
const EXACT: usize = 2;
const WRONG: usize = 3;

/// The atomic-context reader's state.
struct Probe {
    heap: Arc<Heap>,
    ty: MallocType,
    /// Live allocations of `ty` (the exact answer).
    inuse: usize,
    answer: Atomic<usize>,
}

/// The irq_work: `type_stats` in hardirq context.
fn probe(p: &Probe) {
    let a = match p.heap.type_stats_any(p.ty) {
        None => BUSY,
        Some(Ok(st)) if st.inuse == p.inuse => EXACT,
        Some(_) => WRONG,
    };
    p.answer.store(a, Relaxed);
}

/// Runs the probe once in hardirq context (an irq_work), waited for (bounded); its answer.
fn read_in_hardirq(p: &Probe, work: &Hardirq) -> usize {
    p.answer.store(NOT_RUN, Relaxed);
    assert!(work.queue());
    assert!(
        wait_long(|| p.answer.load(Relaxed) != NOT_RUN),
        "irq_work ran"
    );
    p.answer.load(Relaxed)
}

/// The suite's slow cases, marked at module init ([`crate::kunit_support::mark_slow`]):
/// on the test kernel the race took 7.0 s (with a fixed 20,000 operations per kthread; now it
/// runs twelve rounds, six of them after waiting for fast mode), the reader 1.1 s.
pub(crate) const SLOW: SlowCases = SlowCases {
    suite: c"kmalloc43_slotsync",
    cases: &[
        c"remote_takers_race_with_allocations_on_every_cpu",
        c"atomic_context_reader_in_fast_and_slow_mode",
    ],
};

#[kunit_tests(kmalloc43_slotsync)]
mod slotsync {
    use super::*;

    #[test]
    fn remote_takers_race_with_allocations_on_every_cpu() {
        let h = heap(false);
        let counters = h.counters().clone();
        let b = Arc::new(
            Busy {
                heap: h.clone(),
                ty: ty(&h, "slotsync-race", 0),
                allocs: Atomic::new(0),
                errors: Atomic::new(0),
                stop: Atomic::new(0),
            },
            GFP_KERNEL,
        )
        .expect("state");
        let (ret, (from_fast, during)) = on_every_cpu(&b, busy, |threads| {
            assert!(threads.started());
            // The kthreads run until the rounds are done (they are allocating when they start).
            assert!(wait_long(|| b.allocs.load(Relaxed) > 0));
            let before = b.allocs.load(Relaxed);
            let mut from_fast = 0usize;
            for round in 0..ROUNDS {
                // Every other round from fast mode: the first taker waits for a grace period
                // while the kthreads take their slots plainly.
                if round % 2 == 0 && wait_long(|| h.front.cpus.sync().is_fast()) {
                    from_fast += 1;
                }
                let st = h.type_stats(b.ty).expect("stats");
                // Each kthread holds at most 32 objects at a time.
                assert!(st.inuse <= 32 * h.front.cpus.len());
                match round % 3 {
                    0 => {
                        let _ = h.timed_pass();
                    }
                    1 => {
                        let _ = h.drain();
                    }
                    _ => {
                        let _ = h.for_each_type(|_, _| Ok::<(), ()>(()));
                    }
                }
            }
            let during = b.allocs.load(Relaxed) - before;
            b.stop.store(1, Relaxed);
            (from_fast, during)
        });
        assert_eq!(ret, 0);
        assert_eq!(b.errors.load(Relaxed), 0);
        assert_eq!(from_fast, ROUNDS / 2);
        assert!(during > 0);
        let st = h.type_stats(b.ty).expect("stats");
        assert_eq!((st.inuse, st.memuse), (0, 0));
        assert_eq!(st.calls, b.allocs.load(Relaxed) as u64);
        audit(&h);
        h.undefine_type(b.ty).expect("undefine");
        // The last taker's lazy exit: fast mode a grace period later.
        assert!(wait_long(|| h.front.cpus.sync().is_fast()));
        drop(b);
        drop(h);
        assert_eq!(counters.taken(), counters.given());
    }

    #[test]
    fn atomic_context_reader_in_fast_and_slow_mode() {
        let h = heap(false);
        let t = ty(&h, "slotsync-probe", 0);
        let mut live = KVec::new();
        for size in [16usize, 100, 3000] {
            live.push(h.malloc(size, t, WAITOK).expect("malloc"), GFP_KERNEL)
                .expect("push");
        }
        let p = Arc::new(
            Probe {
                heap: h.clone(),
                ty: t,
                inuse: 3,
                answer: Atomic::new(NOT_RUN),
            },
            GFP_KERNEL,
        )
        .expect("probe");
        let sync = h.front.cpus.sync();
        let raised = with_hardirq(&p, probe, |work| {
            // Fast mode (this private heap's only takers were the type's definition and the
            // statistics: nothing enters slow mode once they left): busy, and a kick.
            assert!(wait_long(|| sync.is_fast()));
            assert_eq!(read_in_hardirq(&p, work), BUSY);
            // The kick enters slow mode from a work item; once established, a try answers exactly
            // (the kick holds the mode for a second: a try that still finds it busy waits again).
            let mut answered = false;
            for _ in 0..10 {
                assert!(wait_long(|| sync.is_established()));
                match read_in_hardirq(&p, work) {
                    EXACT => {
                        answered = true;
                        break;
                    }
                    a => assert_eq!(a, BUSY),
                }
            }
            assert!(answered);

            // Slow mode held by a task: the try answers at once, also while an owner path runs.
            {
                let _hold = h.front.cpus.hold_slow();
                assert!(sync.is_established() && sync.takers() >= 1);
                assert_eq!(read_in_hardirq(&p, work), EXACT);
                let q = h.malloc(64, t, NOWAIT).expect("malloc in slow mode");
                h.free(q, t).expect("free in slow mode");
                assert_eq!(read_in_hardirq(&p, work), EXACT);
            }
        });
        // The irq_work is freed (a pending run synced first).
        assert!(raised.is_some());
        // Left lazily: fast mode again (after the kick's hold and a grace period).
        assert!(wait_long(|| sync.is_fast()));
        for q in live.drain_all() {
            h.free(q, t).expect("free");
        }
        let st = h.type_stats(t).expect("stats");
        assert_eq!((st.inuse, st.memuse), (0, 0));
        audit(&h);
    }
}
