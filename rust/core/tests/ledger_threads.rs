// SPDX-License-Identifier: GPL-2.0

//! The ledger's credit words under real concurrency: threads stand for CPUs (each the only holder
//! of its own ledger), charging and uncharging on their credit with one exchange each and taking
//! the "heap lock" (a mutex) for grants, exact charges and uncharges, while another thread revokes
//! their credit words at any moment without their slots. The reserve must stay exactly the usage
//! plus the credit (checked when the CPUs are quiescent), and never pass the limit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use kmalloc43_core::magazine::ledger::{self, Credit, LocalLedger, Reserve};
use kmalloc43_core::malloc::TypeStats;

const CPUS: usize = 3;
const KEY: u32 = 0x8001;
const LIMIT: usize = 64 * 1024;

struct Shared {
    heap: Mutex<(TypeStats, Reserve)>,
    credits: Vec<Credit>,
    stop: AtomicBool,
}

fn stats() -> TypeStats {
    TypeStats::new("threads", "", LIMIT)
}

/// One CPU: `ops` random charges and frees; returns its ledger and live charges.
fn cpu(sh: &Shared, i: usize, ops: usize) -> (LocalLedger, Vec<usize>, usize) {
    let credit = &sh.credits[i];
    let mut l = LocalLedger::default();
    let mut live: Vec<usize> = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (i as u64 + 1);
    let mut fast = 0;
    for _ in 0..ops {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let charge = [16, 64, 256, 1024][(seed >> 8) as usize % 4];
        if seed & 1 == 0 || live.is_empty() {
            if l.try_charge(credit, KEY, charge) {
                fast += 1;
                live.push(charge);
                continue;
            }
            let mut h = sh.heap.lock().unwrap();
            let (st, res) = &mut *h;
            if ledger::grant(st, res, &mut l, credit, KEY, charge, 2048, 8192)
                && l.try_charge(credit, KEY, charge)
            {
                live.push(charge);
                continue;
            }
            for c in &sh.credits {
                ledger::revoke(res, c);
            }
            if ledger::charge_exact(st, res, &mut l, KEY, charge) {
                assert!(res.reserved <= LIMIT);
                live.push(charge);
            }
        } else {
            let charge = live.swap_remove((seed >> 20) as usize % live.len());
            if l.try_uncharge(credit, KEY, charge, false) {
                fast += 1;
                continue;
            }
            let mut h = sh.heap.lock().unwrap();
            let (_, res) = &mut *h;
            assert!(ledger::uncharge_local(
                res, &mut l, credit, KEY, charge, false
            ));
        }
    }
    (l, live, fast)
}

#[test]
fn revocations_from_another_thread_keep_the_reserve_exact() {
    let sh = Arc::new(Shared {
        heap: Mutex::new((stats(), Reserve::default())),
        credits: (0..CPUS).map(|_| Credit::new()).collect(),
        stop: AtomicBool::new(false),
    });
    let revoker = {
        let sh = sh.clone();
        thread::spawn(move || {
            let mut n = 0usize;
            while !sh.stop.load(Ordering::Relaxed) {
                let mut h = sh.heap.lock().unwrap();
                ledger::revoke(&mut h.1, &sh.credits[n % CPUS]);
                assert!(h.1.reserved <= LIMIT, "R past the limit");
                drop(h);
                n += 1;
                thread::yield_now();
            }
            n
        })
    };
    let workers: Vec<_> = (0..CPUS)
        .map(|i| {
            let sh = sh.clone();
            thread::spawn(move || cpu(&sh, i, 300_000))
        })
        .collect();
    let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    sh.stop.store(true, Ordering::Relaxed);
    let revocations = revoker.join().unwrap();
    assert!(revocations > 0);
    let h = sh.heap.lock().unwrap();
    let u: usize = results.iter().map(|(l, _, _)| l.memuse).sum();
    let live: usize = results
        .iter()
        .map(|(_, v, _)| v.iter().sum::<usize>())
        .sum();
    let c: usize = sh.credits.iter().map(Credit::get).sum();
    assert_eq!(u, live, "the counters are the live charges");
    assert_eq!(h.1.reserved, u + c, "R = U + C");
    assert!(u <= LIMIT && h.0.maxused <= LIMIT);
    assert!(
        results.iter().all(|(_, _, fast)| *fast > 0),
        "every CPU took the fast path"
    );
}
