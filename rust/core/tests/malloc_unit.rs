// SPDX-License-Identifier: GPL-2.0

//! Unit tests of the malloc core on the trivial host backend: every path and every bad input,
//! each followed by `audit()`.

#[macro_use]
mod common;

use std::ptr::NonNull;

use kmalloc43_core::hosted::malloc_host_pages::HostPages;
use kmalloc43_core::malloc::{
    BlockReason, KmemPages, Malloc, MallocError, MallocFlags, MallocType, SizeClasses,
    ALLOCS_PER_GIVEBACK, HIGHWAT_BYTES, LARGE_SIZE_BIT, MAXALLOCSAVE, MAX_ALLOC_SIZE, MAX_TYPES,
    PAGE_SIZE, POISON, WINDOW_OPS,
};

const NOWAIT: MallocFlags = MallocFlags::NOWAIT;
const WAITOK: MallocFlags = MallocFlags::WAITOK;

fn setup(mode: SizeClasses) -> (Malloc<HostPages>, MallocType) {
    let mut m = Malloc::with_classes(HostPages::new(), mode);
    let ty = m
        .define_type("test", "unit test memory", usize::MAX)
        .unwrap();
    (m, ty)
}

fn addr(p: NonNull<u8>) -> usize {
    p.as_ptr() as usize
}

fn write(p: NonNull<u8>, len: usize, byte: u8) {
    // SAFETY: tests only write within allocations they own.
    unsafe { std::ptr::write_bytes(p.as_ptr(), byte, len) }
}

fn read(p: NonNull<u8>, off: usize) -> u8 {
    // SAFETY: tests only read within allocations they own.
    unsafe { *p.as_ptr().add(off) }
}

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
fn bad_flags_are_rejected(mode) {
    let (mut m, ty) = setup(mode);
    for bits in [0, 3, 4, 8, 1 | 8] {
        let f = MallocFlags::from_bits(bits);
        assert_eq!(m.malloc(16, ty, f), Err(MallocError::BadFlags { bits }));
    }
    m.audit().unwrap();
}}

both_modes! {
fn zero_size_is_an_error(mode) {
    let (mut m, ty) = setup(mode);
    assert_eq!(m.malloc(0, ty, NOWAIT), Err(MallocError::ZeroSize));
    let p = m.malloc(10, ty, NOWAIT).unwrap();
    assert_eq!(m.realloc(p, 0, ty, NOWAIT), Err(MallocError::ZeroSize));
    m.free(p, ty).unwrap();
    m.audit().unwrap();
}}

both_modes! {
fn too_large_is_an_error(mode) {
    let (mut m, ty) = setup(mode);
    for size in [MAX_ALLOC_SIZE + 1, usize::MAX] {
        assert_eq!(
            m.malloc(size, ty, NOWAIT),
            Err(MallocError::TooLarge { size })
        );
    }
    m.audit().unwrap();
}}

both_modes! {
fn unknown_and_stale_types_are_rejected(mode) {
    let (mut m, ty) = setup(mode);
    let other = m.define_type("o", "", usize::MAX).unwrap();
    m.undefine_type(other).unwrap();
    assert_eq!(m.malloc(16, other, NOWAIT), Err(MallocError::UnknownType));
    let forged = MallocType::from_raw(0xffff_ffff);
    assert_eq!(m.malloc(16, forged, NOWAIT), Err(MallocError::UnknownType));
    let p = m.malloc(16, ty, NOWAIT).unwrap();
    assert_eq!(m.free(p, other), Err(MallocError::UnknownType));
    let again = m.define_type("again", "", usize::MAX).unwrap();
    assert_eq!(again.index(), other.index(), "slot reused");
    assert_ne!(again, other, "with a new generation");
    assert_eq!(MallocType::from_raw(again.to_raw()), again);
    m.free(p, ty).unwrap();
    m.audit().unwrap();
}}

both_modes! {
fn undefining_a_type_with_live_memory_fails(mode) {
    let (mut m, ty) = setup(mode);
    let p = m.malloc(100, ty, NOWAIT).unwrap();
    assert_eq!(
        m.undefine_type(ty),
        Err(MallocError::TypeInUse { ty, inuse: 1 })
    );
    m.audit().unwrap();
    m.free(p, ty).unwrap();
    let st = m.undefine_type(ty).unwrap();
    assert_eq!(st.calls, 1);
    m.audit().unwrap();
}}

both_modes! {
fn type_table_full(mode) {
    let mut m = Malloc::with_classes(HostPages::new(), mode);
    for _ in 0..MAX_TYPES {
        m.define_type("t", "", 0).unwrap();
    }
    assert_eq!(m.define_type("x", "", 0), Err(MallocError::TypeTableFull));
    m.audit().unwrap();
}}

both_modes! {
fn foreign_pointer_is_rejected(mode) {
    let (mut m, ty) = setup(mode);
    let p = m.malloc(32, ty, NOWAIT).unwrap();
    let mut local = [0u64; 4];
    let foreign = NonNull::new(local.as_mut_ptr().cast::<u8>()).unwrap();
    let a = addr(foreign);
    assert_eq!(
        m.free(foreign, ty),
        Err(MallocError::ForeignPointer { addr: a })
    );
    assert_eq!(
        m.usable_size(foreign),
        Err(MallocError::ForeignPointer { addr: a })
    );
    m.free(p, ty).unwrap();
    m.audit().unwrap();
}}

both_modes! {
fn interior_and_misaligned_pointers_are_rejected(mode) {
    let (mut m, ty) = setup(mode);
    let small = m.malloc(64, ty, NOWAIT).unwrap();
    let big = m.malloc(3 * PAGE_SIZE, ty, NOWAIT).unwrap();
    let eight_k = m.malloc(8192, ty, NOWAIT).unwrap();
    let cases = [
        (addr(small) + 8, addr(small)),
        (addr(small) + 1, addr(small)),
        (addr(big) + 16, addr(big)),
        (addr(big) + 2 * PAGE_SIZE, addr(big)),
        (addr(eight_k) + PAGE_SIZE, addr(eight_k)),
    ];
    for (bad, start) in cases {
        let p = NonNull::new(bad as *mut u8).unwrap();
        assert_eq!(
            m.free(p, ty),
            Err(MallocError::InteriorPointer { addr: bad, start })
        );
        m.audit().unwrap();
    }
    for p in [small, big, eight_k] {
        m.free(p, ty).unwrap();
    }
    m.audit().unwrap();
}}

both_modes! {
fn double_free_of_the_last_piece_is_caught_without_diagnostic(mode) {
    let (mut m, ty) = setup(mode);
    let p = m.malloc(512, ty, NOWAIT).unwrap();
    m.free(p, ty).unwrap();
    assert_eq!(
        m.free(p, ty),
        Err(MallocError::DoubleFree {
            addr: addr(p),
            ty: None
        })
    );
    assert_eq!(
        m.usable_size(p),
        Err(MallocError::NotAllocated { addr: addr(p) })
    );
    m.audit().unwrap();
}}

/// Asserts that freeing `p` again is a double free (type unknown without DIAGNOSTIC), that
/// usable_size and realloc see it as free, and that nothing changed.
fn assert_double_free(m: &mut Malloc<HostPages>, p: NonNull<u8>, ty: MallocType) {
    let before = m.type_stats(ty).unwrap();
    assert_eq!(
        m.free(p, ty),
        Err(MallocError::DoubleFree {
            addr: addr(p),
            ty: None
        }),
        "double free of {:#x}",
        addr(p)
    );
    assert_eq!(
        m.usable_size(p),
        Err(MallocError::NotAllocated { addr: addr(p) })
    );
    assert_eq!(
        m.realloc(p, 100_000, ty, NOWAIT),
        Err(MallocError::NotAllocated { addr: addr(p) })
    );
    assert_eq!(m.type_stats(ty).unwrap(), before);
    m.audit().unwrap();
}

/// `n` pieces of `size` bytes, lowest address first, all in one fresh allocator.
fn pieces(m: &mut Malloc<HostPages>, ty: MallocType, size: usize, n: usize) -> Vec<NonNull<u8>> {
    let mut v: Vec<_> = (0..n)
        .map(|_| m.malloc(size, ty, NOWAIT).unwrap())
        .collect();
    v.sort();
    v
}

both_modes! {
fn double_free_in_a_partly_free_page_is_caught_without_diagnostic(mode) {
    let (mut m, ty) = setup(mode);
    // One whole page of 64-byte pieces: the free list is empty, so after the frees below it
    // holds exactly [last of page, middle, first of page].
    let v = pieces(&mut m, ty, 64, PAGE_SIZE / 64);
    assert_eq!(addr(v[0]) % PAGE_SIZE, 0, "one page, first piece first");
    assert_eq!(addr(v[63]) - addr(v[0]), PAGE_SIZE - 64);
    for k in [0, 30, 63] {
        m.free(v[k], ty).unwrap();
    }
    m.audit().unwrap();
    assert_double_free(&mut m, v[0], ty); // tail of the list, first piece of the page
    assert_double_free(&mut m, v[30], ty); // middle
    assert_double_free(&mut m, v[63], ty); // head of the list, last piece of the page
    for (k, p) in v.iter().enumerate() {
        if ![0, 30, 63].contains(&k) {
            m.free(*p, ty).unwrap();
        }
    }
    m.audit().unwrap();
    assert_eq!(m.type_stats(ty).unwrap().inuse, 0);
}}

both_modes! {
fn double_free_across_pages_of_the_list_is_caught_without_diagnostic(mode) {
    let (mut m, ty) = setup(mode);
    // Two pages of 64-byte pieces; the list alternates between them: [b, a2, c, a1].
    let v = pieces(&mut m, ty, 64, 2 * PAGE_SIZE / 64);
    let order = [5, 70, 10, 127];
    for k in order {
        m.free(v[k], ty).unwrap();
    }
    for k in order {
        assert_double_free(&mut m, v[k], ty);
    }
    // A piece that was never handed out (still on the list since the refill) is free too.
    let more = m.malloc(64, ty, NOWAIT).unwrap();
    m.free(more, ty).unwrap();
    assert_double_free(&mut m, more, ty);
    for (k, p) in v.iter().enumerate() {
        if !order.contains(&k) {
            m.free(*p, ty).unwrap();
        }
    }
    m.audit().unwrap();
}}

both_modes! {
fn every_byte_of_a_cluster_is_a_piece_start_an_interior_or_a_tail(mode) {
    let classes = mode.table();
    for i in 0..classes.count() {
        let size = classes.size(i);
        let (mut m, ty) = setup(mode);
        // The first cluster of the class, handed out lowest piece first.
        let v = pieces(&mut m, ty, size, classes.pieces(i));
        let base = addr(v[0]);
        assert_eq!(base % classes.cluster_bytes(i), 0, "cluster naturally aligned");
        for off in 1..classes.cluster_bytes(i) {
            let (k, r) = (off / size, off % size);
            let p = NonNull::new((base + off) as *mut u8).unwrap();
            let want = if k >= classes.pieces(i) {
                MallocError::ForeignPointer { addr: base + off }
            } else if r != 0 {
                MallocError::InteriorPointer {
                    addr: base + off,
                    start: base + k * size,
                }
            } else {
                assert_eq!(addr(v[k]), base + off);
                continue;
            };
            assert_eq!(m.usable_size(p), Err(want), "size {size} offset {off}");
            if off % 61 == 1 {
                assert_eq!(m.free(p, ty), Err(want), "size {size} offset {off}");
            }
        }
        for p in v {
            m.free(p, ty).unwrap();
        }
        m.audit().unwrap();
    }
}}

both_modes! {
fn double_free_is_caught_in_every_bucket_without_diagnostic(mode) {
    let classes = mode.table();
    for i in 0..classes.count() {
        let size = classes.size(i);
        let (mut m, ty) = setup(mode);
        let per_cluster = classes.pieces(i);
        let v = pieces(&mut m, ty, size, 3 * per_cluster + 1);
        let freed: Vec<_> = v.iter().copied().step_by(3).collect();
        for p in &freed {
            m.free(*p, ty).unwrap();
        }
        for p in &freed {
            assert_double_free(&mut m, *p, ty);
        }
        for (k, p) in v.iter().enumerate() {
            if k % 3 != 0 {
                m.free(*p, ty).unwrap();
            }
        }
        m.audit().unwrap();
        assert_eq!(m.type_stats(ty).unwrap().inuse, 0, "size {size}");
    }
}}

both_modes! {
fn live_pieces_that_look_like_a_list_free_normally_without_diagnostic(mode) {
    let (mut m, ty) = setup(mode);
    let v = pieces(&mut m, ty, 32, 8);
    m.free(v[7], ty).unwrap(); // the page is partly free, so frees below read the links
                               // A client's own circular doubly linked list of 32-byte nodes, links first (like a Linux
                               // `list_head` at offset 0): every node points at same-bucket nodes that point back.
    let nodes = &v[1..6];
    for (k, n) in nodes.iter().enumerate() {
        let next = nodes[(k + 1) % nodes.len()];
        let prev = nodes[(k + nodes.len() - 1) % nodes.len()];
        // SAFETY: the first two words of a live 32-byte allocation.
        unsafe {
            n.as_ptr().cast::<usize>().write(addr(next));
            n.as_ptr().cast::<usize>().add(1).write(addr(prev));
        }
    }
    // A zeroed piece, and one whose links are stale from its time on the list.
    let zeroed = m.malloc(32, ty, NOWAIT | MallocFlags::ZERO).unwrap();
    let stale = m.malloc(32, ty, NOWAIT).unwrap();
    for p in nodes.iter().chain([&zeroed, &stale, &v[0], &v[6]]) {
        m.free(*p, ty).unwrap();
        m.audit().unwrap();
    }
    assert_eq!(m.type_stats(ty).unwrap().inuse, 0);
}}

both_modes! {
fn large_double_free_is_a_foreign_pointer(mode) {
    let (mut m, ty) = setup(mode);
    let keep = m.malloc(3 * PAGE_SIZE, ty, NOWAIT).unwrap();
    let big = m.malloc(5 * PAGE_SIZE, ty, NOWAIT).unwrap();
    m.free(big, ty).unwrap();
    // Its records are gone with it: nothing says the run was ever ours.
    assert_eq!(
        m.free(big, ty),
        Err(MallocError::ForeignPointer { addr: addr(big) })
    );
    m.audit().unwrap();
    m.free(keep, ty).unwrap();
    m.audit().unwrap();
}}

both_modes! {
fn wrong_type_is_caught_by_the_counters_without_diagnostic(mode) {
    let (mut m, ty) = setup(mode);
    let other = m.define_type("other", "", usize::MAX).unwrap();
    let p = m.malloc(256, ty, NOWAIT).unwrap();
    assert_eq!(
        m.free(p, other),
        Err(MallocError::WrongType {
            addr: addr(p),
            given: other,
            owner: None
        })
    );
    m.free(p, ty).unwrap();
    m.audit().unwrap();
}}

fn diag_setup(mode: SizeClasses) -> (Malloc<HostPages>, MallocType, MallocType) {
    let (mut m, ty) = setup(mode);
    m.set_diagnostic(true).unwrap();
    let other = m.define_type("other", "", usize::MAX).unwrap();
    (m, ty, other)
}

both_modes! {
fn diagnostic_double_free_names_the_type(mode) {
    let (mut m, ty, _) = diag_setup(mode);
    let p = m.malloc(64, ty, NOWAIT).unwrap();
    let keep = m.malloc(64, ty, NOWAIT).unwrap();
    m.free(p, ty).unwrap();
    // `keep` is live, so the counters alone could not see this double free.
    assert_eq!(
        m.free(p, ty),
        Err(MallocError::DoubleFree {
            addr: addr(p),
            ty: Some(ty)
        })
    );
    m.audit().unwrap();
    m.free(keep, ty).unwrap();
    m.audit().unwrap();
}}

both_modes! {
fn diagnostic_wrong_type_names_the_owner(mode) {
    let (mut m, ty, other) = diag_setup(mode);
    let p = m.malloc(100, ty, NOWAIT).unwrap();
    let q = m.malloc(100, other, NOWAIT).unwrap();
    let big = m.malloc(5 * PAGE_SIZE, ty, NOWAIT).unwrap();
    assert_eq!(
        m.free(p, other),
        Err(MallocError::WrongType {
            addr: addr(p),
            given: other,
            owner: Some(ty)
        })
    );
    assert_eq!(
        m.free(big, other),
        Err(MallocError::WrongType {
            addr: addr(big),
            given: other,
            owner: Some(ty)
        })
    );
    m.audit().unwrap();
    m.free(p, ty).unwrap();
    m.free(q, other).unwrap();
    m.free(big, ty).unwrap();
    m.audit().unwrap();
}}

both_modes! {
fn diagnostic_modified_after_free_is_reported_and_repaired(mode) {
    let (mut m, ty, _) = diag_setup(mode);
    let p = m.malloc(128, ty, NOWAIT).unwrap();
    let keep = m.malloc(128, ty, NOWAIT).unwrap();
    m.free(p, ty).unwrap();
    assert_eq!(read(p, 100), POISON);
    // SAFETY: deliberately writing to freed memory the test still maps (the page is cached).
    unsafe { *p.as_ptr().add(100) = 0 };
    assert!(m.audit().is_err(), "audit sees the scribble");
    assert_eq!(
        m.malloc(128, ty, NOWAIT),
        Err(MallocError::ModifiedAfterFree {
            addr: addr(p),
            offset: 100,
            ty: Some(ty)
        })
    );
    m.audit().unwrap();
    assert_eq!(
        m.malloc(128, ty, NOWAIT).unwrap(),
        p,
        "the repaired piece is reused"
    );
    m.free(p, ty).unwrap();
    m.free(keep, ty).unwrap();
    m.audit().unwrap();
}}

both_modes! {
fn diagnostic_scribbled_link_is_repaired_from_the_side_table(mode) {
    let (mut m, ty, _) = diag_setup(mode);
    let p: Vec<_> = (0..8).map(|_| m.malloc(32, ty, NOWAIT).unwrap()).collect();
    for x in &p[..4] {
        m.free(*x, ty).unwrap();
    }
    // p[3] is the head; clobber its `next` link.
    // SAFETY: deliberately writing to freed memory the test still maps.
    unsafe { std::ptr::write(p[3].as_ptr().cast::<usize>(), 0xdead_0000) };
    assert_eq!(
        m.malloc(32, ty, NOWAIT),
        Err(MallocError::ModifiedAfterFree {
            addr: addr(p[3]),
            offset: 0,
            ty: Some(ty)
        })
    );
    m.audit().unwrap();
    let again: Vec<_> = (0..4).map(|_| m.malloc(32, ty, NOWAIT).unwrap()).collect();
    let mut want: Vec<_> = p[..4].iter().map(|x| addr(*x)).collect();
    let mut got: Vec<_> = again.iter().map(|x| addr(*x)).collect();
    want.sort();
    got.sort();
    assert_eq!(want, got, "no free piece lost");
    for x in again.into_iter().chain(p[4..].iter().copied()) {
        m.free(x, ty).unwrap();
    }
    m.audit().unwrap();
}}

both_modes! {
fn diagnostic_can_be_switched_with_live_memory(mode) {
    let (mut m, ty) = setup(mode);
    let live = m.malloc(48, ty, NOWAIT).unwrap();
    let big = m.malloc(4 * PAGE_SIZE, ty, NOWAIT).unwrap();
    let gone = m.malloc(48, ty, NOWAIT).unwrap();
    m.free(gone, ty).unwrap();
    m.set_diagnostic(true).unwrap();
    assert!(m.diagnostic());
    m.audit().unwrap();
    assert_eq!(read(gone, 40), POISON, "existing free pieces are poisoned");
    let other = m.define_type("o", "", usize::MAX).unwrap();
    let x = m.malloc(48, other, NOWAIT).unwrap();
    m.free(live, ty).unwrap(); // type unknown to the side table: accepted
    m.free(big, ty).unwrap();
    m.free(x, other).unwrap();
    m.audit().unwrap();
    assert!(m.memory_stats().diag_pages > 0);
    m.set_diagnostic(false).unwrap();
    assert_eq!(m.memory_stats().diag_pages, 0);
    m.audit().unwrap();
}}

both_modes! {
fn diagnostic_poison_is_not_paid_when_off(mode) {
    let (mut m, ty) = setup(mode);
    let p = m.malloc(128, ty, NOWAIT).unwrap();
    write(p, 128, 0x11);
    m.free(p, ty).unwrap();
    assert_eq!(read(p, 100), 0x11, "no poison without DIAGNOSTIC");
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
