// SPDX-License-Identifier: GPL-2.0

//! The kernel's `WAITOK` protocol (`kmalloc43_core::wait`, the loop `rust/glue/heap.rs` runs) on
//! the host: allocations sleep at a type limit and are woken by frees and limit changes; an arena
//! shortage takes a chunk from the page allocator, deposits it and retries, at most
//! `ARENA_RETRIES` times; a repaired free list is retried once.
//!
//! The tests wait on state — the wrapper's waiter count, the page allocator's take count and the
//! type's `limblocks`/`mapblocks` — never on time: [`wait_for`]'s deadline can only fail a test.

#[macro_use]
mod common;

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use kmalloc43_core::hosted::malloc_host_pages::HostPages;
use kmalloc43_core::hosted::malloc_wait::WaitingMalloc;
use kmalloc43_core::malloc::{
    BlockReason, Malloc, MallocError, MallocFlags, SizeClasses, PAGE_SIZE,
};
use kmalloc43_core::wait::{self, ARENA_RETRIES};

const WAITOK: MallocFlags = MallocFlags::WAITOK;
const NOWAIT: MallocFlags = MallocFlags::NOWAIT;

/// Waits until `cond` holds; panics (fails the test) if it does not within a minute.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::yield_now();
    }
}

both_modes! {
fn waitok_sleeps_at_the_limit_until_a_free(mode) {
    let mut m = Malloc::with_classes(HostPages::new(), mode);
    let ty = m.define_type("lim", "", 4096).unwrap();
    let w = Arc::new(WaitingMalloc::new(m));
    let held: Vec<_> = (0..4)
        .map(|_| w.malloc(1024, ty, WAITOK).unwrap())
        .collect();
    let (tx, rx) = mpsc::channel();
    let w2 = Arc::clone(&w);
    let t = thread::spawn(move || {
        let p = w2.malloc(1024, ty, WAITOK).unwrap();
        tx.send(()).unwrap();
        w2.free(p, ty).unwrap();
    });
    wait_for("the thread to block at the limit", || w.waiters() == 1);
    w.with(|m| assert!(m.type_stats(ty).unwrap().limblocks >= 1));
    // The protocol prepared the sleep for `ty` with the locks released (where the kernel heap
    // takes its per-CPU slots).
    wait_for("the sleep to be prepared", || !w.prepared().is_empty());
    assert_eq!(w.prepared()[0], (ty, false));
    assert!(rx.try_recv().is_err(), "asleep, so it cannot have allocated");
    assert_eq!(
        w.malloc(16, ty, NOWAIT),
        Err(MallocError::Limit { ty, charge: 16 })
    );
    w.free(held[0], ty).unwrap();
    rx.recv_timeout(Duration::from_secs(60))
        .expect("woken by the free");
    t.join().unwrap();
    for p in &held[1..] {
        w.free(*p, ty).unwrap();
    }
    w.with(|m| {
        assert!(m.type_stats(ty).unwrap().limblocks >= 2);
        m.audit().unwrap();
    });
}}

both_modes! {
fn waitok_wakes_on_limit_change(mode) {
    let mut m = Malloc::with_classes(HostPages::new(), mode);
    let ty = m.define_type("lim", "", 1024).unwrap();
    let w = Arc::new(WaitingMalloc::new(m));
    let a = w.malloc(1024, ty, WAITOK).unwrap();
    let w2 = Arc::clone(&w);
    let t = thread::spawn(move || w2.malloc(512, ty, WAITOK).unwrap());
    wait_for("the thread to block at the limit", || w.waiters() == 1);
    assert!(!t.is_finished());
    w.with(|m| assert!(m.type_stats(ty).unwrap().limblocks >= 1));
    w.set_limit(ty, 4096).unwrap();
    let b = t.join().unwrap();
    w.free(a, ty).unwrap();
    w.free(b, ty).unwrap();
    w.with(|m| m.audit().unwrap());
}}

both_modes! {
fn waitok_grows_kmem_from_the_page_allocator(mode) {
    // Four pages without sleeping; the kernel then takes a GFP_KERNEL chunk instead of sleeping.
    let mut m = Malloc::with_classes(HostPages::with_limit(4), mode);
    let ty = m.define_type("t", "", usize::MAX).unwrap();
    let w = Arc::new(WaitingMalloc::new(m));
    let big = w.malloc(4 * PAGE_SIZE, ty, WAITOK).unwrap();
    assert_eq!(w.page_allocator().takes(), 0, "the budget served it");
    assert_eq!(
        w.malloc(3 * PAGE_SIZE, ty, NOWAIT),
        Err(MallocError::NoMemory { ty, size: 3 * PAGE_SIZE }),
        "NOWAIT never takes a chunk"
    );
    assert_eq!(w.page_allocator().takes(), 0);
    let w2 = Arc::clone(&w);
    let p = thread::spawn(move || w2.malloc(3 * PAGE_SIZE, ty, WAITOK).unwrap())
        .join()
        .unwrap();
    assert_eq!(w.page_allocator().takes(), 1, "one chunk ended the shortage");
    assert_eq!(w.waiters(), 0, "a shortage never sleeps on the wait queue");
    w.with(|m| {
        assert!(m.type_stats(ty).unwrap().mapblocks >= 2);
        assert_eq!(m.kmem().reserve_runs(), 1, "served from the deposited chunk");
    });
    w.free(big, ty).unwrap();
    w.free(p, ty).unwrap();
    w.with(|m| {
        assert_eq!(m.kmem().reserve_runs(), 0, "the chunk went back");
        m.audit().unwrap();
    });
}}

both_modes! {
fn arena_shortage_takes_exactly_four_chunks_then_fails(mode) {
    // No page without sleeping, and every deposit is gone before the retry (another task's
    // import took it): the call takes ARENA_RETRIES chunks, then answers NoMemory.
    let mut pages = HostPages::with_limit(0);
    pages.set_deposits_stolen(true);
    let mut m = Malloc::with_classes(pages, mode);
    let ty = m.define_type("t", "", usize::MAX).unwrap();
    let w = WaitingMalloc::new(m);
    for (size, takes) in [(100, ARENA_RETRIES), (64 * PAGE_SIZE, 2 * ARENA_RETRIES)] {
        assert_eq!(
            w.malloc(size, ty, WAITOK),
            Err(MallocError::NoMemory { ty, size })
        );
        assert_eq!(w.page_allocator().takes(), takes, "exactly {ARENA_RETRIES} per call");
    }
    assert_eq!(ARENA_RETRIES, 4);
    w.with(|m| {
        assert!(m.type_stats(ty).unwrap().mapblocks >= 2 * ARENA_RETRIES as u64 + 2);
        m.audit().unwrap();
    });
}}

both_modes! {
fn a_failing_page_allocator_ends_the_call_at_once(mode) {
    let mut m = Malloc::with_classes(HostPages::with_limit(0), mode);
    let ty = m.define_type("t", "", usize::MAX).unwrap();
    let w = WaitingMalloc::new(m);
    w.page_allocator().set_failing(true);
    assert_eq!(
        w.malloc(2 * PAGE_SIZE, ty, WAITOK),
        Err(MallocError::NoMemory { ty, size: 2 * PAGE_SIZE })
    );
    assert_eq!(w.page_allocator().takes(), 1, "no retry after a sleeping allocation failed");
    w.page_allocator().set_failing(false);
    let p = w.malloc(2 * PAGE_SIZE, ty, WAITOK).unwrap();
    assert_eq!(w.page_allocator().takes(), 2);
    w.free(p, ty).unwrap();
    w.with(|m| m.audit().unwrap());
}}

both_modes! {
fn a_repaired_free_list_is_retried(mode) {
    let mut m = Malloc::with_classes(HostPages::new(), mode);
    m.set_diagnostic(true).unwrap();
    let ty = m.define_type("t", "", usize::MAX).unwrap();
    let w = WaitingMalloc::new(m);
    let p = w.malloc(128, ty, WAITOK).unwrap();
    let keep = w.malloc(128, ty, WAITOK).unwrap();
    w.free(p, ty).unwrap();
    // SAFETY: deliberately writing to freed memory the test still maps.
    unsafe { p.0.as_ptr().add(100).write(0x5a) };
    assert_eq!(w.malloc(128, ty, WAITOK), Ok(p), "repaired, retried, reused");
    assert_eq!(w.repaired(), 1);
    w.free(p, ty).unwrap();
    w.free(keep, ty).unwrap();
    w.with(|m| m.audit().unwrap());
}}

/// The protocol itself, with scripted core answers on the host heap's locks and supply.
#[test]
fn a_second_repair_in_one_call_is_the_answer() {
    let mut m = Malloc::with_classes(HostPages::new(), SizeClasses::DEFAULT);
    let ty = m.define_type("t", "", usize::MAX).unwrap();
    let w = WaitingMalloc::new(m);
    let modified = MallocError::ModifiedAfterFree {
        addr: 0x1000,
        offset: 8,
        ty: Some(ty),
    };
    let mut calls = 0;
    let r: Result<(), _> = wait::run(&w, 64, false, |_| {
        calls += 1;
        Err(modified)
    });
    assert_eq!((r, calls, w.repaired()), (Err(modified), 2, 1));
    let mut calls = 0;
    let r = wait::run(&w, 64, false, |_| {
        calls += 1;
        if calls < 3 {
            Err(MallocError::WouldBlock {
                ty,
                reason: BlockReason::Arena,
            })
        } else {
            Ok(calls)
        }
    });
    assert_eq!(r, Ok(3), "two shortages, two chunks, then success");
    assert_eq!(w.page_allocator().takes(), 2);
}

both_modes! {
fn many_threads_share_a_limited_type(mode) {
    let mut m = Malloc::with_classes(HostPages::new(), mode);
    let ty = m.define_type("shared", "", 64 * 1024).unwrap();
    let w = Arc::new(WaitingMalloc::new(m));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let w = Arc::clone(&w);
            thread::spawn(move || {
                for i in 0..300 {
                    let size = 1 + (t * 977 + i * 131) % 16000;
                    let p = w.malloc(size, ty, WAITOK).unwrap();
                    // SAFETY: the allocation is this thread's own.
                    unsafe { std::ptr::write_bytes(p.0.as_ptr(), t as u8, size) };
                    thread::yield_now();
                    w.free(p, ty).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    w.with(|m| {
        let st = m.type_stats(ty).unwrap();
        assert_eq!((st.inuse, st.memuse, st.calls), (0, 0, 2400));
        assert!(st.maxused <= 64 * 1024);
        m.audit().unwrap();
    });
}}

/// A sleeper that dropped its locks before sleeping does not sleep through a wake that came in
/// between (the kernel heap drops its per-CPU slot locks first): `sleep` returns at once.
#[test]
fn a_wake_between_registering_and_sleeping_is_not_lost() {
    use kmalloc43_core::wait::Waitok;
    let m = Malloc::with_classes(HostPages::new(), SizeClasses::DEFAULT);
    let w = Arc::new(WaitingMalloc::new(m));
    let mut locked = w.lock();
    let ticket = WaitingMalloc::queue(&mut locked).enqueue();
    w.unlock(locked);
    assert_eq!(w.waiters(), 1);
    let mut locked = w.lock();
    wait::wake_all(&*w, &mut locked);
    w.unlock(locked);
    let (tx, rx) = mpsc::channel();
    let w2 = Arc::clone(&w);
    let t = thread::spawn(move || {
        w2.sleep(ticket);
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the wake before the sleep was not lost");
    t.join().unwrap();
    assert_eq!(w.waiters(), 0, "the sleeper left the queue");
}
