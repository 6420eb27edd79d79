// SPDX-License-Identifier: GPL-2.0
//! Unit tests of the vmem core: spans, imports and release, the hash, tags, quantum caches,
//! teardown and sleeping; `audit()` runs after every operation (`vmem_unit.rs`: allocation,
//! freeing, policies and constraints).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use kmalloc43_core::hosted::vmem::{HeapPages, WaitingArena};
use kmalloc43_core::vmem::{
    Arena, ArenaConfig, Constraints, Flags, SegKindSet, SpanRelease, SpanSource, VmemError,
};

#[allow(dead_code, reason = "each vmem test file uses a part of the helpers")]
mod vmem_support;
use vmem_support::{arena, ok, segs, A};

/// Counts imports and releases of a parent arena.
struct Parent {
    arena: A,
    imports: usize,
    releases: Vec<SpanRelease>,
}

impl Parent {
    /// A parent arena of pages over 1 MiB at 1 MiB, nothing imported or released yet.
    fn new() -> Self {
        Parent {
            arena: arena(4096, Some((0x10_0000, 0x10_0000))),
            imports: 0,
            releases: Vec::new(),
        }
    }
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
    let mut parent = Parent::new();
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
    a.destroy(&mut |_| ()).unwrap();
    assert_eq!(a.pages_held(), 0);
}

/// A refused destroy leaves the arena untouched: no span goes back to the source (whose release
/// function may belong to a client), the quantum caches keep their segments, statistics agree.
#[test]
fn refused_destroy_changes_nothing_and_calls_no_release() {
    let mut parent = Parent::new();
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
