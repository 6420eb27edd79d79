// SPDX-License-Identifier: GPL-2.0
//! Fuzz target: random vmem operation sequences (all policies, constraints, quantum caches,
//! import from a parent arena and span release, bad frees), checked against a `BTreeMap` model
//! and `audit()` after every operation.
//!
//! Run: `cd rust/core/fuzz && cargo +nightly fuzz run vmem_ops -- -max_total_time=600`

#![no_main]

use std::collections::BTreeMap;

use kmalloc43_core::hosted::vmem::HeapPages;
use kmalloc43_core::vmem::{Arena, ArenaConfig, Constraints, Flags, SegKindSet, VmemError};
use libfuzzer_sys::fuzz_target;

/// Reads the fuzz input as little numbers.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from(self.u8()?) | u16::from(self.u8()?) << 8)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let Some(setup) = b.u8() else { return };
    let q = 1usize << (setup & 7);
    let qcache_max = if setup & 8 != 0 {
        q * (1 + (setup as usize >> 4) % 16)
    } else {
        0
    };
    let import = setup & 0x80 != 0;
    let cfg = ArenaConfig {
        name: "fuzz",
        quantum: q,
        qcache_max: if import { 0 } else { qcache_max },
        import_quantum: import.then_some(q * 16),
        span: (!import).then_some((0, q * 2048)),
    };
    let mut a = Arena::new(&cfg, HeapPages::with_limit(64)).unwrap();
    let mut parent = import.then(|| {
        let pcfg = ArenaConfig {
            quantum: q,
            span: Some((q << 20, q * 4096)),
            ..Default::default()
        };
        Arena::new(&pcfg, HeapPages::new()).unwrap()
    });
    let mut live: BTreeMap<usize, usize> = BTreeMap::new();
    while let Some(op) = b.u8() {
        let policy = [Flags::INSTANT_FIT, Flags::BEST_FIT, Flags::NEXT_FIT][(op >> 4) as usize % 3];
        match op & 7 {
            0 | 1 | 2 => {
                let Some(n) = b.u16() else { break };
                let size = (n as usize % 300 + 1) * q;
                let mut c = Constraints::default();
                if op & 1 != 0 {
                    let Some(x) = b.u16() else { break };
                    c.align = (q << (x & 7)) * usize::from(x & 8 != 0);
                    c.phase = ((x >> 4) as usize & 7) * q;
                    c.nocross = if x & 0x80 != 0 {
                        q << ((x >> 8) & 15)
                    } else {
                        0
                    };
                    c.min = if x & 0x1000 != 0 {
                        ((x >> 4) as usize) * q
                    } else {
                        0
                    };
                    c.max = (x & 0x2000 != 0).then_some(c.min + ((x as usize >> 2) + 1) * q * 4);
                }
                let r = match (parent.as_mut(), op & 1 != 0) {
                    (Some(p), true) => a.xalloc_importing(size, &c, policy, p),
                    (Some(p), false) => a.alloc_importing(size, policy, p),
                    (None, true) => a.xalloc(size, &c, policy),
                    (None, false) => a.alloc(size, policy),
                };
                match r {
                    Ok(addr) => {
                        assert_eq!(addr % c.align.max(q), c.phase % c.align.max(q));
                        assert!(c.max.is_none_or(|m| addr + size <= m) && addr >= c.min);
                        if c.nocross != 0 {
                            assert_eq!(addr / c.nocross, (addr + size - 1) / c.nocross);
                        }
                        if let Some((&x, &n)) = live.range(..addr + size).next_back() {
                            assert!(x + n <= addr, "overlap");
                        }
                        live.insert(addr, size);
                    }
                    Err(VmemError::NoSpace | VmemError::NoTags | VmemError::BadConstraint(_)) => {}
                    Err(e) => panic!("{e:?}"),
                }
            }
            3 | 4 => {
                let Some(n) = b.u16() else { break };
                if live.is_empty() {
                    continue;
                }
                let key = *live.keys().nth(n as usize % live.len()).unwrap();
                let size = live.remove(&key).unwrap();
                let r = match parent.as_mut() {
                    Some(p) => a.free_releasing(key, size, p),
                    None if op & 7 == 3 => a.free(key, size).map(|_| ()),
                    None => a.xfree(key, size).map(|_| ()),
                };
                r.unwrap();
                // Freed twice: always an error.
                assert!(a.xfree(key, size).is_err());
            }
            5 => {
                let Some(n) = b.u16() else { break };
                let addr = n as usize * q;
                if !live.contains_key(&addr) {
                    assert!(a.xfree(addr, q).is_err());
                } else {
                    assert!(a.xfree(addr, live[&addr] + q).is_err());
                }
            }
            6 => {
                let Some(n) = b.u16() else { break };
                if parent.is_none() {
                    let _ = a.add(
                        (q << 24) + (n as usize & 0xff) * q * 64,
                        (n as usize >> 8).max(1) * q,
                    );
                }
            }
            _ => a.reap(&mut |r| {
                if let Some(p) = parent.as_mut() {
                    p.xfree(r.base, r.size).unwrap();
                }
            }),
        }
        a.audit().unwrap();
        if a.qcache_max() == 0 {
            assert_eq!(a.size(SegKindSet::ALLOC), live.values().sum::<usize>());
        }
        if let Some(p) = &parent {
            p.audit().unwrap();
            assert_eq!(p.size(SegKindSet::ALLOC), a.size(SegKindSet::TOTAL));
        }
    }
    for (addr, size) in std::mem::take(&mut live) {
        match parent.as_mut() {
            Some(p) => a.free_releasing(addr, size, p).unwrap(),
            None => {
                a.free(addr, size).unwrap();
            }
        }
    }
    let mut spans = Vec::new();
    a.destroy(&mut |r| spans.push(r)).unwrap();
    assert_eq!(a.pages_held(), 0);
    if let Some(p) = parent.as_mut() {
        for r in spans {
            p.xfree(r.base, r.size).unwrap();
        }
        assert_eq!(p.size(SegKindSet::ALLOC), 0);
        p.audit().unwrap();
    }
});
