// SPDX-License-Identifier: GPL-2.0

//! KUnit suites of the page allocator below everything (`pages.rs`) (`CONFIG_KMALLOC43_KUNIT_TEST`; shared helpers in `kunit_support.rs`).

use crate::kunit_support::*;

#[kunit_tests(kmalloc43_pages)]
mod pages {
    use super::*;

    #[test]
    fn chunks_come_from_and_go_back_to_the_page_allocator() {
        in_every_mode(chunks_in);
    }

    fn chunks_in(mode: SizeClasses) {
        let h = heap_with(mode, false);
        let counters = h.counters().clone();
        let t = ty(&h, "pages", 0);
        let p = h.malloc(100, t, WAITOK).expect("malloc");
        // One 4-page chunk at least, plus tag pages of the two arenas.
        assert!(counters.taken() >= 4 + 2);
        let held = crate::debugfs::totals(&h);
        assert!(held.arena_bytes >= 4 * 4096);
        assert_eq!(held.data_pages, 1);
        // A large run needs its own 8-page chunk. Freeing it parks it in this CPU's magazine
        // (runs up to 64 KiB have magazines: Documentation/magazines.rst); a drain gives it to
        // the kmem arena, which gives the chunk back at once.
        let big = h.malloc(6 * 4096, t, WAITOK).expect("large");
        let given = counters.given();
        h.free(big, t).expect("free large");
        h.drain();
        assert!(counters.given() >= given + 8); // chunk of the large run given back
        assert!(crate::hint::page_hint(big.as_ptr() as usize).is_none()); // its hint went first
        h.free(p, t).expect("free");
        audit(&h);
        every_page_back(h, &[t]);
        crate::pages::wait_for_give_backs();
        assert_eq!(counters.deferred(), 0); // and in the page allocator
    }

    /// A chunk list given back reaches the page allocator only after a grace period: while a
    /// read-side section that was open when it was handed over is still open, its pages are
    /// counted as given and as deferred; after `rcu_barrier()`, as given alone.
    #[test]
    fn give_back_waits_for_a_grace_period() {
        let counters = crate::pages::PageCounters::new().expect("counters");
        let mut list = crate::pages::ChunkList::new();
        for order in [0, 2] {
            let addr = counters
                .take(order, kernel::bindings::GFP_KERNEL)
                .expect("chunk");
            // SAFETY: a chunk of this order just taken, used by nobody.
            unsafe { list.push(addr, order) };
        }
        assert_eq!(counters.taken(), 5);
        let rcu = kernel::sync::rcu::read_lock();
        assert_eq!(list.give_back(&counters), 5);
        // No grace period can end while this section is open: the callback has not run.
        assert_eq!((counters.given(), counters.deferred()), (5, 5));
        drop(rcu);
        crate::pages::wait_for_give_backs();
        assert_eq!((counters.given(), counters.deferred()), (5, 0));
    }

    /// A hint needs no check word (`hint.rs`): a page that is not a heap's has no bit in the
    /// bitmap, so whatever its `private` holds, even a code naming the freeing type as the owner
    /// of a piece at that address, is never read. Both `free`'s fast path and `Heap::free` refuse
    /// the pointer (`ForeignPointer`), counting nothing.
    #[test]
    fn a_forged_code_on_a_foreign_page_is_never_read() {
        extern "C" {
            fn kmalloc43_c_swap_page_private(
                addr: kernel::ffi::c_ulong,
                v: kernel::ffi::c_ulong,
            ) -> kernel::ffi::c_ulong;
        }
        use crate::malloc::{PageCode, PageHint};
        for mode in MODES {
            let h = heap_with(mode, false);
            let counters = h.counters().clone();
            let t = ty(&h, "forged", 0);
            // A live piece, so that the type has magazines and credit on this CPU.
            let mine = h.malloc(64, t, WAITOK).expect("malloc");
            let page = counters
                .take(0, kernel::bindings::GFP_KERNEL)
                .expect("page");
            let classes = h.with(|s| s.malloc.classes());
            let before = h.type_stats(t).map(|s| (s.inuse, s.memuse));
            for class in 0..classes.count() {
                let owner = t.index() as u8 + 1;
                let code = PageCode::of(PageHint::Bucket { class, owner }, 0);
                // SAFETY: our own page, which carries no hint and no bit.
                let old = unsafe { kmalloc43_c_swap_page_private(page, code.raw() as usize) };
                assert!(crate::hint::page_hint(page).is_none());
                assert!(!h.free_local(&h.front.fast_ref(), page, t));
                let ptr = NonNull::new(page as *mut u8).expect("page");
                assert!(matches!(
                    h.free(ptr, t),
                    Err(MallocError::ForeignPointer { .. })
                ));
                // SAFETY: as above; the old value back.
                unsafe { kmalloc43_c_swap_page_private(page, old) };
            }
            assert_eq!(h.type_stats(t).map(|s| (s.inuse, s.memuse)), before);
            // SAFETY: the page from `take` above, order 0, not used any more.
            unsafe { counters.give(page, 0) };
            h.free(mine, t).expect("free");
            audit(&h);
            h.undefine_type(t).expect("undefine");
        }
    }

    #[test]
    fn teardown_returns_every_page_of_a_busy_heap() {
        in_every_mode(teardown_in);
    }

    fn teardown_in(mode: SizeClasses) {
        let h = heap_with(mode, true);
        let counters = h.counters().clone();
        let t = ty(&h, "busy", 0);
        let mut v = KVec::new();
        for i in 0..200usize {
            let size = 1 + (i * 97) % 9000;
            v.push(
                (h.malloc(size, t, WAITOK).expect("malloc"), size),
                GFP_KERNEL,
            )
            .expect("push");
        }
        audit(&h);
        for (p, _) in v.drain_all() {
            h.free(p, t).expect("free");
        }
        audit(&h);
        assert!(counters.taken() > 0);
        every_page_back(h, &[t]);
    }

    #[test]
    fn teardown_with_live_allocations_leaks_instead_of_freeing() {
        let h = heap(false);
        let counters = h.counters().clone();
        let t = ty(&h, "leaky", 0);
        let p = h.malloc(5 * 4096, t, WAITOK).expect("malloc");
        // Unload without freeing (a buggy client): the teardown must not free the chunk that
        // still holds the allocation, and the counters must show it.
        drop(h);
        assert!(counters.taken() > counters.given());
        // SAFETY: the leaked run is still ours to touch: nothing freed it.
        unsafe { core::ptr::write_bytes(p.as_ptr(), 0xa5, 5 * 4096) };
        // Leaked on purpose: kmemleak must not report it (it reports real leaks, see
        // tools/check-guest.sh).
        crate::kmemleak::not_leak(p);
    }

    #[test]
    fn bookkeeping_stays_under_2k_per_mib() {
        let h = heap(false);
        let t = ty(&h, "bk", 0);
        let mut v = KVec::new();
        // 16 MiB of 4 KiB pieces (the map's leaves are whole pages: measure at a real size).
        for _ in 0..4096 {
            v.push(h.malloc(4096, t, WAITOK).expect("malloc"), GFP_KERNEL)
                .expect("push");
        }
        let tot = crate::debugfs::totals(&h);
        let per_mib = tot.bookkeeping_per_mib(4096).expect("data");
        pr_info!(
            "bookkeeping: {} pages for {} data pages = {} bytes/MiB\n",
            tot.bookkeeping_pages,
            tot.data_pages,
            per_mib
        );
        for p in v.drain_all() {
            h.free(p, t).expect("free");
        }
        audit(&h);
        assert!(per_mib <= 2048);
    }
}
