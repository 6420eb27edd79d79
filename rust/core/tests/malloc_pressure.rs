// SPDX-License-Identifier: GPL-2.0

//! The shrinker's count and scan in the core (module `pressure`): what `reclaimable` counts is
//! what `shrink` gives back, the fast paths' clusters within the high water stay, and magazine
//! rounds count as the pages they fill.

use kmalloc43_core::hosted::malloc_host_pages::host_vmem_kmem;
use kmalloc43_core::malloc::{
    Malloc, MallocFlags, SizeClasses, CHUNK_PAGES, MAX_CLASSES, NCLASSES, PAGE_SIZE,
};

fn count_then_shrink(mode: SizeClasses) {
    let mut m = Malloc::with_classes(host_vmem_kmem(64 << 10, None), mode);
    let ty = m.define_type("pressure", "", usize::MAX).unwrap();
    assert_eq!(m.reclaimable(&[]).total(), 0, "an empty heap holds nothing");
    // 4 MiB of 256-byte pieces, then all freed: the clusters over the high water park.
    let n = (4 << 20) / 256;
    let v: Vec<_> = (0..n)
        .map(|_| m.malloc(256, ty, MallocFlags::NOWAIT).unwrap())
        .collect();
    for p in v {
        m.free(p, ty).unwrap();
    }
    let r = m.reclaimable(&[]);
    assert!(r.parked_pages >= 512, "{r:?}");
    assert_eq!(r.magazine_pages, 0);
    assert!(r.kmem_pages == 0 || r.kmem_pages == CHUNK_PAGES, "{r:?}");
    let data = m.memory_stats().data_pages;
    let source = m.kmem().source().bytes();
    let freed = m.shrink();
    assert_eq!(
        freed, r.parked_pages,
        "shrink gives back the parked clusters counted"
    );
    assert_eq!(m.memory_stats().data_pages, data - freed);
    assert!(
        m.kmem().source().bytes() < source,
        "chunks went back to the source"
    );
    m.audit().unwrap();
    let after = m.reclaimable(&[]);
    assert_eq!((after.parked_pages, after.kmem_pages), (0, 0), "{after:?}");
    // The clusters within the high water stay for the fast paths; reclaim takes them too.
    assert!(m.memory_stats().data_pages > 0);
    assert_eq!(m.shrink(), 0, "a second shrink finds nothing");
    m.reclaim();
    assert_eq!(m.memory_stats().data_pages, 0);
    m.undefine_type(ty).unwrap();
}

#[test]
fn shrink_gives_back_what_reclaimable_counts_pow2() {
    count_then_shrink(SizeClasses::Pow2);
}

#[test]
fn shrink_gives_back_what_reclaimable_counts_fine() {
    count_then_shrink(SizeClasses::Fine);
}

#[test]
fn magazine_rounds_count_as_the_pages_they_fill() {
    let m = Malloc::with_classes(host_vmem_kmem(64 << 10, None), SizeClasses::Fine);
    let classes = m.classes();
    let c = (0..classes.count())
        .find(|&i| classes.size(i) == 256)
        .expect("a 256-byte class");
    let mut cached = [0usize; NCLASSES];
    cached[c] = PAGE_SIZE / 256 + 1; // one page and a piece: two pages at most
    cached[MAX_CLASSES] = 3; // three one-page runs
    cached[MAX_CLASSES + 1] = 2; // two two-page runs
    assert_eq!(m.reclaimable(&cached).magazine_pages, 2 + 3 + 4);
    assert_eq!(m.reclaimable(&cached).total(), 9);
}
