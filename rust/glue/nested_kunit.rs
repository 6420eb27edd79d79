// SPDX-License-Identifier: GPL-2.0

//! KUnit suite `kmalloc43_nested`: the heap's slots are taken with preemption off only
//! (`percpu.rs`, `PreemptOff`), so an interrupt may arrive while the code it interrupted holds
//! its CPU's slot: a *nested holder*, frozen until the interrupt returns. Nothing that may run
//! outside task context waits for a slot (`Documentation/performance.rst`, the sound design);
//! these cases prove it deterministically, by state:
//!
//! * the nested holder: the test holds this CPU's slot and raises an irq_work on this CPU,
//!   then spins until it is done; in hardirq, `malloc` and `free` succeed by the interrupt
//!   fall-back, a free of a round is `DoubleFree`, a wrong-type free `WrongType` naming the
//!   owner, a limited type at its limit refuses, the type statistics answer busy; afterwards
//!   the counts are exact;
//! * the cross-CPU case: CPUs 0 and 1 both hold their slots and raise an irq_work on
//!   themselves that frees and charges a type at its limit (every CPU's credit revoked, the
//!   exact charge): both complete, the counts are exact;
//! * the held depot: the test holds a depot lock (interrupts on, its slot free) and raises an
//!   irq_work on this CPU whose malloc and free need that depot: both are served by the piece
//!   layer without waiting for it (`magazines::TypeDepots`), not by the fall-back.
//!
//! A wait for a slot would never end (the holder cannot run until the interrupt returns), so
//! each wait of the holders is bounded and fails the case; the test kernel also warns and
//! lockdep reports a slot waited for outside task context.

use crate::kunit_support::*;

#[kunit_tests(kmalloc43_nested)]
mod nested {
    use super::*;
    use crate::malloc::size_class;
    use kernel::ffi::{c_int, c_uint};

    /// Counts a verdict: `hit` if `ok`, else an error.
    fn verdict(hit: &Atomic<usize>, errors: &Atomic<usize>, ok: bool) {
        if ok {
            hit.fetch_add(1, Relaxed);
        } else {
            errors.fetch_add(1, Relaxed);
        }
    }

    /// The state of [`an_interrupt_never_waits_for_the_slot_it_interrupted`].
    struct Nested {
        heap: Arc<Heap>,
        size: usize,
        /// Unlimited, the type of every call below but two.
        t: MallocType,
        /// Another type: `kept` is freed as it.
        other: MallocType,
        /// A limited type at its limit.
        full: MallocType,
        /// An object of `t` freed before: a round in a magazine.
        round: usize,
        /// A live object of `t`.
        kept: usize,
        /// The hardirq's allocation it keeps (freed by the test).
        got: Atomic<usize>,
        /// 1 once the hardirq is done.
        done: Atomic<usize>,
        /// Each verdict of the hardirq, 1 when it was the expected one.
        held: Atomic<usize>,
        freed: Atomic<usize>,
        double_free: Atomic<usize>,
        wrong_type: Atomic<usize>,
        refused: Atomic<usize>,
        busy: Atomic<usize>,
        errors: Atomic<usize>,
    }

    /// The irq_work callback of [`an_interrupt_never_waits_for_the_slot_it_interrupted`], in
    /// hardirq on the CPU whose slot the interrupted test holds.
    fn in_nested_hardirq(st: &Nested) {
        let h = &*st.heap;
        let e = &st.errors;
        // The slot this interrupt interrupted is held: trying it fails.
        verdict(&st.held, e, h.front.cpus.try_local().is_none());
        match h.malloc(st.size, st.t, NOWAIT) {
            Ok(p) => {
                // SAFETY: a fresh allocation of at least `size` bytes.
                unsafe { p.as_ptr().write_bytes(0x5a, st.size) };
                verdict(&st.freed, e, h.free(p, st.t).is_ok());
            }
            Err(_) => verdict(&st.freed, e, false),
        }
        match h.malloc(st.size, st.t, NOWAIT) {
            Ok(p) => st.got.store(p.as_ptr() as usize, Relaxed),
            Err(_) => {
                e.fetch_add(1, Relaxed);
            }
        }
        if let Some(p) = NonNull::new(st.round as *mut u8) {
            let r = h.free(p, st.t);
            verdict(
                &st.double_free,
                e,
                matches!(r, Err(MallocError::DoubleFree { .. })),
            );
        }
        if let Some(p) = NonNull::new(st.kept as *mut u8) {
            let ok = match h.free(p, st.other) {
                Err(MallocError::WrongType {
                    given,
                    owner: Some(o),
                    ..
                }) => given == st.other && o == st.t,
                _ => false,
            };
            verdict(&st.wrong_type, e, ok);
        }
        let r = h.malloc(st.size, st.full, NOWAIT);
        verdict(&st.refused, e, matches!(r, Err(MallocError::Limit { .. })));
        // Every slot is only tried here, and this CPU's is held: busy (`-EBUSY`).
        verdict(&st.busy, e, h.type_stats_any(st.t).is_none());
        st.done.store(1, Relaxed);
    }

    /// An interrupt that arrives while the code it interrupted holds this CPU's slot (with
    /// preemption off, interrupts on) never waits for it: the test holds the slot, raises an
    /// irq_work on this CPU and spins (bounded) until it is done. In hardirq: a `NOWAIT`
    /// malloc and its free by the fall-back, a second malloc kept, a free of a round
    /// (`DoubleFree`), a free with the wrong type (`WrongType` naming the owner), a malloc of
    /// a limited type at its limit (refused), the type statistics (busy). Then the counts are
    /// exact.
    #[test]
    fn an_interrupt_never_waits_for_the_slot_it_interrupted() {
        let h = heap(false);
        // 64 pieces to a page: a fill leaves free pieces in the piece layer, which the
        // fall-back takes (it cannot grow the page arena).
        let size = 64;
        let t = ty(&h, "nest", 0);
        let other = ty(&h, "nest-other", 0);
        let charge = charge_of(&h, t, size);
        let full = ty(&h, "nest-full", 2 * charge);
        let f = [
            h.malloc(size, full, NOWAIT).expect("malloc"),
            h.malloc(size, full, NOWAIT).expect("malloc"),
        ];
        assert!(matches!(
            h.malloc(size, full, NOWAIT),
            Err(MallocError::Limit { .. })
        ));
        let kept = h.malloc(size, t, NOWAIT).expect("malloc");
        let round = h.malloc(size, t, NOWAIT).expect("malloc");
        h.free(round, t).expect("free");
        let b = h.type_stats(t).expect("stats");
        let bf = h.type_stats(full).expect("stats");
        let mallocs = h.fallbacks.mallocs.load(Relaxed);
        let st = Arc::new(
            Nested {
                heap: h.clone(),
                size,
                t,
                other,
                full,
                round: round.as_ptr() as usize,
                kept: kept.as_ptr() as usize,
                got: Atomic::new(0),
                done: Atomic::new(0),
                held: Atomic::new(0),
                freed: Atomic::new(0),
                double_free: Atomic::new(0),
                wrong_type: Atomic::new(0),
                refused: Atomic::new(0),
                busy: Atomic::new(0),
                errors: Atomic::new(0),
            },
            GFP_KERNEL,
        )
        .expect("state");
        let raised = with_hardirq(&st, in_nested_hardirq, |work| {
            // This CPU's slot, preemption off (interrupts on): the irq_work runs on this CPU
            // while it is held, and the bound fails the case if it waited for it.
            let slot = h.front.cpus.local();
            work.queue();
            wait_for_stage(&st.done, 1, &st.errors, false);
            drop(slot);
        });
        assert!(raised.is_some());
        assert_eq!(st.errors.load(Relaxed), 0);
        assert_eq!(st.done.load(Relaxed), 1);
        let hits = [
            &st.held,
            &st.freed,
            &st.double_free,
            &st.wrong_type,
            &st.refused,
            &st.busy,
        ]
        .map(|a| a.load(Relaxed));
        assert_eq!(hits, [1; 6]);
        // Two mallocs of `t` and the refused one of `full`, all by the fall-back.
        assert_eq!(h.fallbacks.mallocs.load(Relaxed) - mallocs, 3);
        // `t`: one more live object (the hardirq's second), two more requests; the high water
        // is the two live objects of before and after (kept and round, kept and got).
        let s = h.type_stats(t).expect("stats");
        assert_eq!(
            (s.inuse, s.memuse, s.calls, s.maxused),
            (b.inuse + 1, b.memuse + charge, b.calls + 2, 2 * charge)
        );
        // `full`: unchanged but for the refusal; `other`: untouched.
        let sf = h.type_stats(full).expect("stats");
        assert_eq!(
            (sf.inuse, sf.memuse, sf.calls, sf.limblocks),
            (bf.inuse, bf.memuse, bf.calls, bf.limblocks + 1)
        );
        let so = h.type_stats(other).expect("stats");
        assert_eq!((so.inuse, so.memuse, so.calls), (0, 0, 0));
        let got = NonNull::new(st.got.load(Relaxed) as *mut u8).expect("got");
        for (p, ty) in [(got, t), (kept, t), (f[0], full), (f[1], full)] {
            h.free(p, ty).expect("free");
        }
        audit(&h);
        for ty in [t, other, full] {
            h.undefine_type(ty).expect("undefine");
        }
    }

    /// The state of [`two_cpus_each_interrupted_in_its_slot_charge_at_the_limit`].
    struct Cross {
        heap: Arc<Heap>,
        t: MallocType,
        size: usize,
        /// Objects of `t`, one for each hardirq to free.
        objs: [Atomic<usize>; 2],
        /// The hardirqs' allocations (freed by the test).
        got: [Atomic<usize>; 4],
        /// Hardirqs entered, CPUs holding their slot, hardirqs done.
        entered: Atomic<usize>,
        holding: Atomic<usize>,
        done: Atomic<usize>,
        /// The hardirqs' allocations served and refused at the limit.
        served: Atomic<usize>,
        refused: Atomic<usize>,
        errors: Atomic<usize>,
    }

    /// The irq_work callback of [`two_cpus_each_interrupted_in_its_slot_charge_at_the_limit`]:
    /// in hardirq on a CPU whose slot the interrupted kthread holds, one free and two charges
    /// of the type at its limit.
    fn charge_at_the_limit(st: &Cross) {
        let h = &*st.heap;
        let i = st.entered.fetch_add(1, Relaxed);
        if i >= 2 || h.front.cpus.try_local().is_some() {
            st.errors.fetch_add(1, Relaxed); // a third run, or the slot was not held
        }
        match NonNull::new(st.objs[i % 2].load(Relaxed) as *mut u8) {
            Some(p) if h.free(p, st.t).is_ok() => {}
            _ => {
                st.errors.fetch_add(1, Relaxed);
            }
        }
        for got in &st.got[2 * (i % 2)..2 * (i % 2) + 2] {
            match h.malloc(st.size, st.t, NOWAIT) {
                Ok(p) => {
                    got.store(p.as_ptr() as usize, Relaxed);
                    st.served.fetch_add(1, Relaxed);
                }
                Err(MallocError::Limit { .. }) => {
                    st.refused.fetch_add(1, Relaxed);
                }
                Err(_) => {
                    st.errors.fetch_add(1, Relaxed);
                }
            }
        }
        st.done.fetch_add(1, Relaxed);
    }

    /// The kthreads of [`two_cpus_each_interrupted_in_its_slot_charge_at_the_limit`]: CPUs 0
    /// and 1 each hold their slot (preemption off), and once both do, each raises its irq_work
    /// on itself and spins (bounded) until both irq_works are done.
    fn hold_and_raise(st: &Arc<Cross>, cpu: c_uint) -> c_int {
        if cpu > 1 {
            return 0;
        }
        let raised = with_hardirq(st, charge_at_the_limit, |work| {
            let slot = st.heap.front.cpus.local();
            st.holding.fetch_add(1, Relaxed);
            if wait_for_stage(&st.holding, 2, &st.errors, false) {
                work.queue();
                wait_for_stage(&st.done, 2, &st.errors, false);
            }
            drop(slot);
        });
        if raised.is_none() {
            st.errors.fetch_add(1, Relaxed);
        }
        0
    }

    /// Two CPUs, each interrupted while it holds its slot, charge a type at its limit from
    /// hardirq at the same time: each frees one object and tries two allocations, which revoke
    /// every CPU's credit (an exchange per CPU, no slot) and charge exactly. Neither waits for
    /// the other's slot (a wait would be the cross-CPU frozen-holder deadlock): both complete,
    /// two allocations are served and two refused whatever the interleaving, and the counts
    /// are exact. Needs CPUs 0 and 1 online.
    #[test]
    fn two_cpus_each_interrupted_in_its_slot_charge_at_the_limit() {
        let h = heap(false);
        let size = 64;
        let probe = ty(&h, "cross-probe", 0);
        let charge = charge_of(&h, probe, size);
        h.undefine_type(probe).expect("undefine");
        let limit = 4 * charge;
        let t = ty(&h, "cross", limit);
        let mut live = KVec::new();
        for _ in 0..4 {
            let p = h.malloc(size, t, NOWAIT).expect("malloc");
            live.push(p, GFP_KERNEL).expect("push");
        }
        assert!(matches!(
            h.malloc(size, t, NOWAIT),
            Err(MallocError::Limit { .. })
        ));
        let b = h.type_stats(t).expect("stats");
        let st = Arc::new(
            Cross {
                heap: h.clone(),
                t,
                size,
                objs: [
                    Atomic::new(live[0].as_ptr() as usize),
                    Atomic::new(live[1].as_ptr() as usize),
                ],
                got: [const { Atomic::new(0) }; 4],
                entered: Atomic::new(0),
                holding: Atomic::new(0),
                done: Atomic::new(0),
                served: Atomic::new(0),
                refused: Atomic::new(0),
                errors: Atomic::new(0),
            },
            GFP_KERNEL,
        )
        .expect("state");
        let (ret, ()) = on_every_cpu(&st, hold_and_raise, |threads| {
            assert!(threads.started());
        });
        assert_eq!(ret, 0);
        assert_eq!(st.errors.load(Relaxed), 0);
        assert_eq!(st.done.load(Relaxed), 2);
        // Two objects freed, four tries: exactly two served, two refused.
        assert_eq!((st.served.load(Relaxed), st.refused.load(Relaxed)), (2, 2));
        let s = h.type_stats(t).expect("stats");
        assert_eq!(
            (s.inuse, s.memuse, s.calls, s.maxused, s.limblocks),
            (4, limit, b.calls + 2, limit, b.limblocks + 2)
        );
        for p in live.drain_all().skip(2) {
            h.free(p, t).expect("free");
        }
        for got in &st.got {
            if let Some(p) = NonNull::new(got.load(Relaxed) as *mut u8) {
                h.free(p, t).expect("free");
            }
        }
        audit(&h);
        h.undefine_type(t).expect("undefine");
    }

    /// The state of [`an_interrupt_never_waits_for_a_depot_lock`].
    struct HeldDepot {
        heap: Arc<Heap>,
        t: MallocType,
        size: usize,
        /// 1 once the hardirq is done.
        done: Atomic<usize>,
        /// The hardirq's malloc and free, 1 each when served.
        served: Atomic<usize>,
        freed: Atomic<usize>,
        errors: Atomic<usize>,
    }

    /// The irq_work callback of [`an_interrupt_never_waits_for_a_depot_lock`], in hardirq on the
    /// CPU where the interrupted test holds the depot lock of the class it allocates.
    fn past_the_held_depot(st: &HeldDepot) {
        let h = &*st.heap;
        match h.malloc(st.size, st.t, NOWAIT) {
            Ok(p) => {
                verdict(&st.served, &st.errors, true);
                verdict(&st.freed, &st.errors, h.free(p, st.t).is_ok());
            }
            Err(_) => verdict(&st.served, &st.errors, false),
        }
        st.done.store(1, Relaxed);
    }

    /// An interrupt never waits for a depot lock (`magazines::TypeDepots`: a plain spinlock,
    /// interrupts left on): the test holds the depot lock of a type's class with no magazine
    /// of it left on any CPU (drained), raises an irq_work on this CPU and spins (bounded) until
    /// it is done. In hardirq, this CPU's slot is free: a `NOWAIT` malloc whose magazines are
    /// empty and a free whose magazines are missing both need the depot, only try its lock,
    /// and go to the piece layer instead (not the interrupt fall-back). An interrupt that
    /// waited would never end (the holder cannot run until it returns); with the lock's old
    /// interrupt-disabling flavour the irq_work could not run until the bound failed the case.
    /// Then the counts are exact.
    #[test]
    fn an_interrupt_never_waits_for_a_depot_lock() {
        let h = heap(false);
        let size = 64;
        let t = ty(&h, "nest-depot", 0);
        // A live object keeps the type's cluster, whose free pieces the hardirq's malloc takes
        // (the drain gives the rounds back to it).
        let kept = h.malloc(size, t, NOWAIT).expect("malloc");
        let p = h.malloc(size, t, NOWAIT).expect("malloc");
        h.free(p, t).expect("free");
        h.drain();
        let b = h.type_stats(t).expect("stats");
        let (mallocs, frees) = (
            h.fallbacks.mallocs.load(Relaxed),
            h.fallbacks.frees.load(Relaxed),
        );
        let c = size_class(h.front.table, size).expect("class");
        let depots = h.front.cpus.local().depots[t.index()]
            .clone()
            .expect("depots");
        let st = Arc::new(
            HeldDepot {
                heap: h.clone(),
                t,
                size,
                done: Atomic::new(0),
                served: Atomic::new(0),
                freed: Atomic::new(0),
                errors: Atomic::new(0),
            },
            GFP_KERNEL,
        )
        .expect("state");
        let raised = with_hardirq(&st, past_the_held_depot, |work| {
            // The depot lock, preemption off and interrupts on: the irq_work runs on this CPU
            // while it is held, and the bound fails the case if it waited for it.
            let d = depots[c].lock();
            work.queue();
            wait_for_stage(&st.done, 1, &st.errors, false);
            drop(d);
        });
        assert!(raised.is_some());
        assert_eq!(st.errors.load(Relaxed), 0);
        assert_eq!((st.served.load(Relaxed), st.freed.load(Relaxed)), (1, 1));
        // Through this CPU's slot and the piece layer, not the fall-back.
        assert_eq!(h.fallbacks.mallocs.load(Relaxed), mallocs);
        assert_eq!(h.fallbacks.frees.load(Relaxed), frees);
        // No depot visit: it holds no magazine.
        let d = depots[c].lock().stats();
        assert_eq!((d.full, d.empty), (0, 0));
        let s = h.type_stats(t).expect("stats");
        assert_eq!(
            (s.inuse, s.memuse, s.calls),
            (b.inuse, b.memuse, b.calls + 1)
        );
        drop(depots);
        h.free(kept, t).expect("free");
        audit(&h);
        h.undefine_type(t).expect("undefine");
    }
}
