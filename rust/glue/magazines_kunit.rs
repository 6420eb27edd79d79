// SPDX-License-Identifier: GPL-2.0

//! KUnit suite `kmalloc43_magazines`: the magazine layer on two CPUs.
//!
//! * the SMP limit test of issue 8: kthreads bound to every online CPU hammer a limited type while
//!   the test thread samples the exact `MemUse` and `HighUse`, which must never pass the limit;
//! * double frees of objects sitting in magazines, for a bucket and for a page run;
//! * the aging of idle types' magazines (`crate::magazine::trim`) and the exact request counts
//!   it folds;
//! * magazines per type: a type's freed pieces never serve another type while they sit in its
//!   magazines, each type's depots come with its definition, its magazines with a CPU's first
//!   use, and both go with its undefine;
//! * page hints only for the heap's own pages (a slab object and a stack address have none);
//! * the `drain` write path and "pages taken == pages given back";
//! * the stress run: `stress_ops` (module parameter, default 200,000; `make stress` passes 10
//!   million) random operations on every CPU over mixed sizes (16 B to 100 KiB) and three types
//!   (unlimited, limited with NOWAIT, limited with a WAITOK sleeper), NOWAIT allocations and frees
//!   from hardirq context (irq_work), then an audit and a teardown that must give back every page.
//!
//! Operations are counted, not timed; waits are on state (completions, counters), bounded.

use kernel::prelude::kunit_tests;

/// The suite's slow cases, marked at module init ([`crate::kunit_support::mark_slow`]), on the
/// test kernel: the stress run, 4-5.5 s with `make check`'s 200,000 operations, and the limit
/// hammer, 0.8 s on a quiet host but up to 2.8 s (3 of 20 runs over a second) when the host's
/// load slows the guest's clock.
pub(crate) const SLOW: crate::kunit_support::SlowCases = crate::kunit_support::SlowCases {
    suite: c"kmalloc43_magazines",
    cases: &[
        c"limit_holds_on_every_cpu",
        c"stress_on_every_cpu_with_hardirq_and_sleepers",
    ],
};

#[kunit_tests(kmalloc43_magazines)]
mod magazines {
    use core::ptr::NonNull;

    use kernel::{
        ffi::{c_int, c_uint},
        prelude::*,
        sync::{
            atomic::{Atomic, Relaxed},
            Arc,
        },
        time::{delay::fsleep, Delta},
        workqueue,
    };

    use crate::heap::Heap;
    use crate::kunit_support::{
        charge_of, every_page_back, heap, on_cpus_with_irq_work, on_every_cpu, ty, wait_for_stage,
        with_hardirq, Hardirq, Raising,
    };
    use crate::malloc::{MallocError, MallocFlags, MallocType};

    const NOWAIT: MallocFlags = MallocFlags::NOWAIT;
    const WAITOK: MallocFlags = MallocFlags::WAITOK;

    /// xorshift64*: a cheap generator seeded per CPU.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }
    }

    /// A size: mostly small, some page-sized, a few runs (a few past 64 KiB, which bypass the
    /// magazines).
    fn size(rng: &mut Rng) -> usize {
        match rng.below(100) {
            0..=69 => 1 + rng.below(256),
            70..=89 => 257 + rng.below(4096 - 256),
            90..=98 => 4097 + rng.below(65536 - 4096),
            _ => 65537 + rng.below(40000),
        }
    }

    /// Shared state of a run on every CPU.
    struct Run {
        heap: Arc<Heap>,
        /// Unlimited, limited (NOWAIT), limited with a WAITOK sleeper.
        types: [MallocType; 3],
        limits: [usize; 3],
        ops_per_cpu: usize,
        ops: Atomic<usize>,
        allocs: Atomic<usize>,
        refused: Atomic<usize>,
        errors: Atomic<usize>,
        irq_runs: Atomic<usize>,
        /// An object the irq_work callback keeps until its next run (freed in hardirq context).
        irq_held: Atomic<usize>,
        irq: Atomic<usize>,
        cpus_done: Atomic<usize>,
    }

    impl Run {
        fn new(h: &Arc<Heap>, ops_per_cpu: usize, limits: [usize; 3]) -> Arc<Self> {
            let ty = |i: usize, name| h.define_type(name, "kunit", limits[i]).expect("define");
            Arc::new(
                Run {
                    heap: h.clone(),
                    types: [ty(0, "mag-free"), ty(1, "mag-limit"), ty(2, "mag-sleep")],
                    limits,
                    ops_per_cpu,
                    ops: Atomic::new(0),
                    allocs: Atomic::new(0),
                    refused: Atomic::new(0),
                    errors: Atomic::new(0),
                    irq_runs: Atomic::new(0),
                    irq_held: Atomic::new(0),
                    irq: Atomic::new(0),
                    cpus_done: Atomic::new(0),
                },
                GFP_KERNEL,
            )
            .expect("run")
        }
    }

    /// One live object of a hammer: address, type slot, size and fill byte.
    #[derive(Clone, Copy)]
    struct Live {
        p: NonNull<u8>,
        t: usize,
        size: usize,
        byte: u8,
    }

    /// Counts an unexpected error and says what it was (the first few).
    fn error(run: &Run, what: &str, e: Option<MallocError>) {
        if run.errors.fetch_add(1, Relaxed) < 5 {
            pr_err!("magazine stress: {what}: {e:?}\n");
        }
    }

    fn check_and_free(run: &Run, l: Live) {
        // SAFETY: `l.p` is a live allocation of at least `l.size` bytes owned by this hammer.
        let (first, last) = unsafe { (l.p.as_ptr().read(), l.p.as_ptr().add(l.size - 1).read()) };
        if first != l.byte || last != l.byte {
            error(run, "contents changed", None);
        }
        if let Err(e) = run.heap.free(l.p, run.types[l.t]) {
            error(run, "free", Some(e));
        }
    }

    /// The hammer of one CPU (in a kthread bound to it).
    fn hammer(run: &Arc<Run>, cpu: c_uint) -> c_int {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((u64::from(cpu) + 1) * 0x1000_0001));
        let mut live: KVec<Live> = match KVec::with_capacity(128, GFP_KERNEL) {
            Ok(v) => v,
            Err(_) => return -12,
        };
        for i in 0..run.ops_per_cpu {
            if !live.is_empty() && (live.len() == 128 || rng.below(2) == 0) {
                if let Ok(l) = live.remove(rng.below(live.len() as u64)) {
                    check_and_free(run, l);
                }
            } else {
                let t = rng.below(3);
                let size = size(&mut rng);
                let flags = if t == 0 && rng.below(4) == 0 {
                    WAITOK
                } else {
                    NOWAIT
                };
                match run.heap.malloc(size, run.types[t], flags) {
                    Ok(p) => {
                        let byte = rng.next() as u8;
                        // SAFETY: a fresh allocation of at least `size` bytes.
                        unsafe {
                            p.as_ptr().write(byte);
                            p.as_ptr().add(size - 1).write(byte);
                        }
                        run.allocs.fetch_add(1, Relaxed);
                        let _ = live.push(Live { p, t, size, byte }, GFP_KERNEL);
                    }
                    Err(MallocError::Limit { .. }) if t > 0 => {
                        run.refused.fetch_add(1, Relaxed);
                    }
                    Err(e) => error(run, "malloc", Some(e)),
                }
            }
            run.ops.fetch_add(1, Relaxed);
            let irq = run.irq.load(Relaxed);
            if i % 64 == 0 && irq != 0 {
                // SAFETY: a non-zero `irq` is the address of the run's irq_work, which
                // `hammer_everywhere` keeps until after every hammer returned.
                unsafe { &*(irq as *const Hardirq) }.queue();
            }
        }
        for l in live.drain_all() {
            check_and_free(run, l);
        }
        run.cpus_done.fetch_add(1, Relaxed);
        0
    }

    /// The irq_work callback: NOWAIT malloc and free in hardirq context.
    fn in_hardirq(run: &Run) {
        let t = run.types[0];
        // The same irq_work may run on two CPUs at once (it can be queued again as soon as a run
        // started), so the held object is swapped, never overwritten.
        let size = 16 << (run.irq_runs.load(Relaxed) % 8);
        let new = match run.heap.malloc(size, t, NOWAIT) {
            Ok(p) => p.as_ptr() as usize,
            Err(e) => {
                error(run, "malloc in hardirq", Some(e));
                0
            }
        };
        if let Some(p) = NonNull::new(run.irq_held.xchg(new, Relaxed) as *mut u8) {
            if let Err(e) = run.heap.free(p, t) {
                error(run, "free in hardirq", Some(e));
            }
        }
        run.irq_runs.fetch_add(1, Relaxed);
    }

    /// Runs the hammers on every online CPU (and the irq_work, if `irq`), calling `sample` from
    /// the test thread until they finish. Returns the number of samples.
    fn hammer_everywhere(run: &Arc<Run>, irq: bool, mut sample: impl FnMut(&Run)) -> usize {
        let mut hammer_all = |work: Option<&Hardirq>| {
            run.irq
                .store(work.map_or(0, |w| core::ptr::from_ref(w) as usize), Relaxed);
            let (ret, samples) = on_every_cpu(run, hammer, |threads| {
                let mut samples = 0;
                while !threads.done() {
                    sample(run);
                    samples += 1;
                }
                samples
            });
            if ret != 0 {
                run.errors.fetch_add(1, Relaxed);
            }
            // No hammer queues the irq_work any more.
            run.irq.store(0, Relaxed);
            samples
        };
        let samples = if irq {
            with_hardirq(run, in_hardirq, |w| hammer_all(Some(w))).unwrap_or_else(|| {
                run.errors.fetch_add(1, Relaxed);
                0
            })
        } else {
            hammer_all(None)
        };
        if let Some(p) = NonNull::new(run.irq_held.xchg(0, Relaxed) as *mut u8) {
            if let Err(e) = run.heap.free(p, run.types[0]) {
                error(run, "free of the hardirq object", Some(e));
            }
        }
        samples
    }

    /// Checks the end of a run (every type empty, HighUse within the limits, audit), undefines
    /// the types and drops the heap; `Err` says what failed (asserted by the caller: KUnit
    /// assertions belong in the test function).
    fn finish(run: Arc<Run>) -> core::result::Result<(), &'static str> {
        let r = finish_checks(run);
        if let Err(e) = r {
            pr_err!("magazine run: {e}\n");
        }
        r
    }

    fn finish_checks(run: Arc<Run>) -> core::result::Result<(), &'static str> {
        let h = run.heap.clone();
        let counters = h.counters().clone();
        if run.errors.load(Relaxed) != 0 {
            return Err("unexpected errors (see the log)");
        }
        for (i, t) in run.types.iter().enumerate() {
            let st = h.type_stats(*t).map_err(|_| "stats")?;
            if (st.inuse, st.memuse) != (0, 0) {
                pr_err!("type {i}: inuse {} memuse {}\n", st.inuse, st.memuse);
                return Err("a type is not empty at the end");
            }
            if st.maxused > run.limits[i] {
                return Err("HighUse past the limit");
            }
        }
        h.audit()?;
        for t in run.types {
            h.undefine_type(t).map_err(|_| "undefine")?;
        }
        drop(run);
        drop(h);
        if counters.taken() != counters.given() {
            return Err("pages taken != pages given back");
        }
        Ok(())
    }

    #[test]
    fn limit_holds_on_every_cpu() {
        let h = heap(false);
        let limits = [usize::MAX, 48 * 1024, 64 * 1024];
        let run = Run::new(&h, 20_000, limits);
        let mut worst = [0; 3];
        let samples = hammer_everywhere(&run, false, |r| {
            for (i, t) in r.types.iter().enumerate().skip(1) {
                let st = r.heap.type_stats(*t).expect("stats");
                assert!(st.memuse <= r.limits[i]); // MemUse past the limit
                assert!(st.maxused <= r.limits[i]); // HighUse past the limit
                assert!(st.maxused >= st.memuse);
                worst[i] = worst[i].max(st.memuse);
            }
        });
        assert!(samples > 0);
        assert!(run.refused.load(Relaxed) > 0); // the limits were reached
        let st = h.type_stats(run.types[1]).expect("stats");
        // Requests are exact: every successful allocation of every CPU, no more.
        let all: u64 = run
            .types
            .iter()
            .map(|t| h.type_stats(*t).map(|s| s.calls).unwrap_or(0))
            .sum();
        assert_eq!(all, run.allocs.load(Relaxed) as u64);
        // HighUse is at least every MemUse a sampler saw.
        assert!(st.maxused >= worst[1]);
        drop(h);
        assert_eq!(finish(run), Ok(()));
    }

    /// The state of [`a_revocation_never_waits_for_a_slot_holder`], shared with its kthreads.
    struct HeldSlot {
        heap: Arc<Heap>,
        t: MallocType,
        /// Bytes charged per object (one object of the size class used).
        charge: usize,
        /// 0: CPU 0 warms up; 1: CPU 1 warms up, gets credit and takes its slot; 2: CPU 1 holds
        /// its slot with credit; 3: CPU 0 reached the limit.
        stage: Atomic<usize>,
        /// Objects CPU 0 got at stage 2 before the limit refused one.
        got: Atomic<usize>,
        /// CPU 1's object charged out of its credit (freed by the test).
        kept: Atomic<usize>,
        /// Whether CPU 1 saw its credit word revoked while it held its slot.
        revoked: Atomic<usize>,
        errors: Atomic<usize>,
    }

    /// [`wait_for_stage`] on a [`HeldSlot`].
    fn wait_stage(st: &HeldSlot, stage: usize, sleep: bool) -> bool {
        wait_for_stage(&st.stage, stage, &st.errors, sleep)
    }

    /// Allocates `n` objects on this CPU and frees them (sets the high water, fills magazines).
    fn churn(st: &HeldSlot, size: usize, n: usize) {
        let mut live = [0usize; 32];
        for slot in live.iter_mut().take(n) {
            match st.heap.malloc(size, st.t, NOWAIT) {
                Ok(p) => *slot = p.as_ptr() as usize,
                Err(_) => {
                    st.errors.fetch_add(1, Relaxed);
                }
            }
        }
        for &a in live.iter().take(n) {
            if let Some(p) = NonNull::new(a as *mut u8) {
                if st.heap.free(p, st.t).is_err() {
                    st.errors.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// The kthreads of [`a_revocation_never_waits_for_a_slot_holder`]: CPU 1 holds its slot
    /// with credit out while CPU 0 charges the type to its limit.
    fn hold_or_charge(st: &Arc<HeldSlot>, cpu: c_uint) -> c_int {
        let size = st.charge;
        match cpu {
            0 => {
                churn(st, size, 32);
                st.stage.store(1, Relaxed);
                if !wait_stage(st, 2, true) {
                    return 0;
                }
                let mut live = [0usize; 64];
                let mut n = 0;
                while n < live.len() {
                    match st.heap.malloc(size, st.t, NOWAIT) {
                        Ok(p) => live[n] = p.as_ptr() as usize,
                        Err(MallocError::Limit { .. }) => break,
                        Err(_) => {
                            st.errors.fetch_add(1, Relaxed);
                            break;
                        }
                    }
                    n += 1;
                }
                st.got.store(n, Relaxed);
                st.stage.store(3, Relaxed);
                for &a in live.iter().take(n) {
                    if let Some(p) = NonNull::new(a as *mut u8) {
                        if st.heap.free(p, st.t).is_err() {
                            st.errors.fetch_add(1, Relaxed);
                        }
                    }
                }
            }
            1 => {
                if !wait_stage(st, 1, true) {
                    return 0;
                }
                churn(st, size, 32);
                // Its frees left their bytes as credit here: this charge spends some of it.
                match st.heap.malloc(size, st.t, NOWAIT) {
                    Ok(p) => st.kept.store(p.as_ptr() as usize, Relaxed),
                    Err(_) => {
                        st.errors.fetch_add(1, Relaxed);
                    }
                }
                let t = st.t.index();
                let slot = st.heap.front.cpus.local();
                if st.heap.front.cpus.shared(cpu as usize)[t].get() == 0 {
                    st.errors.fetch_add(1, Relaxed); // no credit to revoke: the case tests nothing
                }
                st.stage.store(2, Relaxed);
                // The slot held (preemption off): the other CPU's revocation must not need it.
                let done = wait_stage(st, 3, false);
                let revoked = st.heap.front.cpus.shared(cpu as usize)[t].is_revoked();
                drop(slot);
                st.revoked.store(usize::from(done && revoked), Relaxed);
            }
            _ => {}
        }
        0
    }

    /// A charge at the limit revokes the credit of a CPU that holds its slot (preemption off,
    /// spinning until the charge is done) without waiting for it: the revocation takes the
    /// credit word by an exchange, with no slot lock. Needs CPUs 0 and 1 online.
    #[test]
    fn a_revocation_never_waits_for_a_slot_holder() {
        let h = heap(false);
        let size = 1024;
        let probe = ty(&h, "mag-probe", 0);
        let charge = charge_of(&h, probe, size);
        h.undefine_type(probe).expect("undefine");
        let limit = 32 * charge;
        let t = ty(&h, "mag-held", limit);
        let st = Arc::new(
            HeldSlot {
                heap: h.clone(),
                t,
                charge,
                stage: Atomic::new(0),
                got: Atomic::new(0),
                kept: Atomic::new(0),
                revoked: Atomic::new(0),
                errors: Atomic::new(0),
            },
            GFP_KERNEL,
        )
        .expect("state");
        let (ret, ()) = on_every_cpu(&st, hold_or_charge, |threads| {
            assert!(threads.started());
        });
        assert_eq!(ret, 0);
        assert_eq!(st.errors.load(Relaxed), 0);
        // CPU 1's credit was taken by CPU 0's revocation while CPU 1 held its slot, and none
        // of it was lost: CPU 0 got every object up to the limit, less CPU 1's one.
        assert_eq!(st.revoked.load(Relaxed), 1);
        assert_eq!(st.got.load(Relaxed), 31);
        let stats = h.type_stats(t).expect("stats");
        assert_eq!(
            (stats.memuse, stats.inuse, stats.maxused),
            (charge, 1, limit)
        );
        let kept = NonNull::new(st.kept.load(Relaxed) as *mut u8).expect("kept");
        h.free(kept, t).expect("free");
        assert_eq!(h.audit(), Ok(()));
        h.undefine_type(t).expect("undefine");
    }

    /// The state of [`hardirq_takes_the_fall_back_when_its_slot_is_held`].
    struct FallBack {
        heap: Arc<Heap>,
        t: MallocType,
        size: usize,
        /// 0: start; 1: CPU 0 holds every slot; 2: the hardirq on CPU 1 is done.
        stage: Atomic<usize>,
        /// An object allocated before, freed in hardirq context, then freed again there.
        pre: Atomic<usize>,
        /// Another type than `t`.
        other: MallocType,
        /// A live object of `t`, freed as `other` in hardirq context.
        kept: Atomic<usize>,
        /// The second free of `pre` was `DoubleFree`, the free of `kept` as `other`
        /// `WrongType` naming `t`: 1 each.
        double_free: Atomic<usize>,
        wrong_type: Atomic<usize>,
        /// `kept` resized to `small` bytes in hardirq context (another class).
        small: usize,
        resized: Atomic<usize>,
        /// Objects the hardirq allocated (freed by the test).
        got: [Atomic<usize>; 4],
        /// Allocations the hardirq saw refused at the limit.
        refused: Atomic<usize>,
        errors: Atomic<usize>,
    }

    /// The irq_work callback of [`hardirq_takes_the_fall_back_when_its_slot_is_held`]: on CPU
    /// 1, whose slot CPU 0 holds. One free, the same free again, a free with the wrong type, and
    /// allocations until the limit refuses one.
    fn fall_back_in_hardirq(st: &FallBack) {
        if st.heap.front.cpus.try_local().is_some() {
            st.errors.fetch_add(1, Relaxed); // the slot is free: the case tests nothing
        }
        match NonNull::new(st.pre.load(Relaxed) as *mut u8) {
            Some(p) if st.heap.free(p, st.t).is_ok() => {}
            _ => {
                st.errors.fetch_add(1, Relaxed);
            }
        }
        // On its free list now, its first word a link: refused without the slot.
        if let Some(p) = NonNull::new(st.pre.load(Relaxed) as *mut u8) {
            if let Err(MallocError::DoubleFree { .. }) = st.heap.free(p, st.t) {
                st.double_free.fetch_add(1, Relaxed);
            }
        }
        // The page names `t`: refused without the slot, naming `t`.
        if let Some(p) = NonNull::new(st.kept.load(Relaxed) as *mut u8) {
            if let Err(MallocError::WrongType {
                given,
                owner: Some(o),
                ..
            }) = st.heap.free(p, st.other)
            {
                if given == st.other && o == st.t {
                    st.wrong_type.fetch_add(1, Relaxed);
                }
            }
            // Another class: a fall-back malloc, the copy and a fall-back free, no slot.
            match st.heap.realloc(p, st.small, st.t, NOWAIT) {
                Ok(n) => st.resized.store(n.as_ptr() as usize, Relaxed),
                Err(_) => {
                    st.errors.fetch_add(1, Relaxed);
                }
            }
        }
        for got in &st.got {
            match st.heap.malloc(st.size, st.t, NOWAIT) {
                Ok(p) => got.store(p.as_ptr() as usize, Relaxed),
                Err(MallocError::Limit { .. }) => {
                    st.refused.fetch_add(1, Relaxed);
                }
                Err(_) => {
                    st.errors.fetch_add(1, Relaxed);
                }
            }
        }
        st.stage.store(2, Relaxed);
    }

    /// What [`hold_all_or_raise`] needs of a case's state: the heap whose slots CPU 0 holds, the
    /// stage (0: start; 1: CPU 0 holds every slot; 2: the hardirq on CPU 1 is done) and the
    /// failures seen off the test thread (the case fails on any).
    trait HeldSlots {
        fn held(&self) -> (&Heap, &Atomic<usize>, &Atomic<usize>);
    }

    impl HeldSlots for FallBack {
        fn held(&self) -> (&Heap, &Atomic<usize>, &Atomic<usize>) {
            (&self.heap, &self.stage, &self.errors)
        }
    }

    /// The kthreads of [`hardirq_takes_the_fall_back_when_its_slot_is_held`] and
    /// [`a_round_is_refused_in_hardirq_without_a_slot`]: CPU 0 holds every slot (interrupts off
    /// there, spinning until the hardirq is done: a call in it that waited for a slot would fail
    /// the bound) while CPU 1 raises the irq_work on itself.
    fn hold_all_or_raise<S: HeldSlots>(raising: &Arc<Raising<'_, S>>, cpu: c_uint) -> c_int {
        let (st, work) = (&raising.st, raising.work);
        let (heap, stage, errors) = st.held();
        let wait = |target: usize, sleep: bool| wait_for_stage(stage, target, errors, sleep);
        match cpu {
            0 => {
                // Every slot held, interrupts off here: CPU 1's slot too.
                let all = heap.front.cpus.all();
                stage.store(1, Relaxed);
                wait(2, false);
                drop(all);
            }
            1 => {
                if wait(1, true) {
                    work.queue();
                    wait(2, true);
                }
            }
            _ => {}
        }
        0
    }

    /// A `NOWAIT` malloc and a free in hardirq context on a CPU whose slot another CPU holds
    /// (every slot, interrupts off there, spinning until the hardirq is done) do not wait: they
    /// take the interrupt fall-back (the type's reserve under the heap lock, the piece layer),
    /// a double free (a first word that looks like a free-list link) and a free with the wrong
    /// type are refused there without the slot, a `realloc` to another class goes through it, the limit still holds exactly (a revocation,
    /// then a refusal), and the counts are exact afterwards. Needs CPUs 0 and 1 online.
    #[test]
    fn hardirq_takes_the_fall_back_when_its_slot_is_held() {
        let h = heap(false);
        let size = 256;
        let probe = ty(&h, "mag-probe", 0);
        let charge = charge_of(&h, probe, size);
        h.undefine_type(probe).expect("undefine");
        let limit = 4 * charge;
        let t = ty(&h, "mag-fallback", limit);
        let other = ty(&h, "mag-fallback-other", 0);
        // A cluster of the small class with free pieces in the piece layer (a fill takes at most
        // 15), for the hardirq's realloc: the fall-back cannot grow the page arena.
        let small = 128;
        let warm = h.malloc(small, t, NOWAIT).expect("malloc");
        let small_charge = h.usable_size(warm).expect("usable size");
        assert!(small_charge < charge);
        h.free(warm, t).expect("free");
        let pre = h.malloc(size, t, NOWAIT).expect("malloc");
        let kept = h.malloc(size, t, NOWAIT).expect("malloc");
        let before = (
            h.fallbacks.mallocs.load(Relaxed),
            h.fallbacks.frees.load(Relaxed),
            h.fallbacks.refused.load(Relaxed),
        );
        let st = Arc::new(
            FallBack {
                heap: h.clone(),
                t,
                size,
                stage: Atomic::new(0),
                pre: Atomic::new(pre.as_ptr() as usize),
                other,
                kept: Atomic::new(kept.as_ptr() as usize),
                double_free: Atomic::new(0),
                wrong_type: Atomic::new(0),
                small,
                resized: Atomic::new(0),
                got: [const { Atomic::new(0) }; 4],
                refused: Atomic::new(0),
                errors: Atomic::new(0),
            },
            GFP_KERNEL,
        )
        .expect("state");
        let r = on_cpus_with_irq_work(&st, fall_back_in_hardirq, hold_all_or_raise::<FallBack>);
        assert_eq!(r, 0);
        assert_eq!(st.errors.load(Relaxed), 0);
        // Freed `pre`, refused it again (`DoubleFree`, the free list checked under the heap
        // lock) and `kept` as `other` (`WrongType` naming `t`, by the page's owner), resized
        // `kept` to the small class (a malloc out of the headroom below the high water, a
        // free), then three allocations up to the limit (one out of the headroom, two exact
        // after revoking), the fourth refused. No call waited for the held slot (CPU 0 spun
        // until the hardirq was done: a wait would have failed the bound).
        assert_eq!(st.refused.load(Relaxed), 1);
        assert_eq!(
            (st.double_free.load(Relaxed), st.wrong_type.load(Relaxed)),
            (1, 1)
        );
        assert_eq!(
            (
                h.fallbacks.mallocs.load(Relaxed) - before.0,
                h.fallbacks.frees.load(Relaxed) - before.1,
                h.fallbacks.refused.load(Relaxed) - before.2
            ),
            (5, 3, 1)
        );
        let o = h.type_stats(other).expect("stats");
        assert_eq!((o.memuse, o.inuse, o.calls), (0, 0, 0));
        let s = h.type_stats(t).expect("stats");
        let used = 3 * charge + small_charge;
        assert_eq!((s.memuse, s.inuse, s.calls), (used, 4, 7));
        assert_eq!(s.maxused, used);
        for got in &st.got {
            if let Some(p) = NonNull::new(got.load(Relaxed) as *mut u8) {
                h.free(p, t).expect("free");
            }
        }
        let resized = NonNull::new(st.resized.load(Relaxed) as *mut u8).expect("resized");
        assert_eq!(h.usable_size(resized), Ok(small_charge));
        h.free(resized, t).expect("free");
        let s = h.type_stats(t).expect("stats");
        assert_eq!((s.memuse, s.inuse, s.maxused), (0, 0, used));
        assert_eq!(h.audit(), Ok(()));
        h.undefine_type(t).expect("undefine");
        h.undefine_type(other).expect("undefine");
    }

    /// The state of [`type_stats_outside_task_context_never_waits`].
    struct StatsBusy {
        heap: Arc<Heap>,
        t: MallocType,
        /// 1: CPU 0 holds its slot; 2: the first hardirq read is done; 3: CPU 0 released its
        /// slot; 4: the second hardirq read is done.
        stage: Atomic<usize>,
        /// The first read (CPU 0's slot held) answered busy: 1.
        busy: Atomic<usize>,
        /// The second read (no slot held) answered: 1, with these statistics.
        read: Atomic<usize>,
        inuse: Atomic<usize>,
        memuse: Atomic<usize>,
        calls: Atomic<usize>,
        errors: Atomic<usize>,
    }

    /// The irq_work callback of [`type_stats_outside_task_context_never_waits`], on CPU 1: reads
    /// the type's statistics from hardirq context, at stage 1 (CPU 0's slot held: busy) and at
    /// stage 3 (nothing held: exact).
    fn read_stats_in_hardirq(st: &StatsBusy) {
        let stage = st.stage.load(Relaxed);
        match (stage, st.heap.type_stats_any(st.t)) {
            (1, None) => st.busy.store(1, Relaxed),
            (3, Some(Ok(s))) => {
                st.inuse.store(s.inuse, Relaxed);
                st.memuse.store(s.memuse, Relaxed);
                st.calls.store(s.calls as usize, Relaxed);
                st.read.store(1, Relaxed);
            }
            _ => {
                st.errors.fetch_add(1, Relaxed);
            }
        }
        st.stage.store(stage + 1, Relaxed);
    }

    /// The kthreads of [`type_stats_outside_task_context_never_waits`].
    fn hold_or_read_stats(raising: &Arc<Raising<'_, StatsBusy>>, cpu: c_uint) -> c_int {
        let (st, work) = (&raising.st, raising.work);
        let wait = |stage: usize, sleep: bool| wait_for_stage(&st.stage, stage, &st.errors, sleep);
        match cpu {
            0 => {
                // This CPU's slot held (preemption off here) until the busy read is done.
                let slot = st.heap.front.cpus.local();
                st.stage.store(1, Relaxed);
                wait(2, false);
                drop(slot);
                st.stage.store(3, Relaxed);
            }
            1 => {
                for stage in [1, 3] {
                    if !wait(stage, true) {
                        break;
                    }
                    work.queue();
                    if !wait(stage + 1, true) {
                        break;
                    }
                }
            }
            _ => {}
        }
        0
    }

    /// The type statistics outside task context (`kmalloc43_type_stats`, "any context") never
    /// wait for a slot: from hardirq on CPU 1 while CPU 0 holds its slot (spinning, bounded,
    /// until the read is done: a wait would fail the bound) they answer busy at once (the ABI's
    /// `-EBUSY`); with no slot held they answer, exactly. Needs CPUs 0 and 1 online.
    #[test]
    fn type_stats_outside_task_context_never_waits() {
        let h = heap(false);
        let t = ty(&h, "mag-stats", 0);
        let mut live = KVec::new();
        for size in [64, 64, 200, 8192, 100_000] {
            let p = h.malloc(size, t, NOWAIT).expect("malloc");
            live.push(p, GFP_KERNEL).expect("push");
        }
        let want = h.type_stats(t).expect("stats");
        assert_eq!(want.inuse, 5);
        let st = Arc::new(
            StatsBusy {
                heap: h.clone(),
                t,
                stage: Atomic::new(0),
                busy: Atomic::new(0),
                read: Atomic::new(0),
                inuse: Atomic::new(0),
                memuse: Atomic::new(0),
                calls: Atomic::new(0),
                errors: Atomic::new(0),
            },
            GFP_KERNEL,
        )
        .expect("state");
        let r = on_cpus_with_irq_work(&st, read_stats_in_hardirq, hold_or_read_stats);
        assert_eq!(r, 0);
        assert_eq!(st.errors.load(Relaxed), 0);
        assert_eq!((st.busy.load(Relaxed), st.read.load(Relaxed)), (1, 1));
        assert_eq!(
            (
                st.inuse.load(Relaxed),
                st.memuse.load(Relaxed),
                st.calls.load(Relaxed) as u64
            ),
            (want.inuse, want.memuse, want.calls)
        );
        for p in live.drain_all() {
            h.free(p, t).expect("free");
        }
        assert_eq!(h.audit(), Ok(()));
        h.undefine_type(t).expect("undefine");
    }

    /// Whether `p` sits in any magazine, by the exact search of every magazine under every slot
    /// (process context): the cross-check of the round mark's verdict.
    fn in_a_magazine(h: &Heap, p: NonNull<u8>) -> bool {
        let mut all = h.front.cpus.all();
        h.front.holds_any(&mut all, p.as_ptr() as usize)
    }

    /// The state of [`a_round_is_refused_in_hardirq_without_a_slot`].
    struct RoundsInHardirq {
        heap: Arc<Heap>,
        t: MallocType,
        other: MallocType,
        /// Rounds of `t` (a piece and a page run), each sitting in a magazine.
        rounds: [usize; 2],
        /// Per round: its free as `t` and as `other` was `DoubleFree`, its usable size
        /// `NotAllocated` (one each).
        double_free: Atomic<usize>,
        double_free_other: Atomic<usize>,
        not_allocated: Atomic<usize>,
        stage: Atomic<usize>,
        errors: Atomic<usize>,
    }

    impl HeldSlots for RoundsInHardirq {
        fn held(&self) -> (&Heap, &Atomic<usize>, &Atomic<usize>) {
            (&self.heap, &self.stage, &self.errors)
        }
    }

    /// The irq_work callback of [`a_round_is_refused_in_hardirq_without_a_slot`], on CPU 1,
    /// whose slot CPU 0 holds: each round freed again as its type and as another type, and its
    /// usable size asked.
    fn rounds_in_hardirq(st: &RoundsInHardirq) {
        if st.heap.front.cpus.try_local().is_some() {
            st.errors.fetch_add(1, Relaxed); // the slot is free: the case tests nothing
        }
        for p in st.rounds.iter().filter_map(|&a| NonNull::new(a as *mut u8)) {
            if let Err(MallocError::DoubleFree { .. }) = st.heap.free(p, st.t) {
                st.double_free.fetch_add(1, Relaxed);
            }
            if let Err(MallocError::DoubleFree { .. }) = st.heap.free(p, st.other) {
                st.double_free_other.fetch_add(1, Relaxed);
            }
            if let Err(MallocError::NotAllocated { .. }) = st.heap.usable_size(p) {
                st.not_allocated.fetch_add(1, Relaxed);
            }
        }
        st.stage.store(2, Relaxed);
    }

    /// A round (a piece and a page run sitting in magazines) freed again in hardirq context on
    /// a CPU whose slot another CPU holds is `DoubleFree`, whether given as its own type or as
    /// another, and its usable size is `NotAllocated`: decided by the round mark under this
    /// boot's key, with no slot and no search (a wait for the held slot would fail the case's
    /// bound), changing nothing: every counter of both types and every fall-back counter as
    /// before but the refusals, and the rounds still in their magazines (the exact search, as a
    /// cross-check). Needs CPUs 0 and 1 online.
    #[test]
    fn a_round_is_refused_in_hardirq_without_a_slot() {
        let h = heap(false);
        let t = ty(&h, "mag-rounds", 0);
        let other = ty(&h, "mag-rounds-other", 0);
        let mut rounds = [0usize; 2];
        for (r, size) in rounds.iter_mut().zip([64, 8192]) {
            let p = h.malloc(size, t, NOWAIT).expect("malloc");
            h.free(p, t).expect("free");
            assert!(in_a_magazine(&h, p));
            *r = p.as_ptr() as usize;
        }
        let stats = |ty| {
            let s = h.type_stats(ty).expect("stats");
            (s.memuse, s.inuse, s.calls, s.maxused, s.limblocks)
        };
        let before = (stats(t), stats(other));
        let fallbacks = || {
            (
                h.fallbacks.mallocs.load(Relaxed),
                h.fallbacks.frees.load(Relaxed),
                h.fallbacks.refused.load(Relaxed),
            )
        };
        let before_fb = fallbacks();
        let st = Arc::new(
            RoundsInHardirq {
                heap: h.clone(),
                t,
                other,
                rounds,
                double_free: Atomic::new(0),
                double_free_other: Atomic::new(0),
                not_allocated: Atomic::new(0),
                stage: Atomic::new(0),
                errors: Atomic::new(0),
            },
            GFP_KERNEL,
        )
        .expect("state");
        let r = on_cpus_with_irq_work(&st, rounds_in_hardirq, hold_all_or_raise::<RoundsInHardirq>);
        assert_eq!(r, 0);
        assert_eq!(st.errors.load(Relaxed), 0);
        assert_eq!(
            (
                st.double_free.load(Relaxed),
                st.double_free_other.load(Relaxed),
                st.not_allocated.load(Relaxed)
            ),
            (2, 2, 2)
        );
        assert_eq!((stats(t), stats(other)), before);
        // Refused under the heap lock: as the type's own, by the fall-back's free (counted as a
        // fall-back free); as another type's, as refused.
        let (m, f, r) = fallbacks();
        assert_eq!(
            (m - before_fb.0, f - before_fb.1, r - before_fb.2),
            (0, 2, 2)
        );
        for &a in &rounds {
            let p = NonNull::new(a as *mut u8).expect("round");
            assert!(in_a_magazine(&h, p));
        }
        assert_eq!(h.audit(), Ok(()));
        h.undefine_type(t).expect("undefine");
        h.undefine_type(other).expect("undefine");
    }

    /// The state of [`a_run_over_64_kib_in_hardirq_takes_no_slot`].
    struct Runs {
        heap: Arc<Heap>,
        stage: Atomic<usize>,
        errors: Atomic<usize>,
        /// An unlimited type, and one limited to two runs and a small piece.
        free: MallocType,
        limited: MallocType,
        /// The limited type's run the hardirq allocated, resized in place and freed.
        resized: Atomic<usize>,
        /// Runs of the limited type the hardirq saw refused at the limit.
        refused: Atomic<usize>,
        /// The heap is in `DIAGNOSTIC` mode: the hardirq also allocates and frees a small piece
        /// (by the interrupt fall-back, whose `DIAGNOSTIC` branch is the core's path too).
        diagnostic: bool,
    }

    impl HeldSlots for Runs {
        fn held(&self) -> (&Heap, &Atomic<usize>, &Atomic<usize>) {
            (&self.heap, &self.stage, &self.errors)
        }
    }

    /// A page run the magazines do not keep (128 KiB).
    const BIG_RUN: usize = 128 * 1024;

    /// The irq_work callback of [`a_run_over_64_kib_in_hardirq_takes_no_slot`]: on CPU 1, whose
    /// slot CPU 0 holds, runs of 128 KiB: malloc and free, a limited type's up to its limit and
    /// one past it, a resize in place, a free.
    fn runs_in_hardirq(st: &Runs) {
        let fail = || {
            st.errors.fetch_add(1, Relaxed);
        };
        if st.heap.front.cpus.try_local().is_some() {
            fail(); // the slot is free: the case tests nothing
        }
        let sizes = if st.diagnostic { 2 } else { 1 };
        for size in [BIG_RUN, 64].into_iter().take(sizes) {
            match st.heap.malloc(size, st.free, NOWAIT) {
                Ok(p) if st.heap.free(p, st.free).is_ok() => {}
                _ => fail(),
            }
        }
        let Ok(p) = st.heap.malloc(BIG_RUN, st.limited, NOWAIT) else {
            fail();
            st.stage.store(2, Relaxed);
            return;
        };
        match st.heap.malloc(BIG_RUN, st.limited, NOWAIT) {
            Err(MallocError::Limit { .. }) => {
                st.refused.fetch_add(1, Relaxed);
            }
            Ok(q) => {
                fail();
                let _ = st.heap.free(q, st.limited);
            }
            Err(_) => fail(),
        }
        // The same page count: stays in place (the core's same-class branch).
        match st.heap.realloc(p, BIG_RUN - 100, st.limited, NOWAIT) {
            Ok(q) if q == p => st.resized.store(p.as_ptr() as usize, Relaxed),
            _ => fail(),
        }
        if st.heap.free(p, st.limited).is_err() {
            fail();
        }
        st.stage.store(2, Relaxed);
    }

    /// Runs over 64 KiB (the core's path, which checks the limit on the type's reserve) never
    /// wait for a slot: in hardirq context on CPU 1 while CPU 0 holds every slot (interrupts
    /// off, spinning until the hardirq is done: any wait fails the bound), a 128 KiB `NOWAIT`
    /// malloc and its free succeed, a limited type's run at its limit is refused (its usage
    /// partly on a CPU's counters, which the core never sees: decided on the reserve, every
    /// credit word revoked without a slot), a resize in place and a free succeed, none by the
    /// interrupt fall-back, and every count is exact afterwards. With `DIAGNOSTIC` on as well
    /// (where a small piece's malloc and free in hardirq take the fall-back's `DIAGNOSTIC`
    /// branch, the core's path with the same account). Needs CPUs 0 and 1 online.
    #[test]
    fn a_run_over_64_kib_in_hardirq_takes_no_slot() {
        for diagnostic in [false, true] {
            runs_in_hardirq_case(diagnostic);
        }
    }

    /// [`a_run_over_64_kib_in_hardirq_takes_no_slot`] on a heap with `DIAGNOSTIC` on or off.
    fn runs_in_hardirq_case(diagnostic: bool) {
        // 1 MiB chunks: the runs the hardirq takes come from the chunk the task's allocations
        // keep, without the page allocator.
        let h = Heap::new(8, diagnostic).expect("heap");
        let [free, limited] = ["runs-free", "runs-limited"]
            .map(|name| h.define_type(name, "kunit", usize::MAX).expect("define"));
        // The limit leaves room for two runs and a small piece.
        let p = h.malloc(64, free, NOWAIT).expect("malloc");
        let small = h.usable_size(p).expect("usable size");
        h.free(p, free).expect("free");
        let limit = 2 * BIG_RUN + small;
        h.set_limit(limited, limit).expect("limit");
        // A piece on this CPU's counters (not in the base) and a run in the base.
        let piece = h.malloc(64, limited, NOWAIT).expect("malloc");
        let kept = h.malloc(BIG_RUN, limited, NOWAIT).expect("malloc");
        let before = (
            h.fallbacks.mallocs.load(Relaxed),
            h.fallbacks.frees.load(Relaxed),
        );
        let st = Arc::new(
            Runs {
                heap: h.clone(),
                stage: Atomic::new(0),
                errors: Atomic::new(0),
                free,
                limited,
                resized: Atomic::new(0),
                refused: Atomic::new(0),
                diagnostic,
            },
            GFP_KERNEL,
        )
        .expect("state");
        let r = on_cpus_with_irq_work(&st, runs_in_hardirq, hold_all_or_raise::<Runs>);
        assert_eq!(r, 0);
        assert_eq!(st.errors.load(Relaxed), 0);
        assert_eq!(st.refused.load(Relaxed), 1);
        assert_ne!(st.resized.load(Relaxed), 0);
        // The runs take the core's path, not the fall-back (the small piece of `DIAGNOSTIC`
        // does).
        let small_ones = usize::from(diagnostic);
        assert_eq!(
            (
                h.fallbacks.mallocs.load(Relaxed) - before.0,
                h.fallbacks.frees.load(Relaxed) - before.1
            ),
            (small_ones, small_ones)
        );
        let f = h.type_stats(free).expect("stats");
        let calls = 2 + small_ones as u64;
        assert_eq!(
            (f.memuse, f.inuse, f.calls, f.maxused),
            (0, 0, calls, BIG_RUN)
        );
        let s = h.type_stats(limited).expect("stats");
        assert_eq!((s.memuse, s.inuse, s.calls), (BIG_RUN + small, 2, 3));
        assert_eq!((s.maxused, s.limblocks), (limit, 1));
        h.free(kept, limited).expect("free");
        h.free(piece, limited).expect("free");
        let s = h.type_stats(limited).expect("stats");
        assert_eq!((s.memuse, s.inuse, s.maxused), (0, 0, limit));
        assert_eq!(h.audit(), Ok(()));
        h.undefine_type(limited).expect("undefine");
        h.undefine_type(free).expect("undefine");
    }

    /// The state of [`a_cross_cpu_free_is_counted_where_it_happens`].
    struct CrossCpu {
        heap: Arc<Heap>,
        t: MallocType,
        /// 1 once CPU 0 allocated every object; 2 once CPU 1 freed them.
        stage: Atomic<usize>,
        objs: [Atomic<usize>; 16],
        errors: Atomic<usize>,
    }

    /// The kthreads of [`a_cross_cpu_free_is_counted_where_it_happens`].
    fn alloc_here_free_there(st: &Arc<CrossCpu>, cpu: c_uint) -> c_int {
        match cpu {
            0 => {
                for o in &st.objs {
                    match st.heap.malloc(64, st.t, NOWAIT) {
                        Ok(p) => o.store(p.as_ptr() as usize, Relaxed),
                        Err(_) => {
                            st.errors.fetch_add(1, Relaxed);
                        }
                    }
                }
                st.stage.store(1, Relaxed);
            }
            1 => {
                if !wait_for_stage(&st.stage, 1, &st.errors, true) {
                    return 0;
                }
                for o in &st.objs {
                    match NonNull::new(o.load(Relaxed) as *mut u8) {
                        Some(p) if st.heap.free(p, st.t).is_ok() => {}
                        _ => {
                            st.errors.fetch_add(1, Relaxed);
                        }
                    }
                }
                st.stage.store(2, Relaxed);
            }
            _ => {}
        }
        0
    }

    /// Objects allocated on CPU 0 and freed on CPU 1 are uncharged on CPU 1, whose counters go
    /// below zero, without gathering CPU 0's usage (the page names the type: the free needs no
    /// other CPU's counters); the exact sum is zero. Needs CPUs 0 and 1 online.
    #[test]
    fn a_cross_cpu_free_is_counted_where_it_happens() {
        let h = heap(false);
        let t = ty(&h, "mag-cross", 0);
        let st = Arc::new(
            CrossCpu {
                heap: h.clone(),
                t,
                stage: Atomic::new(0),
                objs: [const { Atomic::new(0) }; 16],
                errors: Atomic::new(0),
            },
            GFP_KERNEL,
        )
        .expect("state");
        let (ret, ()) = on_every_cpu(&st, alloc_here_free_there, |threads| {
            assert!(threads.started());
        });
        assert_eq!(ret, 0);
        assert_eq!(st.errors.load(Relaxed), 0);
        assert_eq!(st.stage.load(Relaxed), 2);
        {
            let mut all = h.front.cpus.all();
            let (on0, on1) = (
                all.get(0).ledgers[t.index()].memuse as isize,
                all.get(1).ledgers[t.index()].memuse as isize,
            );
            assert!(on0 > 0); // CPU 0's charges were not gathered away
            assert_eq!(on0 + on1, 0);
        }
        let s = h.type_stats(t).expect("stats");
        assert_eq!((s.memuse, s.inuse, s.calls), (0, 0, 16));
        assert_eq!(h.audit(), Ok(()));
        h.undefine_type(t).expect("undefine");
    }

    /// The state of [`idle_types_give_their_rounds_back`].
    struct Aging {
        heap: Arc<Heap>,
        busy: MallocType,
        idle: [MallocType; 8],
        errors: Atomic<usize>,
        /// Full 2 KiB magazines in the depots after the class budget's phase (`usize::MAX`:
        /// not reached).
        budget_full: Atomic<usize>,
    }

    /// The kthreads of [`idle_types_give_their_rounds_back`]: on CPU 0, every idle type takes
    /// eight 1 KiB objects and frees them, then the busy type allocates 3,000 objects of 64 bytes
    /// (fills from the piece layer that run the aging clock) and frees them.
    fn idle_then_busy(st: &Arc<Aging>, cpu: c_uint) -> c_int {
        if cpu != 0 {
            return 0;
        }
        let run = |size: usize, t: MallocType, n: usize| {
            let mut v = KVec::new();
            for _ in 0..n {
                match st.heap.malloc(size, t, NOWAIT) {
                    Ok(p) if v.push(p, GFP_KERNEL).is_ok() => {}
                    Ok(p) => {
                        let _ = st.heap.free(p, t);
                        st.errors.fetch_add(1, Relaxed);
                    }
                    Err(_) => {
                        st.errors.fetch_add(1, Relaxed);
                    }
                }
            }
            for p in v.drain_all() {
                if st.heap.free(p, t).is_err() {
                    st.errors.fetch_add(1, Relaxed);
                }
            }
        };
        // The class budget (2 KiB: 30 rounds, two magazines): the first idle type keeps 30
        // rounds on CPU 0; then each of the busy type's free misses finds them there and gives
        // its own full previous magazine back to the piece layer instead of to its depot.
        run(2048, st.idle[0], 30);
        run(2048, st.busy, 60);
        let k2 = crate::malloc::size_class(st.heap.front.table, 2048).unwrap_or(0);
        st.budget_full
            .store(st.heap.front.depot_stats(k2).full, Relaxed);
        for &t in &st.idle {
            run(1024, t, 8);
        }
        run(64, st.busy, 3000);
        0
    }

    /// The magazine layer's aging (`crate::magazine::trim`, `aging.rs`): types that stopped
    /// allocating on a CPU give the rounds resting in their magazines there back to the piece
    /// layer once that CPU's magazines exchanged a window of rounds with it, and the requests
    /// their magazines served are folded into the piece layer, exactly. A fill takes a page of
    /// 1 KiB pieces (four), not fifteen. Before that, the class budget: a type's free misses
    /// give rounds back instead of filling its depot while another type holds the class's
    /// budget on the CPU. Needs CPU 0 online.
    #[test]
    fn idle_types_give_their_rounds_back() {
        let h = heap(false);
        let define = |name| h.define_type(name, "kunit", usize::MAX).expect("define");
        let busy = define("mag-age-busy");
        let idle = [(); 8].map(|()| define("mag-age-idle"));
        let st = Arc::new(
            Aging {
                heap: h.clone(),
                busy,
                idle,
                errors: Atomic::new(0),
                budget_full: Atomic::new(usize::MAX),
            },
            GFP_KERNEL,
        )
        .expect("state");
        let (ret, ()) = on_every_cpu(&st, idle_then_busy, |threads| {
            assert!(threads.started());
        });
        assert_eq!(ret, 0);
        assert_eq!(st.errors.load(Relaxed), 0);
        assert_eq!(st.budget_full.load(Relaxed), 0);
        let k1 = crate::malloc::size_class(h.front.table, 1024).unwrap_or(0);
        {
            let mut all = h.front.cpus.all();
            for t in idle {
                let rounds = all.get(0).rows[t.index()]
                    .as_deref()
                    .map_or(0, |r| r.rounds(k1));
                assert_eq!(rounds, 0);
            }
        }
        // Every 1 KiB piece is back in the buckets, and the 64 requests are counted once.
        let (mut held, mut calls) = (usize::MAX, 0);
        let _ = h.for_each_bucket(|_, row| {
            if let crate::exact::BucketRow::Class(i, b) = row {
                if i == k1 {
                    (held, calls) = (b.total - b.totalfree, b.calls);
                }
            }
            Ok::<(), ()>(())
        });
        assert_eq!(held, 0);
        assert_eq!(calls, 64);
        for (i, t) in idle.into_iter().enumerate() {
            let s = h.type_stats(t).expect("stats");
            let (calls, high) = if i == 0 {
                (38, 30 * 2048)
            } else {
                (8, 8 * 1024)
            };
            assert_eq!((s.memuse, s.inuse, s.calls, s.maxused), (0, 0, calls, high));
            h.undefine_type(t).expect("undefine");
        }
        assert_eq!(h.type_stats(busy).map(|s| s.calls), Ok(3060));
        assert_eq!(h.audit(), Ok(()));
        h.undefine_type(busy).expect("undefine");
    }

    #[test]
    fn double_free_of_a_round_is_caught() {
        let h = heap(false);
        let t = ty(&h, "mag-df", 0);
        for size in [64, 8192, 5 * 4096] {
            let p = h.malloc(size, t, NOWAIT).expect("malloc");
            h.free(p, t).expect("free");
            // The mark's verdict below, cross-checked by the exact search.
            assert!(in_a_magazine(&h, p));
            // The second free of an object sitting in a magazine: a round stays no kmemleak
            // object.
            crate::kmemleak::watch::start(p.as_ptr() as usize, false);
            assert!(matches!(h.free(p, t), Err(MallocError::DoubleFree { .. })));
            assert!(!crate::kmemleak::watch::object());
            crate::kmemleak::watch::stop();
            let addr = p.as_ptr() as usize;
            assert_eq!(h.usable_size(p), Err(MallocError::NotAllocated { addr }));
            assert_eq!(h.type_stats(t).map(|s| s.inuse), Ok(0));
        }
        // A live object whose first word is the round mark (its client wrote this boot's secret
        // key): with the magazines on the mark is the verdict, so its free is refused and
        // changes nothing (the search finds it in no magazine: the case the design accepts);
        // with DIAGNOSTIC on no round exists and the core frees it.
        // With kmemleak the look-alike stays a kmemleak object (its leak would be reported).
        let kmemleak = crate::kmemleak::KMEMLEAK;
        let p = h.malloc(64, t, NOWAIT).expect("malloc");
        let charge = h.usable_size(p).expect("usable size");
        let addr = p.as_ptr() as usize;
        crate::kmemleak::watch::start(addr, kmemleak);
        // SAFETY: a live 64-byte allocation.
        unsafe { (addr as *mut usize).write(crate::magazines::round_key().mark_of(addr)) };
        assert!(!in_a_magazine(&h, p));
        assert!(matches!(h.free(p, t), Err(MallocError::DoubleFree { .. })));
        assert_eq!(crate::kmemleak::watch::object(), kmemleak);
        assert_eq!(h.usable_size(p), Err(MallocError::NotAllocated { addr }));
        assert_eq!(
            h.type_stats(t).map(|s| (s.memuse, s.inuse)),
            Ok((charge, 1))
        );
        h.set_diagnostic(true).expect("DIAGNOSTIC on");
        assert_eq!(h.usable_size(p), Ok(charge));
        h.free(p, t).expect("free of a look-alike under DIAGNOSTIC");
        assert!(!crate::kmemleak::watch::object());
        crate::kmemleak::watch::stop();
        h.set_diagnostic(false).expect("DIAGNOSTIC off");
        assert_eq!(h.type_stats(t).map(|s| (s.memuse, s.inuse)), Ok((0, 0)));
        assert_eq!(h.audit(), Ok(()));
        h.undefine_type(t).expect("undefine");
    }

    /// Whether every CPU has type `t`'s depots (`defined`) or none has, and on how many CPUs
    /// its magazines' row was made.
    fn installed(h: &Heap, t: MallocType, defined: bool) -> (bool, usize) {
        let mut g = h.front.cpus.all();
        let depots = (0..g.len()).all(|cpu| g.get(cpu).depots[t.index()].is_some() == defined);
        let rows = (0..g.len())
            .filter(|&cpu| g.get(cpu).rows[t.index()].is_some())
            .count();
        (depots, rows)
    }

    #[test]
    fn magazines_are_per_type() {
        let h = heap(false);
        let a = ty(&h, "mag-a", 0);
        let b = ty(&h, "mag-b", 0);
        // Depots on every CPU from the definition on; a CPU's magazines when it needs them.
        assert_eq!(installed(&h, a, true), (true, 0));
        assert_eq!(installed(&h, b, true), (true, 0));
        // Pieces that type A freed sit in A's magazines: type B's allocations of the same class
        // never get them, on any CPU, while they are there.
        let mut freed = KVec::new();
        for _ in 0..40 {
            let p = h.malloc(64, a, NOWAIT).expect("malloc");
            freed.push(p.as_ptr() as usize, GFP_KERNEL).expect("push");
        }
        for &p in freed.iter() {
            h.free(NonNull::new(p as *mut u8).expect("non-null"), a)
                .expect("free");
        }
        let mut got = KVec::new();
        for _ in 0..200 {
            let q = h.malloc(64, b, NOWAIT).expect("malloc");
            assert!(!freed.contains(&(q.as_ptr() as usize)));
            got.push(q, GFP_KERNEL).expect("push");
        }
        for q in got.drain_all() {
            h.free(q, b).expect("free");
        }
        let p = h.malloc(64, a, NOWAIT).expect("malloc");
        h.free(p, a).expect("free");
        // The requests served from both types' magazines add up in the class's statistics.
        let c = crate::malloc::size_class(h.front.table, 64).expect("class");
        let mut calls = 0;
        let _ = h.for_each_bucket(|_, row| {
            if let crate::exact::BucketRow::Class(i, bs) = row {
                if i == c {
                    calls = bs.calls;
                }
            }
            Ok::<(), ()>(())
        });
        assert_eq!(calls, 241);
        assert!(installed(&h, a, true).1 >= 1 && installed(&h, b, true).1 >= 1);
        // Undefining a type frees its magazines and depots on every CPU and leaves the other's
        // alone.
        h.undefine_type(a).expect("undefine");
        assert_eq!(installed(&h, a, false), (true, 0));
        assert!(installed(&h, b, true).0);
        assert_eq!(h.audit(), Ok(()));
        h.undefine_type(b).expect("undefine");
        assert_eq!(installed(&h, b, false), (true, 0));
        // Defining a type in a slot that held one gives it fresh depots and no magazines yet.
        let c2 = ty(&h, "mag-c", 0);
        assert_eq!(installed(&h, c2, true), (true, 0));
        every_page_back(h, &[]);
    }

    #[test]
    fn pages_that_are_not_ours_have_no_hint() {
        let h = heap(false);
        let t = ty(&h, "mag-foreign", 0);
        let mine = h.malloc(64, t, NOWAIT).expect("malloc");
        // Direct-map memory that is not the heap's (a slab object of kmalloc): its page has no
        // bit in the page-hint bitmap, so the fast path never reads its `struct page`, and the
        // slow path answers from the page map.
        let theirs = KBox::new([0u64; 8], GFP_KERNEL).expect("kmalloc");
        let foreign = NonNull::from(&*theirs).cast::<u8>();
        assert!(crate::hint::page_hint(foreign.as_ptr() as usize).is_none());
        assert!(matches!(
            h.free(foreign, t),
            Err(MallocError::ForeignPointer { .. })
        ));
        // Memory outside the direct map (this stack) has no hint either.
        let local = 0u64;
        assert!(crate::hint::page_hint(core::ptr::addr_of!(local) as usize).is_none());
        // The heap's own piece has one, and is freed normally.
        assert!(crate::hint::page_hint(mine.as_ptr() as usize).is_some());
        h.free(mine, t).expect("free");
        assert_eq!(h.type_stats(t).map(|s| s.inuse), Ok(0));
        assert_eq!(h.audit(), Ok(()));
        h.undefine_type(t).expect("undefine");
    }

    #[test]
    fn drain_gives_every_page_back() {
        let h = heap(false);
        let t = ty(&h, "mag-drain", 0);
        let mut v = KVec::new();
        for i in 0..600usize {
            let p = h.malloc(1 + (i * 131) % 40000, t, NOWAIT).expect("malloc");
            v.push(p, GFP_KERNEL).expect("push");
        }
        for p in v.drain_all() {
            h.free(p, t).expect("free");
        }
        assert!(h.front.depot_stats(0).magsize >= 1);
        // Working-set trimming: 64-byte objects freed into full magazines in the depot, then two
        // idle intervals: the magazines were not part of the working set and give their rounds
        // back.
        let mut w = KVec::new();
        for _ in 0..400 {
            w.push(h.malloc(64, t, NOWAIT).expect("malloc"), GFP_KERNEL)
                .expect("push");
        }
        for p in w.drain_all() {
            h.free(p, t).expect("free");
        }
        let c = crate::malloc::size_class(h.front.table, 64).unwrap_or(0);
        let full = h.front.depot_stats(c).full;
        assert!(full > 0);
        h.trim();
        h.trim();
        let d = h.front.depot_stats(c);
        assert!(d.reaped > 0);
        assert!(d.full < full);
        assert_eq!(crate::debugfs::store_drain_bytes(&h, b"bogus"), Err(EINVAL));
        assert_eq!(crate::debugfs::store_drain_bytes(&h, b"trim\n"), Ok(()));
        assert_eq!(crate::debugfs::store_drain_bytes(&h, b"drain\n"), Ok(()));
        // Nothing live: every piece of every class is free, no run is live.
        let mut busy = 0;
        let _ = h.for_each_bucket(|_, row| {
            match row {
                crate::exact::BucketRow::Class(_, b) => busy += b.total - b.totalfree,
                crate::exact::BucketRow::Large(l) => busy += l.inuse,
            }
            Ok::<(), ()>(())
        });
        assert_eq!(busy, 0);
        assert_eq!(h.drain(), 0); // nothing left in magazines after a drain
        assert_eq!(h.audit(), Ok(()));
        every_page_back(h, &[t]);
    }

    #[test]
    fn stress_on_every_cpu_with_hardirq_and_sleepers() {
        let ops = crate::module_parameters::stress_ops.value() as usize;
        let h = heap(false);
        let limits = [usize::MAX, 128 * 1024, 32 * 1024];
        let run = Run::new(&h, ops.div_ceil(2), limits);
        // A sleeper: WAITOK allocations of the type the hammers keep near its limit.
        let sleeper_done = Arc::new(Atomic::new(0usize), GFP_KERNEL).expect("flag");
        let (r2, d2) = (run.clone(), sleeper_done.clone());
        workqueue::system_unbound()
            .try_spawn(GFP_KERNEL, move || {
                let t = r2.types[2];
                let mut n = 0;
                while r2.cpus_done.load(Relaxed) == 0 || n == 0 {
                    match r2.heap.malloc(3000, t, WAITOK) {
                        Ok(p) => {
                            n += 1;
                            if let Err(e) = r2.heap.free(p, t) {
                                error(&r2, "sleeper free", Some(e));
                            }
                        }
                        Err(e) => error(&r2, "sleeper malloc", Some(e)),
                    }
                }
                // The run (and its heap) is released before the test is told.
                drop(r2);
                d2.store(n, Relaxed);
            })
            .expect("spawn sleeper");
        hammer_everywhere(&run, true, |_| fsleep(Delta::from_millis(20)));
        for _ in 0..500 {
            if sleeper_done.load(Relaxed) != 0 {
                break;
            }
            fsleep(Delta::from_millis(10));
        }
        assert!(sleeper_done.load(Relaxed) > 0); // the WAITOK sleeper finished
        assert!(run.ops.load(Relaxed) >= ops); // every operation counted
        assert!(run.irq_runs.load(Relaxed) > 0); // hardirq callbacks ran
        let (mut contended, mut resizes, mut reaped) = (0, 0, 0);
        for c in 0..crate::malloc::NCLASSES {
            let d = h.front.depot_stats(c);
            contended += d.contended;
            resizes += d.resizes;
            reaped += d.reaped;
        }
        pr_info!(
            "stress: {} operations over every CPU ({} allocations, {} refused at a limit), {} in hardirq ({} mallocs and {} frees by the interrupt fall-back), {} WAITOK sleeper allocations; depots: {} contended, {} resizes, {} magazines reaped\n",
            run.ops.load(Relaxed),
            run.allocs.load(Relaxed),
            run.refused.load(Relaxed),
            run.irq_runs.load(Relaxed),
            h.fallbacks.mallocs.load(Relaxed),
            h.fallbacks.frees.load(Relaxed),
            sleeper_done.load(Relaxed),
            contended,
            resizes,
            reaped
        );
        drop(h);
        assert_eq!(finish(run), Ok(()));
    }
}
