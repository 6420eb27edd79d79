// SPDX-License-Identifier: GPL-2.0

//! KUnit suites of the C ABI (`abi.rs`): bad input and type definition (`CONFIG_KMALLOC43_KUNIT_TEST`; shared helpers in `kunit_support.rs`).

use crate::kunit_support::*;

#[kunit_tests(kmalloc43_diag)]
mod diag {
    use super::*;
    use crate::abi::*;
    use crate::types::Kmalloc43Type;
    use kernel::ffi::c_void;

    fn bad(h: &Heap, e: MallocError, what: fn(&MallocError) -> bool) {
        assert!(what(&e));
        audit(h);
    }

    #[test]
    fn bad_frees_are_errors_and_change_nothing() {
        in_every_mode(bad_frees_in);
    }

    fn bad_frees_in(mode: SizeClasses) {
        let (h, t) = heap_and_type(mode, true, "victim");
        let u = ty(&h, "other", 0);
        let p = h.malloc(64, t, WAITOK).expect("malloc");
        let keep = h.malloc(64, t, WAITOK).expect("malloc");
        h.free(p, t).expect("free");
        bad(&h, h.free(p, t).unwrap_err(), |e| {
            matches!(e, MallocError::DoubleFree { .. })
        });
        let local = 0u64;
        let foreign = NonNull::from(&local).cast::<u8>();
        bad(&h, h.free(foreign, t).unwrap_err(), |e| {
            matches!(e, MallocError::ForeignPointer { .. })
        });
        // SAFETY: pointer arithmetic inside the 64-byte piece.
        let interior = unsafe { NonNull::new_unchecked(keep.as_ptr().add(8)) };
        bad(&h, h.free(interior, t).unwrap_err(), |e| {
            matches!(e, MallocError::InteriorPointer { .. })
        });
        bad(&h, h.free(keep, u).unwrap_err(), |e| {
            matches!(e, MallocError::WrongType { .. })
        });
        assert_eq!(h.type_stats(t).map(|s| s.inuse), Ok(1)); // nothing freed by the errors
        h.free(keep, t).expect("free");
        audit(&h);
    }

    /// Every refusal of a free on the page codes (`PageCode`, the fast path's owner byte, class
    /// and object-start test), for every class of both tables and for page runs with and
    /// without magazines: pointers inside the object (in its first page, its middle, its last
    /// page: a cluster's later page or a run's), the unused tail of a cluster, another type's
    /// object and a double free are refused with the core's error and change nothing; the
    /// objects are then freed normally.
    #[test]
    fn page_codes_refuse_every_bad_free() {
        const PAGE: usize = crate::malloc::PAGE_SIZE;
        for mode in MODES {
            let (h, t) = heap_and_type(mode, false, "codes");
            let u = ty(&h, "other", 0);
            let classes = h.with(|s| s.malloc.classes());
            let runs = [3 * PAGE, 16 * PAGE, 17 * PAGE];
            let sizes = Iterator::chain((0..classes.count()).map(|i| classes.size(i)), runs);
            for size in sizes {
                let p = h.malloc(size, t, WAITOK).expect("malloc");
                let addr = p.as_ptr() as usize;
                let counts = || (h.type_stats(t).map(|s| (s.inuse, s.memuse)), h.audit());
                let before = counts();
                let at = |a: usize| NonNull::new(a as *mut u8).expect("non-null");
                for off in [8, (size / 2) & !7, size - 8] {
                    let e = h.free(at(addr + off), t).unwrap_err();
                    assert!(
                        matches!(e, MallocError::InteriorPointer { start, .. } if start == addr)
                    );
                }
                // The tail of a cluster past its last piece, where there is one.
                if let Some(i) = classes.index(size).filter(|&i| classes.size(i) == size) {
                    let cluster = classes.cluster_bytes(i);
                    let tail = classes.pieces(i) * size;
                    if tail < cluster {
                        let end = (addr & !(cluster - 1)) + tail;
                        let e = h.free(at(end), t).unwrap_err();
                        assert!(matches!(e, MallocError::ForeignPointer { .. }));
                    }
                }
                let e = h.free(p, u).unwrap_err();
                assert!(matches!(e, MallocError::WrongType { .. }));
                assert_eq!(counts(), before);
                h.free(p, t).expect("free");
                let e = h.free(p, t).unwrap_err();
                if size <= 16 * PAGE {
                    // A round in a magazine: its mark.
                    assert!(matches!(e, MallocError::DoubleFree { .. }));
                }
                audit(&h);
            }
            assert_eq!(h.type_stats(t).map(|s| s.inuse), Ok(0));
            h.undefine_type(t).expect("undefine");
            h.undefine_type(u).expect("undefine");
        }
    }

    #[test]
    fn double_free_is_caught_without_diagnostic() {
        in_every_mode(|mode| double_free_in(mode, 64));
        // A class that is not a power of two: the piece index comes from a reciprocal.
        double_free_in(SizeClasses::Fine, 192);
    }

    fn double_free_in(mode: SizeClasses, size: usize) {
        let h = heap_with(mode, false);
        assert!(!h.with(|s| s.malloc.diagnostic()));
        let t = ty(&h, "victim", 0);
        let p = h.malloc(size, t, WAITOK).expect("malloc");
        let q = h.malloc(size, t, WAITOK).expect("malloc");
        let keep = h.malloc(size, t, WAITOK).expect("malloc");
        // SAFETY: pointer arithmetic inside the piece.
        let interior = unsafe { NonNull::new_unchecked(keep.as_ptr().add(16)) };
        bad(&h, h.free(interior, t).unwrap_err(), |e| {
            matches!(e, MallocError::InteriorPointer { .. })
        });
        h.free(p, t).expect("free");
        h.free(q, t).expect("free");
        // The page is partly free and `p` sits behind `q` on the free list: only the O(1)
        // free-list membership check can see this.
        bad(&h, h.free(p, t).unwrap_err(), |e| {
            matches!(e, MallocError::DoubleFree { ty: None, .. })
        });
        bad(&h, h.free(q, t).unwrap_err(), |e| {
            matches!(e, MallocError::DoubleFree { ty: None, .. })
        });
        assert_eq!(h.type_stats(t).map(|s| s.inuse), Ok(1));
        h.free(keep, t).expect("free");
        audit(&h);
    }

    #[test]
    fn bad_requests_are_errors() {
        let h = heap(true);
        let t = ty(&h, "req", 0);
        bad(&h, h.malloc(0, t, NOWAIT).unwrap_err(), |e| {
            matches!(e, MallocError::ZeroSize)
        });
        bad(
            &h,
            h.malloc(MAX_ALLOC_SIZE + 1, t, WAITOK).unwrap_err(),
            |e| matches!(e, MallocError::TooLarge { .. }),
        );
        bad(&h, h.malloc(usize::MAX, t, WAITOK).unwrap_err(), |e| {
            matches!(e, MallocError::TooLarge { .. })
        });
        // Accepted by the core, but larger than the biggest chunk the module imports.
        bad(&h, h.malloc(64 << 20, t, WAITOK).unwrap_err(), |e| {
            matches!(e, MallocError::NoMemory { .. })
        });
        bad(&h, h.malloc(8, t, WAITOK | NOWAIT).unwrap_err(), |e| {
            matches!(e, MallocError::BadFlags { .. })
        });
        bad(&h, h.malloc(8, t, MallocFlags::ZERO).unwrap_err(), |e| {
            matches!(e, MallocError::BadFlags { .. })
        });
        let stale = MallocType::from_raw(0x7fff_0042);
        bad(&h, h.malloc(8, stale, NOWAIT).unwrap_err(), |e| {
            matches!(e, MallocError::UnknownType)
        });
    }

    #[test]
    fn undefine_with_live_allocations_is_refused() {
        let h = heap(true);
        let t = ty(&h, "live", 0);
        let p = h.malloc(128, t, WAITOK).expect("malloc");
        bad(&h, h.undefine_type(t).unwrap_err(), |e| {
            matches!(e, MallocError::TypeInUse { inuse: 1, .. })
        });
        h.free(p, t).expect("type still works");
        h.undefine_type(t).expect("undefine");
        audit(&h);
    }

    fn ctype(name: &'static CStr, limit: usize) -> Kmalloc43Type {
        Kmalloc43Type {
            name: name.as_char_ptr(),
            desc: c"kunit C type".as_char_ptr(),
            limit,
            owner: core::ptr::null_mut(),
            handle: 0,
        }
    }

    #[test]
    fn c_abi_types_validate_and_refuse_busy_undefine() {
        let svc = crate::service::service().expect("service");
        for name in [
            c"",
            c"two words",
            c"a/b",
            c"this_name_is_far_too_long_for_a_type",
            c".",
            c"..",
        ] {
            let mut t = ctype(name, 0);
            // SAFETY: a valid type struct with valid strings.
            let ret = unsafe { kmalloc43_rust_type_define(&mut t) };
            assert_eq!(ret, EINVAL.to_errno());
        }
        let mut t = ctype(c"kunit_c", 0);
        let mut dup = ctype(c"kunit_c", 0);
        // SAFETY: valid structs that outlive their definition (undefined below).
        unsafe {
            assert_eq!(kmalloc43_rust_type_define(&mut t), 0);
            assert_ne!(t.handle, 0);
            assert_eq!(kmalloc43_rust_type_define(&mut dup), EEXIST.to_errno());
            let p = kmalloc43_malloc(300, &mut t, 1);
            assert!(!p.is_null());
            // 300 bytes: the 512-byte bucket in pow2, the 320-byte class in fine.
            let usable = match svc.heap.with(|s| s.malloc.classes().mode()) {
                SizeClasses::Pow2 => 512,
                SizeClasses::Fine => 320,
            };
            assert_eq!(kmalloc43_rust_usable_size(p), usable);
            assert_eq!(
                kmalloc43_free(p.cast::<u8>().add(4).cast(), &mut t),
                EINVAL.to_errno()
            );
            assert_eq!(kmalloc43_rust_type_undefine(&mut t), EBUSY.to_errno());
            assert_eq!(kmalloc43_free(p, &mut t), 0);
            assert_eq!(kmalloc43_free(p, &mut t), EINVAL.to_errno()); // double free
            assert_eq!(kmalloc43_free(core::ptr::null_mut::<c_void>(), &mut t), 0);
            assert!(kmalloc43_malloc(0, &mut t, 1).is_null());
            assert!(kmalloc43_malloc(16, &mut dup, 1).is_null()); // undefined type
            assert_eq!(kmalloc43_rust_type_undefine(&mut t), 0);
            assert_eq!(t.handle, 0);
            assert_eq!(kmalloc43_rust_type_undefine(&mut t), ENOENT.to_errno());
        }
        assert_eq!(svc.heap.audit(), Ok(()));
    }

    /// `kmalloc43_free` itself, whose fast path (`free_local`) reads the page code before the
    /// slot: for every class of the service's table and for page runs with and without
    /// magazines, a pointer inside the object (first, middle and last page), another type's
    /// object and a double free are refused (`-EINVAL`) and change nothing; the object is then
    /// freed.
    #[test]
    fn c_abi_free_refuses_bad_frees_of_every_class() {
        const PAGE: usize = crate::malloc::PAGE_SIZE;
        let svc = crate::service::service().expect("service");
        let classes = svc.heap.with(|s| s.malloc.classes());
        let mut t = ctype(c"kunit_codes", 0);
        let mut u = ctype(c"kunit_codes_other", 0);
        // SAFETY: valid structs that outlive their definition (undefined below); every pointer
        // freed is an address inside an object this test allocated.
        unsafe {
            assert_eq!(kmalloc43_rust_type_define(&mut t), 0);
            assert_eq!(kmalloc43_rust_type_define(&mut u), 0);
            let ty = MallocType::from_raw(t.handle - 1);
            let counts = || svc.heap.type_stats(ty).map(|s| (s.inuse, s.memuse));
            let runs = [3 * PAGE, 16 * PAGE, 17 * PAGE];
            let sizes = Iterator::chain((0..classes.count()).map(|i| classes.size(i)), runs);
            for size in sizes {
                let p = kmalloc43_malloc(size, &mut t, 1);
                assert!(!p.is_null());
                let before = counts();
                for off in [8, (size / 2) & !7, size - 8] {
                    let inside = p.cast::<u8>().add(off).cast::<c_void>();
                    assert_eq!(kmalloc43_free(inside, &mut t), EINVAL.to_errno());
                }
                assert_eq!(kmalloc43_free(p, &mut u), EINVAL.to_errno());
                assert_eq!(counts(), before);
                assert_eq!(kmalloc43_free(p, &mut t), 0);
                if size <= 16 * PAGE {
                    // A round in a magazine: refused by its mark.
                    assert_eq!(kmalloc43_free(p, &mut t), EINVAL.to_errno());
                }
            }
            assert_eq!(counts().map(|c| c.0), Ok(0));
            assert_eq!(kmalloc43_rust_type_undefine(&mut t), 0);
            assert_eq!(kmalloc43_rust_type_undefine(&mut u), 0);
        }
        assert_eq!(svc.heap.audit(), Ok(()));
    }

    /// A struct is accepted only by the slot it defined: forged handles (every slot) and a copy
    /// of a defined struct are refused, and nothing is charged to anybody's type.
    #[test]
    fn forged_and_copied_type_structs_are_refused() {
        let svc = crate::service::service().expect("service");
        let mut t = ctype(c"kunit_owner", 0);
        // SAFETY: valid structs; `t` is undefined at the end.
        unsafe {
            assert_eq!(kmalloc43_rust_type_define(&mut t), 0);
            let before = svc.heap.type_stats(MallocType::from_raw(t.handle - 1));
            let mut copy = ctype(c"kunit_owner", 0);
            copy.handle = t.handle;
            assert!(kmalloc43_malloc(16, &mut copy, 1).is_null());
            let p = kmalloc43_malloc(16, &mut t, 1);
            assert!(!p.is_null());
            assert_eq!(kmalloc43_free(p, &mut copy), EINVAL.to_errno());
            assert_eq!(kmalloc43_rust_type_undefine(&mut copy), ENOENT.to_errno());
            // Every slot, with the generations a forger would try first.
            for slot in 0..crate::malloc::MAX_TYPES as u32 + 2 {
                for generation in [0u32, 1, 2, (t.handle - 1) >> 16] {
                    let mut forged = ctype(c"forged", 0);
                    forged.handle = (generation << 16 | slot) + 1;
                    assert!(kmalloc43_malloc(16, &mut forged, 2).is_null());
                }
            }
            assert_eq!(kmalloc43_free(p, &mut t), 0);
            let after = svc.heap.type_stats(MallocType::from_raw(t.handle - 1));
            assert_eq!(
                before.map(|s| (s.inuse, s.memuse)),
                after.map(|s| (s.inuse, s.memuse))
            );
            assert_eq!(kmalloc43_rust_type_undefine(&mut t), 0);
        }
        assert_eq!(svc.heap.audit(), Ok(()));
    }
}
