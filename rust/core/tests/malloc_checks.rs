// SPDX-License-Identifier: GPL-2.0

//! Unit tests of the malloc core's checks on the trivial host backend: every bad input, foreign,
//! interior and doubly freed pointers, wrong types and DIAGNOSTIC, each followed by `audit()`
//! (`malloc_unit.rs`: the paths themselves).

#[macro_use]
mod common;

use std::ptr::NonNull;

use kmalloc43_core::hosted::malloc_host_pages::HostPages;
use kmalloc43_core::malloc::{
    Malloc, MallocError, MallocFlags, MallocType, SizeClasses, MAX_ALLOC_SIZE, MAX_TYPES,
    PAGE_SIZE, POISON,
};

#[allow(
    dead_code,
    reason = "each malloc unit test file uses a part of the helpers"
)]
mod malloc_support;
use malloc_support::{addr, read, setup, write, NOWAIT};

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
