// SPDX-License-Identifier: GPL-2.0

//! `Malloc::init_in_place` (used by the kernel module, which must not build the ~14 KiB allocator
//! on its stack) yields an allocator that behaves like `Malloc::new`.

use std::mem::MaybeUninit;

use kmalloc43_core::hosted::malloc_host_pages::HostPages;
use kmalloc43_core::malloc::{Malloc, MallocFlags, NBUCKETS};

#[test]
fn init_in_place_matches_new() {
    let mut slot = Box::new(MaybeUninit::<Malloc<HostPages>>::uninit());
    // SAFETY: the box is valid for writes and aligned for `Malloc`.
    unsafe { Malloc::init_in_place(slot.as_mut_ptr(), HostPages::new()) };
    // SAFETY: `init_in_place` initialised every field.
    let mut m = unsafe { slot.assume_init() };
    let fresh = Malloc::new(HostPages::new());
    assert_eq!(m.memory_stats(), fresh.memory_stats());
    assert!(!m.diagnostic());
    assert_eq!(m.types().count(), 0);
    for i in 0..NBUCKETS {
        assert_eq!(m.bucket_stats(i), fresh.bucket_stats(i));
    }
    let t = m.define_type("inplace", "test", usize::MAX).unwrap();
    let p = m.malloc(100, t, MallocFlags::WAITOK).unwrap();
    assert_eq!(m.usable_size(p), Ok(128));
    m.free(p, t).unwrap();
    assert_eq!(m.audit(), Ok(()));
    m.undefine_type(t).unwrap();
}
