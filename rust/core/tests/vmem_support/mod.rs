// SPDX-License-Identifier: GPL-2.0

//! Shared by the vmem test files: an arena on host pages, the audit, a segment listing.

use kmalloc43_core::hosted::vmem::HeapPages;
use kmalloc43_core::vmem::{Arena, ArenaConfig, SegKindSet};

pub type A = Arena<HeapPages>;

pub fn arena(quantum: usize, span: Option<(usize, usize)>) -> A {
    let cfg = ArenaConfig {
        name: "test",
        quantum,
        span,
        ..Default::default()
    };
    Arena::new(&cfg, HeapPages::new()).unwrap()
}

pub fn ok(a: &A) {
    if let Err(e) = a.audit() {
        panic!("audit failed: {e:?}");
    }
}

pub fn segs(a: &A, which: SegKindSet) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    a.walk(which, |s, n| v.push((s, n)));
    v
}
