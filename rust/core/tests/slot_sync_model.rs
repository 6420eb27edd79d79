// SPDX-License-Identifier: GPL-2.0

//! The slot lock's mode protocol (`magazine::slot_sync`) as a model: two CPUs whose task
//! contexts take their own slot lock over and over (read the mode, then a plain load and store in
//! fast mode or a `cmpxchg` in slow mode, each a step of its own), nested interrupts that do the
//! same or try every slot as an atomic-context reader, remote takers (task context) that enter
//! slow mode, wait for a grace period, take every CPU's word and exit, and RCU: a grace period
//! ends once every section (preemption or interrupts off) that was running when it began has
//! ended, and the return-to-fast callback runs some time after its grace period. Every
//! interleaving a random scheduler picks must keep each slot with at most one holder, and the
//! lock set must end fast with every word free. A control run whose grace period waits for
//! nothing must be caught.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use kmalloc43_core::magazine::slot_sync::{self, GracePeriod, SlotSync};

const CPUS: usize = 2;
const REMOTES: usize = 2;
/// Local acquires per CPU task, rounds per remote taker.
const ROUNDS: usize = 4;
const MAX_NEST: usize = 3;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    /// The owner's acquire (task or interrupt).
    Local,
    /// `type_stats` outside task context: `try_enter`, every word tried.
    AtomicReader,
}

#[derive(Clone, Debug)]
struct Ctx {
    kind: Kind,
    id: usize,
    pc: u32,
    serial: usize,
    fast: bool,
    /// Words taken (the atomic reader).
    took: usize,
}

#[derive(Clone, Debug)]
struct Remote {
    pc: u32,
    rounds: usize,
    /// The grace period it waits for: the sections live when it began.
    gp: BTreeSet<usize>,
    took: usize,
}

struct Model {
    sync: SlotSync,
    words: Vec<AtomicU32>,
    /// Who holds each slot (mutual exclusion is checked on this, not on the words).
    occ: RefCell<Vec<Option<usize>>>,
    live: RefCell<BTreeSet<usize>>,
    next_serial: Cell<usize>,
    /// The pending callback's grace period.
    pending: RefCell<Option<BTreeSet<usize>>>,
    gp_waits: bool,
    error: RefCell<Option<String>>,
}

impl GracePeriod for Model {
    fn synchronize(&self) {
        unreachable!("the model runs enter's halves as steps");
    }
    fn call_after(&self) {
        if self.pending.borrow().is_some() {
            self.fail("two callbacks pending".into());
        }
        *self.pending.borrow_mut() = Some(self.gp_now());
    }
}

impl Model {
    fn gp_now(&self) -> BTreeSet<usize> {
        if self.gp_waits {
            self.live.borrow().clone()
        } else {
            BTreeSet::new()
        }
    }

    fn gp_over(&self, gp: &BTreeSet<usize>) -> bool {
        gp.is_disjoint(&self.live.borrow())
    }

    fn fail(&self, e: String) {
        self.error.borrow_mut().get_or_insert(e);
    }

    fn begin(&self) -> usize {
        let s = self.next_serial.get();
        self.next_serial.set(s + 1);
        self.live.borrow_mut().insert(s);
        s
    }

    fn occupy(&self, cpu: usize, who: usize) {
        let mut occ = self.occ.borrow_mut();
        if let Some(h) = occ[cpu] {
            let e = format!("slot {cpu}: {who} entered while {h} holds it");
            drop(occ);
            self.fail(e);
            return;
        }
        occ[cpu] = Some(who);
    }

    fn vacate(&self, cpu: usize) {
        self.occ.borrow_mut()[cpu] = None;
    }

    /// A remote holder of every word (it took them all) enters every slot.
    fn occupy_all(&self, who: usize) {
        for cpu in 0..CPUS {
            self.occupy(cpu, who);
        }
    }

    /// A remote holder of every slot leaves them, releases every word and leaves the protocol.
    fn release_all(&self) {
        for cpu in 0..CPUS {
            self.vacate(cpu);
            slot_sync::unlock(&self.words[cpu]);
        }
        self.sync.exit(self);
    }

    fn cas(&self, cpu: usize) -> bool {
        self.words[cpu]
            .compare_exchange(0, 1, Relaxed, Relaxed)
            .is_ok()
    }
}

struct World {
    m: Model,
    cpus: Vec<Vec<Ctx>>,
    task_rounds: Vec<usize>,
    remotes: Vec<Remote>,
    next_id: usize,
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Step(usize),
    Interrupt(usize, Kind),
    Remote(usize),
    Callback,
}

impl World {
    fn new(gp_waits: bool) -> Self {
        Self {
            m: Model {
                sync: SlotSync::new(),
                words: (0..CPUS).map(|_| AtomicU32::new(0)).collect(),
                occ: RefCell::new(vec![None; CPUS]),
                live: RefCell::new(BTreeSet::new()),
                next_serial: Cell::new(0),
                pending: RefCell::new(None),
                gp_waits,
                error: RefCell::new(None),
            },
            cpus: vec![Vec::new(); CPUS],
            task_rounds: vec![0; CPUS],
            remotes: vec![
                Remote {
                    pc: 0,
                    rounds: 0,
                    gp: BTreeSet::new(),
                    took: 0,
                };
                REMOTES
            ],
            next_id: 100,
        }
    }

    fn ctx(&mut self, kind: Kind) -> Ctx {
        self.next_id += 1;
        Ctx {
            kind,
            id: self.next_id,
            pc: 0,
            serial: 0,
            fast: false,
            took: 0,
        }
    }

    fn actions(&self, interrupts: bool) -> Vec<Action> {
        let mut v = Vec::new();
        for cpu in 0..CPUS {
            if !self.cpus[cpu].is_empty() || self.task_rounds[cpu] < ROUNDS {
                v.push(Action::Step(cpu));
            }
            if interrupts && self.cpus[cpu].len() < MAX_NEST {
                v.push(Action::Interrupt(cpu, Kind::Local));
                v.push(Action::Interrupt(cpu, Kind::AtomicReader));
            }
        }
        for (i, r) in self.remotes.iter().enumerate() {
            if self.remote_enabled(r) {
                v.push(Action::Remote(i));
            }
        }
        if let Some(gp) = &*self.m.pending.borrow() {
            if self.m.gp_over(gp) {
                v.push(Action::Callback);
            }
        }
        v
    }

    fn remote_enabled(&self, r: &Remote) -> bool {
        match r.pc {
            0 => r.rounds < ROUNDS,
            1 => self.m.gp_over(&r.gp),
            2 => self.m.words[r.took].load(Relaxed) == 0,
            _ => true,
        }
    }

    fn run(&mut self, a: Action) {
        match a {
            Action::Step(cpu) => {
                if self.cpus[cpu].is_empty() {
                    self.task_rounds[cpu] += 1;
                    let c = self.ctx(Kind::Local);
                    self.cpus[cpu].push(c);
                }
                let mut c = self.cpus[cpu].pop().unwrap();
                let done = match c.kind {
                    Kind::Local => self.local(cpu, &mut c),
                    Kind::AtomicReader => self.reader(&mut c),
                };
                if done {
                    self.m.live.borrow_mut().remove(&c.serial);
                } else {
                    self.cpus[cpu].push(c);
                }
            }
            Action::Interrupt(cpu, kind) => {
                let c = self.ctx(kind);
                self.cpus[cpu].push(c);
            }
            Action::Remote(i) => {
                let mut r = self.remotes[i].clone();
                self.remote(i, &mut r);
                self.remotes[i] = r;
            }
            Action::Callback => {
                self.m.pending.borrow_mut().take();
                self.m.sync.passed(&self.m);
            }
        }
    }

    /// One step of an owner's acquire (`SlotSync::try_lock_local` split at its loads and its
    /// store, where an interrupt may come); true when its section ended.
    fn local(&self, cpu: usize, c: &mut Ctx) -> bool {
        let m = &self.m;
        let w = &m.words[cpu];
        match c.pc {
            0 => {
                c.serial = m.begin();
                c.pc = 1;
            }
            1 => {
                c.fast = m.sync.is_fast();
                c.pc = 2;
            }
            2 if c.fast => {
                if w.load(Relaxed) != 0 {
                    return true;
                }
                c.pc = 3;
            }
            2 => {
                if !slot_sync::try_lock_atomic(w) {
                    return true;
                }
                c.pc = 4;
            }
            3 => {
                w.store(1, Relaxed);
                c.pc = 4;
            }
            4 => {
                m.occupy(cpu, c.id);
                c.pc = 5;
            }
            _ => {
                m.vacate(cpu);
                slot_sync::unlock(w);
                return true;
            }
        }
        false
    }

    /// One step of an atomic-context reader: joins established slow mode, tries every word.
    fn reader(&self, c: &mut Ctx) -> bool {
        let m = &self.m;
        match c.pc {
            0 => {
                c.serial = m.begin();
                c.pc = 1;
            }
            1 => {
                if !m.sync.try_enter() {
                    return true;
                }
                c.pc = 2;
            }
            2 => {
                if c.took == CPUS {
                    c.pc = 3;
                } else if m.cas(c.took) {
                    c.took += 1;
                } else {
                    for cpu in 0..c.took {
                        slot_sync::unlock(&m.words[cpu]);
                    }
                    m.sync.exit(m);
                    return true;
                }
            }
            3 => {
                m.occupy_all(c.id);
                c.pc = 4;
            }
            _ => {
                m.release_all();
                return true;
            }
        }
        false
    }

    /// One step of a remote taker (task context: it waits, for the grace period and for words).
    fn remote(&self, i: usize, r: &mut Remote) {
        let m = &self.m;
        match r.pc {
            0 => {
                r.rounds += 1;
                r.took = 0;
                if m.sync.join() {
                    r.gp = m.gp_now();
                    r.pc = 1;
                } else {
                    r.pc = 2;
                }
            }
            1 => {
                m.sync.establish();
                r.pc = 2;
            }
            2 => {
                assert!(m.cas(r.took));
                r.took += 1;
                if r.took == CPUS {
                    r.pc = 3;
                }
            }
            3 => {
                m.occupy_all(i);
                r.pc = 4;
            }
            _ => {
                m.release_all();
                r.pc = 0;
            }
        }
    }
}

/// One run: `steps` random choices (interrupts allowed), then every context run to its end
/// and the callbacks delivered; the first violation, if any.
fn run(seed: u64, steps: usize, gp_waits: bool) -> Result<(), String> {
    let mut w = World::new(gp_waits);
    let mut x = seed | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..steps {
        let acts = w.actions(true);
        let a = acts[(next() % acts.len() as u64) as usize];
        w.run(a);
        if let Some(e) = w.m.error.borrow().clone() {
            return Err(e);
        }
    }
    loop {
        let acts = w.actions(false);
        let Some(&a) = acts.get((next() % acts.len().max(1) as u64) as usize) else {
            break;
        };
        w.run(a);
        if let Some(e) = w.m.error.borrow().clone() {
            return Err(e);
        }
    }
    assert!(w.cpus.iter().all(|s| s.is_empty()), "seed {seed}: stuck");
    assert!(
        w.remotes.iter().all(|r| r.pc == 0 && r.rounds == ROUNDS),
        "seed {seed}: a remote taker is stuck"
    );
    assert!(w.m.pending.borrow().is_none());
    assert!(w.m.sync.is_fast(), "seed {seed}: not back to fast mode");
    assert!(w.m.words.iter().all(|x| x.load(Relaxed) == 0));
    assert!(w.m.occ.borrow().iter().all(Option::is_none));
    Ok(())
}

#[test]
fn slots_keep_one_holder_in_every_interleaving_tried() {
    for seed in 0..20_000u64 {
        let seed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        if let Err(e) = run(seed, 200, true) {
            panic!("seed {seed:#x}: {e}");
        }
    }
}

#[test]
fn slow_mode_is_used_and_left() {
    // The runs above must exercise both modes and every transition, not just fast mode.
    let mut slow_locals = 0;
    let mut readers_in = 0;
    for seed in 0..500u64 {
        let mut w = World::new(true);
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for _ in 0..200 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let acts = w.actions(true);
            let a = acts[(x % acts.len() as u64) as usize];
            if let Action::Step(cpu) = a {
                if let Some(c) = w.cpus[cpu].last() {
                    slow_locals += usize::from(c.kind == Kind::Local && c.pc == 2 && !c.fast);
                    readers_in += usize::from(
                        c.kind == Kind::AtomicReader && c.pc == 1 && w.m.sync.is_established(),
                    );
                }
            }
            w.run(a);
        }
    }
    assert!(slow_locals > 100, "{slow_locals} slow-mode local acquires");
    assert!(readers_in > 10, "{readers_in} atomic readers in slow mode");
}

#[test]
fn a_grace_period_that_waits_for_nothing_is_caught() {
    let caught = (0..20_000u64)
        .filter(|&s| run(s.wrapping_mul(0x9e37_79b9_7f4a_7c15), 200, false).is_err())
        .count();
    assert!(caught > 0, "the model missed a broken grace period");
}
