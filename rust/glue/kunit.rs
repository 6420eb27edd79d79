// SPDX-License-Identifier: GPL-2.0

//! KUnit suites of the module, run at insmod in the guest (after init, so the global service
//! exists). Each suite covers one concept; every bad input asserts its error and then runs the
//! audits (malloc core, kmem arena, page arena, client arenas).
//!
//! | suite              | covers                                                             |
//! |--------------------|--------------------------------------------------------------------|
//! | `kmalloc43_pages`  | chunk import/release to the page allocator, counters, teardown    |
//! | `kmalloc43_malloc` | sizes, alignment, usable size, realloc, ZERO, the GFP_KERNEL path |
//! | `kmalloc43_limits` | NOWAIT at a limit, WAITOK sleeping in a second context and woken  |
//! | `kmalloc43_diag`   | every bad malloc/free input, type define/undefine errors (C ABI)  |
//! | `kmalloc43_debugfs`| limit and switch parsing/apply through the write paths            |
//! | `kmalloc43_vmem`   | client arenas through the C ABI: bad frees, constraints, nesting  |
//!
//! Tests use private heaps (`Heap::new`), so their page counters are exact, except where they
//! test the C ABI, which always goes to the module's service.

use core::ptr::NonNull;

use kernel::{
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, Completion,
    },
    time::{delay::fsleep, Delta},
    workqueue,
};

use crate::heap::Heap;
use crate::malloc::{MallocError, MallocFlags, MallocType, SizeClasses, MAX_ALLOC_SIZE};

const WAITOK: MallocFlags = MallocFlags::WAITOK;
const NOWAIT: MallocFlags = MallocFlags::NOWAIT;

/// A private heap with 4-page chunks, DIAGNOSTIC on or off.
fn heap(diagnostic: bool) -> Arc<Heap> {
    Heap::new(2, diagnostic).expect("heap")
}

/// A private heap with 4-page chunks and the size classes `classes`, DIAGNOSTIC on or off.
fn heap_with(classes: SizeClasses, diagnostic: bool) -> Arc<Heap> {
    Heap::with_classes(2, classes, diagnostic).expect("heap")
}

/// Both size-class modes: the suites that exercise buckets run in each.
const MODES: [SizeClasses; 2] = [SizeClasses::Pow2, SizeClasses::Fine];

/// Defines a type on a private heap (`limit` 0: none).
fn ty(h: &Heap, name: &'static str, limit: usize) -> MallocType {
    let limit = if limit == 0 { usize::MAX } else { limit };
    h.define_type(name, "kunit", limit).expect("define")
}

/// Asserts the heap is consistent.
fn audit(h: &Heap) {
    assert_eq!(h.audit(), Ok(()));
}

/// Sleeps until `cond` holds, at most about two seconds; whether it held.
fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if cond() {
            return true;
        }
        fsleep(Delta::from_millis(10));
    }
    cond()
}

/// What a second context reports back.
#[pin_data]
struct Shared {
    #[pin]
    done: Completion,
    finished: Atomic<usize>,
    addr: Atomic<usize>,
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::pin_init(
            pin_init!(Shared {
                done <- Completion::new(),
                finished: Atomic::new(0),
                addr: Atomic::new(0),
            }),
            GFP_KERNEL,
        )
        .expect("shared")
    }
}

/// Runs `f` on the system workqueue; its address result lands in the returned `Shared`.
fn spawn(f: impl FnOnce() -> usize + Send + 'static) -> Arc<Shared> {
    let shared = Shared::new();
    let s = shared.clone();
    workqueue::system()
        .try_spawn(GFP_KERNEL, move || {
            s.addr.store(f(), Relaxed);
            s.finished.store(1, Relaxed);
            s.done.complete_all();
        })
        .expect("spawn");
    shared
}

#[kunit_tests(kmalloc43_pages)]
mod pages {
    use super::*;

    #[test]
    fn chunks_come_from_and_go_back_to_the_page_allocator() {
        for mode in MODES {
            chunks_in(mode);
        }
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
        // A large run needs its own 8-page chunk; freeing it gives the chunk back at once.
        let big = h.malloc(6 * 4096, t, WAITOK).expect("large");
        let given = counters.given();
        h.free(big, t).expect("free large");
        assert!(counters.given() >= given + 8); // chunk of the large run given back
        h.free(p, t).expect("free");
        audit(&h);
        h.undefine_type(t).expect("undefine");
        drop(h);
        assert_eq!(counters.taken(), counters.given()); // every page given back
    }

    #[test]
    fn teardown_returns_every_page_of_a_busy_heap() {
        for mode in MODES {
            teardown_in(mode);
        }
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
        h.undefine_type(t).expect("undefine");
        assert!(counters.taken() > 0);
        drop(h);
        assert_eq!(counters.taken(), counters.given());
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

#[kunit_tests(kmalloc43_malloc)]
mod malloc {
    use super::*;

    #[test]
    fn sizes_alignment_and_usable_size() {
        // (request, usable in pow2, usable in fine)
        let cases = [
            (1usize, 16usize, 16usize),
            (16, 16, 16),
            (17, 32, 32),
            (136, 256, 144),
            (600, 1024, 640),
            (1000, 1024, 1024),
            (1500, 2048, 1536),
            (4096, 4096, 4096),
            (5000, 8192, 5120),
            (8193, 3 * 4096, 3 * 4096),
            (100_000, 25 * 4096, 25 * 4096),
        ];
        for mode in MODES {
            let h = heap_with(mode, true);
            let t = ty(&h, "sizes", 0);
            for (size, pow2, fine) in cases {
                let usable = if mode == SizeClasses::Pow2 { pow2 } else { fine };
                let p = h.malloc(size, t, NOWAIT).expect("malloc");
                assert_eq!(h.usable_size(p), Ok(usable));
                // pow2: aligned to the size; fine: to the largest power of two dividing it.
                let align = if mode == SizeClasses::Pow2 {
                    usable
                } else {
                    usable & usable.wrapping_neg()
                };
                assert_eq!(p.as_ptr() as usize % align.min(4096), 0);
                // SAFETY: `p` has `usable` bytes.
                unsafe { core::ptr::write_bytes(p.as_ptr(), 0x5a, usable) };
                h.free(p, t).expect("free");
            }
            audit(&h);
        }
    }

    #[test]
    fn realloc_keeps_contents_and_zero_zeroes() {
        for mode in MODES {
            realloc_in(mode);
        }
    }

    fn realloc_in(mode: SizeClasses) {
        let h = heap_with(mode, true);
        let t = ty(&h, "realloc", 0);
        let p = h.malloc(40, t, WAITOK).expect("malloc");
        let old = h.usable_size(p).expect("usable");
        // SAFETY: at least 40 usable bytes.
        unsafe { core::ptr::write_bytes(p.as_ptr(), 7, 40) };
        let q = h
            .realloc(p, 3000, t, WAITOK | MallocFlags::ZERO)
            .expect("realloc");
        let new = h.usable_size(q).expect("usable");
        assert_eq!(new, if mode == SizeClasses::Pow2 { 4096 } else { 3072 });
        // SAFETY: `new` usable bytes, the first `old` copied, the rest zeroed.
        let bytes = unsafe { core::slice::from_raw_parts(q.as_ptr(), new) };
        assert!(bytes[..40].iter().all(|&b| b == 7));
        assert!(bytes[old..].iter().all(|&b| b == 0));
        let z = h.malloc(512, t, NOWAIT | MallocFlags::ZERO).expect("zero");
        // SAFETY: 512 bytes.
        assert!(unsafe { core::slice::from_raw_parts(z.as_ptr(), 512) }
            .iter()
            .all(|&b| b == 0));
        h.free(q, t).expect("free");
        h.free(z, t).expect("free");
        audit(&h);
    }

    /// Mixed allocations and frees of `rounds` rounds; 0 on success, else the failing round + 1.
    fn churn(h: &Heap, t: MallocType, seed: usize, rounds: usize) -> usize {
        let mut live = [None; 16];
        for r in 0..rounds {
            let slot = (seed + r * 7) % live.len();
            if let Some(p) = live[slot].take() {
                if h.free(p, t).is_err() {
                    return r + 1;
                }
            } else {
                let size = 1 + (seed * 131 + r * 977) % 9000;
                let flags = if r % 3 == 0 { NOWAIT } else { WAITOK };
                match h.malloc(size, t, flags) {
                    Ok(p) => live[slot] = Some(p),
                    Err(_) => return r + 1,
                }
            }
        }
        for p in live.into_iter().flatten() {
            if h.free(p, t).is_err() {
                return rounds + 1;
            }
        }
        0
    }

    #[test]
    fn two_contexts_share_one_heap() {
        for mode in MODES {
            two_contexts_in(mode);
        }
    }

    fn two_contexts_in(mode: SizeClasses) {
        let h = heap_with(mode, true);
        let counters = h.counters().clone();
        let t = ty(&h, "smp", 0);
        let h2 = h.clone();
        let w = spawn(move || churn(&h2, t, 1, 800));
        assert_eq!(churn(&h, t, 2, 800), 0);
        w.done.wait_for_completion();
        assert_eq!(w.addr.load(Relaxed), 0);
        assert_eq!(h.type_stats(t).map(|s| s.inuse), Ok(0));
        audit(&h);
        h.undefine_type(t).expect("undefine");
        drop(h);
        assert_eq!(counters.taken(), counters.given());
    }

    #[test]
    fn nowait_and_free_work_with_interrupts_disabled() {
        let h = heap(true);
        let t = ty(&h, "irqoff", 0);
        let irqs_off = kernel::interrupt::local_interrupt_disable();
        // Imports a chunk (GFP_NOWAIT) and map pages with interrupts off, as in a hardirq.
        let p = h.malloc(64, t, NOWAIT).expect("small");
        let big = h
            .malloc(3 * 4096, t, NOWAIT | MallocFlags::ZERO)
            .expect("large");
        h.free(big, t).expect("free large");
        h.free(p, t).expect("free small");
        drop(irqs_off);
        audit(&h);
    }

    #[test]
    fn waitok_takes_pages_with_gfp_kernel_when_atomic_imports_fail() {
        let h = heap(false);
        let counters = h.counters().clone();
        let t = ty(&h, "sleepy", 0);
        h.set_atomic_imports(false);
        // NOWAIT cannot get a page: it fails, counted as a map block.
        let e = h.malloc(64, t, NOWAIT).unwrap_err();
        assert!(matches!(e, MallocError::NoMemory { .. }));
        assert_eq!(h.type_stats(t).map(|s| s.mapblocks), Ok(1));
        // WAITOK drops the lock, takes a chunk with GFP_KERNEL, deposits it and retries.
        let p = h.malloc(64, t, WAITOK).expect("waitok");
        h.set_atomic_imports(true);
        h.free(p, t).expect("free");
        audit(&h);
        h.undefine_type(t).expect("undefine");
        drop(h);
        assert_eq!(counters.taken(), counters.given());
    }
}

#[kunit_tests(kmalloc43_limits)]
mod limits {
    use super::*;

    #[test]
    fn nowait_at_the_limit_fails_and_counts() {
        let h = heap(false);
        let t = ty(&h, "lim", 2048);
        let p = h.malloc(2048, t, NOWAIT).expect("first");
        let e = h.malloc(16, t, NOWAIT).unwrap_err();
        assert!(matches!(e, MallocError::Limit { .. }));
        // A request bigger than the limit fails even with WAITOK (waiting could never help).
        let e = h.malloc(4096, t, WAITOK).unwrap_err();
        assert!(matches!(e, MallocError::Limit { .. }));
        assert_eq!(h.type_stats(t).map(|s| s.limblocks), Ok(2));
        h.free(p, t).expect("free");
        audit(&h);
    }

    #[test]
    fn waitok_sleeps_until_a_free_of_the_type() {
        let h = heap(false);
        let t = ty(&h, "sleep", 4096);
        let p = h.malloc(4096, t, WAITOK).expect("first");
        let h2 = h.clone();
        let w = spawn(move || {
            h2.malloc(4096, t, WAITOK)
                .map_or(0, |p| p.as_ptr() as usize)
        });
        assert!(wait_until(|| h.waiters() == 1)); // worker is asleep at the limit
        assert_eq!(w.finished.load(Relaxed), 0);
        h.free(p, t).expect("free wakes it");
        w.done.wait_for_completion();
        let q = w.addr.load(Relaxed);
        assert_ne!(q, 0);
        h.free(NonNull::new(q as *mut u8).unwrap(), t)
            .expect("free");
        assert_eq!(h.waiters(), 0);
        audit(&h);
    }

    #[test]
    fn waitok_wakes_when_the_limit_is_raised_through_the_write_path() {
        let h = heap(false);
        let t = ty(&h, "raise", 1024);
        let p = h.malloc(1024, t, WAITOK).expect("first");
        let h2 = h.clone();
        let w = spawn(move || {
            h2.malloc(1024, t, WAITOK)
                .map_or(0, |p| p.as_ptr() as usize)
        });
        assert!(wait_until(|| h.waiters() == 1));
        crate::types::store_limit_bytes(&h, t, b"2048\n").expect("raise");
        w.done.wait_for_completion();
        let q = w.addr.load(Relaxed);
        assert_ne!(q, 0);
        h.free(NonNull::new(q as *mut u8).unwrap(), t)
            .expect("free");
        h.free(p, t).expect("free");
        audit(&h);
    }
}

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
        for mode in MODES {
            bad_frees_in(mode);
        }
    }

    fn bad_frees_in(mode: SizeClasses) {
        let h = heap_with(mode, true);
        let t = ty(&h, "victim", 0);
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

    #[test]
    fn double_free_is_caught_without_diagnostic() {
        for mode in MODES {
            double_free_in(mode, 64);
        }
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
            let p = kmalloc43_rust_malloc(300, &mut t, 1);
            assert!(!p.is_null());
            // 300 bytes: the 512-byte bucket in pow2, the 320-byte class in fine.
            let usable = match svc.heap.with(|s| s.malloc.classes().mode()) {
                SizeClasses::Pow2 => 512,
                SizeClasses::Fine => 320,
            };
            assert_eq!(kmalloc43_rust_usable_size(p), usable);
            assert_eq!(
                kmalloc43_rust_free(p.cast::<u8>().add(4).cast(), &mut t),
                EINVAL.to_errno()
            );
            assert_eq!(kmalloc43_rust_type_undefine(&mut t), EBUSY.to_errno());
            assert_eq!(kmalloc43_rust_free(p, &mut t), 0);
            assert_eq!(kmalloc43_rust_free(p, &mut t), EINVAL.to_errno()); // double free
            assert_eq!(kmalloc43_rust_free(core::ptr::null_mut::<c_void>(), &mut t), 0);
            assert!(kmalloc43_rust_malloc(0, &mut t, 1).is_null());
            assert!(kmalloc43_rust_malloc(16, &mut dup, 1).is_null()); // undefined type
            assert_eq!(kmalloc43_rust_type_undefine(&mut t), 0);
            assert_eq!(t.handle, 0);
            assert_eq!(kmalloc43_rust_type_undefine(&mut t), ENOENT.to_errno());
        }
        assert_eq!(svc.heap.audit(), Ok(()));
    }
}

#[kunit_tests(kmalloc43_debugfs)]
mod debugfs {
    use super::*;
    use crate::debugfs::store_diagnostic_bytes;
    use crate::types::store_limit_bytes;

    #[test]
    fn limit_writes_round_trip_and_bad_ones_change_nothing() {
        let h = heap(false);
        let t = ty(&h, "dbg", 4096);
        for input in [
            &b""[..],
            b"\n",
            b"-1",
            b"abc",
            b" 5",
            b"5 ",
            b"0x10",
            b"99999999999999999999999",
        ] {
            assert_eq!(store_limit_bytes(&h, t, input), Err(EINVAL));
            assert_eq!(h.type_stats(t).map(|s| s.limit), Ok(4096)); // unchanged
        }
        store_limit_bytes(&h, t, b"12345\n").expect("good");
        let limit = h.type_stats(t).map(|s| s.limit).expect("stats");
        assert_eq!(limit, 12345);
        assert_eq!(crate::report::limit_value(limit), 12345); // shown as written
        store_limit_bytes(&h, t, b"0").expect("none");
        assert_eq!(h.type_stats(t).map(|s| s.limit), Ok(usize::MAX));
        h.undefine_type(t).expect("undefine");
        assert_eq!(store_limit_bytes(&h, t, b"1"), Err(ENOENT)); // undefined type
        audit(&h);
    }

    #[test]
    fn diagnostic_switch_accepts_only_0_and_1() {
        let h = heap(false);
        let t = ty(&h, "sw", 0);
        let p = h.malloc(32, t, WAITOK).expect("malloc");
        for input in [&b"2"[..], b"on", b"", b"-0"] {
            assert_eq!(store_diagnostic_bytes(&h, input), Err(EINVAL));
        }
        store_diagnostic_bytes(&h, b"1\n").expect("on");
        assert!(h.with(|s| s.malloc.diagnostic()));
        audit(&h);
        h.free(p, t).expect("free after switching on");
        store_diagnostic_bytes(&h, b"0").expect("off");
        audit(&h);
    }
}

#[kunit_tests(kmalloc43_vmem)]
mod vmem {
    use super::*;
    use crate::abi::*;
    use kernel::ffi::{c_ulong, c_void};

    const NOSLEEP: u32 = crate::arenas::VM_NOSLEEP;
    const SLEEP: u32 = crate::arenas::VM_SLEEP;

    fn create(name: &CStr, base: usize, size: usize, quantum: usize) -> *mut RawVmem {
        let mut vm = core::ptr::null_mut();
        // SAFETY: valid name and out pointer; no source.
        let rc = unsafe {
            kmalloc43_rust_vmem_create(
                name.as_char_ptr(),
                base as c_ulong,
                size,
                quantum,
                None,
                None,
                core::ptr::null_mut(),
                0,
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
}
