// SPDX-License-Identifier: GPL-2.0

//! The import/sleep protocol's reclaim hook (`VmemWait::reclaim_cached`, called by
//! `kmalloc43_core::wait::alloc_sleeping` once per call before it fails or sleeps) on the host,
//! with the front the kernel's client arenas put in front of their quantum caches: per-CPU
//! magazines and depots of the shared magazine core over slabs (`QcFront`), behind one lock, as
//! `rust/glue/arenas.rs` runs them.
//!
//! Integers freed through the front stay in a magazine (and their slab stays allocated in the
//! arena), so an allocation the arena itself cannot serve fails or sleeps unless the protocol
//! first reclaims them. Each test first shows that state (the arena alone refuses), then that the
//! protocol's allocation succeeds without sleeping; [`Fronted::without_hook`] runs the same
//! protocol with the trait's default hook (no cache) and fails, which is what the protocol did
//! before the hook. The sleeping case waits on state (the allocating thread's result or the
//! arena's waiter count) with a deadline that can only fail the test.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use kmalloc43_core::hosted::magazines::{boxed_magazine, free_magazine};
use kmalloc43_core::hosted::vmem::HeapPages;
use kmalloc43_core::magazine::{CpuMagazines, Depot};
use kmalloc43_core::vmem::{
    Arena, ArenaConfig, FastFree, Flags, ImportRequest, QcFront, SpanRelease, VmemError, SLAB_OBJS,
};
use kmalloc43_core::wait::{
    alloc_sleeping, import_span, wake_sleepers, VmemWait, VmemWaitError, WaitQueue,
};

/// The quantum of the test arenas (integers, as a client's ID arena).
const QUANTUM: usize = 1;
/// The largest quantum-cached size.
const QCACHE_MAX: usize = 4;
/// Rounds per magazine.
const MAG_ROUNDS: usize = 15;
/// How long a test waits for a state before it fails (never decides a verdict otherwise).
const DEADLINE: Duration = Duration::from_secs(60);

/// Waits until `cond` holds; fails the test if it does not within [`DEADLINE`].
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        thread::yield_now();
    }
}

/// What the lock protects: the arena, its wait queue, one CPU's magazines and the depots.
struct State {
    arena: Arena<HeapPages>,
    queue: WaitQueue,
    cpu: Vec<CpuMagazines>,
    depots: Vec<Depot>,
}

/// A client arena with a quantum-cache front, as the glue's `VmArena` (one CPU).
struct Fronted {
    state: Mutex<State>,
    space: Condvar,
    front: QcFront,
    /// Run the protocol with the trait's default `reclaim_cached` (no cache): the control.
    without_hook: bool,
    /// The integers the arena's source has left to give (`None`: no source).
    source: Option<Mutex<Budget>>,
}

/// A source that gives out consecutive spans until its budget is spent, and takes them back.
struct Budget {
    next: usize,
    left: usize,
    imported: usize,
    released: usize,
}

impl Fronted {
    /// An arena of the integers `span` (no source) with the front.
    fn new(span: (usize, usize)) -> Self {
        Self::from_config(&ArenaConfig {
            name: "reclaim",
            quantum: QUANTUM,
            span: Some(span),
            ..Default::default()
        })
    }

    /// An arena of `cfg` with the front.
    fn from_config(cfg: &ArenaConfig<'_>) -> Self {
        let front = QcFront::new(QUANTUM, QCACHE_MAX);
        let n = front.ncaches();
        Fronted {
            state: Mutex::new(State {
                arena: Arena::new(cfg, HeapPages::new()).expect("arena"),
                queue: WaitQueue::new(),
                cpu: (0..n).map(|_| CpuMagazines::new()).collect(),
                depots: (0..n).map(|_| Depot::new(MAG_ROUNDS, 62)).collect(),
            }),
            space: Condvar::new(),
            front,
            without_hook: false,
            source: None,
        }
    }

    /// An arena with no span of its own that imports spans of `SLAB_OBJS` integers from a
    /// source holding `budget` of them (based at `base`).
    fn with_source(base: usize, budget: usize) -> Self {
        let mut a = Self::from_config(&ArenaConfig {
            name: "reclaim-src",
            quantum: QUANTUM,
            import_quantum: Some(SLAB_OBJS),
            ..Default::default()
        });
        a.source = Some(Mutex::new(Budget {
            next: base,
            left: budget,
            imported: 0,
            released: 0,
        }));
        a
    }

    fn budget(&self) -> MutexGuard<'_, Budget> {
        let s = self.source.as_ref().expect("a source");
        s.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn locked(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `vmem_alloc` of a quantum-cached size through the front: this CPU's magazine, else a
    /// refill from the depot or a slab (a slab imported from the source if need be), else the
    /// arena.
    fn alloc_cached(&self, size: usize) -> Result<usize, VmemWaitError<VmemError>> {
        let i = self.front.cache_index(size).expect("a cached size");
        let refill = |s: &mut State| {
            let mut spare = Some(boxed_magazine(MAG_ROUNDS));
            let State {
                arena, cpu, depots, ..
            } = s;
            let r = self
                .front
                .refill(i, &mut cpu[i], &mut depots[i], arena, &mut spare);
            if let Some(m) = spare {
                free_magazine(m);
            }
            r
        };
        let mut r = refill(&mut self.locked());
        // A slab that needs the source: import a span and refill again (the glue's order).
        if let Err(VmemError::ImportNeeded(req)) = r {
            if self.has_source() {
                if let Ok(mut s) = import_span(self, &req, false) {
                    r = refill(&mut s);
                }
            }
        }
        match r {
            Ok(a) => Ok(a),
            Err(_) => self.alloc(size, Flags::NOSLEEP),
        }
    }

    /// `vmem_free` of a quantum-cached size through the front (into this CPU's magazine, a full
    /// one traded at the depot).
    fn free_cached(&self, addr: usize, size: usize) {
        let i = self.front.cache_index(size).expect("a cached size");
        let mut s = self.locked();
        let State { cpu, depots, .. } = &mut *s;
        match self.front.free(i, &mut cpu[i], addr).expect("a good free") {
            FastFree::Done => {}
            FastFree::Full(a) => {
                let mut spare = Some(boxed_magazine(MAG_ROUNDS));
                self.front
                    .unload(i, &mut cpu[i], &mut depots[i], &mut spare, a);
                if let Some(m) = spare {
                    free_magazine(m);
                }
            }
            FastFree::NotCached => panic!("{size} is cached"),
        }
    }

    /// `vmem_alloc` through the protocol (the arena's own allocation, as for an uncached size).
    fn alloc(&self, size: usize, flags: Flags) -> Result<usize, VmemWaitError<VmemError>> {
        alloc_sleeping(self, flags, |a, f| a.alloc(size, f))
    }

    /// Rounds cached in this CPU's magazines and the depots.
    fn cached_rounds(&self) -> usize {
        let s = self.locked();
        let cpu: usize = s.cpu.iter().map(CpuMagazines::rounds).sum();
        cpu + s.depots.iter().map(Depot::rounds).sum::<usize>()
    }

    /// Empties the front into the arena (the end of every test: nothing may stay cached).
    fn drain(&self) {
        let (s, _) = self.reclaim(self.locked());
        drop(s);
    }

    /// The glue's `reclaim_front`: magazines and depots home, idle slabs back to the arena,
    /// spans that became wholly free back to the source; whether the arena got anything back.
    fn reclaim<'a>(&'a self, mut s: MutexGuard<'a, State>) -> (MutexGuard<'a, State>, bool) {
        let before = s.arena.stats().mem_inuse;
        let State {
            arena, cpu, depots, ..
        } = &mut *s;
        for (i, m) in cpu.iter_mut().enumerate() {
            self.front.flush_cpu(i, m, free_magazine);
        }
        for (i, d) in depots.iter_mut().enumerate() {
            self.front.flush_depot(i, d, free_magazine);
        }
        self.front
            .release_idle(arena, &mut |span| self.release(span));
        let gave = s.arena.stats().mem_inuse < before;
        wake_sleepers(self, &mut s);
        (s, gave)
    }
}

impl VmemWait for Fronted {
    type Tags = HeapPages;
    type Locked<'a> = MutexGuard<'a, State>;
    type ImportError = VmemError;

    fn lock(&self) -> Self::Locked<'_> {
        self.locked()
    }

    fn arena<'l>(locked: &'l mut Self::Locked<'_>) -> &'l mut Arena<HeapPages> {
        &mut locked.arena
    }

    fn queue<'l>(locked: &'l mut Self::Locked<'_>) -> &'l mut WaitQueue {
        &mut locked.queue
    }

    fn wait<'a>(&'a self, locked: Self::Locked<'a>) -> Self::Locked<'a> {
        self.space.wait(locked).unwrap_or_else(|e| e.into_inner())
    }

    fn notify_all(&self) {
        self.space.notify_all();
    }

    fn has_source(&self) -> bool {
        self.source.is_some()
    }

    fn import(&self, req: &ImportRequest, _sleep: bool) -> Result<usize, VmemError> {
        let mut b = self.budget();
        if b.left < req.size {
            return Err(VmemError::NoSpace);
        }
        let base = b.next;
        b.next += req.size;
        b.left -= req.size;
        b.imported += 1;
        Ok(base)
    }

    fn release(&self, span: SpanRelease) {
        let mut b = self.budget();
        b.left += span.size;
        b.released += 1;
    }

    fn reclaim_cached<'a>(
        &'a self,
        locked: Self::Locked<'a>,
        _sleep: bool,
    ) -> (Self::Locked<'a>, bool) {
        if self.without_hook {
            return (locked, false);
        }
        self.reclaim(locked)
    }
}

/// Allocates every integer of the arena as cached 1-integer segments, then frees them all
/// through the front: afterwards they sit in magazines and slabs, and the arena is full.
fn fill_and_free_cached(a: &Fronted) -> usize {
    let mut got = Vec::new();
    while let Ok(x) = a.alloc_cached(1) {
        got.push(x);
    }
    for &x in &got {
        a.free_cached(x, 1);
    }
    got.len()
}

/// A `NOSLEEP` allocation the arena cannot serve while freed integers sit in the quantum caches'
/// magazines succeeds, because the protocol reclaims them first; without the hook it fails.
#[test]
fn nosleep_allocation_reclaims_integers_cached_in_magazines() {
    const SPAN: usize = 4 * SLAB_OBJS;
    for without_hook in [false, true] {
        let mut a = Fronted::new((0x1000, SPAN));
        a.without_hook = without_hook;
        assert_eq!(fill_and_free_cached(&a), SPAN);
        assert!(a.cached_rounds() > 0, "the frees went to the magazines");
        // The state the hook exists for: every integer is free, none is free in the arena.
        assert_eq!(
            a.locked().arena.alloc(SPAN, Flags::NOSLEEP),
            Err(VmemError::NoSpace)
        );
        let r = a.alloc(SPAN, Flags::NOSLEEP);
        if without_hook {
            assert_eq!(r, Err(VmemWaitError::Vmem(VmemError::NoSpace)));
            a.drain();
        } else {
            assert_eq!(r, Ok(0x1000), "the whole span, reclaimed from the caches");
            assert_eq!(a.cached_rounds(), 0);
            a.locked().arena.free(0x1000, SPAN).expect("free");
        }
        let s = a.locked();
        assert_eq!(s.arena.stats().mem_inuse, 0);
        assert_eq!(s.arena.stats().wait, 0);
        s.arena.audit().expect("audit");
    }
}

/// A `SLEEP` allocation in the same state does not sleep (nobody would wake it: every integer
/// is free): the reclaim serves it. Waited for on its result, bounded by a deadline that only
/// fails the test; without the hook the allocation goes to sleep (the arena's waiter count says
/// so) and stays asleep until the test adds a span.
#[test]
fn sleeping_allocation_reclaims_before_it_sleeps() {
    const SPAN: usize = 2 * SLAB_OBJS;
    for without_hook in [false, true] {
        let mut a = Fronted::new((0x4000, SPAN));
        a.without_hook = without_hook;
        assert_eq!(fill_and_free_cached(&a), SPAN);
        let a = Arc::new(a);
        let (tx, rx) = mpsc::channel();
        let t = {
            let a = Arc::clone(&a);
            thread::spawn(move || {
                let _ = tx.send(a.alloc(SPAN, Flags::SLEEP));
            })
        };
        if without_hook {
            // Asleep for space (the arena's waiter count), nobody to wake it: add a span of its
            // size, which does.
            wait_for("the allocation to sleep", || {
                a.locked().queue.waiting() == 1
            });
            {
                let mut s = a.locked();
                s.arena.add(0x10_0000, SPAN).expect("add");
                wake_sleepers(&*a, &mut s);
            }
            let r = rx.recv_timeout(DEADLINE).expect("woken by the add");
            assert_eq!(r, Ok(0x10_0000));
            assert_eq!(a.locked().arena.stats().wait, 1);
            a.drain();
            a.locked().arena.free(0x10_0000, SPAN).expect("free");
        } else {
            let r = rx.recv_timeout(DEADLINE);
            assert_eq!(r.expect("served without sleeping"), Ok(0x4000));
            assert_eq!(a.locked().arena.stats().wait, 0, "it never slept");
            assert_eq!(a.cached_rounds(), 0);
            a.locked().arena.free(0x4000, SPAN).expect("free");
        }
        t.join().expect("thread");
        let s = a.locked();
        assert_eq!(s.arena.stats().mem_inuse, 0);
        s.arena.audit().expect("audit");
    }
}

/// An arena with a source: when the source refuses an import while the arena's own integers sit
/// in the quantum caches' magazines, the protocol reclaims them (their slabs come home, wholly
/// free spans go back to the source) and retries, in both sleep modes, instead of answering
/// with the source's refusal; without the hook the refusal is the answer.
#[test]
fn refused_import_reclaims_integers_cached_in_magazines() {
    const BUDGET: usize = 4 * SLAB_OBJS;
    for flags in [Flags::NOSLEEP, Flags::SLEEP] {
        for without_hook in [false, true] {
            let mut a = Fronted::with_source(0x8000, BUDGET);
            a.without_hook = without_hook;
            assert_eq!(fill_and_free_cached(&a), BUDGET);
            assert!(a.cached_rounds() > 0, "the frees went to the magazines");
            assert_eq!(a.budget().left, 0, "the source gave everything");
            // The state the reclaim exists for: the arena needs an import the source refuses.
            assert!(matches!(
                a.locked().arena.alloc(SLAB_OBJS, Flags::NOSLEEP),
                Err(VmemError::ImportNeeded(_))
            ));
            let r = a.alloc(SLAB_OBJS, flags);
            if without_hook {
                assert_eq!(r, Err(VmemWaitError::Import(VmemError::NoSpace)));
            } else {
                let x = r.expect("served from the reclaimed caches");
                assert_eq!(a.cached_rounds(), 0);
                let rel = a.locked().arena.free(x, SLAB_OBJS).expect("free");
                if let Some(span) = rel {
                    a.release(span);
                }
            }
            a.drain();
            let s = a.locked();
            assert_eq!(s.arena.stats().mem_inuse, 0);
            assert_eq!(s.arena.stats().wait, 0);
            s.arena.audit().expect("audit");
            drop(s);
            let b = a.budget();
            assert_eq!(b.left, BUDGET, "every span went back to the source");
            assert_eq!(b.imported, b.released);
        }
    }
}
