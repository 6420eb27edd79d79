// SPDX-License-Identifier: GPL-2.0

//! KUnit suites of the heap (`heap.rs`): malloc on kmem on the page arena, limits and WAITOK (`CONFIG_KMALLOC43_KUNIT_TEST`; shared helpers in `kunit_support.rs`).

use crate::kunit_support::*;

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
            let (h, t) = heap_and_type(mode, true, "sizes");
            for (size, pow2, fine) in cases {
                let usable = if mode == SizeClasses::Pow2 {
                    pow2
                } else {
                    fine
                };
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
        in_every_mode(realloc_in);
    }

    fn realloc_in(mode: SizeClasses) {
        let (h, t) = heap_and_type(mode, true, "realloc");
        let p = h.malloc(40, t, WAITOK).expect("malloc");
        let old = h.usable_size(p).expect("usable");
        // SAFETY: at least 40 usable bytes.
        unsafe { core::ptr::write_bytes(p.as_ptr(), 7, 40) };
        let q = h
            .realloc(p, 3000, t, WAITOK | MallocFlags::ZERO)
            .expect("realloc");
        let new = h.usable_size(q).expect("usable");
        assert_eq!(
            new,
            if mode == SizeClasses::Pow2 {
                4096
            } else {
                3072
            }
        );
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
        in_every_mode(two_contexts_in);
    }

    fn two_contexts_in(mode: SizeClasses) {
        let (h, t) = heap_and_type(mode, true, "smp");
        let h2 = h.clone();
        let w = spawn(move || churn(&h2, t, 1, 800));
        assert_eq!(churn(&h, t, 2, 800), 0);
        w.done.wait_for_completion();
        assert_eq!(w.addr.load(Relaxed), 0);
        assert_eq!(h.type_stats(t).map(|s| s.inuse), Ok(0));
        audit(&h);
        every_page_back(h, &[t]);
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
        every_page_back(h, &[t]);
    }
}

#[kunit_tests(kmalloc43_hostile_free_list)]
mod hostile_free_list {
    use super::*;
    use crate::debugfs::totals;

    /// The kernel's LIST_POISON1 and LIST_POISON2 (no POISON_POINTER_DELTA).
    const LIST_POISON: [usize; 2] = [0xdead_0000_0000_0100, 0xdead_0000_0000_0122];

    /// A client writes `words` over the first words of pieces it freed (once they are back on
    /// the bucket's free list: the magazines drained), then mallocs again: no panic, no pointer
    /// handed out twice; without DIAGNOSTIC the bad link is counted in `totals` and cut, with it
    /// the free list is repaired from the side table (`ModifiedAfterFree`, which the glue reports
    /// and retries). Everything goes back
    /// at the end (the heap's teardown gives the lost pieces' clusters back).
    fn scribbled(mode: SizeClasses, diagnostic: bool, words: [usize; 2]) {
        const N: usize = 8;
        let (h, t) = heap_and_type(mode, diagnostic, "scribbled");
        let keep = h.malloc(64, t, NOWAIT).expect("malloc");
        let mut freed = [0usize; N];
        for f in freed.iter_mut() {
            *f = h.malloc(64, t, NOWAIT).expect("malloc").as_ptr() as usize;
        }
        for &f in freed.iter() {
            h.free(NonNull::new(f as *mut u8).expect("non-null"), t)
                .expect("free");
        }
        h.drain();
        for &f in freed.iter() {
            // SAFETY: the test plays a client writing over pieces it freed: memory the heap
            // still holds (mapped), at least two words long.
            unsafe { (f as *mut [usize; 2]).write(words) };
        }
        let mut got = KVec::new();
        let mut repaired = 0;
        while got.len() < 2 * N {
            match h.malloc(64, t, NOWAIT) {
                Ok(p) => {
                    let a = p.as_ptr() as usize;
                    assert!(a != keep.as_ptr() as usize, "a live piece handed out");
                    assert!(!got.contains(&a), "a piece handed out twice");
                    got.push(a, GFP_KERNEL).expect("vec");
                }
                Err(MallocError::ModifiedAfterFree { .. }) if diagnostic => repaired += 1,
                Err(e) => panic!("malloc: {e:?}"),
            }
            assert!(repaired <= N, "repair does not converge");
        }
        let tot = totals(&h);
        if diagnostic {
            // The glue reports and retries a `ModifiedAfterFree` itself (heap.rs); the list was
            // rebuilt from the side table, nothing cut.
            assert_eq!(tot.bad_links, 0);
        } else {
            assert_eq!(tot.bad_links, 1, "the bad link is counted once and cut");
        }
        audit(&h);
        for &a in got.iter() {
            h.free(NonNull::new(a as *mut u8).expect("non-null"), t)
                .expect("free");
        }
        h.free(keep, t).expect("free");
        h.drain();
        audit(&h);
        h.with(|s| s.malloc.reclaim());
        assert_eq!(
            totals(&h).lost_pieces,
            0,
            "reclaim gives the lost pieces back"
        );
        audit(&h);
    }

    #[test]
    fn list_poison_over_freed_pieces() {
        for mode in MODES {
            for diagnostic in [false, true] {
                scribbled(mode, diagnostic, LIST_POISON);
            }
        }
    }

    #[test]
    fn zeroed_links_of_freed_pieces() {
        for mode in MODES {
            for diagnostic in [false, true] {
                scribbled(mode, diagnostic, [0, 0]);
            }
        }
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

    /// For a piece the magazines serve (4 KiB: their slow path sleeps) and for a run over 64
    /// KiB (128 KiB: the core's path under the heap lock alone, which takes every slot only to
    /// sleep).
    #[test]
    fn waitok_sleeps_until_a_free_of_the_type() {
        for size in [4096, 128 * 1024] {
            let h = heap(false);
            let t = ty(&h, "sleep", size);
            let p = h.malloc(size, t, WAITOK).expect("first");
            let h2 = h.clone();
            let w = spawn(move || {
                h2.malloc(size, t, WAITOK)
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
