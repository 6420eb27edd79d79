// SPDX-License-Identifier: GPL-2.0

//! Type-segregated buckets (module `segregate`): a free with the wrong type is `WrongType` naming
//! the owner, exactly, with DIAGNOSTIC off and on, and changes nothing; the owner is in the
//! cluster's record and in every page's hint; type buckets give back, age, reclaim and undefine
//! like the shared ones; per-class statistics are the sums.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::ptr::NonNull;

use kmalloc43_core::hosted::malloc_host_pages::{host_vmem_kmem, HostPages};
use kmalloc43_core::malloc::{
    KmemPages, Malloc, MallocError, MallocFlags, MallocType, PageCode, PageHint, SizeClasses,
    TypeStats, MAXALLOCSAVE, MAX_CLASSES, MAX_LARGE_PAGES, MAX_TYPES, PAGE_SHIFT, PAGE_SIZE,
    SEGREGATE_ALL, WINDOW_OPS,
};

const NOWAIT: MallocFlags = MallocFlags::NOWAIT;

/// The thresholds under test: off, below 256 bytes, every class.
const THRESHOLDS: [usize; 3] = [0, 256, SEGREGATE_ALL];

/// A host page supply that remembers every page's hint, as the kernel's `struct page` does.
struct Hinted {
    pages: HostPages,
    hints: HashMap<usize, PageCode>,
}

impl Hinted {
    fn new() -> Self {
        Self {
            pages: HostPages::new(),
            hints: HashMap::new(),
        }
    }

    /// The code of the page holding `addr`.
    fn hint(&self, addr: usize) -> Option<PageCode> {
        let code = *self.hints.get(&(addr >> PAGE_SHIFT))?;
        code.is_some().then_some(code)
    }
}

// SAFETY: every call but `note_run` is forwarded to the host supply, which upholds the contract.
unsafe impl KmemPages for Hinted {
    fn alloc_pages(&mut self, npages: usize, align_pages: usize) -> Option<usize> {
        self.pages.alloc_pages(npages, align_pages)
    }

    unsafe fn free_pages(&mut self, addr: usize, npages: usize) {
        // SAFETY: the caller's guarantee, forwarded.
        unsafe { self.pages.free_pages(addr, npages) }
    }

    fn alloc_meta_page(&mut self) -> Option<usize> {
        self.pages.alloc_meta_page()
    }

    unsafe fn free_meta_page(&mut self, addr: usize) {
        // SAFETY: the caller's guarantee, forwarded.
        unsafe { self.pages.free_meta_page(addr) }
    }

    fn note_run(&mut self, first: usize, npages: usize, hint: Option<PageHint>) {
        for (i, p) in (first..first + npages).enumerate() {
            match hint {
                Some(h) => self.hints.insert(p, PageCode::of(h, i)),
                None => self.hints.remove(&p),
            };
        }
    }
}

fn stats(m: &Malloc<impl KmemPages>, ty: MallocType) -> TypeStats {
    m.type_stats(ty).unwrap()
}

/// The issue's scenario: type `B` has one live 4 KiB piece; `free(pA, B)` of a 64 B piece of
/// type `A` is `WrongType` naming `A`, both types' counters unchanged, `undefine(B)` still
/// refused; at the end every page is back.
fn issue_scenario(mode: SizeClasses, below: usize, diag: bool) {
    let mut m = Malloc::with_segregation(host_vmem_kmem(64 * 1024, None), mode, below);
    m.set_diagnostic(diag).unwrap();
    let a = m.define_type("A", "", usize::MAX).unwrap();
    let b = m.define_type("B", "", usize::MAX).unwrap();
    let pb = m.malloc(4096, b, NOWAIT).unwrap();
    let pa = m.malloc(64, a, NOWAIT).unwrap();
    let (sa, sb) = (stats(&m, a), stats(&m, b));
    assert_eq!(
        m.free(pa, b),
        Err(MallocError::WrongType {
            addr: pa.as_ptr() as usize,
            given: b,
            owner: Some(a),
        }),
        "threshold {below}, diagnostic {diag}"
    );
    assert_eq!((stats(&m, a), stats(&m, b)), (sa, sb));
    assert!(matches!(
        m.undefine_type(b),
        Err(MallocError::TypeInUse { inuse: 1, .. })
    ));
    m.audit().unwrap();
    m.free(pa, a).unwrap();
    m.free(pb, b).unwrap();
    m.undefine_type(a).unwrap();
    m.undefine_type(b).unwrap();
    m.reclaim();
    m.audit().unwrap();
    let ms = m.memory_stats();
    assert_eq!((ms.data_pages, ms.bucket_pages), (0, 0));
}

both_modes! {
fn the_issue_scenario_is_exact(mode) {
    for below in [256, SEGREGATE_ALL] {
        for diag in [false, true] {
            issue_scenario(mode, below, diag);
        }
    }
    // Off, only DIAGNOSTIC knows the owner.
    issue_scenario(mode, 0, true);
}
}

both_modes! {
fn every_class_and_run_refuses_the_wrong_type(mode) {
    for diag in [false, true] {
        let mut m = Malloc::with_segregation(Hinted::new(), mode, SEGREGATE_ALL);
        m.set_diagnostic(diag).unwrap();
        let a = m.define_type("A", "", usize::MAX).unwrap();
        let b = m.define_type("B", "", usize::MAX).unwrap();
        // Give B a live piece of every class, so that its counters would cover any free.
        let sizes: Vec<usize> = (0..m.classes().count())
            .map(|i| m.classes().size(i))
            .chain([MAXALLOCSAVE + 1, 16 * PAGE_SIZE, 20 * PAGE_SIZE + 1])
            .collect();
        let bs: Vec<_> = sizes.iter().map(|&s| m.malloc(s, b, NOWAIT).unwrap()).collect();
        for &size in &sizes {
            let p = m.malloc(size, a, NOWAIT).unwrap();
            let addr = p.as_ptr() as usize;
            let (sa, sb) = (stats(&m, a), stats(&m, b));
            let wrong = MallocError::WrongType { addr, given: b, owner: Some(a) };
            assert_eq!(m.free(p, b), Err(wrong), "size {size}, diagnostic {diag}");
            assert_eq!(m.realloc(p, size * 2, b, NOWAIT), Err(wrong), "realloc, size {size}");
            assert_eq!((stats(&m, a), stats(&m, b)), (sa, sb));
            // The owner is in the hint of every page of the cluster, and of a run's first page.
            let hint = m.kmem().hint(addr).unwrap();
            assert_eq!(hint.owner_slot(), Some(a.index()), "size {size}");
            // The fast path's verdict: `a`'s object, not `b`'s.
            assert_eq!(hint.object_of(m.classes(), a.index(), addr), hint.class());
            assert_eq!(hint.class().is_some(), size <= 16 * PAGE_SIZE, "size {size}");
            assert_eq!(hint.object_of(m.classes(), b.index(), addr), None);
            if size <= MAXALLOCSAVE {
                let last = addr | (m.classes().cluster_bytes(m.classes().index(size).unwrap()) - 1);
                let at_last = m.kmem().hint(last).unwrap();
                assert_eq!((at_last.class(), at_last.owner_slot()), (hint.class(), hint.owner_slot()));
            }
            m.audit().unwrap();
            m.free(p, a).unwrap();
        }
        for p in bs {
            m.free(p, b).unwrap();
        }
        m.undefine_type(a).unwrap();
        m.undefine_type(b).unwrap();
        m.reclaim();
        m.audit().unwrap();
        assert_eq!(m.memory_stats().data_pages, 0);
        assert!(m.kmem().hints.is_empty(), "every hint cleared with its run");
    }
}
}

both_modes! {
fn below_the_threshold_types_never_share_a_cluster(mode) {
    let mut m = Malloc::with_segregation(HostPages::new(), mode, 256);
    let a = m.define_type("A", "", usize::MAX).unwrap();
    let b = m.define_type("B", "", usize::MAX).unwrap();
    let cluster = |m: &Malloc<HostPages>, p: NonNull<u8>| {
        let size = m.usable_size(p).unwrap();
        let i = m.classes().index(size).unwrap();
        p.as_ptr() as usize & !(m.classes().cluster_bytes(i) - 1)
    };
    for size in [16, 64, 200, 256, 512, 2048] {
        // Interleaved, so that a shared class hands both types pieces of one cluster.
        let (mut pa, mut pb) = (Vec::new(), Vec::new());
        for _ in 0..64 {
            pa.push(m.malloc(size, a, NOWAIT).unwrap());
            pb.push(m.malloc(size, b, NOWAIT).unwrap());
        }
        let shared = pa
            .iter()
            .any(|&x| pb.iter().any(|&y| cluster(&m, x) == cluster(&m, y)));
        // From 256 B up the classes are shared: the pieces interleave in one cluster.
        let segregated = m.usable_size(pa[0]).unwrap() < 256;
        assert_eq!(shared, !segregated, "size {size}");
        // Shared classes know the owner only by the counters: B, which has pieces of the
        // class, accepts A's piece (that is what segregating every class fixes).
        let wrong = m.free(pa[0], b);
        if segregated {
            assert!(matches!(wrong, Err(MallocError::WrongType { owner: Some(o), .. }) if o == a));
        } else {
            assert_eq!(wrong, Ok(()));
            m.free(pb[0], a).unwrap();
        }
        for &p in &pa[1..] {
            m.free(p, a).unwrap();
        }
        for &p in &pb[1..] {
            m.free(p, b).unwrap();
        }
        if segregated {
            m.free(pa[0], a).unwrap();
            m.free(pb[0], b).unwrap();
        }
        m.audit().unwrap();
    }
}
}

both_modes! {
fn per_class_statistics_are_the_sums_and_survive_undefine(mode) {
    for below in THRESHOLDS {
        let mut m = Malloc::with_segregation(HostPages::new(), mode, below);
        let types: Vec<_> = (0..4)
            .map(|_| m.define_type("t", "", usize::MAX).unwrap())
            .collect();
        let i = m.classes().index(64).unwrap();
        let mut live = Vec::new();
        for (k, &t) in types.iter().enumerate() {
            for _ in 0..(k + 1) * 10 {
                live.push((m.malloc(64, t, NOWAIT).unwrap(), t));
            }
        }
        let s = m.bucket_stats(i).unwrap();
        assert_eq!(s.calls, 100);
        assert_eq!(s.total - s.totalfree, 100);
        // One cluster per type when segregated, shared clusters when not.
        let clusters = s.total / s.elmpercl;
        assert_eq!(clusters, if below > 64 { 4 } else { 100usize.div_ceil(s.elmpercl) });
        for (p, t) in live {
            m.free(p, t).unwrap();
        }
        for t in types {
            m.undefine_type(t).unwrap();
        }
        m.audit().unwrap();
        let s = m.bucket_stats(i).unwrap();
        assert_eq!(s.calls, 100, "calls of undefined types' buckets stay counted");
        if below > 64 {
            assert_eq!((s.total, s.freed), (0, 4), "their clusters went back to kmem");
        }
    }
}
}

both_modes! {
fn type_buckets_park_age_and_give_back(mode) {
    let mut m = Malloc::with_segregation(HostPages::new(), mode, SEGREGATE_ALL);
    let a = m.define_type("A", "", usize::MAX).unwrap();
    let b = m.define_type("B", "", usize::MAX).unwrap();
    let i = m.classes().index(1024).unwrap();
    // Far over the high water (64 KiB), then all freed: clusters are parked.
    let ps: Vec<_> = (0..1024).map(|_| m.malloc(1024, a, NOWAIT).unwrap()).collect();
    for p in ps {
        m.free(p, a).unwrap();
    }
    let parked = m.reclaimable(&[]).parked_pages;
    assert!(parked > 0);
    m.audit().unwrap();
    // Another type's work ages them: they go back within the budget without a reclaim.
    let before = m.bucket_stats(i).unwrap().freed;
    for _ in 0..4 * WINDOW_OPS {
        let p = m.malloc(64, b, NOWAIT).unwrap();
        m.free(p, b).unwrap();
    }
    assert!(m.bucket_stats(i).unwrap().freed > before);
    assert!(m.reclaimable(&[]).parked_pages < parked);
    m.audit().unwrap();
    // Pressure takes the rest.
    m.shrink();
    assert_eq!(m.reclaimable(&[]).parked_pages, 0);
    m.audit().unwrap();
}
}

both_modes! {
fn magazines_take_a_types_pieces_and_runs(mode) {
    let mut m = Malloc::with_segregation(Hinted::new(), mode, SEGREGATE_ALL);
    let a = m.define_type("A", "", usize::MAX).unwrap();
    let b = m.define_type("B", "", usize::MAX).unwrap();
    let i = m.classes().index(64).unwrap();
    let run = MAX_CLASSES + 3; // runs of 4 pages
    let mut pieces = [0; 8];
    let mut runs = [0; 2];
    assert_eq!(m.take_for_magazine(i, a, NOWAIT, &mut pieces), Ok(8));
    assert_eq!(m.take_for_magazine(run, a, NOWAIT, &mut runs), Ok(2));
    for &x in pieces.iter().chain(&runs) {
        assert_eq!(m.kmem().hint(x).unwrap().owner_slot(), Some(a.index()));
    }
    // B's pieces of the class come from another cluster.
    let pb = m.malloc(64, b, NOWAIT).unwrap();
    assert!(pieces.iter().all(|&x| x >> PAGE_SHIFT != pb.as_ptr() as usize >> PAGE_SHIFT));
    m.free(pb, b).unwrap();
    // A has no live allocation, but its magazine holds pieces and runs: undefine is refused.
    assert!(matches!(
        m.undefine_type(a),
        Err(MallocError::TypeInUse { inuse: 10, .. })
    ));
    // SAFETY: the objects were taken above and are given back once.
    unsafe {
        m.return_from_magazine(i, &pieces);
        m.return_from_magazine(run, &runs);
    }
    m.add_type_magazine_calls(i, a, 8);
    assert_eq!(m.bucket_stats(i).unwrap().calls, 9);
    m.undefine_type(a).unwrap();
    m.undefine_type(b).unwrap();
    m.reclaim();
    m.audit().unwrap();
    assert_eq!(m.memory_stats().data_pages, 0);
}
}

both_modes! {
fn runs_carry_no_owner_with_segregation_off(mode) {
    let mut m = Malloc::with_classes(Hinted::new(), mode);
    let a = m.define_type("A", "", usize::MAX).unwrap();
    let p = m.malloc(3 * PAGE_SIZE, a, NOWAIT).unwrap();
    let q = m.malloc(64, a, NOWAIT).unwrap();
    for x in [p, q] {
        assert_eq!(m.kmem().hint(x.as_ptr() as usize).unwrap().owner_slot(), None);
    }
    m.free(p, a).unwrap();
    m.free(q, a).unwrap();
}
}

/// Blocks of the type buckets' slab in one metadata page: 64-byte blocks, the first the page's
/// header.
const BLOCKS_PER_PAGE: usize = PAGE_SIZE / 64 - 1;

/// Addresses in one table block of the type buckets (64 bytes).
const LEAF: usize = 64 / std::mem::size_of::<usize>();

/// The slab blocks of a type with `n` buckets: the buckets, and no table for one, one table up
/// to `LEAF`, a directory and a table per `LEAF` above.
fn type_blocks(n: usize) -> usize {
    n + match n {
        0 | 1 => 0,
        _ if n <= LEAF => 1,
        _ => 1 + n.div_ceil(LEAF),
    }
}

/// A deterministic shuffle of `0..n` (a fixed-seed Fisher-Yates).
fn scrambled(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for k in (1..n).rev() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        v.swap(k, (x >> 33) as usize % (k + 1));
    }
    v
}

both_modes! {
/// Issue 9's metadata budget with the kernel's setting (every class segregated) rests on what a
/// type's buckets cost: one 64-byte block each, from one slab every type shares, no table for a
/// type with one class, one block of addresses up to 8 classes, a directory and a block per 8
/// above (the committed trace's peak, fine: 87 type buckets and 6 table blocks in 2 pages,
/// 3,897 B of metadata per MiB held; with 128-byte buckets and five table slabs it was 5 pages,
/// 4,677 B). Counted
/// exactly here; every piece of a type of every class, its buckets made in a scrambled order
/// (rank shifts within a table and across a directory's tables), is still its own bucket's; all
/// of it goes back with the types.
fn type_buckets_are_blocks_of_shared_pages(mode) {
    let mut m = Malloc::with_segregation(Hinted::new(), mode, SEGREGATE_ALL);
    let singles: Vec<_> = (0..2 * BLOCKS_PER_PAGE)
        .map(|_| m.define_type("one", "", usize::MAX).unwrap())
        .collect();
    let ones: Vec<_> = singles.iter().map(|&t| m.malloc(64, t, NOWAIT).unwrap()).collect();
    assert_eq!(m.memory_stats().bucket_pages, 2, "a block per one-class type, no table");
    let all = m.define_type("all", "", usize::MAX).unwrap();
    let other = singles[0];
    let c = m.classes().count();
    let mut pieces = Vec::new();
    for (made, i) in scrambled(c).into_iter().enumerate() {
        pieces.push(m.malloc(m.classes().size(i), all, NOWAIT).unwrap());
        m.audit().unwrap();
        let blocks = 2 * BLOCKS_PER_PAGE + type_blocks(made + 1);
        assert_eq!(m.memory_stats().bucket_pages, blocks.div_ceil(BLOCKS_PER_PAGE));
    }
    for &p in &pieces {
        let addr = p.as_ptr() as usize;
        let wrong = MallocError::WrongType { addr, given: other, owner: Some(all) };
        assert_eq!(m.free(p, other), Err(wrong));
    }
    // Each class's bucket is found again: a second piece of a class comes from the first one's
    // cluster (the rest of it is on that bucket's free list).
    for &p in &pieces {
        let i = m.classes().index(m.usable_size(p).unwrap()).unwrap();
        if m.classes().pieces(i) > 1 {
            let q = m.malloc(m.classes().size(i), all, NOWAIT).unwrap();
            let cluster = |x: NonNull<u8>| x.as_ptr() as usize & !(m.classes().cluster_bytes(i) - 1);
            assert_eq!(cluster(q), cluster(p), "class {i}");
            m.free(q, all).unwrap();
        }
        m.free(p, all).unwrap();
    }
    m.audit().unwrap();
    for (&t, p) in singles.iter().zip(ones) {
        m.free(p, t).unwrap();
        m.undefine_type(t).unwrap();
    }
    m.undefine_type(all).unwrap();
    assert_eq!(m.memory_stats().bucket_pages, 0, "every block and page back");
    m.reclaim();
    m.audit().unwrap();
    assert_eq!(m.memory_stats().data_pages, 0);
}
}

/// A type's second bucket needs a table block too: without room for both, `malloc` is a
/// shortage and nothing changes (the bucket's block goes back; the first bucket stays found).
#[test]
fn a_missing_table_block_is_a_shortage_that_changes_nothing() {
    let mut m = Malloc::with_segregation(Hinted::new(), SizeClasses::Fine, SEGREGATE_ALL);
    // One slab page with one free block.
    let singles: Vec<_> = (0..BLOCKS_PER_PAGE - 1)
        .map(|_| m.define_type("one", "", usize::MAX).unwrap())
        .collect();
    let ones: Vec<_> = singles
        .iter()
        .map(|&t| m.malloc(64, t, NOWAIT).unwrap())
        .collect();
    let a = m.define_type("A", "", usize::MAX).unwrap();
    let p = m.malloc(64, a, NOWAIT).unwrap();
    assert_eq!(m.memory_stats().bucket_pages, 1);
    let metas = m.kmem().pages.meta_pages();
    m.kmem_mut().pages.set_meta_limit(Some(metas));
    let before = stats(&m, a);
    assert!(matches!(
        m.malloc(128, a, NOWAIT),
        Err(MallocError::NoMemory { .. })
    ));
    assert_eq!(stats(&m, a).mapblocks, before.mapblocks + 1);
    assert_eq!(m.memory_stats().bucket_pages, 1);
    m.audit().unwrap();
    let wrong = MallocError::WrongType {
        addr: p.as_ptr() as usize,
        given: singles[0],
        owner: Some(a),
    };
    assert_eq!(m.free(p, singles[0]), Err(wrong));
    m.kmem_mut().pages.set_meta_limit(None);
    let q = m.malloc(128, a, NOWAIT).unwrap();
    assert_eq!(m.memory_stats().bucket_pages, 2);
    m.free(q, a).unwrap();
    m.free(p, a).unwrap();
    for (&t, p) in singles.iter().zip(ones) {
        m.free(p, t).unwrap();
    }
    m.audit().unwrap();
}

#[test]
fn segregation_is_set_before_the_first_page() {
    let mut m = Malloc::with_classes(HostPages::new(), SizeClasses::Fine);
    assert_eq!(m.set_segregation(SEGREGATE_ALL), Ok(()));
    assert_eq!(m.segregate_below(), SEGREGATE_ALL);
    let a = m.define_type("A", "", usize::MAX).unwrap();
    let p = m.malloc(64, a, NOWAIT).unwrap();
    assert!(m.set_segregation(0).is_err());
    assert_eq!(m.segregate_below(), SEGREGATE_ALL);
    assert!(m.segregates_every_class());
    m.free(p, a).unwrap();
}

/// What the kernel glue requires of every heap it builds: no class shared by the types.
#[test]
fn every_class_is_segregated_only_with_a_threshold_above_the_largest_class() {
    for mode in [SizeClasses::Fine, SizeClasses::Pow2] {
        let mut m = Malloc::with_classes(HostPages::new(), mode);
        assert!(!m.segregates_every_class(), "off: every class shared");
        let largest = (0..m.classes().count())
            .map(|c| m.classes().size(c))
            .max()
            .unwrap();
        for (below, every) in [
            (256, false),
            (largest, false),
            (largest + 1, true),
            (SEGREGATE_ALL, true),
            (0, false),
        ] {
            assert_eq!(m.set_segregation(below), Ok(()));
            assert_eq!(m.segregates_every_class(), every, "{mode:?} below {below}");
        }
    }
}

#[test]
fn a_missing_bucket_page_is_a_shortage_that_changes_nothing() {
    let mut pages = HostPages::new();
    let mut m = {
        pages.set_meta_limit(Some(0));
        Malloc::with_segregation(pages, SizeClasses::Fine, SEGREGATE_ALL)
    };
    let a = m.define_type("A", "", usize::MAX).unwrap();
    let before = stats(&m, a);
    assert!(matches!(
        m.malloc(64, a, NOWAIT),
        Err(MallocError::NoMemory { .. })
    ));
    assert_eq!(stats(&m, a).mapblocks, before.mapblocks + 1);
    assert_eq!(m.memory_stats().bucket_pages, 0);
    m.kmem_mut().set_meta_limit(None);
    let p = m.malloc(64, a, NOWAIT).unwrap();
    m.free(p, a).unwrap();
    m.audit().unwrap();
}

#[test]
fn page_codes_carry_class_and_owner() {
    for owner in 0..=128u8 {
        let hints = (0..MAX_CLASSES)
            .map(|class| PageHint::Bucket { class, owner })
            .chain(
                [1, 2, 16, 17, MAX_LARGE_PAGES]
                    .into_iter()
                    .map(|npages| PageHint::Large { npages, owner }),
            );
        for h in hints {
            let code = PageCode::of(h, 0);
            assert_ne!(code.raw(), 0);
            assert_eq!(PageCode::from_raw(code.raw()), code);
            let class = match h {
                PageHint::Bucket { class, .. } => Some(class),
                PageHint::Large { npages, .. } => (npages <= 16).then(|| MAX_CLASSES + npages - 1),
            };
            assert_eq!(code.class(), class);
            assert_eq!(code.owner_slot(), (owner as usize).checked_sub(1));
            assert_eq!(h.owner_slot(), (owner as usize).checked_sub(1));
            // The fast path's owner test agrees with the decoded owner, for every slot (at a
            // cluster's or run's start: an object start of every class the table has).
            let table = SizeClasses::Fine.table();
            let has = class.filter(|&c| c < table.count() || c >= MAX_CLASSES);
            for slot in 0..MAX_TYPES {
                let named = h.owner_slot() == Some(slot);
                let at_start = code.object_of(table, slot, 0x1000_0000);
                assert_eq!(at_start, if named { has } else { None });
                assert_eq!(code.may_be_owned_by(slot), named || owner == 0);
            }
        }
    }
    // No class: no code, a class past every table, a run's later page.
    let later = PageCode::of(
        PageHint::Large {
            npages: 2,
            owner: 1,
        },
        1,
    );
    let past = PageCode::from_raw(1 | 1 << 15 | 100 << 25);
    for code in [PageCode::NONE, past, later] {
        assert_eq!(code.class(), None, "{code:?}");
        for slot in 0..MAX_TYPES {
            assert_eq!(
                code.object_of(SizeClasses::Fine.table(), slot, 0x1000_0000),
                None
            );
        }
    }
}
