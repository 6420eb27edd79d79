// SPDX-License-Identifier: GPL-2.0

//! KUnit suite `kmalloc43_wrongtype`: a free that names the wrong type is refused exactly, with
//! `WrongType` naming the owner, and changes nothing (issue 10, item 6), with DIAGNOSTIC off and
//! on:
//!
//! * on the fast path (DIAGNOSTIC off, a piece or a run the magazines serve): the page hint's
//!   owner is not the caller's type, so `free_local` and `free_object` leave it to the core;
//! * on the global path (DIAGNOSTIC on, or a run too big for the magazines): the core's usage
//!   record names the owner;
//! * the issue's scenario: a type B with one live 4 KiB piece is given a 64 B piece of type A.
//!   Before, B's counters covered it, so the free was accepted, B read 0, B could be undefined
//!   with its 4 KiB live, and the unload found pages lost.
//!
//! * `realloc` with the wrong type is refused the same way, before `ty` is charged anything;
//! * the kernel log names the owner ("wrong type (owner NAME)").
//!
//! Each case checks both types' counters before and after the refused free, then frees
//! everything with the right type, audits, and drops the heap: pages taken == pages given back.

use kernel::prelude::kunit_tests;

#[kunit_tests(kmalloc43_wrongtype)]
mod wrongtype {
    use crate::kunit_support::*;

    /// The counters of a type that a refused free must leave alone.
    fn counters(h: &Heap, t: MallocType) -> (usize, usize, u64, u64) {
        let s = h.type_stats(t).expect("stats");
        (s.inuse, s.memuse, s.calls, s.sizemask)
    }

    /// `free(p, given)` is refused with `WrongType` naming `owner`, and neither type's counters
    /// change.
    fn refused(h: &Heap, p: NonNull<u8>, given: MallocType, owner: MallocType) {
        let before = (counters(h, given), counters(h, owner));
        let r = h.free(p, given);
        assert!(matches!(r, Err(MallocError::WrongType { .. })));
        if let Err(MallocError::WrongType {
            addr,
            given: g,
            owner: o,
        }) = r
        {
            assert_eq!(addr, p.as_ptr() as usize);
            assert_eq!(g, given);
            assert_eq!(o, Some(owner));
        }
        assert_eq!((counters(h, given), counters(h, owner)), before);
    }

    /// `realloc(p, size, given)` is refused with `WrongType` naming `owner`, `p` stays valid,
    /// and neither type's counters change (no allocation is charged to `given` on the way).
    fn realloc_refused(
        h: &Heap,
        p: NonNull<u8>,
        size: usize,
        given: MallocType,
        owner: MallocType,
    ) {
        let before = (counters(h, given), counters(h, owner));
        let r = h.realloc(p, size, given, NOWAIT);
        assert!(matches!(
            r,
            Err(MallocError::WrongType { owner: Some(o), .. }) if o == owner
        ));
        assert_eq!((counters(h, given), counters(h, owner)), before);
    }

    /// Sizes that reach every kind of object: a small and a big bucket piece, a page run the
    /// magazines cache (5 pages) and one they do not (100 KiB: the global path in any mode).
    const SIZES: [usize; 5] = [16, 64, 2048, 5 * 4096, 100 * 1024];

    /// Every size of [`SIZES`], freed with the wrong type on the heap `h`, whose type `b` holds
    /// live objects of every size (so that its counters could cover each).
    fn every_size_refused(diagnostic: bool) {
        let h = heap(diagnostic);
        let a = ty(&h, "wt-a", 0);
        let b = ty(&h, "wt-b", 0);
        let mut live_b = KVec::new();
        for &size in SIZES.iter() {
            for _ in 0..3 {
                live_b
                    .push(h.malloc(size, b, NOWAIT).expect("malloc b"), GFP_KERNEL)
                    .expect("push");
            }
        }
        for &size in SIZES.iter() {
            // Twice: the second free of the kind comes after the magazines hold some.
            for _ in 0..2 {
                let p = h.malloc(size, a, NOWAIT).expect("malloc a");
                refused(&h, p, b, a);
                // Growing and shrinking it as the wrong type: refused the same way.
                realloc_refused(&h, p, 2 * size + 1, b, a);
                realloc_refused(&h, p, size / 2 + 1, b, a);
                h.free(p, a).expect("free with the right type");
            }
        }
        // A wrong type on a piece that sits in A's magazines, or is free: a double free.
        let p = h.malloc(64, a, NOWAIT).expect("malloc a");
        h.free(p, a).expect("free");
        assert!(matches!(h.free(p, b), Err(MallocError::DoubleFree { .. })));
        for p in live_b.drain_all() {
            h.free(p, b).expect("free b");
        }
        audit(&h);
        assert_eq!(counters(&h, a).0, 0);
        assert_eq!(counters(&h, b).0, 0);
        every_page_back(h, &[a, b]);
    }

    #[test]
    fn wrong_type_refused_on_the_fast_path() {
        every_size_refused(false);
    }

    #[test]
    fn wrong_type_refused_on_the_global_path() {
        every_size_refused(true);
    }

    /// The issue's scenario in one DIAGNOSTIC mode.
    fn issue_scenario(diagnostic: bool) {
        let h = heap(diagnostic);
        let a = ty(&h, "wt-issue-a", 0);
        let b = ty(&h, "wt-issue-b", 0);
        let pb = h.malloc(4096, b, NOWAIT).expect("4 KiB of b");
        let pa = h.malloc(64, a, NOWAIT).expect("64 B of a");
        refused(&h, pa, b, a);
        // B's 4 KiB piece is still counted.
        assert_eq!(counters(&h, b).0, 1);
        assert!(matches!(
            h.undefine_type(b),
            Err(MallocError::TypeInUse { inuse: 1, .. })
        ));
        h.free(pa, a).expect("free a");
        h.free(pb, b).expect("free b");
        audit(&h);
        every_page_back(h, &[a, b]);
    }

    #[test]
    fn the_report_names_the_owner() {
        let h = heap(false);
        let a = ty(&h, "wt-owner-a", 0);
        let b = ty(&h, "wt-owner-b", 0);
        let p = h.malloc(64, a, NOWAIT).expect("malloc a");
        let e = h.free(p, b).expect_err("wrong type");
        let mut buf = [0u8; crate::abi::WRONG_TYPE_LEN];
        let what = crate::abi::wrong_type_owner(&h, &e, &mut buf).map(|s| s.to_bytes());
        assert_eq!(what, Some(&b"wrong type (owner wt-owner-a)"[..]));
        // Any other error keeps its plain description.
        let mut buf = [0u8; crate::abi::WRONG_TYPE_LEN];
        let other = MallocError::DoubleFree {
            addr: p.as_ptr() as usize,
            ty: None,
        };
        assert!(crate::abi::wrong_type_owner(&h, &other, &mut buf).is_none());
        h.free(p, a).expect("free a");
        audit(&h);
    }

    #[test]
    fn issue_scenario_diagnostic_off() {
        issue_scenario(false);
    }

    #[test]
    fn issue_scenario_diagnostic_on() {
        issue_scenario(true);
    }
}
