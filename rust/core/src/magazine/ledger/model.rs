// SPDX-License-Identifier: GPL-2.0

//! Model test of the ledger with revocable credit words: every fast charge and uncharge split
//! into its steps (the exchange of the credit word, then the plain counters; a charge taken back:
//! the counters, then the exchange, then the reserve if the word was revoked meanwhile), with
//! revocations, grants, exact charges and charges of the base (the interrupt fall-back's) between
//! any two steps, in a generated schedule. After every step: `R == U + C` with `U` counting the
//! charges in flight, no state passes the limit, `C == 0` or `R <= min(limit, HighUse)`, and
//! `HighUse` is the largest exact usage reached.
//!
//! The slot's type also comes and goes between steps: a fold of every CPU (under every slot, so
//! between operations: an undefine refused for live allocations, the DIAGNOSTIC switch) and,
//! with nothing live, an undefine and the definition of the slot's next type (a new key, as a
//! new generation gives). The fast exchanges run without the key test (the credit word's
//! exchange alone, as a fast path could whose type lookup refused every handle but the slot's
//! current one); after every step, a live credit word or a cap above 0 is in a ledger claimed
//! for the current key (module documentation, *The key test*), every exchange that went through
//! found its ledger so, and a stale key's keyed exchanges ([`LocalLedger::try_charge`],
//! [`LocalLedger::try_uncharge`]) refuse, changing nothing.

use proptest::prelude::*;

use std::rc::Rc;

use super::*;
use crate::malloc::{MallocError, MallocFlags, MallocType};

/// The first type's slot key; each definition of the slot's next type adds a generation.
const KEY: u32 = 0x8001;
const BATCH: usize = 128;
const CAP: usize = 512;

/// Where a CPU's operation in flight stands (the holder runs one at a time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    /// Credit spent by the exchange; counters not yet updated.
    Taken(usize),
    /// Charged and counted: an object in hand, kept or taken back.
    Counted(usize),
    /// Taken back: counters done, the credit's exchange next.
    Returning(usize),
    /// The exchange found the word revoked: the reserve next (under the heap lock).
    Owed(usize),
    /// A free: credit given by the exchange; counters not yet updated.
    Given(usize),
}

impl Phase {
    /// Bytes of usage in flight: counted in `U` but in no counter (or, for a free, in a counter
    /// and in the credit), as the module documentation defines `U`.
    fn in_flight(self) -> isize {
        match self {
            Phase::Taken(c) | Phase::Returning(c) | Phase::Owed(c) => c as isize,
            Phase::Given(c) => -(c as isize),
            Phase::Idle | Phase::Counted(_) => 0,
        }
    }
}

struct Cpu {
    l: LocalLedger,
    /// Shared with the verdict's list of every CPU's word while this CPU's ledger is the payer.
    c: Rc<Credit>,
    phase: Phase,
    /// Charges of live objects counted on this CPU.
    live: Vec<usize>,
}

struct Model {
    /// The slot key of the type defined now.
    key: u32,
    /// The keys of the slot's earlier types (stale handles).
    stale: Vec<u32>,
    st: TypeStats,
    res: Reserve,
    cpus: Vec<Cpu>,
    /// Charges of live objects counted in the base (fall-back).
    base_live: Vec<usize>,
    max_u: usize,
    /// Charges the limit refused.
    refused: u64,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// Starts a fast charge (the exchange), or the slow path if it fails.
    Charge(usize, usize),
    /// Starts a fast free on the first CPU of one of the second CPU's live objects (owned: its
    /// page names the type, so the freeing CPU's counters may go below zero), or the locked
    /// path.
    Free(usize, usize, usize),
    /// Advances a CPU's operation by one step (keeps an object in hand).
    Step(usize),
    /// Takes back the object in hand (its allocation failed).
    Undo(usize),
    /// Revokes one CPU's credit, from anywhere, at any time (heap lock).
    Revoke(usize),
    /// The interrupt fall-back: a charge of the base under the heap lock.
    BaseCharge(usize),
    /// The interrupt fall-back's free of a base object.
    BaseFree(usize),
    /// The interrupt fall-back's charge of the base whose allocation then fails: taken back
    /// under the same hold of the heap lock, its high water with it.
    BaseTakeBack(usize),
    /// The interrupt fall-back's free of an object a CPU's counters count (no slot).
    FreeElsewhere(usize, usize),
    /// Every slot and the heap lock: every credit revoked and every ledger folded (an undefine
    /// refused for live allocations, the DIAGNOSTIC switch); then, with nothing live, the type
    /// is undefined and the slot's next type defined (a new key).
    Redefine,
    /// A CPU's keyed exchanges with a stale key (an earlier type's handle, as `Heap::malloc`
    /// and `Heap::free` may be given): both refuse, changing nothing.
    Stale(usize, usize, usize),
}

/// The charges of the schedule's operations.
fn size_sample() -> impl Strategy<Value = usize> + Clone {
    prop::sample::select(vec![16usize, 64, 100, 256])
}

fn op(ncpus: usize) -> impl Strategy<Value = Op> {
    let cpu = 0..ncpus;
    let size = size_sample();
    prop_oneof![
        4 => (cpu.clone(), size.clone()).prop_map(|(c, s)| Op::Charge(c, s)),
        3 => (cpu.clone(), cpu.clone(), any::<usize>()).prop_map(|(j, c, i)| Op::Free(j, c, i)),
        6 => cpu.clone().prop_map(Op::Step),
        1 => cpu.clone().prop_map(Op::Undo),
        2 => cpu.prop_map(Op::Revoke),
        1 => size.clone().prop_map(Op::BaseCharge),
        1 => any::<usize>().prop_map(Op::BaseFree),
        1 => size.prop_map(Op::BaseTakeBack),
        1 => (0..ncpus, any::<usize>()).prop_map(|(c, i)| Op::FreeElsewhere(c, i)),
        1 => Just(Op::Redefine),
        1 => (0..ncpus, any::<usize>(), size_sample()).prop_map(|(c, k, s)| Op::Stale(c, k, s)),
    ]
}

impl Model {
    fn new(ncpus: usize, limit: usize) -> Self {
        let st = TypeStats::new("model", "", limit);
        Self {
            key: KEY,
            stale: Vec::new(),
            st,
            res: Reserve::default(),
            cpus: (0..ncpus)
                .map(|_| Cpu {
                    l: LocalLedger::default(),
                    c: Rc::new(Credit::new()),
                    phase: Phase::Idle,
                    live: Vec::new(),
                })
                .collect(),
            base_live: Vec::new(),
            max_u: 0,
            refused: 0,
        }
    }

    fn revoke_all(&mut self) {
        for cpu in &self.cpus {
            revoke(&mut self.res, &cpu.c);
        }
    }

    /// The slow path of a charge (heap lock and the CPU's slot): the limit verdict with this
    /// CPU as the payer. Whether the object is in hand.
    fn slow_charge(&mut self, i: usize, charge: usize) -> bool {
        let words: Vec<Rc<Credit>> = self.cpus.iter().map(|c| Rc::clone(&c.c)).collect();
        let cpu = &mut self.cpus[i];
        let payer = Payer::Cpu {
            local: &mut cpu.l,
            credit: &cpu.c,
            key: self.key,
            batch: BATCH,
            cap: CAP,
        };
        verdict(
            &mut self.st,
            &mut self.res,
            &mut self.refused,
            payer,
            charge,
            &words,
        )
    }

    /// The interrupt fall-back's charge of the base: the limit verdict with the base as the
    /// payer.
    fn base_charge(&mut self, charge: usize) -> bool {
        let words: Vec<Rc<Credit>> = self.cpus.iter().map(|c| Rc::clone(&c.c)).collect();
        verdict(
            &mut self.st,
            &mut self.res,
            &mut self.refused,
            Payer::Base,
            charge,
            &words,
        )
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Charge(i, charge) if self.cpus[i].phase == Phase::Idle => {
                let cpu = &mut self.cpus[i];
                // The exchange without the key test.
                if cpu.c.try_take(charge) {
                    assert_eq!(cpu.l.key, self.key, "{op:?}: credit in a stale ledger");
                    cpu.phase = Phase::Taken(charge);
                } else if self.slow_charge(i, charge) {
                    self.cpus[i].phase = Phase::Counted(charge);
                }
            }
            Op::Free(j, i, pick) if self.cpus[j].phase == Phase::Idle => {
                let owner = &mut self.cpus[i];
                if owner.live.is_empty() {
                    return;
                }
                let charge = owner.live.swap_remove(pick % owner.live.len());
                let cpu = &mut self.cpus[j];
                // The exchange without the key test.
                if cpu.c.try_give(charge, cpu.l.cap) {
                    assert_eq!(cpu.l.key, self.key, "{op:?}: a cap in a stale ledger");
                    cpu.phase = Phase::Given(charge);
                } else {
                    assert!(uncharge_local(
                        &mut self.res,
                        &mut cpu.l,
                        &cpu.c,
                        self.key,
                        charge,
                        true
                    ));
                }
            }
            Op::Step(i) => {
                let cpu = &mut self.cpus[i];
                cpu.phase = match cpu.phase {
                    Phase::Idle => Phase::Idle,
                    Phase::Taken(c) => {
                        cpu.l.count_charge(c);
                        Phase::Counted(c)
                    }
                    Phase::Counted(c) => {
                        cpu.l.note_class(0);
                        cpu.live.push(c);
                        Phase::Idle
                    }
                    Phase::Returning(c) => {
                        if cpu.c.try_return(c) {
                            Phase::Idle
                        } else {
                            Phase::Owed(c)
                        }
                    }
                    Phase::Owed(c) => {
                        unreserve(&mut self.res, c);
                        Phase::Idle
                    }
                    Phase::Given(c) => {
                        cpu.l.count_uncharge(c);
                        Phase::Idle
                    }
                };
            }
            Op::Undo(i) => {
                let cpu = &mut self.cpus[i];
                if let Phase::Counted(c) = cpu.phase {
                    // `undo_charge` is these two steps; a revocation may come between them.
                    cpu.l.memuse = cpu.l.memuse.wrapping_sub(c);
                    cpu.l.inuse = cpu.l.inuse.wrapping_sub(1);
                    cpu.l.calls -= 1;
                    cpu.phase = Phase::Returning(c);
                }
            }
            Op::Revoke(i) => revoke(&mut self.res, &self.cpus[i].c),
            Op::BaseCharge(charge) => {
                if self.base_charge(charge) {
                    self.base_live.push(charge);
                }
            }
            Op::BaseTakeBack(charge) => {
                let high = self.st.maxused;
                if self.base_charge(charge) {
                    undo_charge_base(&mut self.st, &mut self.res, charge, high);
                }
            }
            Op::FreeElsewhere(i, pick) => {
                // Any CPU's live object, whatever that CPU is doing (the fall-back reads no slot).
                let cpu = &mut self.cpus[i];
                if !cpu.live.is_empty() {
                    let charge = cpu.live.swap_remove(pick % cpu.live.len());
                    uncharge_elsewhere(&mut self.res, charge);
                }
            }
            Op::BaseFree(pick) => {
                if !self.base_live.is_empty() {
                    let charge = self.base_live.swap_remove(pick % self.base_live.len());
                    assert!(uncharge_base(&mut self.st, &mut self.res, charge));
                }
            }
            Op::Redefine if self.cpus.iter().all(|c| c.phase == Phase::Idle) => self.redefine(),
            Op::Stale(i, k, charge) if !self.stale.is_empty() => {
                let stale = self.stale[k % self.stale.len()];
                let cpu = &mut self.cpus[i];
                let before = (cpu.l, cpu.c.get(), cpu.c.is_revoked());
                assert!(
                    !cpu.l.try_charge(&cpu.c, stale, charge),
                    "{op:?}: stale charge"
                );
                assert!(
                    !cpu.l.try_uncharge(&cpu.c, stale, charge, true),
                    "{op:?}: stale free"
                );
                assert_eq!(before, (cpu.l, cpu.c.get(), cpu.c.is_revoked()));
            }
            // A CPU in the middle of an operation starts no other; every slot waits for all.
            Op::Charge(..) | Op::Free(..) | Op::Redefine | Op::Stale(..) => {}
        }
        self.check(op);
    }

    /// [`Op::Redefine`], every CPU idle (every slot held): revoke and fold, as `fold_type`
    /// does; then, if nothing is live, the slot's next type.
    fn redefine(&mut self) {
        self.revoke_all();
        for cpu in &mut self.cpus {
            fold(&mut self.st, &mut cpu.l, &cpu.c, self.key);
            assert_eq!((cpu.l.cap, cpu.c.is_revoked()), (0, true));
        }
        fold_elsewhere(&mut self.st, &mut self.res);
        assert_eq!(
            self.res.reserved, self.st.memuse,
            "R = U once every credit is revoked"
        );
        let live = self.base_live.len() + self.cpus.iter().map(|c| c.live.len()).sum::<usize>();
        if live > 0 {
            return;
        }
        assert_eq!(
            (self.st.memuse, self.st.inuse, self.res),
            (0, 0, Reserve::default())
        );
        self.stale.push(self.key);
        // A new generation: bits 16 and up of the handle, as `MallocType` packs it.
        self.key += 1 << 16;
        self.st = TypeStats::new("model", "", self.st.limit);
        self.max_u = 0;
        self.refused = 0;
    }

    fn check(&mut self, op: Op) {
        // The key test's invariant: live credit or a cap only in a ledger claimed for the type
        // defined now.
        for (i, cpu) in self.cpus.iter().enumerate() {
            let live = !cpu.c.is_revoked() && (cpu.c.get() > 0 || cpu.l.cap > 0);
            assert!(
                !live || cpu.l.key == self.key,
                "after {op:?}: CPU {i} has credit {} cap {} in a ledger of key {:#x}, not {:#x}",
                cpu.c.get(),
                cpu.l.cap,
                cpu.l.key,
                self.key
            );
        }
        let counted: isize = self.st.memuse as isize - self.res.freed_bytes as isize
            + self
                .cpus
                .iter()
                .map(|c| c.l.memuse as isize + c.phase.in_flight())
                .sum::<isize>();
        assert!(counted >= 0, "after {op:?}: negative usage");
        let u = counted as usize;
        let c: usize = self.cpus.iter().map(|c| c.c.get()).sum();
        assert_eq!(self.res.reserved, u + c, "after {op:?}: R = U + C");
        assert!(u <= self.st.limit, "after {op:?}: usage {u} past the limit");
        assert!(
            c == 0 || self.res.reserved <= self.st.limit.min(self.st.maxused),
            "after {op:?}: credit out past min(limit, HighUse)"
        );
        self.max_u = self.max_u.max(u);
        assert_eq!(self.st.maxused, self.max_u, "after {op:?}: HighUse exact");
        assert_eq!(
            self.st.limblocks, self.refused,
            "after {op:?}: every refusal counted once"
        );
    }

    /// Finishes every operation, frees everything, revokes every credit: nothing is left.
    fn settle(&mut self) {
        for i in 0..self.cpus.len() {
            while self.cpus[i].phase != Phase::Idle {
                self.apply(Op::Step(i));
            }
        }
        let live: usize =
            self.cpus.iter().map(|c| c.live.len()).sum::<usize>() + self.base_live.len();
        let inuse = self
            .cpus
            .iter()
            .fold(self.st.inuse, |n, c| n.wrapping_add(c.l.inuse))
            .wrapping_sub(self.res.freed);
        assert_eq!(inuse, live, "InUse counts the live objects");
        for i in 0..self.cpus.len() {
            while !self.cpus[i].live.is_empty() {
                self.apply(Op::Free(i, i, 0));
                self.apply(Op::Step(i));
            }
        }
        while !self.base_live.is_empty() {
            self.apply(Op::BaseFree(0));
        }
        self.revoke_all();
        assert_eq!(self.res.reserved, 0);
        for cpu in &mut self.cpus {
            fold(&mut self.st, &mut cpu.l, &cpu.c, self.key);
        }
        fold_elsewhere(&mut self.st, &mut self.res);
        assert_eq!(
            (self.st.memuse, self.st.inuse),
            (0, 0),
            "every free taken off"
        );
    }
}

/// [`charge_verdict`] over every CPU's credit word `words`, counting the refusals in `refused`
/// (which must be `limblocks`) and checking the answer's kind.
fn verdict(
    st: &mut TypeStats,
    res: &mut Reserve,
    refused: &mut u64,
    payer: Payer<'_>,
    charge: usize,
    words: &[Rc<Credit>],
) -> bool {
    let credits = words.iter().map(|w| &**w);
    match charge_verdict(
        st,
        res,
        payer,
        charge,
        credits,
        MallocType::from_raw(1),
        MallocFlags::NOWAIT,
    ) {
        Ok(_) => true,
        Err(e) => {
            assert!(matches!(e, MallocError::Limit { charge: c, .. } if c == charge));
            *refused += 1;
            false
        }
    }
}

fn run(ncpus: usize, limit: usize, ops: &[Op]) {
    let mut m = Model::new(ncpus, limit);
    for &op in ops {
        m.apply(op);
    }
    m.settle();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn two_cpus_every_interleaving_keeps_the_ledger_exact(
        limit in prop::sample::select(vec![300usize, 1000, 4096, CREDIT_MAX]),
        ops in prop::collection::vec(op(2), 1..300),
    ) {
        run(2, limit, &ops);
    }

    #[test]
    fn three_cpus_every_interleaving_keeps_the_ledger_exact(
        limit in prop::sample::select(vec![300usize, 1000, 4096, CREDIT_MAX]),
        ops in prop::collection::vec(op(3), 1..300),
    ) {
        run(3, limit, &ops);
    }
}

#[test]
fn a_revocation_between_the_exchange_and_the_counters_counts_the_charge_as_usage() {
    let mut m = Model::new(2, 1000);
    // CPU 0 sets a high water of 256 and frees it; then a grant gives it credit below it.
    m.apply(Op::Charge(0, 256));
    m.apply(Op::Step(0));
    m.apply(Op::Free(0, 0, 0));
    m.apply(Op::Charge(0, 100));
    m.apply(Op::Step(0));
    assert_eq!(m.cpus[0].c.get(), 28, "a grant of one batch");
    m.apply(Op::Charge(0, 16));
    assert_eq!(m.cpus[0].phase, Phase::Taken(16), "served by credit");
    m.apply(Op::Revoke(0));
    // CPU 1 charges at the limit: R == U includes CPU 0's charge in flight.
    m.apply(Op::Charge(1, 256));
    assert_eq!(m.cpus[1].phase, Phase::Counted(256));
    assert_eq!(
        m.st.maxused,
        100 + 16 + 256,
        "HighUse counts the charge in flight"
    );
    m.apply(Op::Step(1));
    m.apply(Op::Step(0));
    m.apply(Op::Step(0));
    m.settle();
}
