// SPDX-License-Identifier: GPL-2.0

//! The host sleeping wrapper: WAITOK allocations sleep at a type limit or with kmem exhausted and
//! are woken by frees, limit changes and supply growth.
//!
//! The tests wait on state — the wrapper's waiter count and the type's `limblocks`/`mapblocks` —
//! never on time: [`wait_for`]'s deadline can only fail a test.

#[macro_use]
mod common;

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use kmalloc43_core::hosted::malloc_host_pages::HostPages;
use kmalloc43_core::hosted::malloc_wait::WaitingMalloc;
use kmalloc43_core::malloc::{Malloc, MallocError, MallocFlags, PAGE_SIZE};

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
fn waitok_sleeps_while_kmem_is_exhausted(mode) {
    let mut m = Malloc::with_classes(HostPages::with_limit(4), mode);
    let ty = m.define_type("t", "", usize::MAX).unwrap();
    let w = Arc::new(WaitingMalloc::new(m));
    let big = w.malloc(4 * PAGE_SIZE, ty, WAITOK).unwrap();
    let w2 = Arc::clone(&w);
    let t = thread::spawn(move || w2.malloc(3 * PAGE_SIZE, ty, WAITOK).unwrap());
    wait_for("the thread to block on kmem", || w.waiters() == 1);
    assert!(!t.is_finished());
    w.with(|m| assert!(m.type_stats(ty).unwrap().mapblocks >= 1));
    w.free(big, ty).unwrap();
    let p = t.join().unwrap();
    w.free(p, ty).unwrap();
    w.with(|m| {
        assert!(m.type_stats(ty).unwrap().mapblocks >= 1);
        m.audit().unwrap();
    });
}}

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
