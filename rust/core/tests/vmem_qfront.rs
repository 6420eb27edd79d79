// SPDX-License-Identifier: GPL-2.0
//! Model tests of the quantum-cache magazine front (`QcFront`: per-CPU magazines from the
//! magazine core over slabs with a "handed out" bitmap) against the plain quantum cache
//! (`Arena::alloc`/`Arena::free` with `qcache_max`): random allocations, frees, double frees,
//! wrong-size and wild frees on two simulated CPUs, depot trims, drains and refused destroys.
//! After every step: the same verdict as the plain arena (same error, `WrongSize` with the same
//! allocated size), no integer handed out twice, the backing arena's audit, and the exact live
//! count. At the end every page goes back.

use std::collections::BTreeMap;

use kmalloc43_core::hosted::magazines::{boxed_magazine, free_magazine};
use kmalloc43_core::hosted::vmem::HeapPages;
use kmalloc43_core::magazine::{CpuMagazines, Depot, MagBox};
use kmalloc43_core::vmem::{
    Arena, ArenaConfig, FastFree, Flags, QcFront, SegKindSet, VmemError, SLAB_OBJS,
};
use proptest::prelude::*;

type A = Arena<HeapPages>;

/// The glue's protocol, one arena: a front, per-CPU magazines per cache, a depot per cache.
struct Sut {
    arena: A,
    front: QcFront,
    cpus: Vec<Vec<CpuMagazines>>,
    depots: Vec<Depot>,
}

fn new_arena(quantum: usize, qcache_max: usize, span: (usize, usize)) -> A {
    let cfg = ArenaConfig {
        name: "qfront",
        quantum,
        qcache_max,
        span: Some(span),
        ..Default::default()
    };
    Arena::new(&cfg, HeapPages::new()).unwrap()
}

impl Sut {
    fn new(quantum: usize, qcache_max: usize, span: (usize, usize), ncpus: usize) -> Self {
        let front = QcFront::new(quantum, qcache_max);
        let n = front.ncaches();
        Sut {
            arena: new_arena(quantum, 0, span),
            front,
            cpus: (0..ncpus)
                .map(|_| (0..n).map(|_| CpuMagazines::new()).collect())
                .collect(),
            depots: (0..n).map(|_| Depot::new(3, 62)).collect(),
        }
    }

    fn alloc(&mut self, cpu: usize, size: usize) -> Result<usize, VmemError> {
        if let Some(i) = self.front.cache_index(size) {
            let c = &mut self.cpus[cpu][i];
            if let Some(r) = self.front.alloc(i, c) {
                return Ok(r);
            }
            let mut spare = Some(boxed_magazine(62));
            let r = self
                .front
                .refill(i, c, &mut self.depots[i], &mut self.arena, &mut spare);
            if let Some(m) = spare {
                free_magazine(m);
            }
            if let Ok(r) = r {
                return Ok(r);
            }
        }
        self.arena.alloc(size, Flags::default())
    }

    fn free(&mut self, cpu: usize, addr: usize, size: usize) -> Result<(), VmemError> {
        if let Some(i) = self.front.cache_index(size) {
            let c = &mut self.cpus[cpu][i];
            match self.front.free(i, c, addr)? {
                FastFree::Done => return Ok(()),
                FastFree::Full(a) => {
                    let mut spare = Some(boxed_magazine(62));
                    self.front.unload(i, c, &mut self.depots[i], &mut spare, a);
                    if let Some(m) = spare {
                        free_magazine(m);
                    }
                    return Ok(());
                }
                FastFree::NotCached => {}
            }
        }
        self.front
            .arena_free(&mut self.arena, addr, size)
            .map(|r| assert!(r.is_none(), "no imported spans here"))
    }

    fn flush(&mut self) {
        for cpu in &mut self.cpus {
            for (i, c) in cpu.iter_mut().enumerate() {
                self.front.flush_cpu(i, c, free_magazine);
            }
        }
        for (i, d) in self.depots.iter_mut().enumerate() {
            self.front.flush_depot(i, d, free_magazine);
        }
    }

    fn trim(&mut self) {
        for (i, d) in self.depots.iter_mut().enumerate() {
            d.update();
            self.front.trim_depot(i, d, free_magazine);
        }
    }

    fn drain(&mut self) {
        self.flush();
        self.front
            .release_idle(&mut self.arena, &mut |_| panic!("no spans"));
    }

    fn destroy(&mut self) -> Result<(), VmemError> {
        self.flush();
        self.front
            .destroy(&mut self.arena, &mut |_| panic!("no spans"))
    }
}

/// An error with the addresses left out (the two arenas hand out different integers).
fn shape(e: VmemError) -> (u8, usize) {
    match e {
        VmemError::BadFree { .. } => (1, 0),
        VmemError::DoubleFree { .. } => (2, 0),
        VmemError::WrongSize { allocated, .. } => (3, allocated),
        VmemError::BadSize => (4, 0),
        VmemError::LiveSegments { count, bytes } => (5, count * 1_000_000 + bytes),
        _ => (9, 0),
    }
}

#[derive(Clone, Debug)]
enum Op {
    Alloc { cpu: usize, k: usize },
    Free { cpu: usize, pick: usize },
    DoubleFree { cpu: usize, pick: usize },
    WrongSize { cpu: usize, pick: usize, k: usize },
    Inside { cpu: usize, pick: usize },
    Trim,
    Drain,
    Destroy,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..2usize, 1..12usize).prop_map(|(cpu, k)| Op::Alloc { cpu, k }),
        6 => (0..2usize, any::<usize>()).prop_map(|(cpu, pick)| Op::Free { cpu, pick }),
        1 => (0..2usize, any::<usize>()).prop_map(|(cpu, pick)| Op::DoubleFree { cpu, pick }),
        1 => (0..2usize, any::<usize>(), 1..12usize)
            .prop_map(|(cpu, pick, k)| Op::WrongSize { cpu, pick, k }),
        1 => (0..2usize, any::<usize>()).prop_map(|(cpu, pick)| Op::Inside { cpu, pick }),
        1 => Just(Op::Trim),
        1 => Just(Op::Drain),
        1 => Just(Op::Destroy),
    ]
}

struct Live {
    sut: usize,
    plain: usize,
    size: usize,
}

fn run(quantum: usize, qcache_max: usize, span: (usize, usize), ops: &[Op]) {
    let mut sut = Sut::new(quantum, qcache_max, span, 2);
    let mut plain = new_arena(quantum, qcache_max, span);
    let mut live: Vec<Live> = Vec::new();
    let mut freed: Vec<Live> = Vec::new();
    for op in ops {
        match *op {
            Op::Alloc { cpu, k } => {
                let size = k * quantum;
                let (s, p) = (sut.alloc(cpu, size), plain.alloc(size, Flags::default()));
                assert_eq!(s.is_ok(), p.is_ok(), "alloc {size}: {s:?} vs {p:?}");
                if let (Ok(s), Ok(p)) = (s, p) {
                    live.push(Live {
                        sut: s,
                        plain: p,
                        size,
                    });
                }
            }
            Op::Free { cpu, pick } if !live.is_empty() => {
                let l = live.swap_remove(pick % live.len());
                assert_eq!(sut.free(cpu, l.sut, l.size), Ok(()));
                assert_eq!(plain.free(l.plain, l.size), Ok(None));
                freed.push(l);
            }
            Op::DoubleFree { cpu, pick } if !freed.is_empty() => {
                let l = &freed[pick % freed.len()];
                // Another live integer may have reused the freed one in either arena: then
                // the free is a good free there; only compare when it is free in both.
                let reused = |a: usize, f: fn(&Live) -> usize| live.iter().any(|x| f(x) == a);
                if !reused(l.sut, |x| x.sut) && !reused(l.plain, |x| x.plain) {
                    let s = sut.free(cpu, l.sut, l.size);
                    let p = plain.free(l.plain, l.size);
                    assert!(s.is_err() && p.is_err(), "double free: {s:?} vs {p:?}");
                    assert!(matches!(
                        s,
                        Err(VmemError::DoubleFree { .. } | VmemError::BadFree { .. })
                    ));
                }
            }
            Op::WrongSize { cpu, pick, k } if !live.is_empty() => {
                let l = &live[pick % live.len()];
                let size = k * quantum;
                if size != l.size {
                    let s = sut.free(cpu, l.sut, size).map(|_| ());
                    let p = plain.free(l.plain, size).map(|_| ());
                    assert_eq!(
                        s.map_err(shape),
                        p.map_err(shape),
                        "wrong size {size} of {}",
                        l.size
                    );
                }
            }
            Op::Inside { cpu, pick } if !live.is_empty() => {
                let l = &live[pick % live.len()];
                if l.size > quantum {
                    let s = sut.free(cpu, l.sut + quantum, l.size - quantum);
                    let p = plain.free(l.plain + quantum, l.size - quantum);
                    assert!(s.is_err() && p.is_err(), "inside: {s:?} vs {p:?}");
                }
            }
            Op::Trim => sut.trim(),
            Op::Drain => {
                sut.drain();
                plain.reap(&mut |_| panic!("no spans"));
            }
            Op::Destroy if !live.is_empty() => {
                let before: Vec<(usize, usize)> = {
                    let mut v = Vec::new();
                    sut.arena.walk(SegKindSet::TOTAL, |a, n| v.push((a, n)));
                    v
                };
                let s = sut.destroy();
                let p = plain.destroy(&mut |_| panic!("no spans"));
                assert_eq!(s.map_err(shape), p.map_err(shape), "refused destroy");
                let mut after = Vec::new();
                sut.arena.walk(SegKindSet::TOTAL, |a, n| after.push((a, n)));
                assert_eq!(
                    before, after,
                    "a refused destroy leaves the arena untouched"
                );
            }
            _ => {}
        }
        sut.arena.audit().unwrap();
        let mut seen = BTreeMap::new();
        for l in &live {
            assert!(
                seen.insert(l.sut, l.size).is_none(),
                "{:#x} handed out twice",
                l.sut
            );
        }
        let mut end = 0;
        for (&a, &n) in &seen {
            assert!(a >= end, "live integers overlap at {a:#x}");
            end = a + n;
        }
        let cached = live
            .iter()
            .filter(|l| sut.front.cache_index(l.size).is_some())
            .count();
        assert!(sut.front.table().live().0 <= cached);
    }
    for l in live.drain(..) {
        assert_eq!(sut.free(0, l.sut, l.size), Ok(()));
        assert_eq!(plain.free(l.plain, l.size), Ok(None));
    }
    assert_eq!(sut.front.table().live(), (0, 0));
    assert_eq!(sut.destroy(), Ok(()));
    assert_eq!(sut.arena.pages_held(), 0);
    assert_eq!(sut.front.table().slabs(), (0, 0));
    plain.destroy(&mut |_| panic!("no spans")).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn vmem_qfront_model_addresses(ops in prop::collection::vec(op(), 1..400)) {
        run(16, 128, (0x10_0000, 1 << 24), &ops);
    }

    #[test]
    fn vmem_qfront_model_ids_from_zero(ops in prop::collection::vec(op(), 1..400)) {
        run(1, 8, (0, 1 << 20), &ops);
    }
}

#[test]
fn vmem_qfront_double_free_in_a_magazine_is_caught_and_changes_nothing() {
    let mut sut = Sut::new(8, 64, (0x1000, 1 << 20), 1);
    let a = sut.alloc(0, 24).unwrap();
    let b = sut.alloc(0, 24).unwrap();
    sut.free(0, a, 24).unwrap();
    let rounds = sut.cpus[0][2].rounds();
    assert_eq!(sut.free(0, a, 24), Err(VmemError::DoubleFree { addr: a }));
    assert_eq!(
        sut.cpus[0][2].rounds(),
        rounds,
        "the refused free put nothing in a magazine"
    );
    assert_eq!(
        sut.free(0, b, 16),
        Err(VmemError::WrongSize {
            addr: b,
            size: 16,
            allocated: 24
        })
    );
    assert_eq!(
        sut.free(0, b, 32),
        Err(VmemError::WrongSize {
            addr: b,
            size: 32,
            allocated: 24
        })
    );
    assert_eq!(sut.front.table().live(), (1, 24));
    sut.free(0, b, 24).unwrap();
    assert_eq!(sut.alloc(0, 24), Ok(b), "LIFO magazine");
    sut.free(0, b, 24).unwrap();
    assert_eq!(sut.destroy(), Ok(()));
}

#[test]
fn vmem_qfront_slab_cannot_be_freed_by_a_client() {
    let mut sut = Sut::new(8, 64, (0x1000, 1 << 20), 1);
    let a = sut.alloc(0, 8).unwrap();
    let base = a & !(SLAB_OBJS * 8 - 1);
    let r = sut.free(0, base, SLAB_OBJS * 8);
    assert!(r.is_err(), "{r:?}");
    sut.arena.audit().unwrap();
    assert_eq!(
        sut.destroy(),
        Err(VmemError::LiveSegments { count: 1, bytes: 8 })
    );
    assert_eq!(
        sut.front.table().slabs().0,
        1,
        "refused destroy kept the slab"
    );
    sut.free(0, a, 8).unwrap();
    assert_eq!(sut.destroy(), Ok(()));
}

#[test]
fn vmem_qfront_cross_cpu_free_and_trim_return_everything() {
    let mut sut = Sut::new(4, 32, (0x4000, 1 << 20), 2);
    let v: Vec<usize> = (0..500).map(|_| sut.alloc(0, 12).unwrap()).collect();
    for &x in &v {
        sut.free(1, x, 12).unwrap();
    }
    for _ in 0..3 {
        sut.trim();
    }
    sut.drain();
    let mut n = 0;
    sut.arena.walk(SegKindSet::ALLOC, |_, _| n += 1);
    assert_eq!(n, 0, "drain gave every idle slab back");
    let _: Option<MagBox> = None;
    assert_eq!(sut.destroy(), Ok(()));
}

#[test]
fn vmem_qfront_a_failed_refill_sends_the_next_misses_to_the_arena() {
    let front = QcFront::new(16, 64);
    assert!(!front.bypass_miss(), "no refill failed yet");
    front.refill_failed();
    let mut bypassed = 0;
    while front.bypass_miss() {
        bypassed += 1;
        assert!(bypassed <= 1000, "the back-off ends");
    }
    assert_eq!(bypassed, 64);
    assert!(!front.bypass_miss());
}
