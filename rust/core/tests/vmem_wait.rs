// SPDX-License-Identifier: GPL-2.0

//! The kernel's vmem import/sleep protocol (`kmalloc43_core::wait::vmem_sleep`, the loop
//! `rust/glue/arenas.rs` runs) on the host: imports from the source without the arena lock held,
//! import failures and refused spans, and `SLEEP` callers that block until a free or an add.
//!
//! The tests wait on state (the arena's waiter count), never on time: [`wait_for`]'s deadline
//! can only fail a test.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock, Weak};
use std::thread;
use std::time::{Duration, Instant};

use kmalloc43_core::hosted::vmem::{HeapPages, WaitingArena};
use kmalloc43_core::vmem::{ArenaConfig, Flags, ImportRequest, SpanRelease, SpanSource, VmemError};

/// Waits until `cond` holds; panics (fails the test) if it does not within a minute.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::yield_now();
    }
}

/// What a [`Source`] did, shared with the test.
#[derive(Default)]
struct Log {
    imports: AtomicUsize,
    releases: AtomicUsize,
    /// Imports that found the arena's lock taken (must stay 0).
    locked: AtomicUsize,
}

/// A source handing out consecutive spans from `next` (or `fixed` every time), checking that the
/// arena's lock is free when it is called.
struct Source {
    arena: Arc<OnceLock<Weak<WaitingArena<HeapPages>>>>,
    log: Arc<Log>,
    next: usize,
    fixed: Option<usize>,
    fail: bool,
}

impl Source {
    fn check_unlocked(&self) {
        let a = self.arena.get().and_then(Weak::upgrade);
        if !a.is_some_and(|a| a.is_unlocked()) {
            self.log.locked.fetch_add(1, SeqCst);
        }
    }
}

impl SpanSource for Source {
    fn import(&mut self, req: &ImportRequest) -> Result<usize, VmemError> {
        self.check_unlocked();
        self.log.imports.fetch_add(1, SeqCst);
        if self.fail {
            return Err(VmemError::NoSpace);
        }
        let base = self.fixed.unwrap_or(self.next);
        self.next += req.size;
        Ok(base)
    }

    fn release(&mut self, _span: SpanRelease) {
        self.check_unlocked();
        self.log.releases.fetch_add(1, SeqCst);
    }
}

/// An arena of quantum 16 importing spans of 64 from a [`Source`] starting at 0x10000.
fn arena(fixed: Option<usize>, fail: bool) -> (Arc<WaitingArena<HeapPages>>, Arc<Log>) {
    let cfg = ArenaConfig {
        quantum: 16,
        import_quantum: Some(64),
        ..Default::default()
    };
    let cell = Arc::new(OnceLock::new());
    let log = Arc::new(Log::default());
    let src = Source {
        arena: Arc::clone(&cell),
        log: Arc::clone(&log),
        next: 0x10000,
        fixed,
        fail,
    };
    let a = Arc::new(WaitingArena::with_source(&cfg, HeapPages::new(), Box::new(src)).unwrap());
    cell.set(Arc::downgrade(&a)).ok().unwrap();
    (a, log)
}

#[test]
fn imports_run_without_the_arena_lock_and_spans_go_back() {
    let (a, log) = arena(None, false);
    for flags in [Flags::SLEEP, Flags::NOSLEEP] {
        let x = a.alloc(48, flags).unwrap();
        assert_eq!(log.imports.load(SeqCst), 1);
        let y = a.alloc(16, flags).unwrap();
        assert_eq!(log.imports.load(SeqCst), 1, "the span had room");
        a.free(x, 48).unwrap();
        a.free(y, 16).unwrap();
        assert_eq!(
            log.releases.load(SeqCst),
            1,
            "the wholly free span went back"
        );
        log.imports.store(0, SeqCst);
        log.releases.store(0, SeqCst);
    }
    assert_eq!(
        log.locked.load(SeqCst),
        0,
        "never called under the arena lock"
    );
    a.with(|a| a.audit()).unwrap();
}

#[test]
fn a_failed_import_is_the_answer_even_with_sleep() {
    let (a, log) = arena(None, true);
    assert_eq!(a.alloc(16, Flags::SLEEP), Err(VmemError::NoSpace));
    assert_eq!(log.imports.load(SeqCst), 1, "no retry, no sleep");
    assert_eq!(a.waiters(), 0);
}

#[test]
fn a_refused_span_goes_back_to_the_source() {
    // The source hands out the same span twice: the second overlaps and is given back.
    let (a, log) = arena(Some(0x10000), false);
    let x = a.alloc(64, Flags::NOSLEEP).unwrap();
    assert!(matches!(
        a.alloc(64, Flags::NOSLEEP),
        Err(VmemError::Overlap { .. })
    ));
    assert_eq!(log.imports.load(SeqCst), 2);
    assert_eq!(log.releases.load(SeqCst), 1, "the refused span went back");
    a.free(x, 64).unwrap();
    assert_eq!(log.releases.load(SeqCst), 2);
    assert_eq!(log.locked.load(SeqCst), 0);
}

#[test]
fn a_sleeper_blocks_until_a_free_then_until_an_add() {
    let cfg = ArenaConfig {
        quantum: 1,
        span: Some((0, 4)),
        ..Default::default()
    };
    let a = Arc::new(WaitingArena::new(&cfg, HeapPages::new()).unwrap());
    let held: Vec<usize> = (0..4)
        .map(|_| a.alloc(1, Flags::NOSLEEP).unwrap())
        .collect();
    let a2 = Arc::clone(&a);
    let t = thread::spawn(move || a2.alloc(2, Flags::SLEEP).unwrap());
    wait_for("the sleeper to block", || a.waiters() == 1);
    assert!(!t.is_finished());
    a.free(held[0], 1).unwrap();
    // One id is not enough for two: woken, it retries and sleeps again.
    wait_for("the sleeper to retry and block again", || {
        a.waiters() == 1 && a.with(|a| a.stats().wait) >= 2
    });
    assert!(!t.is_finished());
    a.free(held[1], 1).unwrap();
    assert_eq!(t.join().unwrap(), held[0]);
    assert_eq!(a.waiters(), 0);
    let a2 = Arc::clone(&a);
    let t = thread::spawn(move || a2.alloc(8, Flags::SLEEP).unwrap());
    wait_for("the sleeper to block", || a.waiters() == 1);
    a.add(100, 8).unwrap();
    assert_eq!(t.join().unwrap(), 100);
    a.with(|a| a.audit()).unwrap();
}
