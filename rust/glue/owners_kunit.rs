// SPDX-License-Identifier: GPL-2.0

//! KUnit suite of client ownership (`owners.rs`, the registry's `module_going`/adoption in
//! `types.rs`, disowning in `arenas.rs`) (`CONFIG_KMALLOC43_KUNIT_TEST`).
//!
//! The going module is played by kmalloc43's own `struct module` on a private registry (nothing
//! unloads), reported under the name `kunit_owner`, which `tools/expected-leftovers` lists.

use crate::kunit_support::*;

#[kunit_tests(kmalloc43_owners)]
mod owners {
    use super::*;
    use crate::arenas::{VmArena, DISOWNED_SPANS};
    use crate::owners::ModuleName;
    use crate::types::{Kmalloc43Type, TypeRegistry};
    use kernel::{
        debugfs::Dir,
        ffi::{c_ulong, c_void},
        ModuleMetadata,
    };

    /// kmalloc43's own module, the owner the tests make "go".
    fn owner() -> *mut crate::kmalloc43_abi::module {
        <crate::LocalModule as ModuleMetadata>::THIS_MODULE
            .as_ptr()
            .cast()
    }

    /// The name the notifier would pass (the harness expects lines naming it).
    fn going_name() -> ModuleName {
        ModuleName::new(b"kunit_owner")
    }

    fn ctype(name: &'static CStr, owner: *mut crate::kmalloc43_abi::module) -> Kmalloc43Type {
        Kmalloc43Type {
            name: name.as_char_ptr(),
            desc: c"kunit owned type".as_char_ptr(),
            limit: 0,
            owner,
            handle: 0,
        }
    }

    fn registry(h: &Arc<Heap>) -> Pin<KBox<TypeRegistry>> {
        KBox::pin_init(
            TypeRegistry::new(h.clone(), Dir::new(c"kmalloc43_kunit_owners")),
            GFP_KERNEL,
        )
        .expect("registry")
    }

    /// A type left with live allocations is orphaned (the old struct no longer reaches it, the
    /// report says `(orphan)`, the allocations stay charged); another module cannot take its
    /// name; the owner's reload adopts it, frees the old allocations through the new struct and
    /// undefines it. A type left without allocations is simply undefined.
    #[test]
    fn going_owner_orphans_types_and_a_reload_adopts_them() {
        let h = heap(false);
        let reg = registry(&h);
        let mut old = ctype(c"kunit_own", owner());
        let mut empty = ctype(c"kunit_own_empty", owner());
        let mut builtin = ctype(c"kunit_builtin", core::ptr::null_mut());
        // SAFETY: valid structs with valid strings, alive for the whole test.
        unsafe {
            reg.define(&mut old).expect("define");
            reg.define(&mut empty).expect("define");
            reg.define(&mut builtin).expect("define");
        }
        // SAFETY: valid structs.
        let (ty, empty_ty, builtin_ty) = unsafe {
            (
                reg.handle_of(&old).expect("defined"),
                reg.handle_of(&empty).expect("defined"),
                reg.handle_of(&builtin).expect("defined"),
            )
        };
        let p = h.malloc(100, ty, WAITOK).expect("malloc");
        let q = h.malloc(5000, ty, WAITOK).expect("malloc");
        let before = h.type_stats(ty).expect("stats");

        reg.module_going(owner().cast_const().cast::<c_void>(), &going_name());

        // SAFETY: valid structs.
        unsafe {
            assert_eq!(reg.handle_of(&old), None); // the old struct is forgotten
            assert_eq!(reg.handle_of(&empty), None);
            assert_eq!(reg.handle_of(&builtin), Some(builtin_ty)); // built-in: never goes
        }
        let st = h.type_stats(ty).expect("orphan stays defined");
        assert_eq!(st.name, "kunit_own(orphan)");
        assert_eq!((st.inuse, st.memuse), (2, before.memuse));
        assert!(matches!(
            h.type_stats(empty_ty),
            Err(MallocError::UnknownType)
        ));
        audit(&h);

        // Another module (here: built-in code) cannot take the orphan's name.
        let mut other = ctype(c"kunit_own", core::ptr::null_mut());
        // SAFETY: a valid struct.
        assert_eq!(unsafe { reg.define(&mut other) }, Err(EEXIST));

        // The owner's reload adopts it: same slot, same allocations, the new struct.
        let mut new = ctype(c"kunit_own", owner());
        // SAFETY: a valid struct.
        unsafe { reg.define(&mut new) }.expect("define adopts");
        // SAFETY: a valid struct.
        let adopted = unsafe { reg.handle_of(&new) }.expect("adopted");
        assert_eq!(adopted, ty);
        let st = h.type_stats(ty).expect("stats");
        assert_eq!((st.name, st.inuse), ("kunit_own", 2));
        // SAFETY: a valid struct; the old one stays refused.
        assert_eq!(unsafe { reg.handle_of(&old) }, None);
        h.free(p, adopted).expect("free through the new struct");
        h.free(q, adopted).expect("free through the new struct");
        // SAFETY: valid structs.
        unsafe {
            reg.undefine(&mut new).expect("undefine");
            reg.undefine(&mut builtin).expect("undefine");
            // The empty type was undefined when its owner went.
            reg.define(&mut empty).expect("its name is free again");
            reg.undefine(&mut empty).expect("undefine");
        }
        audit(&h);
    }

    /// Counters of the "client" source below.
    static IMPORTS: Atomic<usize> = Atomic::new(0);
    static RELEASES: Atomic<usize> = Atomic::new(0);
    static NEXT: Atomic<usize> = Atomic::new(0x10_0000);

    /// A client's import function: hands out fresh ranges of integers.
    ///
    /// # Safety
    ///
    /// As `kmalloc43_vmem_import_t`.
    unsafe extern "C" fn import(_: *mut c_void, size: usize, _: u32, base: *mut c_ulong) -> i32 {
        IMPORTS.fetch_add(1, Relaxed);
        // SAFETY: the caller's guarantee.
        unsafe { base.write(NEXT.fetch_add(size, Relaxed) as c_ulong) };
        0
    }

    /// A client's release function: counts its calls.
    ///
    /// # Safety
    ///
    /// As `kmalloc43_vmem_release_t`.
    unsafe extern "C" fn release(_: *mut c_void, _: c_ulong, _: usize) {
        RELEASES.fetch_add(1, Relaxed);
    }

    /// A disowned arena never calls its source again: an allocation that needs an import fails,
    /// a span that becomes free is kept (counted in `disowned_spans`), destroy keeps the rest;
    /// what it holds stays usable until then.
    #[test]
    fn disowned_arena_calls_no_source_function() {
        let svc = crate::service::service().expect("service");
        let mut raw = core::ptr::null_mut();
        // SAFETY: valid arguments; the source functions accept any cookie.
        let rc = unsafe {
            crate::abi::kmalloc43_rust_vmem_create(
                owner(),
                c"kunit_disowned".as_char_ptr(),
                0,
                0,
                16,
                Some(import),
                Some(release),
                core::ptr::null_mut(),
                0,
                crate::arenas::VM_NOSLEEP,
                &mut raw,
            )
        };
        assert_eq!(rc, 0);
        // SAFETY: a live handle.
        let vm = unsafe { &*raw.cast::<VmArena>() };
        assert_eq!(vm.owner(), owner().cast_const().cast::<c_void>());
        assert!(!vm.sources_from_kmalloc43());
        // SAFETY: kmalloc43 is loaded.
        assert!(unsafe { vm.calls_into(owner().cast_const().cast()) });
        let (i0, r0, d0) = (
            IMPORTS.load(Relaxed),
            RELEASES.load(Relaxed),
            DISOWNED_SPANS.load(Relaxed),
        );
        let a = vm.alloc(64, crate::arenas::VM_NOSLEEP).expect("imports");
        let b = vm
            .alloc(64, crate::arenas::VM_NOSLEEP)
            .expect("same span or another");
        let spans = IMPORTS.load(Relaxed) - i0;
        assert!(spans >= 1);
        assert_eq!(vm.live(), (2, 128));

        assert!(vm.disown());
        assert!(!vm.disown()); // once
        assert_eq!(vm.shown_name().as_str(), "kunit_disowned");
        vm.orphan();
        assert!(vm.owner().is_null());
        // Renamed as an orphaned type is (the arena report and messages show it).
        assert_eq!(vm.shown_name().as_str(), "kunit_disowned(orphan)");
        assert_eq!(vm.alloc(1 << 20, crate::arenas::VM_NOSLEEP), Err(ENOMEM)); // no import
        assert_eq!(IMPORTS.load(Relaxed) - i0, spans);
        vm.free(a, 64, false).expect("free");
        vm.free(b, 64, false).expect("free");
        assert_eq!(vm.audit(), Ok(()));
        // SAFETY: the handle is live and used by nothing else.
        assert_eq!(unsafe { svc.destroy_arena(raw.cast()) }, Ok(()));
        assert_eq!(RELEASES.load(Relaxed), r0); // the release function is never called
        assert_eq!(DISOWNED_SPANS.load(Relaxed) - d0, spans); // every span kept, counted
    }
}
