// SPDX-License-Identifier: GPL-2.0
//! Unit tests of the vmem core, one concept at a time; `audit()` runs after every operation.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use kmalloc43_core::hosted::vmem::{HeapPages, WaitingArena};
use kmalloc43_core::vmem::{
    Arena, ArenaConfig, ConstraintError, Constraints, Flags, Magazine, SegKindSet, SpanRelease,
    SpanSource, VmemError,
};

type A = Arena<HeapPages>;

fn arena(quantum: usize, span: Option<(usize, usize)>) -> A {
    let cfg = ArenaConfig {
        name: "test",
        quantum,
        span,
        ..Default::default()
    };
    Arena::new(&cfg, HeapPages::new()).unwrap()
}

fn ok(a: &A) {
    if let Err(e) = a.audit() {
        panic!("audit failed: {e:?}");
    }
}

fn segs(a: &A, which: SegKindSet) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    a.walk(which, |s, n| v.push((s, n)));
    v
}

#[test]
fn identifier_arena_starts_at_zero_and_fails_with_err() {
    let mut a = arena(1, Some((0, 4)));
    let ids: Vec<usize> = (0..4)
        .map(|_| a.alloc(1, Flags::NEXT_FIT).unwrap())
        .collect();
    ok(&a);
    assert_eq!(ids, vec![0, 1, 2, 3]);
    assert_eq!(a.alloc(1, Flags::NEXT_FIT), Err(VmemError::NoSpace));
    assert_eq!(a.stats().fail, 1);
    a.free(0, 1).unwrap();
    ok(&a);
    assert_eq!(a.alloc(1, Flags::INSTANT_FIT), Ok(0));
    ok(&a);
}

#[test]
fn bad_input_is_an_error() {
    let mut a = arena(8, Some((0x1000, 0x1000)));
    assert_eq!(a.alloc(0, Flags::default()), Err(VmemError::BadSize));
    assert_eq!(
        a.alloc(usize::MAX, Flags::default()),
        Err(VmemError::BadSize)
    );
    let x = a.alloc(16, Flags::default()).unwrap();
    assert_eq!(
        a.free(x + 8, 8),
        Err(VmemError::BadFree {
            addr: x + 8,
            size: 8
        })
    );
    assert_eq!(
        a.free(x, 24),
        Err(VmemError::WrongSize {
            addr: x,
            size: 24,
            allocated: 16
        })
    );
    assert_eq!(
        a.free(0x9000, 8),
        Err(VmemError::BadFree {
            addr: 0x9000,
            size: 8
        })
    );
    a.free(x, 16).unwrap();
    ok(&a);
    assert_eq!(a.free(x, 16), Err(VmemError::DoubleFree { addr: x }));
    assert_eq!(
        a.add(0x1800, 0x1000),
        Err(VmemError::Overlap {
            base: 0x1800,
            size: 0x1000
        })
    );
    assert_eq!(
        a.add(0x0800, 0x1000),
        Err(VmemError::Overlap {
            base: 0x0800,
            size: 0x1000
        })
    );
    assert_eq!(
        a.add(0x3003, 8),
        Err(VmemError::BadSpan {
            base: 0x3003,
            size: 8
        })
    );
    assert_eq!(
        a.add(0x3000, 0),
        Err(VmemError::BadSpan {
            base: 0x3000,
            size: 0
        })
    );
    assert_eq!(
        a.add(usize::MAX - 7, 16),
        Err(VmemError::BadSpan {
            base: usize::MAX - 7,
            size: 16
        })
    );
    let bad = |c: Constraints, size| {
        let mut a = arena(8, Some((0, 0x1000)));
        match a.xalloc(size, &c, Flags::default()) {
            Err(VmemError::BadConstraint(e)) => e,
            r => panic!("{c:?} gave {r:?}"),
        }
    };
    let c = Constraints::default();
    assert_eq!(
        bad(Constraints { align: 24, ..c }, 8),
        ConstraintError::AlignNotPowerOfTwo
    );
    assert_eq!(
        bad(
            Constraints {
                align: 16,
                phase: 16,
                ..c
            },
            8
        ),
        ConstraintError::PhaseNotBelowAlign
    );
    assert_eq!(
        bad(
            Constraints {
                align: 16,
                phase: 4,
                ..c
            },
            8
        ),
        ConstraintError::PhaseNotQuantum
    );
    assert_eq!(
        bad(Constraints { nocross: 48, ..c }, 8),
        ConstraintError::NocrossNotPowerOfTwo
    );
    assert_eq!(
        bad(Constraints { nocross: 16, ..c }, 24),
        ConstraintError::NocrossBelowSize
    );
    assert_eq!(
        bad(
            Constraints {
                align: 64,
                phase: 24,
                nocross: 32,
                ..c
            },
            16
        ),
        ConstraintError::PhaseCrossesNocross
    );
    assert_eq!(
        bad(
            Constraints {
                min: 64,
                max: Some(64),
                ..c
            },
            8
        ),
        ConstraintError::EmptyRange
    );
    ok(&a);
    let bad_cfg = |quantum, qcache_max, import_quantum| {
        let cfg = ArenaConfig {
            quantum,
            qcache_max,
            import_quantum,
            ..Default::default()
        };
        Arena::new(&cfg, HeapPages::new()).err()
    };
    assert_eq!(bad_cfg(3, 0, None), Some(VmemError::BadConfig));
    assert_eq!(bad_cfg(8, 12, None), Some(VmemError::BadConfig));
    assert_eq!(bad_cfg(8, 8 * 17, None), Some(VmemError::BadConfig));
    assert_eq!(bad_cfg(8, 0, Some(12)), Some(VmemError::BadConfig));
}

#[test]
fn free_coalesces_neighbours() {
    let mut a = arena(1, Some((100, 30)));
    let x: Vec<usize> = (0..3)
        .map(|_| {
            a.xalloc(10, &Constraints::default(), Flags::BEST_FIT)
                .unwrap()
        })
        .collect();
    assert_eq!(x, vec![100, 110, 120]);
    ok(&a);
    a.xfree(110, 10).unwrap();
    ok(&a);
    assert_eq!(segs(&a, SegKindSet::FREE), vec![(110, 10)]);
    a.xfree(100, 10).unwrap();
    ok(&a);
    assert_eq!(segs(&a, SegKindSet::FREE), vec![(100, 20)]);
    a.xfree(120, 10).unwrap();
    ok(&a);
    assert_eq!(segs(&a, SegKindSet::FREE), vec![(100, 30)]);
    assert_eq!(a.size(SegKindSet::ALLOC), 0);
    assert_eq!(a.size(SegKindSet::TOTAL), 30);
}

/// Leaves free segments of sizes 1, 3, 9 (in that address order) with allocated gaps between.
fn holes() -> A {
    let mut a = arena(1, Some((0, 100)));
    let c = Constraints::default();
    let mut keep = Vec::new();
    for size in [1, 1, 3, 1, 9, 1] {
        keep.push((a.xalloc(size, &c, Flags::BEST_FIT).unwrap(), size));
    }
    // [0]=hole1 [1]=gap [2..5]=hole3 [5]=gap [6..15]=hole9 [15]=gap, rest free (16..100)
    for &(addr, size) in &[keep[0], keep[2], keep[4]] {
        a.xfree(addr, size).unwrap();
    }
    ok(&a);
    a
}

#[test]
fn instant_fit_takes_a_guaranteed_fit_best_fit_the_smallest() {
    let mut a = holes();
    // size 3: instant-fit needs a list whose every segment is >= 3, i.e. sizes >= 4: the 9-hole.
    assert_eq!(a.alloc(3, Flags::INSTANT_FIT), Ok(6));
    ok(&a);
    let mut b = holes();
    assert_eq!(b.xalloc(3, &Constraints::default(), Flags::BEST_FIT), Ok(2));
    ok(&b);
    // size 2 by best fit goes to the 3-hole too; size 1 to the 1-hole.
    assert_eq!(b.xalloc(1, &Constraints::default(), Flags::BEST_FIT), Ok(0));
    ok(&b);
}

#[test]
fn next_fit_does_not_reuse_at_once() {
    let mut a = arena(1, Some((0, 8)));
    let x = a.alloc(1, Flags::NEXT_FIT).unwrap();
    a.free(x, 1).unwrap();
    ok(&a);
    let y = a.alloc(1, Flags::NEXT_FIT).unwrap();
    assert_ne!(x, y);
    let mut seen = vec![x, y];
    for _ in 0..6 {
        let z = a.alloc(1, Flags::NEXT_FIT).unwrap();
        a.free(z, 1).unwrap();
        ok(&a);
        seen.push(z);
    }
    assert_eq!(seen, vec![0, 1, 2, 3, 4, 5, 6, 7]);
    // wraps around
    a.free(y, 1).unwrap();
    assert_eq!(a.alloc(1, Flags::NEXT_FIT), Ok(0));
    ok(&a);
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri; covered natively")]
fn xalloc_honours_every_constraint() {
    let q = 16;
    for (align, phase, nocross, min, max) in [
        (64, 0, 0, 0, None),
        (64, 16, 0, 0, None),
        (256, 48, 0, 0, None),
        (0, 0, 128, 0, None),
        (32, 16, 64, 0, None),
        (0, 0, 0, 0x1230, None),
        (0, 0, 0, 0, Some(0x1800)),
        (128, 32, 256, 0x1100, Some(0x1f00)),
    ] {
        for policy in [Flags::INSTANT_FIT, Flags::BEST_FIT, Flags::NEXT_FIT] {
            let mut a = arena(q, Some((0x1010, 0x1000)));
            let c = Constraints {
                align,
                phase,
                nocross,
                min,
                max,
            };
            let mut got = Vec::new();
            loop {
                match a.xalloc(48, &c, policy) {
                    Ok(addr) => {
                        ok(&a);
                        let align = align.max(q);
                        assert_eq!(addr % align, phase, "{c:?}");
                        if let Some(first) = addr.checked_div(nocross) {
                            let last = (addr + 47).checked_div(nocross);
                            assert_eq!(Some(first), last, "{c:?} crosses at {addr:#x}");
                        }
                        assert!(addr >= min && addr + 48 <= max.unwrap_or(usize::MAX));
                        assert!(addr >= 0x1010 && addr + 48 <= 0x2010);
                        got.push(addr);
                    }
                    Err(VmemError::NoSpace) => break,
                    Err(e) => panic!("{e:?}"),
                }
            }
            assert!(!got.is_empty(), "{c:?} never fit");
            // Exhaustion is real: brute force finds no remaining valid placement.
            let free = segs(&a, SegKindSet::FREE);
            for (s, n) in free {
                let mut x = s;
                while x + 48 <= s + n {
                    let fits = x % align.max(q) == phase
                        && (nocross == 0 || x / nocross == (x + 47) / nocross)
                        && x >= min
                        && x + 48 <= max.unwrap_or(usize::MAX);
                    assert!(!fits, "{c:?} {policy:?}: {x:#x} was available");
                    x += q;
                }
            }
            for addr in got {
                a.xfree(addr, 48).unwrap();
                ok(&a);
            }
            assert_eq!(segs(&a, SegKindSet::FREE), vec![(0x1010, 0x1000)]);
        }
    }
}

/// Counts imports and releases of a parent arena.
struct Parent {
    arena: A,
    imports: usize,
    releases: Vec<SpanRelease>,
}

impl SpanSource for Parent {
    fn import(&mut self, req: &kmalloc43_core::vmem::ImportRequest) -> Result<usize, VmemError> {
        self.imports += 1;
        self.arena.import(req)
    }
    fn release(&mut self, span: SpanRelease) {
        self.releases.push(span);
        self.arena.release(span);
    }
}

#[test]
fn import_from_source_and_release_whole_spans() {
    let mut parent = Parent {
        arena: arena(4096, Some((0x10_0000, 0x10_0000))),
        imports: 0,
        releases: Vec::new(),
    };
    let cfg = ArenaConfig {
        name: "child",
        quantum: 64,
        import_quantum: Some(0x4000),
        ..Default::default()
    };
    let mut child = Arena::new(&cfg, HeapPages::new()).unwrap();
    let x = child
        .alloc_importing(100, Flags::default(), &mut parent)
        .unwrap();
    ok(&child);
    ok(&parent.arena);
    assert_eq!(parent.imports, 1);
    assert_eq!(child.stats().mem_import, 0x4000);
    assert_eq!(parent.arena.size(SegKindSet::ALLOC), 0x4000);
    // A second small allocation comes from the same span.
    let y = child
        .alloc_importing(64, Flags::default(), &mut parent)
        .unwrap();
    assert_eq!(parent.imports, 1);
    // An aligned request imports a span whose base satisfies it.
    let c = Constraints {
        align: 0x8000,
        phase: 0x40,
        ..Default::default()
    };
    let z = child
        .xalloc_importing(0x5000, &c, Flags::default(), &mut parent)
        .unwrap();
    ok(&child);
    assert_eq!(z % 0x8000, 0x40);
    assert_eq!(parent.imports, 2);
    child.free_releasing(x, 100, &mut parent).unwrap();
    ok(&child);
    assert!(parent.releases.is_empty());
    child.free_releasing(y, 64, &mut parent).unwrap();
    ok(&child);
    assert_eq!(parent.releases.len(), 1);
    assert_eq!(parent.releases[0].size, 0x4000);
    child.xfree_releasing(z, 0x5000, &mut parent).unwrap();
    ok(&child);
    ok(&parent.arena);
    assert_eq!(parent.releases.len(), 2);
    assert_eq!(child.size(SegKindSet::TOTAL), 0);
    assert_eq!(parent.arena.size(SegKindSet::ALLOC), 0);
    assert_eq!(child.stats().import, 2);
    assert_eq!(child.stats().release, 2);
}

#[test]
fn lock_dropping_seam_reports_import_needed() {
    let cfg = ArenaConfig {
        quantum: 8,
        import_quantum: Some(256),
        ..Default::default()
    };
    let mut a = Arena::new(&cfg, HeapPages::new()).unwrap();
    let req = match a.alloc(40, Flags::default()) {
        Err(VmemError::ImportNeeded(r)) => r,
        r => panic!("{r:?}"),
    };
    assert_eq!(req.size, 256);
    a.add_imported(0x800, req.size).unwrap();
    ok(&a);
    let x = a.alloc(40, Flags::default()).unwrap();
    assert_eq!(x, 0x800);
    assert_eq!(
        a.free(x, 40),
        Ok(Some(SpanRelease {
            base: 0x800,
            size: 256
        }))
    );
    ok(&a);
    assert_eq!(a.size(SegKindSet::TOTAL), 0);
    // nocross smaller than the import quantum: import just the request.
    let c = Constraints {
        nocross: 64,
        ..Default::default()
    };
    match a.xalloc(40, &c, Flags::default()) {
        Err(VmemError::ImportNeeded(r)) => {
            assert_eq!(r.size, 40);
            assert_eq!(r.constraints.nocross, 64);
        }
        r => panic!("{r:?}"),
    }
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri; covered natively")]
fn hash_grows_and_shrinks() {
    let mut a = arena(1, Some((0, 1 << 20)));
    let pages0 = a.pages_held();
    let xs: Vec<usize> = (0..5000)
        .map(|_| a.alloc(1, Flags::default()).unwrap())
        .collect();
    ok(&a);
    let grown = a.pages_held();
    assert!(a.stats().hash_rescale >= 2, "{:?}", a.stats());
    assert!(a.stats().lookup_max_chain <= 16);
    for x in xs {
        a.free(x, 1).unwrap();
    }
    ok(&a);
    let rescales = a.stats().hash_rescale;
    assert!(rescales >= 4, "{:?}", a.stats());
    assert!(a.pages_held() < grown);
    assert!(pages0 <= a.pages_held());
    let avg = a.stats().lookup_steps as f64 / a.stats().lookup as f64;
    assert!(avg < 3.0, "average chain {avg}");
}

#[test]
fn tag_shortage_fails_cleanly() {
    // 1 tag page + hash directory + 1 bucket page: the first page is exhausted after ~70 tags.
    let cfg = ArenaConfig {
        quantum: 1,
        span: Some((0, 1 << 20)),
        ..Default::default()
    };
    let mut a = Arena::new(&cfg, HeapPages::with_limit(3)).unwrap();
    let c = Constraints {
        align: 4,
        ..Default::default()
    };
    let mut n = 0;
    loop {
        match a.xalloc(1, &c, Flags::default()) {
            Ok(_) => n += 1,
            Err(VmemError::NoTags) => break,
            Err(e) => panic!("{e:?}"),
        }
        ok(&a);
    }
    ok(&a);
    assert!(n > 10);
    assert!(a.stats().populate_fail >= 1);
    // A free never needs a tag.
    let first = segs(&a, SegKindSet::ALLOC)[0];
    a.xfree(first.0, first.1).unwrap();
    ok(&a);
}

#[test]
fn quantum_caches_serve_small_sizes() {
    let cfg = ArenaConfig {
        quantum: 16,
        qcache_max: 64,
        span: Some((0, 1 << 16)),
        ..Default::default()
    };
    let mut a = Arena::new(&cfg, HeapPages::new()).unwrap();
    let x = a.alloc(32, Flags::default()).unwrap();
    assert_eq!(a.free(x, 32), Ok(None));
    ok(&a);
    assert_eq!(
        a.size(SegKindSet::ALLOC),
        32,
        "cached integers stay allocated in the arena"
    );
    assert_eq!(a.free(x, 32), Err(VmemError::DoubleFree { addr: x }));
    let y = a.alloc(32, Flags::default()).unwrap();
    assert_eq!(y, x);
    assert_eq!(a.stats().qcache_hit, 1);
    a.free(y, 32).unwrap();
    a.reap(&mut |_| panic!("no source"));
    ok(&a);
    assert_eq!(a.size(SegKindSet::ALLOC), 0);
    // Magazines: fill, use without the arena, drain.
    let mut mag = Magazine::new(48);
    let n = a.magazine_fill(&mut mag).unwrap();
    assert_eq!(n, kmalloc43_core::vmem::MAGAZINE_ROUNDS);
    ok(&a);
    let r = mag.pop().unwrap();
    assert_eq!(a.size(SegKindSet::ALLOC), 48 * n);
    mag.push(r).unwrap();
    a.magazine_drain(&mut mag, &mut |_| ()).unwrap();
    ok(&a);
    assert!(mag.is_empty());
    assert_eq!(
        a.magazine_fill(&mut Magazine::new(80)),
        Err(VmemError::BadSize)
    );
    let mut forged = Magazine::new(48);
    forged.push(12345 * 16).unwrap();
    assert!(a.magazine_drain(&mut forged, &mut |_| ()).is_err());
    a.destroy(&mut |_| ()).unwrap();
    assert_eq!(a.pages_held(), 0);
}

/// A refused destroy leaves the arena untouched: no span goes back to the source (whose release
/// function may belong to a client), the quantum caches keep their segments, statistics agree.
#[test]
fn refused_destroy_changes_nothing_and_calls_no_release() {
    let mut parent = Parent {
        arena: arena(4096, Some((0x10_0000, 0x10_0000))),
        imports: 0,
        releases: Vec::new(),
    };
    let cfg = ArenaConfig {
        name: "child",
        quantum: 16,
        qcache_max: 64,
        import_quantum: Some(0x4000),
        ..Default::default()
    };
    let mut a = Arena::new(&cfg, HeapPages::new()).unwrap();
    let live = a
        .alloc_importing(64, Flags::default(), &mut parent)
        .unwrap();
    let cached = a
        .alloc_importing(32, Flags::default(), &mut parent)
        .unwrap();
    a.free(cached, 32).unwrap(); // rests in the 32-byte quantum cache
    let before = (
        *a.stats(),
        a.size(SegKindSet::ALLOC),
        a.size(SegKindSet::FREE),
        parent.arena.size(SegKindSet::ALLOC),
    );
    assert_eq!(
        a.destroy(&mut |r| parent.release(r)),
        Err(VmemError::LiveSegments {
            count: 1,
            bytes: 64
        })
    );
    assert!(
        parent.releases.is_empty(),
        "a refused destroy released spans"
    );
    assert_eq!(
        (
            *a.stats(),
            a.size(SegKindSet::ALLOC),
            a.size(SegKindSet::FREE),
            parent.arena.size(SegKindSet::ALLOC)
        ),
        before
    );
    ok(&a);
    assert_eq!(a.alloc(32, Flags::default()), Ok(cached)); // still cached
    a.free(cached, 32).unwrap();
    a.free(live, 64).unwrap();
    a.destroy(&mut |r| parent.release(r)).unwrap();
    assert_eq!(parent.releases.len(), parent.imports);
    assert_eq!(parent.arena.size(SegKindSet::ALLOC), 0);
}

#[test]
fn destroy_reports_live_segments_then_returns_every_page() {
    let pages = HeapPages::new();
    let counter = pages.counter();
    let cfg = ArenaConfig {
        quantum: 8,
        qcache_max: 32,
        span: Some((0x1000, 0x1000)),
        ..Default::default()
    };
    let mut a = Arena::new(&cfg, pages).unwrap();
    let x = a.alloc(24, Flags::default()).unwrap();
    let y = a.alloc(100, Flags::default()).unwrap();
    a.free(x, 24).unwrap(); // to the quantum cache
    assert_eq!(
        a.destroy(&mut |_| ()),
        Err(VmemError::LiveSegments {
            count: 1,
            bytes: 104
        })
    );
    ok(&a);
    // Refused before anything changed: the cached segment is still in its quantum cache.
    assert_eq!(a.size(SegKindSet::ALLOC), 24 + 104);
    assert_eq!(a.alloc(24, Flags::default()), Ok(x));
    a.free(x, 24).unwrap();
    a.free(y, 100).unwrap();
    a.destroy(&mut |_| ()).unwrap();
    assert_eq!(counter.load(Ordering::Relaxed), 0);
    // The emptied arena is reusable.
    a.add(0, 64).unwrap();
    assert_eq!(a.alloc(64, Flags::default()), Ok(0));
    ok(&a);
    drop(a);
    assert_eq!(counter.load(Ordering::Relaxed), 0);
}

#[test]
fn spans_are_kept_in_address_order() {
    let mut a = arena(1, None);
    for (b, s) in [(50, 10), (10, 10), (30, 10), (0, 10), (70, 5)] {
        a.add(b, s).unwrap();
        ok(&a);
    }
    assert_eq!(
        segs(&a, SegKindSet::FREE),
        vec![(0, 10), (10, 10), (30, 10), (50, 10), (70, 5)]
    );
    assert_eq!(a.size(SegKindSet::FREE), 45);
    // Segments never span two spans, even adjacent ones.
    assert_eq!(a.alloc(15, Flags::default()), Err(VmemError::NoSpace));
    let top = usize::MAX - 0xfff;
    a.add(top - 0x1000, 0x1000).unwrap();
    assert_eq!(
        a.xalloc(0x1000, &Constraints::default(), Flags::BEST_FIT),
        Ok(top - 0x1000)
    );
    ok(&a);
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri; covered natively")]
fn sleeping_allocation_waits_for_a_free() {
    let cfg = ArenaConfig {
        quantum: 1,
        span: Some((0, 4)),
        ..Default::default()
    };
    let w = Arc::new(WaitingArena::new(&cfg, HeapPages::new()).unwrap());
    let held: Vec<usize> = (0..4)
        .map(|_| w.alloc(1, Flags::NOSLEEP).unwrap())
        .collect();
    assert_eq!(w.alloc(1, Flags::NOSLEEP), Err(VmemError::NoSpace));
    let sleepers: Vec<_> = (0..3)
        .map(|_| {
            let w = Arc::clone(&w);
            std::thread::spawn(move || w.alloc(1, Flags::SLEEP).unwrap())
        })
        .collect();
    // Let them block, then free one id at a time.
    while w.with(|a| a.stats().wait) < 3 {
        std::thread::yield_now();
    }
    for &h in &held[..3] {
        w.free(h, 1).unwrap();
    }
    let mut got: Vec<usize> = sleepers.into_iter().map(|t| t.join().unwrap()).collect();
    got.sort();
    assert_eq!(got, held[..3].to_vec());
    w.with(|a| a.audit()).unwrap();
    // An add also wakes sleepers.
    let w2 = Arc::clone(&w);
    let t = std::thread::spawn(move || w2.alloc(8, Flags::SLEEP).unwrap());
    while w.with(|a| a.stats().wait) < 4 {
        std::thread::yield_now();
    }
    w.add(100, 8).unwrap();
    assert_eq!(t.join().unwrap(), 100);
}
