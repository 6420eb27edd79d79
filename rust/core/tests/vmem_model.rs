// SPDX-License-Identifier: GPL-2.0
//! Model-based property test: random operation sequences over every policy and constraint,
//! with and without quantum caches, and a child arena importing from a parent arena, checked
//! against a trivially correct reference model (a `BTreeMap` of live ranges) and `audit()`
//! after every operation.
//!
//! Default: about 100,000 operations. `VMEM_MODEL_OPS=1000000 cargo test --release --test
//! vmem_model` runs a million.

use std::collections::BTreeMap;

use kmalloc43_core::hosted::vmem::HeapPages;
use kmalloc43_core::vmem::{Arena, ArenaConfig, Constraints, Flags, SegKindSet, VmemError};
use proptest::prelude::*;

type A = Arena<HeapPages>;

const OPS_PER_CASE: usize = 1000;

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        size: usize,
        policy: u8,
    },
    XAlloc {
        size: usize,
        c: (u8, u8, u8, u16, u16),
        policy: u8,
    },
    Free {
        pick: usize,
    },
    FreeWrongSize {
        pick: usize,
    },
    FreeBogus {
        addr: usize,
    },
    DoubleFree,
    Add {
        base: usize,
        size: usize,
    },
    Reap,
}

fn op() -> impl Strategy<Value = Op> {
    let size = prop_oneof![8 => 1usize..=8, 3 => 1usize..=64, 1 => 1usize..=4096];
    prop_oneof![
        6 => (size.clone(), 0u8..3).prop_map(|(size, policy)| Op::Alloc { size, policy }),
        4 => (size, any::<(u8, u8, u8, u16, u16)>(), 0u8..3).prop_map(|(size, c, policy)| Op::XAlloc { size, c, policy }),
        9 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        1 => any::<usize>().prop_map(|pick| Op::FreeWrongSize { pick }),
        1 => (0usize..1 << 22).prop_map(|addr| Op::FreeBogus { addr }),
        1 => Just(Op::DoubleFree),
        1 => ((0usize..1 << 10), 1usize..512).prop_map(|(b, s)| Op::Add { base: b << 12, size: s }),
        1 => Just(Op::Reap),
    ]
}

fn flags(policy: u8) -> Flags {
    [Flags::INSTANT_FIT, Flags::BEST_FIT, Flags::NEXT_FIT][policy as usize % 3]
}

/// Builds constraints from random bytes, in units of the quantum; about half unconstrained.
fn constraints(q: usize, size: usize, (a, p, n, lo, hi): (u8, u8, u8, u16, u16)) -> Constraints {
    let mut c = Constraints::default();
    if a & 1 == 1 {
        c.align = q << ((a >> 1) % 8);
        c.phase = (p as usize % (c.align / q)) * q;
    }
    if n & 1 == 1 {
        c.nocross = (q << ((n >> 1) % 12)).max(size.next_power_of_two() * q);
        if c.phase % c.nocross + size * q > c.nocross {
            c.phase = 0;
        }
    }
    if lo & 3 == 1 {
        c.min = (lo as usize >> 2) * q * 16;
    }
    if hi & 3 == 1 {
        c.max = Some(c.min + ((hi as usize >> 2) + 1) * q * 16);
    }
    c
}

/// Reference: does any placement satisfy `c` inside a free segment?
fn placement_exists(free: &[(usize, usize)], q: usize, size: usize, c: &Constraints) -> bool {
    let align = c.align.max(q);
    free.iter().any(|&(s, n)| {
        let hi = c.max.map_or(s + n, |m| m.min(s + n));
        let mut x = s.max(c.min);
        x = x.div_ceil(align) * align + c.phase;
        if x >= align && x - align >= s.max(c.min) {
            x -= align;
        }
        // Enough candidates to step over one nocross boundary.
        let steps = if c.nocross == 0 {
            1
        } else {
            c.nocross / align + 2
        };
        (0..steps).any(|i| {
            let a = x + i * align;
            a + size <= hi && (c.nocross == 0 || a / c.nocross == (a + size - 1) / c.nocross)
        })
    })
}

struct Harness {
    q: usize,
    arena: A,
    parent: Option<A>,
    live: BTreeMap<usize, usize>,
    keys: Vec<usize>,
    freed: Vec<(usize, usize)>,
}

impl Harness {
    fn new(kind: u8) -> Harness {
        let (q, qcache_max, import) = match kind % 4 {
            0 => (1, 0, false),
            1 => (16, 0, false),
            2 => (8, 64, false),
            _ => (16, 0, true),
        };
        let cfg = ArenaConfig {
            name: "model",
            quantum: q,
            qcache_max,
            import_quantum: import.then_some(q * 64),
            span: (!import).then_some((0, q * 4096)),
        };
        let parent = import.then(|| {
            let pcfg = ArenaConfig {
                name: "parent",
                quantum: q,
                span: Some((1 << 30, q * 8192)),
                ..Default::default()
            };
            Arena::new(&pcfg, HeapPages::new()).unwrap()
        });
        Harness {
            q,
            arena: Arena::new(&cfg, HeapPages::new()).unwrap(),
            parent,
            live: BTreeMap::new(),
            keys: Vec::new(),
            freed: Vec::new(),
        }
    }

    fn free_segments(&self) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        self.arena.walk(SegKindSet::FREE, |s, n| v.push((s, n)));
        v
    }

    fn record(&mut self, r: Result<usize, VmemError>, size: usize, c: &Constraints) {
        let q = self.q;
        let rsize = size * q;
        match r {
            Ok(addr) => {
                let align = c.align.max(q);
                assert_eq!(addr % align, c.phase, "{c:?}");
                assert!(
                    addr >= c.min && addr + rsize <= c.max.unwrap_or(usize::MAX),
                    "{addr:#x} {c:?}"
                );
                if let Some(first) = addr.checked_div(c.nocross) {
                    assert_eq!(
                        Some(first),
                        (addr + rsize - 1).checked_div(c.nocross),
                        "{c:?}"
                    );
                }
                if let Some((&a, &n)) = self.live.range(..addr + rsize).next_back() {
                    assert!(a + n <= addr, "overlap with live [{a:#x}, +{n:#x})");
                }
                self.live.insert(addr, rsize);
                self.keys.push(addr);
            }
            Err(VmemError::NoSpace) => {
                assert!(
                    !placement_exists(&self.free_segments(), q, rsize, c),
                    "NoSpace but a placement exists for {rsize:#x} {c:?}"
                );
                if let Some(p) = &self.parent {
                    // The import path must have used the parent if it could have helped.
                    let mut pfree = Vec::new();
                    p.walk(SegKindSet::FREE, |s, n| pfree.push((s, n)));
                    let plain = c.nocross == 0 && c.min == 0 && c.max.is_none();
                    let could = if plain {
                        let slack = c.align.max(q) - q;
                        placement_exists(&pfree, q, rsize + slack, &Constraints::default())
                    } else {
                        placement_exists(&pfree, q, rsize, c)
                    };
                    assert!(
                        !could,
                        "NoSpace although the parent could supply {rsize:#x} {c:?}"
                    );
                }
            }
            Err(VmemError::NoTags) => panic!("unlimited page source ran out"),
            Err(VmemError::BadConstraint(_)) => {}
            Err(e) => panic!("unexpected {e:?} for {size} {c:?}"),
        }
    }

    fn free_one(&mut self, pick: usize, xfree: bool) {
        if self.keys.is_empty() {
            return;
        }
        let addr = self.keys.swap_remove(pick % self.keys.len());
        let size = self.live.remove(&addr).unwrap();
        let r = match self.parent.as_mut() {
            Some(p) if xfree => self.arena.xfree_releasing(addr, size, p),
            Some(p) => self.arena.free_releasing(addr, size, p),
            None if xfree => self.arena.xfree(addr, size).map(|r| assert!(r.is_none())),
            None => self.arena.free(addr, size).map(|r| assert!(r.is_none())),
        };
        r.unwrap();
        self.freed.push((addr, size));
    }

    fn apply(&mut self, op: &Op) {
        let q = self.q;
        match *op {
            Op::Alloc { size, policy } => {
                let r = match self.parent.as_mut() {
                    Some(p) => self.arena.alloc_importing(size * q, flags(policy), p),
                    None => self.arena.alloc(size * q, flags(policy)),
                };
                self.record(r, size, &Constraints::default());
            }
            Op::XAlloc { size, c, policy } => {
                let c = constraints(q, size, c);
                let r = match self.parent.as_mut() {
                    Some(p) => self.arena.xalloc_importing(size * q, &c, flags(policy), p),
                    None => self.arena.xalloc(size * q, &c, flags(policy)),
                };
                self.record(r, size, &c);
            }
            Op::Free { pick } => self.free_one(pick, pick & 1 == 1),
            Op::FreeWrongSize { pick } => {
                if let Some(&addr) = self.keys.get(pick % self.keys.len().max(1)) {
                    let size = self.live[&addr];
                    assert!(self.arena.free(addr, size + q).is_err());
                    assert!(self.arena.xfree(addr, size + q).is_err());
                }
            }
            Op::FreeBogus { addr } => {
                let addr = addr * q;
                if !self.live.contains_key(&addr) {
                    assert!(
                        self.arena.xfree(addr, q).is_err(),
                        "bogus free of {addr:#x} accepted"
                    );
                }
            }
            Op::DoubleFree => {
                if let Some(&(addr, size)) = self.freed.last() {
                    if !self.live.contains_key(&addr) {
                        assert!(
                            self.arena.free(addr, size).is_err(),
                            "double free of {addr:#x} accepted"
                        );
                    }
                }
            }
            Op::Add { base, size } => {
                if self.parent.is_none() {
                    let base = (1 << 40) + base * q;
                    let r = self.arena.add(base, size * q);
                    assert!(
                        matches!(r, Ok(()) | Err(VmemError::Overlap { .. })),
                        "{r:?}"
                    );
                }
            }
            Op::Reap => {
                let parent = &mut self.parent;
                self.arena.reap(&mut |r| {
                    if let Some(p) = parent.as_mut() {
                        p.xfree(r.base, r.size).unwrap();
                    }
                });
            }
        }
        self.check();
    }

    fn check(&self) {
        if let Err(e) = self.arena.audit() {
            panic!("audit: {e:?}");
        }
        let live: usize = self.live.values().sum();
        let inuse = self.arena.size(SegKindSet::ALLOC);
        if self.arena.qcache_max() == 0 {
            assert_eq!(inuse, live);
        } else {
            assert!(inuse >= live);
        }
        if let Some(p) = &self.parent {
            p.audit().unwrap();
            // Every parent allocation is a child import and vice versa.
            assert_eq!(
                p.size(SegKindSet::ALLOC),
                self.arena.size(SegKindSet::TOTAL)
            );
        }
    }

    fn teardown(mut self) {
        while !self.keys.is_empty() {
            self.free_one(0, false);
            self.check();
        }
        let parent = &mut self.parent;
        self.arena
            .destroy(&mut |r| {
                if let Some(p) = parent.as_mut() {
                    p.xfree(r.base, r.size).unwrap();
                }
            })
            .unwrap();
        assert_eq!(self.arena.pages_held(), 0);
        if let Some(p) = &self.parent {
            assert_eq!(p.size(SegKindSet::ALLOC), 0);
            p.audit().unwrap();
        }
    }
}

fn total_ops() -> usize {
    std::env::var("VMEM_MODEL_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: (total_ops() / OPS_PER_CASE).max(1) as u32,
        max_shrink_iters: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arena_matches_model(kind in any::<u8>(), ops in proptest::collection::vec(op(), OPS_PER_CASE)) {
        let mut h = Harness::new(kind);
        for op in &ops {
            h.apply(op);
        }
        h.teardown();
    }
}
