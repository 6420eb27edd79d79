// SPDX-License-Identifier: GPL-2.0

//! `Arena::init_in_place` (for the kernel module, which must not build a ~1 KiB arena on its
//! stack and then move it) yields the arena `Arena::new` does, and leaves nothing behind when it
//! fails.

use std::mem::MaybeUninit;

use kmalloc43_core::hosted::vmem::HeapPages;
use kmalloc43_core::vmem::{Arena, ArenaConfig, Flags, SegKindSet, VmemError};

type A = Arena<HeapPages>;

fn cfg(span: Option<(usize, usize)>, qcache_max: usize) -> ArenaConfig<'static> {
    ArenaConfig {
        name: "in-place",
        quantum: 4096,
        qcache_max,
        span,
        ..Default::default()
    }
}

#[test]
fn init_in_place_matches_new() {
    let c = cfg(Some((0x10_0000, 0x10_0000)), 4 * 4096);
    let pages = HeapPages::new();
    let outstanding = pages.counter();
    let mut slot = Box::new(MaybeUninit::<A>::uninit());
    // SAFETY: the box is valid for writes and aligned for an arena.
    unsafe { Arena::init_in_place(slot.as_mut_ptr(), &c, pages) }.unwrap();
    // SAFETY: `init_in_place` succeeded.
    let mut a = unsafe { slot.assume_init() };
    let fresh = Arena::new(&c, HeapPages::new()).unwrap();
    assert_eq!(a.name(), fresh.name());
    assert_eq!(a.stats(), fresh.stats());
    assert_eq!(a.pages_held(), fresh.pages_held());
    assert_eq!(a.size(SegKindSet::TOTAL), 0x10_0000);
    let x = a.alloc(4096, Flags::NOSLEEP).unwrap();
    let y = a.alloc(5 * 4096, Flags::NOSLEEP).unwrap();
    a.audit().unwrap();
    a.free(x, 4096).unwrap();
    a.free(y, 5 * 4096).unwrap();
    a.destroy(&mut |_| {}).unwrap();
    assert_eq!(outstanding.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[test]
fn failed_init_in_place_leaves_nothing() {
    let mut slot = MaybeUninit::<A>::uninit();
    // Bad configuration: rejected before anything is taken.
    let bad = ArenaConfig {
        quantum: 3,
        ..cfg(None, 0)
    };
    // SAFETY: `slot` is valid for writes and aligned.
    let r = unsafe { Arena::init_in_place(slot.as_mut_ptr(), &bad, HeapPages::new()) };
    assert_eq!(r.err(), Some(VmemError::BadConfig));
    // No page for the tags of the initial span: the depot page is given back.
    let pages = HeapPages::with_limit(1);
    let outstanding = pages.counter();
    let c = cfg(Some((0, 0x10_0000)), 2 * 4096);
    // SAFETY: as above (the slot was left uninitialised by the failure).
    let r = unsafe { Arena::init_in_place(slot.as_mut_ptr(), &c, pages) };
    assert_eq!(r.err(), Some(VmemError::NoTags));
    assert_eq!(outstanding.load(std::sync::atomic::Ordering::Relaxed), 0);
}
