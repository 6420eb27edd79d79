// SPDX-License-Identifier: GPL-2.0

//! KUnit suites of client vmem arenas through the C ABI (`arenas.rs`, `abi.rs`) (`CONFIG_KMALLOC43_KUNIT_TEST`; shared helpers in `kunit_support.rs`).

use crate::kunit_support::*;

#[kunit_tests(kmalloc43_vmem)]
mod vmem {
    use super::*;
    use crate::abi::*;
    use kernel::ffi::{c_ulong, c_void};

    const NOSLEEP: u32 = crate::arenas::VM_NOSLEEP;
    const SLEEP: u32 = crate::arenas::VM_SLEEP;

    fn create(name: &CStr, base: usize, size: usize, quantum: usize) -> *mut RawVmem {
        create_cached(name, base, size, quantum, 0)
    }

    /// An arena without a source, with quantum caches up to `qcache_max`.
    fn create_cached(
        name: &CStr,
        base: usize,
        size: usize,
        quantum: usize,
        qcache_max: usize,
    ) -> *mut RawVmem {
        let mut vm = core::ptr::null_mut();
        // SAFETY: valid name and out pointer; no source.
        let rc = unsafe {
            kmalloc43_rust_vmem_create(
                core::ptr::null_mut(),
                name.as_char_ptr(),
                base as c_ulong,
                size,
                quantum,
                None,
                None,
                core::ptr::null_mut(),
                qcache_max,
                NOSLEEP,
                &mut vm,
            )
        };
        assert_eq!(rc, 0);
        vm
    }

    fn audit_arena(vm: *mut RawVmem) {
        // SAFETY: a live handle created by `create`.
        let arena = unsafe { &*vm.cast::<crate::arenas::VmArena>() };
        assert_eq!(arena.audit(), Ok(()));
    }

    #[test]
    fn bad_frees_and_constraints_are_errors() {
        let vm = create(c"kunit_ids", 0x1000, 0x10000, 16);
        let mut a: c_ulong = 0;
        // SAFETY: live handle, valid out pointers.
        unsafe {
            assert_eq!(kmalloc43_rust_vmem_alloc(vm, 100, NOSLEEP, &mut a), 0);
            assert_eq!(kmalloc43_rust_vmem_size(vm, 1), 112);
            assert_eq!(
                kmalloc43_rust_vmem_free(vm, a + 0x4000, 112),
                EINVAL.to_errno()
            ); // unknown segment
            audit_arena(vm);
            assert_eq!(kmalloc43_rust_vmem_free(vm, a, 64), EINVAL.to_errno()); // wrong size
            audit_arena(vm);
            let mut x: c_ulong = 0;
            assert_eq!(
                kmalloc43_rust_vmem_xalloc(vm, 64, 48, 0, 0, 0, 0, NOSLEEP, &mut x),
                EINVAL.to_errno()
            ); // align
            assert_eq!(
                kmalloc43_rust_vmem_xalloc(vm, 64, 64, 64, 0, 0, 0, NOSLEEP, &mut x),
                EINVAL.to_errno()
            ); // phase
            assert_eq!(
                kmalloc43_rust_vmem_xalloc(vm, 256, 0, 0, 128, 0, 0, NOSLEEP, &mut x),
                EINVAL.to_errno()
            ); // nocross
            assert_eq!(
                kmalloc43_rust_vmem_xalloc(vm, 64, 0, 0, 0, 0x8000, 0x4000, NOSLEEP, &mut x),
                EINVAL.to_errno()
            ); // range
            assert_eq!(
                kmalloc43_rust_vmem_alloc(vm, 16, 0, &mut x),
                EINVAL.to_errno()
            ); // no sleep flag
            assert_eq!(
                kmalloc43_rust_vmem_alloc(vm, 16, 0x100 | NOSLEEP, &mut x),
                EINVAL.to_errno()
            ); // unknown flag
            assert_eq!(
                kmalloc43_rust_vmem_alloc(vm, 0x20000, NOSLEEP, &mut x),
                ENOMEM.to_errno()
            ); // no space
            assert_eq!(
                kmalloc43_rust_vmem_xalloc(vm, 64, 256, 16, 0, 0x2000, 0x3000, NOSLEEP, &mut x),
                0
            );
            assert_eq!(x % 256, 16);
            assert!((0x2000..0x3000).contains(&x));
            audit_arena(vm);
            assert_eq!(kmalloc43_rust_vmem_destroy(vm), EBUSY.to_errno()); // live segments
            audit_arena(vm);
            // A NULL result pointer is refused before anything is allocated.
            let in_use = kmalloc43_rust_vmem_size(vm, 1);
            let null = core::ptr::null_mut::<c_ulong>();
            assert_eq!(
                kmalloc43_rust_vmem_alloc(vm, 16, NOSLEEP, null),
                EINVAL.to_errno()
            );
            assert_eq!(
                kmalloc43_rust_vmem_xalloc(vm, 16, 0, 0, 0, 0, 0, NOSLEEP, null),
                EINVAL.to_errno()
            );
            assert_eq!(kmalloc43_rust_vmem_size(vm, 1), in_use);
            audit_arena(vm);
            assert_eq!(kmalloc43_rust_vmem_xfree(vm, x, 64), 0);
            assert_eq!(kmalloc43_rust_vmem_free(vm, a, 100), 0);
            assert_eq!(kmalloc43_rust_vmem_size(vm, 1), 0);
            assert_eq!(kmalloc43_rust_vmem_destroy(vm), 0);
        }
    }

    /// Walk callback: adds the segment's size to the `usize` at `arg`.
    ///
    /// # Safety
    ///
    /// `arg` must point to a `usize` that nothing else accesses during the walk.
    unsafe extern "C" fn sum_sizes(arg: *mut c_void, _base: c_ulong, size: usize) {
        // SAFETY: the test passes a pointer to its `usize`.
        unsafe { *arg.cast::<usize>() += size };
    }

    #[test]
    fn add_walk_and_size() {
        let vm = create(c"kunit_add", 0, 0, 8);
        let mut a: c_ulong = 0;
        // SAFETY: live handle, valid out pointers and callback argument.
        unsafe {
            assert_eq!(
                kmalloc43_rust_vmem_alloc(vm, 8, NOSLEEP, &mut a),
                ENOMEM.to_errno()
            );
            assert_eq!(kmalloc43_rust_vmem_add(vm, 0x1000, 0x100, NOSLEEP), 0);
            assert_eq!(
                kmalloc43_rust_vmem_add(vm, 0x1080, 0x100, NOSLEEP),
                EINVAL.to_errno()
            ); // overlap
            assert_eq!(
                kmalloc43_rust_vmem_add(vm, 0x2000, 0x100, 0),
                EINVAL.to_errno()
            ); // flags
            assert_eq!(kmalloc43_rust_vmem_add(vm, 0x3000, 0x100, NOSLEEP), 0);
            assert_eq!(
                kmalloc43_rust_vmem_alloc(vm, 24, NOSLEEP | crate::arenas::VM_BESTFIT, &mut a),
                0
            );
            let mut sum = 0usize;
            let arg = (&raw mut sum).cast::<c_void>();
            assert_eq!(kmalloc43_rust_vmem_walk(vm, 1, Some(sum_sizes), arg), 0);
            assert_eq!(sum, 24);
            sum = 0;
            assert_eq!(kmalloc43_rust_vmem_walk(vm, 3, Some(sum_sizes), arg), 0);
            assert_eq!(sum, 0x200);
            assert_eq!(
                kmalloc43_rust_vmem_walk(vm, 4, Some(sum_sizes), arg),
                EINVAL.to_errno()
            );
            assert_eq!(kmalloc43_rust_vmem_size(vm, 2), 0x200 - 24);
            assert_eq!(kmalloc43_rust_vmem_size(vm, 3), 0x200);
            audit_arena(vm);
            assert_eq!(kmalloc43_rust_vmem_free(vm, a, 24), 0);
            assert_eq!(kmalloc43_rust_vmem_destroy(vm), 0);
            // A destroyed (unlisted) handle is refused, not used.
            assert_eq!(kmalloc43_rust_vmem_destroy(vm), EINVAL.to_errno());
        }
    }

    #[test]
    fn nested_arena_imports_and_releases() {
        let parent = create(c"kunit_parent", 0x100000, 0x100000, 4096);
        let mut child = core::ptr::null_mut();
        // SAFETY: valid arguments; the parent outlives the child.
        unsafe {
            assert_eq!(
                kmalloc43_rust_vmem_create(
                    core::ptr::null_mut(),
                    c"kunit_child".as_char_ptr(),
                    0,
                    0,
                    16,
                    Some(kmalloc43_rust_vmem_import_from_arena),
                    Some(kmalloc43_rust_vmem_release_to_arena),
                    parent.cast(),
                    0,
                    NOSLEEP,
                    &mut child
                ),
                0
            );
            let mut a: c_ulong = 0;
            assert_eq!(kmalloc43_rust_vmem_alloc(child, 48, NOSLEEP, &mut a), 0);
            assert!(kmalloc43_rust_vmem_size(parent, 1) > 0); // imported from the parent
            assert_eq!(kmalloc43_rust_vmem_free(child, a, 48), 0);
            assert_eq!(kmalloc43_rust_vmem_size(parent, 1), 0); // released to the parent
            audit_arena(child);
            audit_arena(parent);
            assert_eq!(kmalloc43_rust_vmem_destroy(child), 0);
            assert_eq!(kmalloc43_rust_vmem_destroy(parent), 0);
        }
    }

    /// Counters of the "client" source below.
    static RELEASES: kernel::sync::atomic::Atomic<usize> = kernel::sync::atomic::Atomic::new(0);
    static IMPORTED: kernel::sync::atomic::Atomic<usize> = kernel::sync::atomic::Atomic::new(0);
    static IMPORTED_SIZE: kernel::sync::atomic::Atomic<usize> =
        kernel::sync::atomic::Atomic::new(0);

    /// A client's import function: from the parent arena `source`, remembering the span.
    ///
    /// # Safety
    ///
    /// As `kmalloc43_vmem_import_t` with a parent arena as `source`.
    unsafe extern "C" fn client_import(
        source: *mut c_void,
        size: usize,
        flags: u32,
        base: *mut c_ulong,
    ) -> i32 {
        // SAFETY: the caller's guarantee.
        let r = unsafe { kmalloc43_rust_vmem_import_from_arena(source, size, flags, base) };
        if r == 0 {
            // SAFETY: written by the successful import.
            IMPORTED.store(unsafe { *base }, kernel::sync::atomic::Relaxed);
            IMPORTED_SIZE.store(size, kernel::sync::atomic::Relaxed);
        }
        r
    }

    /// A client's release function: counts its calls, then releases to the parent.
    ///
    /// # Safety
    ///
    /// As `kmalloc43_vmem_release_t` with a parent arena as `source`.
    unsafe extern "C" fn client_release(source: *mut c_void, base: c_ulong, size: usize) {
        RELEASES.fetch_add(1, kernel::sync::atomic::Relaxed);
        // SAFETY: the caller's guarantee.
        unsafe { kmalloc43_rust_vmem_release_to_arena(source, base, size) };
    }

    /// At kmalloc43's unload a client arena is destroyed as disowned: its client's release
    /// function (in a module that is gone) is never called, not even for a span the quantum
    /// cache flush frees; an owned destroy would have called it.
    #[test]
    fn disowned_destroy_calls_no_client_function() {
        let parent = create(c"kunit_owner_parent", 0x100000, 0x100000, 4096);
        let mut child = core::ptr::null_mut();
        RELEASES.store(0, kernel::sync::atomic::Relaxed);
        // SAFETY: valid arguments; the parent outlives the child.
        unsafe {
            assert_eq!(
                kmalloc43_rust_vmem_create(
                    core::ptr::null_mut(),
                    c"kunit_owner_child".as_char_ptr(),
                    0,
                    0,
                    16,
                    Some(client_import),
                    Some(client_release),
                    parent.cast(),
                    64,
                    NOSLEEP,
                    &mut child
                ),
                0
            );
            let mut a: c_ulong = 0;
            assert_eq!(kmalloc43_rust_vmem_alloc(child, 32, NOSLEEP, &mut a), 0);
            assert_eq!(kmalloc43_rust_vmem_free(child, a, 32), 0); // rests in the quantum cache
            assert_eq!(RELEASES.load(kernel::sync::atomic::Relaxed), 0);
            let vm = &*child.cast::<crate::arenas::VmArena>();
            assert_eq!(vm.destroy_disowned(), Ok(()));
            assert_eq!(RELEASES.load(kernel::sync::atomic::Relaxed), 0);
            // The span stayed with the parent (leaked by the gone client): give it back by hand.
            let (base, size) = (
                IMPORTED.load(kernel::sync::atomic::Relaxed),
                IMPORTED_SIZE.load(kernel::sync::atomic::Relaxed),
            );
            assert!(kmalloc43_rust_vmem_size(parent, 1) >= size);
            kmalloc43_rust_vmem_release_to_arena(parent.cast(), base, size);
            assert_eq!(kmalloc43_rust_vmem_destroy(child), 0); // now empty: unlisted, freed
            assert_eq!(RELEASES.load(kernel::sync::atomic::Relaxed), 0);
            audit_arena(parent);
            assert_eq!(kmalloc43_rust_vmem_destroy(parent), 0);
        }
    }

    #[test]
    fn sleep_allocation_waits_for_a_free() {
        let vm = create(c"kunit_sleep", 0x1000, 0x1000, 0x1000);
        let mut a: c_ulong = 0;
        // SAFETY: live handle.
        let ret = unsafe { kmalloc43_rust_vmem_alloc(vm, 0x1000, NOSLEEP, &mut a) };
        assert_eq!(ret, 0);
        let handle = vm as usize;
        let w = spawn(move || {
            let mut b: c_ulong = 0;
            // SAFETY: the arena lives until the test destroys it after this completes.
            let rc =
                unsafe { kmalloc43_rust_vmem_alloc(handle as *mut RawVmem, 0x1000, SLEEP, &mut b) };
            if rc == 0 {
                b as usize
            } else {
                0
            }
        });
        // SAFETY: live handle.
        let arena = unsafe { &*vm.cast::<crate::arenas::VmArena>() };
        assert!(wait_until(|| arena.inner.lock().arena.stats().wait == 1)); // worker waits
        assert_eq!(w.finished.load(Relaxed), 0);
        // SAFETY: live handle.
        unsafe {
            assert_eq!(kmalloc43_rust_vmem_free(vm, a, 0x1000), 0);
            w.done.wait_for_completion();
            assert_eq!(w.addr.load(Relaxed), 0x1000);
            assert_eq!(kmalloc43_rust_vmem_free(vm, 0x1000, 0x1000), 0);
            assert_eq!(kmalloc43_rust_vmem_destroy(vm), 0);
        }
    }

    #[test]
    fn integers_cached_in_magazines_are_reclaimed_before_an_allocation_fails() {
        const SIZE: usize = 0x10000;
        let vm = create_cached(c"kunit_qc_reclaim", 0x1000, SIZE, 16, 64);
        let mut held = KVec::new();
        // SAFETY: live handle, valid out pointers.
        unsafe {
            // Every integer, 16 at a time, through the quantum cache: its slabs take the arena.
            loop {
                let mut a: c_ulong = 0;
                if kmalloc43_rust_vmem_alloc(vm, 16, NOSLEEP, &mut a) != 0 {
                    break;
                }
                held.push(a, GFP_KERNEL).expect("push");
            }
            assert!(held.len() >= SIZE / 16 / 2);
            // Freed, they rest in this CPU's magazines and the depot, in slabs the arena lent.
            for &a in held.iter() {
                assert_eq!(kmalloc43_rust_vmem_free(vm, a, 16), 0);
            }
            // The arena reclaims them from the caches instead of failing (or, with SLEEP,
            // sleeping for a free that would never come).
            let mut all: c_ulong = 0;
            assert_eq!(kmalloc43_rust_vmem_alloc(vm, SIZE, NOSLEEP, &mut all), 0);
            assert_eq!(all, 0x1000);
            audit_arena(vm);
            assert_eq!(kmalloc43_rust_vmem_free(vm, all, SIZE), 0);
            assert_eq!(kmalloc43_rust_vmem_destroy(vm), 0);
        }
    }
}
