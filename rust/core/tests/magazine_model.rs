// SPDX-License-Identifier: GPL-2.0

//! Model tests of the magazine layer and the exact per-CPU ledgers: random operations on
//! simulated CPUs (`hosted::magazines::SimFront`, the kernel glue's protocol step by step) against
//! a reference that charges one global counter per type. After every step: the same verdict as
//! the reference (so limits are exact), the same exact MemUse, InUse, Requests and HighUse, the
//! reserve invariant, and no object lost or duplicated between CPUs, depots and pool, while the
//! trimming rules (`magazine::trim`: the class budget shared by the types, the aging of idle
//! magazines) give rounds back.

use std::collections::BTreeMap;

use kmalloc43_core::hosted::magazines::{Path, SimError, SimFront};
use kmalloc43_core::malloc::classes_sizemask;
use proptest::prelude::*;

const CHARGE: usize = 64;

#[derive(Clone, Debug)]
enum Op {
    Alloc { cpu: usize, t: usize },
    Free { cpu: usize, pick: usize },
    DoubleFree { pick: usize },
    WrongType { cpu: usize, t: usize },
    Limit { t: usize, limit: usize },
    Update,
    Reap,
    Age { cpu: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 0..3usize).prop_map(|(cpu, t)| Op::Alloc { cpu, t }),
        5 => (0..3usize, any::<usize>()).prop_map(|(cpu, pick)| Op::Free { cpu, pick }),
        1 => any::<usize>().prop_map(|pick| Op::DoubleFree { pick }),
        1 => (0..3usize, 0..3usize).prop_map(|(cpu, t)| Op::WrongType { cpu, t }),
        1 => (0..3usize, 0..40usize).prop_map(|(t, k)| Op::Limit { t, limit: k * CHARGE }),
        1 => Just(Op::Update),
        1 => Just(Op::Reap),
        1 => (0..3usize).prop_map(|cpu| Op::Age { cpu }),
    ]
}

#[derive(Default, Clone, Copy)]
struct Ref {
    limit: usize,
    memuse: usize,
    inuse: usize,
    calls: u64,
    maxused: usize,
    limblocks: u64,
}

fn check(front: &SimFront, refs: &[Ref], live: &BTreeMap<usize, usize>) {
    for (t, r) in refs.iter().enumerate() {
        let st = front.exact(t);
        assert_eq!(st.memuse, r.memuse, "type {t}: exact MemUse");
        assert_eq!(st.inuse, r.inuse, "type {t}: exact InUse");
        assert_eq!(st.calls, r.calls, "type {t}: exact Requests");
        assert_eq!(st.maxused, r.maxused, "type {t}: exact HighUse");
        assert_eq!(st.limblocks, r.limblocks, "type {t}: limit refusals");
        // The class is in the sizemask from the first allocation on, although only fills note
        // it: every round in a magazine came from a fill or from a free of an allocated object.
        let class_bit = classes_sizemask(1);
        assert_eq!(
            st.sizemask,
            if r.calls > 0 { class_bit } else { 0 },
            "type {t}: exact sizemask"
        );
        let (reserved, credit) = front.reserve(t);
        assert_eq!(reserved, r.memuse + credit, "type {t}: R = U + C");
        if credit > 0 {
            assert!(
                reserved <= r.limit.min(r.maxused),
                "type {t}: R <= min(limit, HighUse)"
            );
        }
    }
    assert_eq!(
        front.outstanding,
        live.len() + front.cached(),
        "objects are live or cached"
    );
}

fn run(ops: &[Op], ncpus: usize) {
    let limits = [usize::MAX, 16 * CHARGE, 4 * CHARGE];
    let mut front = SimFront::new(ncpus, 4, 16, &limits);
    let mut refs: Vec<Ref> = limits
        .iter()
        .map(|&limit| Ref {
            limit,
            ..Ref::default()
        })
        .collect();
    let mut live: BTreeMap<usize, usize> = BTreeMap::new();
    let mut recently_freed: Vec<usize> = Vec::new();
    for op in ops {
        match *op {
            Op::Alloc { cpu, t } => {
                let cpu = cpu % ncpus;
                let r = &mut refs[t];
                let fits = r.memuse + CHARGE <= r.limit;
                match front.malloc(cpu, t, CHARGE) {
                    Ok((obj, _)) => {
                        assert!(fits, "allocated past the limit");
                        assert!(live.insert(obj, t).is_none(), "object handed out twice");
                        recently_freed.retain(|&o| o != obj);
                        r.memuse += CHARGE;
                        r.inuse += 1;
                        r.calls += 1;
                        r.maxused = r.maxused.max(r.memuse);
                    }
                    Err(e) => {
                        assert_eq!(e, SimError::Limit);
                        assert!(!fits, "refused below the limit");
                        r.limblocks += 1;
                    }
                }
            }
            Op::Free { cpu, pick } => {
                if live.is_empty() {
                    continue;
                }
                let cpu = cpu % ncpus;
                let obj = *live.keys().nth(pick % live.len()).unwrap();
                let t = live.remove(&obj).unwrap();
                front
                    .free(cpu, t, obj, CHARGE, true)
                    .expect("free of a live object");
                let r = &mut refs[t];
                r.memuse -= CHARGE;
                r.inuse -= 1;
                recently_freed.push(obj);
            }
            Op::DoubleFree { pick } => {
                if let Some(&obj) = recently_freed.get(pick % recently_freed.len().max(1)) {
                    assert_eq!(
                        front.free(0, 0, obj, CHARGE, false),
                        Err(SimError::DoubleFree)
                    );
                }
            }
            Op::WrongType { cpu, t } => {
                // A free the type's exact counters cannot cover is refused, whatever the CPU.
                if refs[t].inuse == 0 {
                    let got = front.free(cpu % ncpus, t, usize::MAX, CHARGE, true);
                    assert_eq!(got, Err(SimError::WrongType));
                }
            }
            Op::Limit { t, limit } => {
                front.set_limit(t, limit);
                refs[t].limit = limit;
            }
            Op::Update => front.update(),
            Op::Reap => {
                front.reap();
            }
            Op::Age { cpu } => {
                front.age(cpu % ncpus);
            }
        }
        check(&front, &refs, &live);
    }
    front.flush();
    assert_eq!(front.cached(), 0);
    assert_eq!(
        front.outstanding,
        live.len(),
        "flush gives every cached object back"
    );
    for (t, r) in refs.iter().enumerate() {
        let st = front.exact(t);
        assert_eq!((st.memuse, st.maxused), (r.memuse, r.maxused));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn model_two_cpus(ops in prop::collection::vec(op(), 1..400)) {
        run(&ops, 2);
    }

    #[test]
    fn model_three_cpus(ops in prop::collection::vec(op(), 1..400)) {
        run(&ops, 3);
    }
}

#[test]
fn steady_churn_below_high_water_stays_on_the_cpu() {
    let mut front = SimFront::new(2, 8, 8, &[64 * CHARGE]);
    // Ramp up to a high water of 32 objects, then free them all.
    let objs: Vec<usize> = (0..32)
        .map(|_| front.malloc(0, 0, CHARGE).unwrap().0)
        .collect();
    for &o in &objs {
        front.free(0, 0, o, CHARGE, true).unwrap();
    }
    // Churn below the high water: after the first refill every call is served on the CPU.
    let mut slow = 0;
    for _ in 0..1000 {
        let (o, p) = front.malloc(0, 0, CHARGE).unwrap();
        slow += usize::from(p != Path::Fast);
        slow += usize::from(front.free(0, 0, o, CHARGE, true).unwrap() != Path::Fast);
    }
    assert!(slow <= 2, "{slow} slow calls in steady churn");
    assert_eq!(
        front.exact(0).maxused,
        32 * CHARGE,
        "HighUse is the ramp's peak, exactly"
    );
}

#[test]
fn limit_is_exact_with_credit_on_the_other_cpu() {
    let mut front = SimFront::new(2, 4, 4, &[4 * CHARGE]);
    // CPU 0 reaches the limit; its frees turn into credit there.
    let objs: Vec<usize> = (0..4)
        .map(|_| front.malloc(0, 0, CHARGE).unwrap().0)
        .collect();
    assert_eq!(front.malloc(1, 0, CHARGE), Err(SimError::Limit));
    front.free(0, 0, objs[0], CHARGE, true).unwrap();
    // CPU 1 gets the byte CPU 0 freed: credit elsewhere is revoked, not lost.
    assert!(front.malloc(1, 0, CHARGE).is_ok());
    assert_eq!(front.malloc(0, 0, CHARGE), Err(SimError::Limit));
    assert_eq!(front.exact(0).memuse, 4 * CHARGE);
}

#[test]
fn cross_cpu_frees_gather_usage() {
    let mut front = SimFront::new(2, 4, 4, &[usize::MAX]);
    let objs: Vec<usize> = (0..10)
        .map(|_| front.malloc(0, 0, CHARGE).unwrap().0)
        .collect();
    let mut global = 0;
    for &o in &objs {
        global += usize::from(front.free(1, 0, o, CHARGE, true).unwrap() == Path::Global);
    }
    assert_eq!(global, 1, "one gather serves every later cross-CPU free");
    assert_eq!(front.exact(0).inuse, 0);
    assert_eq!(front.free(1, 0, 1, CHARGE, true), Err(SimError::WrongType));
}

#[test]
fn depot_grows_magazines_under_contention_and_trims_idle_ones() {
    let mut front = SimFront::new(2, 2, 8, &[usize::MAX]);
    let objs: Vec<usize> = (0..40)
        .map(|_| front.malloc(0, 0, CHARGE).unwrap().0)
        .collect();
    for &o in &objs {
        front.free(0, 0, o, CHARGE, true).unwrap();
    }
    let before = front.depot_mut().stats();
    assert!(before.full > 0, "frees filled the depot: {before:?}");
    for _ in 0..=super_contention() {
        front.depot_mut().note_contention();
    }
    assert!(
        front.depot_mut().update(),
        "contention grows the magazine size"
    );
    assert_eq!(front.depot_mut().magsize(), 3);
    // Nothing touched the depot for a whole interval: its magazines are outside the working set.
    front.depot_mut().update();
    let cached = front.cached();
    let freed = front.reap();
    assert!(freed > 0);
    assert!(
        front.cached() < cached,
        "idle magazines gave their rounds back"
    );
    assert_eq!(front.depot_mut().stats().full, 0);
    assert_eq!(front.outstanding, front.cached());
}

#[test]
fn a_type_alone_never_meets_the_class_budget() {
    let mut front = SimFront::new(1, 4, 4, &[usize::MAX, usize::MAX]);
    for _ in 0..20 {
        let objs: Vec<usize> = (0..64)
            .map(|_| front.malloc(0, 0, CHARGE).unwrap().0)
            .collect();
        for &o in &objs {
            front.free(0, 0, o, CHARGE, true).unwrap();
        }
    }
    assert_eq!(
        front.spills, 0,
        "one type's batches trade with its depot only"
    );
    assert!(front.depot_mut().stats().full > 0);
}

#[test]
fn types_sharing_a_class_share_the_cpus_budget() {
    let types = [usize::MAX; 4];
    let mut front = SimFront::new(1, 4, 4, &types);
    for t in 0..types.len() {
        let objs: Vec<usize> = (0..12)
            .map(|_| front.malloc(0, t, CHARGE).unwrap().0)
            .collect();
        for &o in &objs {
            front.free(0, t, o, CHARGE, true).unwrap();
        }
    }
    // Type 0 alone was under the budget (two magazines of four): its free misses traded with
    // its depot. Each later type's free misses found the others' full magazines on the CPU: its
    // full previous magazines gave their rounds back instead of going to its depot. So only type
    // 0's depot holds rounds, and every type keeps at most its two magazines.
    assert!(front.spills > 0);
    let in_depots = front.cached() - front.cpu_rounds(0);
    assert_eq!(
        in_depots,
        front.depot_mut().rounds(),
        "only type 0's depot holds rounds"
    );
    assert!(front.cpu_rounds(0) <= types.len() * 2 * 4);
    assert_eq!(front.outstanding, front.cached());
    for t in 0..types.len() {
        assert_eq!(front.exact(t).inuse, 0);
    }
}

#[test]
fn aging_gives_idle_types_rounds_back() {
    let mut front = SimFront::new(2, 4, 4, &[usize::MAX, usize::MAX]);
    let objs: Vec<usize> = (0..6)
        .map(|_| front.malloc(0, 1, CHARGE).unwrap().0)
        .collect();
    for &o in &objs {
        front.free(0, 1, o, CHARGE, true).unwrap();
    }
    assert!(front.cpu_rounds(0) > 0);
    // The first look counts type 1 as used (its fill folded its requests), then type 0 keeps
    // allocating on CPU 0 while type 1 does nothing: the second look gives type 1's rounds back.
    front.age(0);
    let kept = front.malloc(0, 0, CHARGE).unwrap().0;
    let given = front.age(0);
    assert!(given > 0, "idle rounds went back");
    assert_eq!(front.cpu_rounds(0), 3, "type 0's magazine is in use: kept");
    assert_eq!(front.outstanding, front.cached() + 1);
    front.free(0, 0, kept, CHARGE, true).unwrap();
    assert_eq!(front.exact(1).memuse, 0);
    assert_eq!(front.exact(1).maxused, 6 * CHARGE, "HighUse exact");
}

fn super_contention() -> u32 {
    kmalloc43_core::magazine::CONTENTION_LIMIT
}
