// SPDX-License-Identifier: GPL-2.0

//! Unit tests of the malloc core on the trivial host backend: every path and every bad input,
//! each followed by `audit()`.

#[macro_use]
mod common;

use kmalloc43_core::hosted::malloc_host_pages::HostPages;
use kmalloc43_core::malloc::{
    BlockReason, KmemPages, Malloc, MallocError, MallocFlags, MallocType, SizeClasses,
    ALLOCS_PER_GIVEBACK, HIGHWAT_BYTES, LARGE_SIZE_BIT, MAXALLOCSAVE, PAGE_SIZE, WINDOW_OPS,
};

#[allow(
    dead_code,
    reason = "each malloc unit test file uses a part of the helpers"
)]
mod malloc_support;
use malloc_support::{addr, read, setup, write, NOWAIT, WAITOK};

both_modes! {
fn small_sizes_round_up_to_aligned_classes(mode) {
    let (mut m, ty) = setup(mode);
    for size in [
        1, 15, 16, 17, 31, 32, 100, 136, 512, 632, 1000, 1024, 4095, 4096, 4097, 8192,
    ] {
        let p = m.malloc(size, ty, NOWAIT).unwrap();
        let usable = m.usable_size(p).unwrap();
        assert!(usable >= size.max(16) && usable % 16 == 0);
        match mode {
            // The paper's buckets: powers of two, naturally aligned.
            SizeClasses::Pow2 => {
                assert!(usable.is_power_of_two() && usable < 2 * size.max(16));
                assert_eq!(addr(p) % usable, 0, "piece of {size} not naturally aligned");
            }
            // Fine: within 16 bytes below 128 bytes, within 25 % above; aligned to the largest
            // power of two dividing the class size (at least 16).
            SizeClasses::Fine => {
                assert!(usable < size.max(16) + 16 || 4 * usable <= 5 * size, "{size} -> {usable}");
                let align = usable & usable.wrapping_neg();
                assert!(align >= 16);
                assert_eq!(addr(p) % align.min(PAGE_SIZE), 0, "piece of {size} misaligned");
            }
        }
        write(p, usable, 0xa5);
        m.audit().unwrap();
        m.free(p, ty).unwrap();
        m.audit().unwrap();
    }
}}

both_modes! {
fn large_sizes_take_whole_pages(mode) {
    let (mut m, ty) = setup(mode);
    for size in [
        MAXALLOCSAVE + 1,
        3 * PAGE_SIZE,
        5 * PAGE_SIZE - 1,
        40 * PAGE_SIZE + 7,
    ] {
        let p = m.malloc(size, ty, NOWAIT).unwrap();
        assert_eq!(addr(p) % PAGE_SIZE, 0);
        assert_eq!(
            m.usable_size(p).unwrap(),
            size.div_ceil(PAGE_SIZE) * PAGE_SIZE
        );
        write(p, size, 1);
        let st = m.type_stats(ty).unwrap();
        assert_eq!(st.memuse, size.div_ceil(PAGE_SIZE) * PAGE_SIZE);
        assert_ne!(st.sizemask & (1 << LARGE_SIZE_BIT), 0);
        m.audit().unwrap();
        m.free(p, ty).unwrap();
        assert_eq!(
            m.memory_stats().data_pages,
            0,
            "large pages go straight back"
        );
        m.audit().unwrap();
    }
}}

both_modes! {
fn refill_carves_one_page_and_reuses_freed_pieces(mode) {
    let (mut m, ty) = setup(mode);
    let p: Vec<_> = (0..256)
        .map(|_| m.malloc(16, ty, NOWAIT).unwrap())
        .collect();
    assert_eq!(
        m.kmem().data_calls(),
        1,
        "256 pieces of 16 bytes fit one page"
    );
    let b = m.bucket_stats(0).unwrap();
    assert_eq!(
        (b.calls, b.total, b.totalfree, b.elmpercl),
        (256, 256, 0, 256)
    );
    let q = m.malloc(16, ty, NOWAIT).unwrap();
    assert_eq!(m.kmem().data_calls(), 2);
    m.free(p[7], ty).unwrap();
    assert_eq!(m.malloc(16, ty, NOWAIT).unwrap(), p[7], "LIFO reuse");
    m.audit().unwrap();
    for x in p.into_iter().chain([q]) {
        m.free(x, ty).unwrap();
    }
    assert_eq!(m.type_stats(ty).unwrap().inuse, 0);
    m.audit().unwrap();
}}

both_modes! {
fn zero_flag_zeroes_reused_memory(mode) {
    let (mut m, ty) = setup(mode);
    let p = m.malloc(200, ty, NOWAIT).unwrap();
    let usable = m.usable_size(p).unwrap();
    assert_eq!(usable, if mode == SizeClasses::Pow2 { 256 } else { 224 });
    write(p, usable, 0xff);
    m.free(p, ty).unwrap();
    let q = m.malloc(200, ty, NOWAIT | MallocFlags::ZERO).unwrap();
    assert_eq!(p, q);
    assert!((0..usable).all(|i| read(q, i) == 0));
    m.free(q, ty).unwrap();
    m.audit().unwrap();
}}

both_modes! {
fn type_and_bucket_statistics(mode) {
    let (mut m, ty) = setup(mode);
    let a = m.malloc(100, ty, NOWAIT).unwrap();
    let b = m.malloc(2000, ty, NOWAIT).unwrap();
    let st = m.type_stats(ty).unwrap();
    // (class of 100 B, its size, class of 2000 B, its size)
    let (ia, sa, ib, sb) = match mode {
        SizeClasses::Pow2 => (3, 128, 7, 2048),
        SizeClasses::Fine => (6, 112, 29, 2048),
    };
    assert_eq!(
        (st.inuse, st.calls, st.memuse, st.maxused),
        (2, 2, sa + sb, sa + sb)
    );
    assert_eq!(st.sizemask, (1 << ia) | (1 << ib));
    m.free(a, ty).unwrap();
    let st = m.type_stats(ty).unwrap();
    assert_eq!((st.inuse, st.memuse, st.maxused), (1, sb, sa + sb));
    m.free(b, ty).unwrap();
    assert_eq!(m.bucket_stats(ia).unwrap().calls, 1);
    assert_eq!(m.bucket_stats(ia).unwrap().size, sa);
    assert_eq!(m.bucket_stats(m.classes().count()), None);
    assert_eq!(m.types().count(), 1);
    m.audit().unwrap();
}}

/// Runs `windows` give-back windows of malloc/free pairs in the 1 KiB class (one cluster, never
/// wholly free twice in a row: it keeps one piece), so other buckets' windows end.
fn idle_windows<K: KmemPages>(m: &mut Malloc<K>, ty: MallocType, windows: u64) {
    let keep = m.malloc(1024, ty, NOWAIT).unwrap();
    for _ in 0..windows * WINDOW_OPS {
        let p = m.malloc(1024, ty, NOWAIT).unwrap();
        m.free(p, ty).unwrap();
    }
    m.free(keep, ty).unwrap();
}

both_modes! {
fn a_breathing_bucket_parks_clusters_instead_of_giving_them_back(mode) {
    let (mut m, ty) = setup(mode);
    // 256-byte requests: bursts of 40 clusters' worth, far above the high water (64 KiB), freed
    // at once, 30 times in quick succession.
    let per = m.classes().pieces(m.classes().index(256).unwrap());
    let burst = 40 * per;
    for _ in 0..30 {
        let v: Vec<_> = (0..burst).map(|_| m.malloc(256, ty, NOWAIT).unwrap()).collect();
        for p in v {
            m.free(p, ty).unwrap();
        }
        m.audit().unwrap();
    }
    let b = m.bucket_stats(m.classes().index(256).unwrap()).unwrap();
    // The old rule gave back 36 clusters per burst and took them again.
    assert!(b.freed * 1000 <= 5 * b.calls, "{} give-backs for {} allocations", b.freed, b.calls);
    assert!(m.kmem().data_calls() <= 40 + b.freed + 1, "kmem refills: {}", m.kmem().data_calls());
    // Idle at last: the parked clusters go back, within the budget of one per 200 allocations.
    idle_windows(&mut m, ty, 3);
    let b = m.bucket_stats(m.classes().index(256).unwrap()).unwrap();
    assert!(b.freed > 0 && b.freed * ALLOCS_PER_GIVEBACK <= b.calls);
    m.audit().unwrap();
}}

both_modes! {
fn a_slowly_breathing_bucket_stays_within_its_give_back_budget(mode) {
    let (mut m, ty) = setup(mode);
    // 8 KiB requests, a burst of 20 (above the high water of 8) once per idle window: each
    // window would give the burst back; the budget allows one give-back per 200 allocations.
    let i = m.classes().index(8192).unwrap();
    for _ in 0..40 {
        let v: Vec<_> = (0..20).map(|_| m.malloc(8192, ty, NOWAIT).unwrap()).collect();
        for p in v {
            m.free(p, ty).unwrap();
        }
        idle_windows(&mut m, ty, 1);
    }
    let b = m.bucket_stats(i).unwrap();
    assert_eq!(b.calls, 800);
    assert!(b.freed * ALLOCS_PER_GIVEBACK <= b.calls, "{} give-backs", b.freed);
    assert!(m.deferred_give_backs(i).unwrap() > 0, "the budget held some back");
    m.audit().unwrap();
    // Memory pressure ignores windows and budgets.
    m.reclaim();
    assert_eq!(m.bucket_stats(i).unwrap().total, 0);
    m.audit().unwrap();
}}

both_modes! {
fn free_clusters_above_high_water_go_back_to_kmem(mode) {
    let (mut m, ty) = setup(mode);
    // 16-byte bucket: high water is HIGHWAT_BYTES (16 pages' worth); use 24 pages.
    assert_eq!(m.bucket_stats(0).unwrap().highwat, HIGHWAT_BYTES / 16);
    let p: Vec<_> = (0..24 * 256)
        .map(|_| m.malloc(16, ty, NOWAIT).unwrap())
        .collect();
    assert_eq!(m.memory_stats().data_pages, 24);
    for x in &p {
        m.free(*x, ty).unwrap();
    }
    // Just freed: parked, not given back while the bucket is busy (module giveback).
    assert_eq!(m.bucket_stats(0).unwrap().freed, 0);
    assert_eq!(m.memory_stats().data_pages, 24);
    m.audit().unwrap();
    // Two idle windows of work elsewhere: the 16-byte bucket ages round robin.
    idle_windows(&mut m, ty, 2);
    let b = m.bucket_stats(0).unwrap();
    assert!(b.freed >= 7, "freed {} clusters", b.freed);
    assert!(b.totalfree <= b.highwat + b.elmpercl);
    let other = m.memory_stats().data_pages as u64 - (24 - b.freed);
    assert_eq!(other, 1, "the one page of the bucket used meanwhile");
    assert_eq!(m.kmem().data_pages(), m.memory_stats().data_pages);
    m.audit().unwrap();
    assert_eq!(m.reclaim() as u64, 24 - b.freed + other);
    assert_eq!(m.kmem().data_pages(), 0);
    m.audit().unwrap();
}}

both_modes! {
fn limits_nowait_fails_and_waitok_would_block(mode) {
    let mut m = Malloc::with_classes(HostPages::new(), mode);
    let ty = m.define_type("lim", "limited", 1024).unwrap();
    let a = m.malloc(1024, ty, NOWAIT).unwrap();
    assert_eq!(
        m.malloc(16, ty, NOWAIT),
        Err(MallocError::Limit { ty, charge: 16 })
    );
    assert_eq!(
        m.malloc(16, ty, WAITOK),
        Err(MallocError::WouldBlock {
            ty,
            reason: BlockReason::Limit
        })
    );
    // A request above the whole limit can never succeed: no point waiting.
    assert_eq!(
        m.malloc(2000, ty, WAITOK),
        Err(MallocError::Limit { ty, charge: 2048 })
    );
    assert_eq!(m.type_stats(ty).unwrap().limblocks, 3);
    m.audit().unwrap();
    m.set_limit(ty, 2048).unwrap();
    let b = m.malloc(16, ty, NOWAIT).unwrap();
    m.free(a, ty).unwrap();
    m.free(b, ty).unwrap();
    m.audit().unwrap();
}}

both_modes! {
fn exhausted_kmem_fails_nowait_and_blocks_waitok(mode) {
    let mut m = Malloc::with_classes(HostPages::with_limit(3), mode);
    let ty = m.define_type("t", "", usize::MAX).unwrap();
    let big = m.malloc(3 * PAGE_SIZE, ty, NOWAIT).unwrap();
    assert_eq!(
        m.malloc(8, ty, NOWAIT),
        Err(MallocError::NoMemory { ty, size: 8 })
    );
    assert_eq!(
        m.malloc(9000, ty, WAITOK),
        Err(MallocError::WouldBlock {
            ty,
            reason: BlockReason::Arena
        })
    );
    assert_eq!(m.type_stats(ty).unwrap().mapblocks, 2);
    m.audit().unwrap();
    m.free(big, ty).unwrap();
    let p = m.malloc(8, ty, NOWAIT).unwrap();
    m.free(p, ty).unwrap();
    m.audit().unwrap();
}}

both_modes! {
fn exhaustion_reclaims_free_clusters_of_other_buckets(mode) {
    let mut m = Malloc::with_classes(HostPages::with_limit(2), mode);
    let ty = m.define_type("t", "", usize::MAX).unwrap();
    let a = m.malloc(16, ty, NOWAIT).unwrap();
    let b = m.malloc(64, ty, NOWAIT).unwrap();
    m.free(a, ty).unwrap();
    m.free(b, ty).unwrap();
    assert_eq!(
        m.memory_stats().data_pages,
        2,
        "below high water, pages stay cached"
    );
    let big = m.malloc(2 * PAGE_SIZE + 1, ty, NOWAIT);
    assert!(big.is_err(), "3 pages never fit a budget of 2");
    let c = m.malloc(2 * PAGE_SIZE, ty, NOWAIT).unwrap();
    assert_eq!(m.memory_stats().data_pages, 2);
    m.free(c, ty).unwrap();
    m.audit().unwrap();
}}

both_modes! {
fn metadata_exhaustion_is_an_error_not_a_leak(mode) {
    let mut m = Malloc::with_classes(HostPages::new(), mode);
    let ty = m.define_type("t", "", usize::MAX).unwrap();
    m.kmem_mut().set_meta_limit(Some(0));
    assert_eq!(
        m.malloc(16, ty, NOWAIT),
        Err(MallocError::NoMemory { ty, size: 16 })
    );
    assert_eq!(m.kmem().data_pages(), 0, "the refill's page went back");
    m.kmem_mut().set_meta_limit(None);
    let p = m.malloc(16, ty, NOWAIT).unwrap();
    m.free(p, ty).unwrap();
    m.audit().unwrap();
}}

both_modes! {
fn realloc_in_place_and_moving(mode) {
    let (mut m, ty) = setup(mode);
    let p = m.malloc(100, ty, NOWAIT).unwrap();
    for i in 0..100 {
        // SAFETY: within the allocation.
        unsafe { *p.as_ptr().add(i) = i as u8 };
    }
    // 100 and 110 bytes share a class in both modes (128 B; 112 B).
    assert_eq!(
        m.realloc(p, 110, ty, NOWAIT).unwrap(),
        p,
        "same bucket stays"
    );
    let old = m.usable_size(p).unwrap();
    let q = m.realloc(p, 5000, ty, NOWAIT | MallocFlags::ZERO).unwrap();
    assert_ne!(q, p);
    let new = m.usable_size(q).unwrap();
    assert_eq!(new, if mode == SizeClasses::Pow2 { 8192 } else { 5120 });
    assert!((0..100).all(|i| read(q, i) == i as u8));
    assert!((old..new).all(|i| read(q, i) == 0), "growth zeroed");
    let r = m.realloc(q, 3 * PAGE_SIZE, ty, NOWAIT).unwrap();
    assert!((0..100).all(|i| read(r, i) == i as u8));
    let s = m.realloc(r, 10, ty, NOWAIT).unwrap();
    assert!((0..10).all(|i| read(s, i) == i as u8));
    let st = m.type_stats(ty).unwrap();
    assert_eq!((st.inuse, st.memuse), (1, 16));
    m.free(s, ty).unwrap();
    m.audit().unwrap();
}}

both_modes! {
fn realloc_failure_leaves_the_old_allocation(mode) {
    let mut m = Malloc::with_classes(HostPages::new(), mode);
    let ty = m.define_type("lim", "", 4096).unwrap();
    let p = m.malloc(3000, ty, NOWAIT).unwrap();
    write(p, 3000, 7);
    assert_eq!(
        m.realloc(p, 3 * PAGE_SIZE, ty, NOWAIT),
        Err(MallocError::Limit {
            ty,
            charge: 3 * PAGE_SIZE
        })
    );
    assert_eq!(read(p, 2999), 7);
    let usable = if mode == SizeClasses::Pow2 { 4096 } else { 3072 };
    assert_eq!(m.usable_size(p), Ok(usable));
    m.free(p, ty).unwrap();
    m.audit().unwrap();
}}

both_modes! {
fn scattered_runs_share_the_sparse_page_map(mode) {
    let (mut m, ty) = setup(mode);
    // Hundreds of separately allocated runs land in many regions of the page map.
    let p: Vec<_> = (0..600)
        .map(|i| m.malloc(PAGE_SIZE * (2 + i % 3) + 1, ty, NOWAIT).unwrap())
        .collect();
    m.audit().unwrap();
    for x in p.iter().step_by(2) {
        m.free(*x, ty).unwrap();
    }
    m.audit().unwrap();
    for x in p.iter().skip(1).step_by(2) {
        m.free(*x, ty).unwrap();
    }
    m.audit().unwrap();
    assert_eq!(m.memory_stats().data_pages, 0);
    let kept = m.memory_stats().bookkeeping_pages;
    assert!(
        kept <= 1 + 8,
        "only the (unshrunk) hash table remains: {kept} pages"
    );
}}

both_modes! {
fn drop_returns_cached_pages(mode) {
    let (mut m, ty) = setup(mode);
    let p = m.malloc(16, ty, NOWAIT).unwrap();
    m.free(p, ty).unwrap();
    assert_eq!(m.kmem().data_pages(), 1);
    drop(m);
}}
