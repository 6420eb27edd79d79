// SPDX-License-Identifier: GPL-2.0

//! Fuzz target: arbitrary operations on the simulated multi-CPU magazine front end (the kernel
//! glue's protocol step by step): allocations and frees on any CPU, limit changes, depot
//! intervals, reaps, aging passes (`magazine::trim`) and flushes, with free misses over the
//! CPUs' class budget giving rounds back. Every limit verdict, MemUse, InUse and HighUse must equal a
//! single global counter's, and no object may be lost or handed out twice.

#![no_main]

use std::collections::BTreeMap;

use kmalloc43_core::hosted::magazines::{SimError, SimFront};
use libfuzzer_sys::fuzz_target;

const CHARGE: usize = 32;

fuzz_target!(|data: &[u8]| {
    let limits = [usize::MAX, 8 * CHARGE];
    let mut front = SimFront::new(3, 1 + data.first().map_or(0, |b| *b as usize % 8), 12, &limits);
    let mut limit = limits;
    let mut memuse = [0usize; 2];
    let mut maxused = [0usize; 2];
    let mut live: BTreeMap<usize, usize> = BTreeMap::new();
    for ch in data.chunks(2) {
        let (a, b) = (ch[0], ch.get(1).copied().unwrap_or(0));
        let cpu = (a as usize >> 4) % 3;
        let t = (b & 1) as usize;
        match a & 7 {
            0..=2 => {
                let fits = memuse[t] + CHARGE <= limit[t];
                match front.malloc(cpu, t, CHARGE) {
                    Ok((o, _)) => {
                        assert!(fits && live.insert(o, t).is_none());
                        memuse[t] += CHARGE;
                        maxused[t] = maxused[t].max(memuse[t]);
                    }
                    Err(e) => assert!(e == SimError::Limit && !fits),
                }
            }
            3..=5 => {
                if let Some(&o) = live.keys().nth(b as usize % live.len().max(1)) {
                    let t = live.remove(&o).unwrap();
                    front.free(cpu, t, o, CHARGE, true).unwrap();
                    memuse[t] -= CHARGE;
                }
            }
            6 => {
                limit[t] = (b as usize >> 1) * CHARGE / 4;
                front.set_limit(t, limit[t]);
            }
            _ => match b % 4 {
                0 => front.update(),
                1 => {
                    front.reap();
                }
                2 => {
                    front.age(cpu);
                }
                _ => front.flush(),
            },
        }
        for t in 0..2 {
            let st = front.exact(t);
            assert_eq!((st.memuse, st.maxused), (memuse[t], maxused[t]));
        }
        assert_eq!(front.outstanding, live.len() + front.cached());
    }
});
