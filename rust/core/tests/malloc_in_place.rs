// SPDX-License-Identifier: GPL-2.0

//! `Malloc::init_in_place` (used by the kernel module, which must not build the ~14 KiB allocator
//! on its stack) yields an allocator that behaves like `Malloc::new`.

#[macro_use]
mod common;

use std::mem::MaybeUninit;

use kmalloc43_core::hosted::malloc_host_pages::HostPages;
use kmalloc43_core::malloc::{Malloc, MallocFlags, SizeClasses, MAX_CLASSES};

both_modes! {
fn init_in_place_matches_new(mode) {
    let mut slot = Box::new(MaybeUninit::<Malloc<HostPages>>::uninit());
    // SAFETY: the box is valid for writes and aligned for `Malloc`.
    unsafe { Malloc::init_in_place(slot.as_mut_ptr(), HostPages::new(), mode) };
    // SAFETY: `init_in_place` initialised every field.
    let mut m = unsafe { slot.assume_init() };
    let fresh = Malloc::with_classes(HostPages::new(), mode);
    assert_eq!(m.memory_stats(), fresh.memory_stats());
    assert!(!m.diagnostic());
    assert_eq!(m.types().count(), 0);
    assert_eq!(m.classes().mode(), mode);
    for i in 0..MAX_CLASSES {
        assert_eq!(m.bucket_stats(i), fresh.bucket_stats(i));
    }
    let t = m.define_type("inplace", "test", usize::MAX).unwrap();
    let p = m.malloc(100, t, MallocFlags::WAITOK).unwrap();
    let usable = match mode {
        SizeClasses::Pow2 => 128,
        SizeClasses::Fine => 112,
    };
    assert_eq!(m.usable_size(p), Ok(usable));
    m.free(p, t).unwrap();
    assert_eq!(m.audit(), Ok(()));
    m.undefine_type(t).unwrap();
}}

// ---- the whole chain in place: Malloc::init_in_place_with + VmemKmem::init_in_place ----------

use std::cell::Cell;
use std::rc::Rc;

use kmalloc43_core::hosted::malloc_host_pages::{host_vmem_kmem, HostSpanSource};
use kmalloc43_core::hosted::vmem::HeapPages;
use kmalloc43_core::malloc::{VmemKmem, PAGE_SIZE};
use kmalloc43_core::vmem::{ArenaConfig, ImportRequest, SpanRelease, SpanSource, VmemError};

/// A [`HostSpanSource`] that counts its drops, to see that the backend owns it exactly once.
struct CountedSource {
    inner: HostSpanSource,
    drops: Rc<Cell<usize>>,
}

impl SpanSource for CountedSource {
    fn import(&mut self, req: &ImportRequest) -> Result<usize, VmemError> {
        self.inner.import(req)
    }

    fn release(&mut self, span: SpanRelease) {
        self.inner.release(span)
    }
}

impl Drop for CountedSource {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
    }
}

type Kmem = VmemKmem<HeapPages, CountedSource>;

/// The kmem arena configuration of the kernel module (imports of 16 pages), with quantum caches
/// if `qcache` (an arena with caches takes a depot page as it is built).
fn kmem_cfg(qcache: bool) -> ArenaConfig<'static> {
    ArenaConfig {
        name: "kmem-in-place",
        quantum: PAGE_SIZE,
        qcache_max: if qcache { 2 * PAGE_SIZE } else { 0 },
        import_quantum: Some(16 * PAGE_SIZE),
        ..Default::default()
    }
}

/// `init_source` for a [`CountedSource`] counting into `drops`.
fn counted_source(
    drops: &Rc<Cell<usize>>,
) -> impl FnOnce(*mut CountedSource) -> Result<(), VmemError> {
    let drops = drops.clone();
    move |slot| {
        // SAFETY: `VmemKmem::init_in_place` passes a pointer valid for writes and aligned.
        unsafe {
            slot.write(CountedSource {
                inner: HostSpanSource::new(),
                drops,
            })
        };
        Ok(())
    }
}

both_modes! {
fn whole_chain_in_place_matches_new(mode) {
    let pages = HeapPages::new();
    let tag_pages = pages.counter();
    let drops = Rc::new(Cell::new(0));
    let mut slot = Box::new(MaybeUninit::<Malloc<Kmem>>::uninit());
    let init_kmem = |k: *mut Kmem| {
        // SAFETY: `k` is valid for writes and aligned; the source's spans are fresh system
        // allocations it owns.
        unsafe { VmemKmem::init_in_place(k, &kmem_cfg(false), pages, counted_source(&drops)) }
    };
    // SAFETY: the box is valid for writes and aligned for `Malloc`; `init_kmem` initialises the
    // supply on `Ok` and leaves it empty on `Err` (`VmemKmem::init_in_place`'s contract).
    unsafe { Malloc::init_in_place_with(slot.as_mut_ptr(), mode, init_kmem) }.unwrap();
    // SAFETY: `init_in_place_with` succeeded.
    let mut m = unsafe { slot.assume_init() };
    let fresh = Malloc::with_classes(host_vmem_kmem(16 * PAGE_SIZE, None), mode);
    assert_eq!(m.memory_stats(), fresh.memory_stats());
    assert_eq!(m.kmem().arena().name(), "kmem-in-place");
    assert_eq!(m.kmem().arena().quantum(), PAGE_SIZE);
    assert_eq!(m.kmem().arena().import_quantum(), Some(16 * PAGE_SIZE));
    assert_eq!(m.kmem().arena().stats(), fresh.kmem().arena().stats());
    assert_eq!(m.classes().mode(), mode);
    for i in 0..MAX_CLASSES {
        assert_eq!(m.bucket_stats(i), fresh.bucket_stats(i));
    }
    let t = m.define_type("chain", "test", usize::MAX).unwrap();
    let small = m.malloc(100, t, MallocFlags::NOWAIT).unwrap();
    let large = m.malloc(5 * PAGE_SIZE, t, MallocFlags::NOWAIT).unwrap();
    assert!(m.kmem().source().inner.chunks() > 0);
    assert_eq!(m.audit(), Ok(()));
    assert_eq!(m.kmem().arena().audit(), Ok(()));
    m.free(small, t).unwrap();
    m.free(large, t).unwrap();
    m.undefine_type(t).unwrap();
    assert_eq!(drops.get(), 0);
    drop(m);
    assert_eq!(drops.get(), 1, "the backend owns its source exactly once");
    assert_eq!(tag_pages.load(std::sync::atomic::Ordering::Relaxed), 0);
}}

#[test]
fn kmem_in_place_rejects_a_quantum_other_than_a_page() {
    let pages = HeapPages::new();
    let tag_pages = pages.counter();
    let called = Cell::new(false);
    let mut slot = MaybeUninit::<Kmem>::uninit();
    let cfg = ArenaConfig {
        quantum: PAGE_SIZE / 2,
        ..kmem_cfg(false)
    };
    // SAFETY: `slot` is valid for writes and aligned; the source is never built.
    let r = unsafe {
        VmemKmem::init_in_place(slot.as_mut_ptr(), &cfg, pages, |_| {
            called.set(true);
            Ok(())
        })
    };
    assert_eq!(r, Err(VmemError::BadConfig));
    assert!(
        !called.get(),
        "no source is built for a rejected configuration"
    );
    assert_eq!(tag_pages.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[test]
fn kmem_in_place_reports_an_arena_failure_without_building_the_source() {
    // The depot page of the quantum caches cannot be had.
    let pages = HeapPages::with_limit(0);
    let called = Cell::new(false);
    let mut slot = MaybeUninit::<Kmem>::uninit();
    // SAFETY: as above.
    let r = unsafe {
        VmemKmem::init_in_place(slot.as_mut_ptr(), &kmem_cfg(true), pages, |_| {
            called.set(true);
            Ok(())
        })
    };
    assert_eq!(r, Err(VmemError::NoTags));
    assert!(!called.get());
}

#[test]
fn kmem_in_place_drops_the_arena_when_the_source_fails() {
    let pages = HeapPages::new();
    let tag_pages = pages.counter();
    let mut slot = MaybeUninit::<Kmem>::uninit();
    // SAFETY: as above; the failing `init_source` leaves the source uninitialised.
    let r = unsafe {
        VmemKmem::init_in_place(slot.as_mut_ptr(), &kmem_cfg(true), pages, |_| {
            Err(VmemError::NoSpace)
        })
    };
    assert_eq!(r, Err(VmemError::NoSpace));
    // The arena had taken its depot page; dropping it gave the page back (Miri also sees that
    // nothing leaked).
    assert_eq!(tag_pages.load(std::sync::atomic::Ordering::Relaxed), 0);
}

both_modes! {
fn malloc_in_place_with_reports_the_supply_failure(mode) {
    let mut slot = Box::new(MaybeUninit::<Malloc<Kmem>>::uninit());
    let pages = HeapPages::new();
    let tag_pages = pages.counter();
    let drops = Rc::new(Cell::new(0));
    let init_kmem = |k: *mut Kmem| {
        let cfg = ArenaConfig {
            import_quantum: Some(0),
            ..kmem_cfg(false)
        };
        // SAFETY: `k` is valid for writes and aligned.
        unsafe { VmemKmem::init_in_place(k, &cfg, pages, counted_source(&drops)) }
    };
    // SAFETY: the box is valid for writes and aligned; on `Err` nothing was initialised.
    let r = unsafe { Malloc::init_in_place_with(slot.as_mut_ptr(), mode, init_kmem) };
    assert_eq!(r, Err(VmemError::BadConfig));
    assert_eq!(drops.get(), 0, "no source was built");
    assert_eq!(tag_pages.load(std::sync::atomic::Ordering::Relaxed), 0);
    // The slot is still uninitialised and may be used again.
    let init_kmem = |k: *mut Kmem| {
        // SAFETY: as above.
        unsafe {
            VmemKmem::init_in_place(
                k,
                &kmem_cfg(false),
                HeapPages::new(),
                counted_source(&drops),
            )
        }
    };
    // SAFETY: as above.
    unsafe { Malloc::init_in_place_with(slot.as_mut_ptr(), mode, init_kmem) }.unwrap();
    // SAFETY: initialised just now.
    let mut m = unsafe { slot.assume_init() };
    let t = m.define_type("retry", "test", usize::MAX).unwrap();
    let p = m.malloc(3000, t, MallocFlags::NOWAIT).unwrap();
    m.free(p, t).unwrap();
    drop(m);
    assert_eq!(drops.get(), 1);
}}
