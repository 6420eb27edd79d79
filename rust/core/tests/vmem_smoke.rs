// SPDX-License-Identifier: GPL-2.0
//! Smoke test of the vmem public API (quick sanity; concepts are in vmem_unit.rs).

use kmalloc43_core::hosted::vmem::HeapPages;
use kmalloc43_core::vmem::{Arena, ArenaConfig, Flags, SegKindSet};

#[test]
fn alloc_free_from_zero_base() {
    let pages = HeapPages::new();
    let counter = pages.counter();
    let cfg = ArenaConfig {
        name: "ids",
        quantum: 1,
        span: Some((0, 100)),
        ..Default::default()
    };
    let mut a = Arena::new(&cfg, pages).unwrap();
    let x = a.alloc(10, Flags::INSTANT_FIT).unwrap();
    assert_eq!(x, 0);
    a.audit().unwrap();
    assert_eq!(a.size(SegKindSet::ALLOC), 10);
    assert_eq!(a.free(x, 10).unwrap(), None);
    a.audit().unwrap();
    a.destroy(&mut |_| panic!("no imports")).unwrap();
    assert_eq!(counter.load(std::sync::atomic::Ordering::Relaxed), 0);
}
