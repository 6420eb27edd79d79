// SPDX-License-Identifier: GPL-2.0

//! KUnit suite `kmalloc43_aging`: the timed aging pass (`crate::aging`,
//! `Documentation/magazines.rst`, "Timed aging").
//!
//! * The pass called directly on a private heap whose magazines and depots hold rounds of an
//!   idle type: within a few passes every round goes back, the pieces' clusters go back to kmem
//!   and the chunks to the page allocator; the requests and the type's statistics stay exact
//!   and the passes' counters add up to what changed.
//! * Passes while every CPU allocates and frees (two types, one of which goes idle half way;
//!   half way each CPU also waits, bounded, for a pass that ended after it started, so at least
//!   one pass overlaps the traffic): then idle passes take everything back, requests and
//!   statistics exact, audit clean.
//! * `kmalloc43_age()` runs a pass of the module's heap, counted with the work's.
//! * The work itself: started with a one-second interval on a private heap, it runs and queues
//!   itself again (its pass counter is waited for, with a bound); the interval's knob refuses
//!   bad values without changing it; dropping the work stops it before the heap goes.

use kernel::ffi::{c_int, c_uint};

use crate::aging::{AgingWork, TimedPass, AGING_MAX_SECS};
use crate::exact::BucketRow;
use crate::kunit_support::*;
use crate::magazines::Front;

/// Passes a test runs at most before its magazines must be empty: one folds the requests the
/// rows served, one takes the idle magazines, then each closes a depot interval (the first may
/// still see the busy interval's working set) and the clusters parked meanwhile go back one
/// period later.
const PASSES: usize = 8;

/// Rounds cached in `h`'s magazines and depots, over every class.
fn cached(h: &Heap) -> usize {
    let (rounds, _) = Front::tally(&mut h.front.cpus.all());
    rounds.iter().sum()
}

/// Requests and live pieces over every bucket row (classes and large).
fn bucket_totals(h: &Heap) -> (u64, usize) {
    let (mut calls, mut busy) = (0, 0);
    let _ = h.for_each_bucket(|_, row| {
        match row {
            BucketRow::Class(_, b) => {
                calls += b.calls;
                busy += b.total - b.totalfree;
            }
            BucketRow::Large(l) => {
                calls += l.calls;
                busy += l.inuse;
            }
        }
        Ok::<(), ()>(())
    });
    (calls, busy)
}

/// Allocations each CPU's kthread makes in [`aging::passes_during_traffic_keep_every_count_exact`].
const BUSY_OPS: usize = 20_000;

/// The state of [`aging::passes_during_traffic_keep_every_count_exact`], shared with its kthreads.
struct Busy {
    heap: Arc<Heap>,
    /// Type 0 stays busy; type 1 is used in the first half only, then goes idle.
    types: [MallocType; 2],
    /// Successful allocations over every CPU.
    allocs: Atomic<usize>,
    /// Refused allocations and frees (none expected: no limit), and waits for a pass that
    /// reached their bound.
    errors: Atomic<usize>,
}

/// A kthread of that test: pairs of several classes and a page run, a window of live objects.
/// Half way it waits (sleeping, bounded; at the bound it counts an error) for a timed pass that
/// ended after it started, so that passes and traffic overlap however the CPUs are scheduled.
///
fn busy(b: &Arc<Busy>, cpu: c_uint) -> c_int {
    let passes = &b.heap.aging.passes;
    let first_pass = passes.load(Relaxed) + 1;
    let Ok(mut live) = KVec::<(NonNull<u8>, usize)>::with_capacity(64, GFP_KERNEL) else {
        return ENOMEM.to_errno();
    };
    let sizes = [32usize, 200, 1000, 3000, 8192];
    for i in 0..BUSY_OPS {
        if i == BUSY_OPS / 2 {
            wait_for_stage(passes, first_pass, &b.errors, true);
        }
        let t = if i < BUSY_OPS / 2 { i % 2 } else { 0 };
        let size = sizes[(i * 7 + cpu as usize) % sizes.len()];
        match b.heap.malloc(size, b.types[t], NOWAIT) {
            Ok(p) => {
                b.allocs.fetch_add(1, Relaxed);
                if live.push((p, t), GFP_KERNEL).is_err() && b.heap.free(p, b.types[t]).is_err() {
                    b.errors.fetch_add(1, Relaxed);
                }
            }
            Err(_) => {
                b.errors.fetch_add(1, Relaxed);
            }
        }
        if live.len() >= 48 {
            for (p, t) in live.drain_all() {
                if b.heap.free(p, b.types[t]).is_err() {
                    b.errors.fetch_add(1, Relaxed);
                }
            }
        }
    }
    for (p, t) in live.drain_all() {
        if b.heap.free(p, b.types[t]).is_err() {
            b.errors.fetch_add(1, Relaxed);
        }
    }
    0
}

/// The suite's slow cases, marked at module init ([`crate::kunit_support::mark_slow`]):
/// on the test kernel the first took 1.2 s, the second (two periods of a one-second work) 2.0 s.
pub(crate) const SLOW: crate::kunit_support::SlowCases = crate::kunit_support::SlowCases {
    suite: c"kmalloc43_aging",
    cases: &[
        c"passes_during_traffic_keep_every_count_exact",
        c"the_work_runs_again_and_stops_before_its_heap_goes",
    ],
};

#[kunit_tests(kmalloc43_aging)]
mod aging {
    use super::*;

    #[test]
    fn passes_during_traffic_keep_every_count_exact() {
        let h = heap(false);
        let b = Arc::new(
            Busy {
                heap: h.clone(),
                types: [ty(&h, "aging-busy", 0), ty(&h, "aging-quiet", 0)],
                allocs: Atomic::new(0),
                errors: Atomic::new(0),
            },
            GFP_KERNEL,
        )
        .expect("state");
        // Timed passes while every CPU allocates and frees: each takes every CPU's slot in turn
        // under the others' fast paths (lockdep on the test kernel watches the remote lock).
        // The kthreads cannot finish before a pass has ended after their start (they wait for
        // one half way), so at least one pass runs during the traffic.
        let (ret, passes) = on_every_cpu(&b, busy, |threads| {
            assert!(threads.started());
            let mut passes = 0;
            while !threads.done() {
                h.timed_pass();
                passes += 1;
                fsleep(Delta::from_millis(1));
            }
            passes
        });
        assert_eq!(ret, 0);
        assert!(passes > 0);
        assert_eq!(b.errors.load(Relaxed), 0);
        // Then idle: the passes take everything back, and every count is exact.
        for _ in 0..PASSES {
            h.timed_pass();
        }
        assert_eq!(cached(&h), 0);
        let allocs = b.allocs.load(Relaxed);
        let mut calls = 0;
        for t in b.types {
            let st = h.type_stats(t).expect("stats");
            assert_eq!((st.inuse, st.memuse), (0, 0));
            calls += st.calls;
        }
        assert_eq!(calls, allocs as u64);
        assert_eq!(bucket_totals(&h), (allocs as u64, 0));
        assert_eq!(h.aging.passes.load(Relaxed), passes + PASSES);
        audit(&h);
        let types = b.types;
        drop(b);
        every_page_back(h, &types);
    }

    #[test]
    fn a_timed_pass_gives_back_an_idle_types_rounds_and_pages() {
        in_every_mode(pass_in);
    }

    fn pass_in(mode: SizeClasses) {
        let h = heap_with(mode, false);
        let counters = h.counters().clone();
        let t = ty(&h, "aging", 0);
        // Objects of a small and a 1 KiB class and a page run, freed: they rest in this CPU's
        // magazines and the depots.
        let mut v = KVec::new();
        let sizes = [64usize, 1000, 8192];
        for i in 0..600usize {
            let p = h.malloc(sizes[i % 3], t, NOWAIT).expect("malloc");
            v.push(p, GFP_KERNEL).expect("push");
        }
        for p in v.drain_all() {
            h.free(p, t).expect("free");
        }
        let rounds = cached(&h);
        assert!(rounds > 0);
        let held = counters.taken() - counters.given();
        let given = counters.given();
        let mut sum = TimedPass::default();
        let mut n = 0;
        while n < PASSES && (cached(&h) != 0 || sum.clusters == 0) {
            let p = h.timed_pass();
            sum.rounds += p.rounds;
            sum.clusters += p.clusters;
            sum.pages += p.pages;
            n += 1;
        }
        // Every round went back, counted once; clusters back to kmem and chunks to the page
        // allocator, each counted as the page counters saw it.
        assert_eq!(cached(&h), 0);
        assert_eq!(sum.rounds, rounds);
        assert!(sum.clusters > 0);
        assert!(sum.pages > 0);
        assert_eq!(counters.given() - given, sum.pages);
        assert!(counters.taken() - counters.given() < held);
        let a = &h.aging;
        assert_eq!(a.passes.load(Relaxed), n);
        assert_eq!(a.rounds.load(Relaxed), sum.rounds);
        assert_eq!(a.clusters.load(Relaxed), sum.clusters);
        assert_eq!(a.pages.load(Relaxed), sum.pages);
        // Exact statistics: every request counted once, nothing live.
        let st = h.type_stats(t).expect("stats");
        assert_eq!((st.inuse, st.memuse, st.calls), (0, 0, 600));
        assert_eq!(bucket_totals(&h), (600, 0));
        audit(&h);
        // The heap still serves after the passes.
        let p = h.malloc(64, t, NOWAIT).expect("malloc");
        h.free(p, t).expect("free");
        assert_eq!(h.type_stats(t).map(|s| s.calls), Ok(601));
        every_page_back(h, &[t]);
    }

    #[test]
    fn kmalloc43_age_runs_a_pass_of_the_module_heap() {
        let svc = crate::service::service().expect("service");
        let a = &svc.heap.aging;
        let before = (
            a.passes.load(Relaxed),
            a.rounds.load(Relaxed),
            a.clusters.load(Relaxed),
            a.pages.load(Relaxed),
        );
        let mut out = crate::abi::Kmalloc43Aged {
            rounds: u64::MAX,
            clusters: u64::MAX,
            pages: u64::MAX,
        };
        // SAFETY: `out` is valid for a write; a KUnit case runs in process context.
        assert_eq!(unsafe { crate::abi::kmalloc43_rust_age(&mut out) }, 0);
        // The periodic work may run a pass meanwhile: this one's numbers are part of the sums.
        assert!(a.passes.load(Relaxed) > before.0);
        assert!(a.rounds.load(Relaxed) - before.1 >= out.rounds as usize);
        assert!(a.clusters.load(Relaxed) - before.2 >= out.clusters as usize);
        assert!(a.pages.load(Relaxed) - before.3 >= out.pages as usize);
        // SAFETY: NULL is allowed; process context.
        let r = unsafe { crate::abi::kmalloc43_rust_age(core::ptr::null_mut()) };
        assert_eq!(r, 0);
    }

    #[test]
    fn the_work_runs_again_and_stops_before_its_heap_goes() {
        let h = heap(false);
        let t = ty(&h, "aging-work", 0);
        let p = h.malloc(100, t, NOWAIT).expect("malloc");
        h.free(p, t).expect("free");
        let work = AgingWork::new(h.clone(), 1).expect("work");
        assert_eq!(work.interval(), 1);
        // State, not time: the pass counter must reach 2 (the work queued itself again); the
        // bound (about a minute) only fails the case.
        let mut ran = false;
        for _ in 0..6000 {
            if h.aging.passes.load(Relaxed) >= 2 {
                ran = true;
                break;
            }
            fsleep(Delta::from_millis(10));
        }
        assert!(ran);
        // The knob: bad values refused, the interval unchanged; 0 switches it off.
        for bad in [&b"abc"[..], b"", b"-1", b"86401\n", b"4294967297", b"1 "] {
            assert_eq!(crate::debugfs::store_aging_bytes(&work, bad), Err(EINVAL));
            assert_eq!(work.interval(), 1);
        }
        assert_eq!(work.set_interval(AGING_MAX_SECS + 1), Err(EINVAL));
        assert_eq!(crate::debugfs::store_aging_bytes(&work, b"86400\n"), Ok(()));
        assert_eq!(work.interval(), AGING_MAX_SECS);
        assert_eq!(crate::debugfs::store_aging_bytes(&work, b"0\n"), Ok(()));
        assert_eq!(work.interval(), 0);
        // Dropped: disabled, a running pass waited for; then the heap may go.
        assert!(core::ptr::eq(&**work.heap(), &*h));
        drop(work);
        every_page_back(h, &[t]);
    }
}
