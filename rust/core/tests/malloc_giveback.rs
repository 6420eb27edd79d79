// SPDX-License-Identifier: GPL-2.0

//! Parked clusters and give-back under churn (module `giveback`): random bursts of big pieces
//! (whose buckets have a high water of a few pieces, so clusters park and age often), with
//! DIAGNOSTIC switched on and off, double frees of parked and listed pieces, interior pointers and
//! a final reclaim, in both size-class modes and on both host backends. `audit()` (which checks
//! the parked lists) runs throughout; contents of live pieces must survive.

#[macro_use]
mod common;

use std::ptr::NonNull;

use common::Rng;
use kmalloc43_core::hosted::malloc_host_pages::{host_vmem_kmem, HostPages};
use kmalloc43_core::malloc::{
    KmemPages, Malloc, MallocError, MallocFlags, SizeClasses, ALLOCS_PER_GIVEBACK, WINDOW_OPS,
};

fn fill(p: NonNull<u8>, len: usize, byte: u8) {
    // SAFETY: `p..p + len` is a live allocation of the test.
    unsafe { std::ptr::write_bytes(p.as_ptr(), byte, len) }
}

fn intact(p: NonNull<u8>, len: usize, byte: u8) -> bool {
    // SAFETY: as above.
    unsafe { std::slice::from_raw_parts(p.as_ptr(), len) }
        .iter()
        .all(|&b| b == byte)
}

fn churn<K: KmemPages>(kmem: K, mode: SizeClasses, seed: u64) {
    let mut m = Malloc::with_classes(kmem, mode);
    let ty = m.define_type("churn", "", usize::MAX).unwrap();
    let sizes = [1500usize, 2000, 3000, 4096, 5000, 7000, 8192, 200];
    let mut r = Rng(seed);
    let mut live: Vec<(NonNull<u8>, usize, u8)> = Vec::new();
    for step in 0..60_000usize {
        // Phases of 6,000 steps: the heap grows, then shrinks (clusters park, then age).
        let shrinking = (step / 6000) % 2 == 1;
        let roll = r.below(100);
        let roll = if shrinking && (2..=50).contains(&roll) && roll > 20 {
            60 // most allocations become frees
        } else {
            roll
        };
        match roll {
            // A burst of one size, then most of it freed: clusters park.
            0..=1 => {
                let size = sizes[r.below(sizes.len())];
                let n = 8 + r.below(40);
                let mut burst = Vec::new();
                for _ in 0..n {
                    let p = m.malloc(size, ty, MallocFlags::NOWAIT).unwrap();
                    fill(p, size, step as u8);
                    burst.push((p, size, step as u8));
                }
                for (k, x) in burst.into_iter().enumerate() {
                    if k % 5 == 0 {
                        live.push(x);
                    } else {
                        assert!(intact(x.0, x.1, x.2));
                        m.free(x.0, ty).unwrap();
                    }
                }
            }
            2..=50 => {
                let size = sizes[r.below(sizes.len())];
                let p = m.malloc(size, ty, MallocFlags::NOWAIT).unwrap();
                fill(p, size, step as u8);
                live.push((p, size, step as u8));
            }
            51..=97 if !live.is_empty() => {
                let (p, size, byte) = live.swap_remove(r.below(live.len()));
                assert!(intact(p, size, byte), "contents of a live piece changed");
                m.free(p, ty).unwrap();
                // Freeing it again must fail and change nothing (listed or parked).
                assert!(matches!(
                    m.free(p, ty),
                    Err(MallocError::DoubleFree { .. } | MallocError::ForeignPointer { .. })
                ));
            }
            98 => {
                let on = !m.diagnostic();
                m.set_diagnostic(on).unwrap();
            }
            _ => {
                if let Some(&(p, _, _)) = live.first() {
                    let inner = NonNull::new(p.as_ptr().wrapping_add(16)).unwrap();
                    assert!(m.free(inner, ty).is_err());
                }
            }
        }
        if step % 997 == 0 {
            m.audit().unwrap();
        }
    }
    m.audit().unwrap();
    let given: u64 = (0..m.classes().count())
        .map(|i| m.bucket_stats(i).unwrap().freed)
        .sum();
    assert!(
        given > 0,
        "no cluster was ever given back: the windows never ended"
    );
    for i in 0..m.classes().count() {
        let b = m.bucket_stats(i).unwrap();
        assert!(
            b.freed * ALLOCS_PER_GIVEBACK <= b.calls,
            "class {}: {} give-backs for {} allocations",
            b.size,
            b.freed,
            b.calls
        );
    }
    for (p, size, byte) in live {
        assert!(intact(p, size, byte));
        m.free(p, ty).unwrap();
    }
    m.audit().unwrap();
    m.reclaim();
    m.audit().unwrap();
    assert_eq!(m.memory_stats().data_pages, 0);
    for i in 0..m.classes().count() {
        assert_eq!(
            m.bucket_stats(i).unwrap().total,
            0,
            "reclaim left a cluster"
        );
    }
    m.undefine_type(ty).unwrap();
}

both_modes! {
fn churn_on_the_direct_backend(mode) {
    churn(HostPages::new(), mode, 0x9e37_79b9_7f4a_7c15);
}}

both_modes! {
fn churn_on_the_vmem_backend(mode) {
    churn(host_vmem_kmem(64 * 1024, None), mode, 0x2545_f491_4f6c_dd1d);
}}

/// Frees everything of `live` (of `ty`).
fn free_all<K: KmemPages>(
    m: &mut Malloc<K>,
    ty: kmalloc43_core::malloc::MallocType,
    live: Vec<NonNull<u8>>,
) {
    for p in live {
        m.free(p, ty).unwrap();
    }
}

both_modes! {
fn a_timed_pass_gives_back_what_stayed_parked_a_whole_period(mode) {
    let mut m = Malloc::with_classes(host_vmem_kmem(64 * 1024, None), mode);
    let ty = m.define_type("timed", "", usize::MAX).unwrap();
    let mut live: Vec<_> = (0..600)
        .map(|_| m.malloc(2000, ty, MallocFlags::NOWAIT).unwrap())
        .collect();
    let kept = live.swap_remove(0);
    free_all(&mut m, ty, live);
    // Fewer operations than a window: nothing went back by traffic, clusters are parked.
    let held = m.memory_stats().data_pages;
    let class = (0..m.classes().count())
        .find(|&i| m.bucket_stats(i).unwrap().size >= 2000)
        .unwrap();
    assert_eq!(m.bucket_stats(class).unwrap().freed, 0);
    // The first pass: the window started with the heap, and the parked list was empty then.
    let since = m.op_count();
    assert_eq!(m.give_back_idle(since), 0);
    assert_eq!(m.memory_stats().data_pages, held);
    // A period of traffic in another class: its operations end the 2000-byte bucket's window
    // (round robin), which starts a new one after `since`: not a whole period, nothing timed.
    let since = m.op_count();
    for _ in 0..WINDOW_OPS {
        let p = m.malloc(64, ty, MallocFlags::NOWAIT).unwrap();
        m.free(p, ty).unwrap();
    }
    let by_traffic = m.bucket_stats(class).unwrap().freed;
    assert!(by_traffic * ALLOCS_PER_GIVEBACK <= m.bucket_stats(class).unwrap().calls);
    let held = m.memory_stats().data_pages;
    assert_eq!(m.give_back_idle(since), 0, "a window younger than the period");
    assert_eq!(m.memory_stats().data_pages, held);
    // A whole idle period: every cluster parked since goes back, whatever the class budget;
    // the bucket keeps its live piece and the free pieces its high water keeps listed.
    let since = m.op_count();
    let given = m.give_back_idle(since);
    assert!(given > 0);
    let b = m.bucket_stats(class).unwrap();
    assert!(b.freed > by_traffic);
    assert_eq!(b.total - b.totalfree, 1);
    assert!(b.totalfree > 0, "the listed free pieces stay while a piece is live");
    assert!(m.memory_stats().data_pages < held);
    m.audit().unwrap();
    // Nothing parked is left to give: a further idle pass gives nothing.
    let since = m.op_count();
    assert_eq!(m.give_back_idle(since), 0);
    assert_eq!(m.bucket_stats(class).unwrap().total, b.total);
    // Its last piece freed, the bucket holds nothing live: the next idle period takes its
    // listed clusters too, and an allocator idle for a whole period gives everything back.
    m.free(kept, ty).unwrap();
    let since = m.op_count();
    assert!(m.give_back_idle(since) > 0);
    assert_eq!(m.bucket_stats(class).unwrap().total, 0);
    assert_eq!(m.memory_stats().data_pages, 0);
    m.audit().unwrap();
    // The heap still serves.
    let p = m.malloc(2000, ty, MallocFlags::NOWAIT).unwrap();
    m.free(p, ty).unwrap();
    m.reclaim();
    assert_eq!(m.memory_stats().data_pages, 0);
    m.audit().unwrap();
    m.undefine_type(ty).unwrap();
}}
