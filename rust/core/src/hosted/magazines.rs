// SPDX-License-Identifier: GPL-2.0

//! Host support for the magazine layer: boxed magazines, and a simulated multi-CPU front end
//! (magazines and depots per type, as the glue keeps them, with the trimming rules of
//! `magazine::trim`, and exact per-type ledgers, over a trivial object pool), one step at a time,
//! for model tests and fuzzing. It runs the glue's magazine and ledger protocol as it was before the credit
//! word could be revoked without the slot (session 5): a revocation or a gather here takes every
//! simulated slot. The glue's present protocol (revocation by exchange with no slot, the interrupt
//! fall-back, frees counted where they happen) is checked by the ledger's own generated-schedule
//! model (`magazine/ledger/model.rs`) and the threaded test `tests/ledger_threads.rs`.

use std::ptr::NonNull;

use crate::magazine::ledger::{self, Credit, LocalLedger, Reserve};
use crate::magazine::{
    class_budget, fill_rounds, over_budget, ClassMagazines, Depot, MagBox, Magazine,
};
use crate::malloc::{MallocFlags, MallocType, TypeStats};

/// A magazine of capacity `cap` on the host heap.
pub fn boxed_magazine(cap: usize) -> MagBox {
    let p = NonNull::from(Box::leak(Box::new(Magazine::new(cap))));
    // SAFETY: a fresh, initialised, exclusively owned allocation.
    unsafe { MagBox::from_raw(p) }
}

/// Frees a magazine from [`boxed_magazine`] (its rounds must have been taken out).
pub fn free_magazine(m: MagBox) {
    assert!(m.is_empty(), "magazine freed with rounds");
    // SAFETY: `boxed_magazine` made it with `Box`; ownership ends here.
    drop(unsafe { Box::from_raw(m.into_raw().as_ptr()) });
}

/// How a simulated call was served (to check that steady churn stays on the CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Magazines and credit only.
    Fast,
    /// The heap lock with this CPU's slot (credit grant or return, depot or pool).
    Local,
    /// Every CPU's slot (revoke, gather): exact.
    Global,
}

/// Why a simulated call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimError {
    /// The type's limit.
    Limit,
    /// The type's counters cannot cover the free.
    WrongType,
    /// The object is already free (sits in a magazine or in the pool).
    DoubleFree,
}

struct SimCpu {
    /// Per type, this CPU's magazines of the one class (a glue row of one class).
    rows: Vec<ClassMagazines<1>>,
    ledgers: Vec<LocalLedger>,
    /// Per type, this CPU's credit word.
    credits: Vec<Credit>,
}

/// A simulated front end: `ncpus` CPUs, one size class of objects charged `charge` bytes, and
/// `ntypes` types, each with its own magazines on every CPU and its own depot. Objects are numbers
/// (the layer below is a counter and a free list).
pub struct SimFront {
    cpus: Vec<SimCpu>,
    /// Per type, its depot.
    depots: Vec<Depot>,
    /// Rounds a CPU's magazines may hold over all types before a free miss gives rounds back
    /// (`magazine::trim::class_budget` of this many rounds).
    pub budget_rounds: usize,
    /// Free misses over the class budget so far.
    pub spills: u64,
    pool: Vec<usize>,
    next_obj: usize,
    /// Objects handed out by the layer below and not given back.
    pub outstanding: usize,
    types: Vec<(MallocType, TypeStats, Reserve)>,
    /// Credit granted per grant.
    pub batch: usize,
    /// Credit a CPU keeps after frees.
    pub credit_cap: usize,
}

impl SimFront {
    /// A front with the given CPUs, magazine sizes and type limits (`usize::MAX`: none).
    pub fn new(ncpus: usize, magsize: usize, max_magsize: usize, limits: &[usize]) -> Self {
        let types = limits
            .iter()
            .enumerate()
            .map(|(i, &limit)| {
                let st = TypeStats::new("sim", "", limit);
                (MallocType::from_raw(i as u32), st, Reserve::default())
            })
            .collect();
        Self {
            cpus: (0..ncpus)
                .map(|_| SimCpu {
                    rows: limits.iter().map(|_| ClassMagazines::new()).collect(),
                    ledgers: vec![LocalLedger::default(); limits.len()],
                    credits: limits.iter().map(|_| Credit::new()).collect(),
                })
                .collect(),
            depots: limits
                .iter()
                .map(|_| Depot::new(magsize, max_magsize))
                .collect(),
            budget_rounds: 2 * max_magsize,
            spills: 0,
            pool: Vec::new(),
            next_obj: 1,
            outstanding: 0,
            types,
            batch: 256,
            credit_cap: 1024,
        }
    }

    fn below_alloc(&mut self) -> usize {
        self.outstanding += 1;
        self.pool.pop().unwrap_or_else(|| {
            self.next_obj += 1;
            self.next_obj
        })
    }

    fn below_free(&mut self, obj: usize) {
        self.outstanding -= 1;
        self.pool.push(obj);
    }

    /// Allocates an object of `charge` bytes for type `t` on CPU `cpu`.
    pub fn malloc(
        &mut self,
        cpu: usize,
        t: usize,
        charge: usize,
    ) -> Result<(usize, Path), SimError> {
        let (ty, _, _) = self.types[t];
        let key = ledger::key(ty);
        let mut path = Path::Fast;
        let SimCpu {
            ledgers, credits, ..
        } = &mut self.cpus[cpu];
        if !ledgers[t].try_charge(&credits[t], key, charge) {
            // The limit verdict of the kernel's slow path, this CPU's ledger as the payer (taken
            // out of its slot meanwhile, so that every CPU's credit word can be listed).
            let mut local = core::mem::take(&mut ledgers[t]);
            let (_, st, res) = &mut self.types[t];
            let payer = ledger::Payer::Cpu {
                local: &mut local,
                credit: &self.cpus[cpu].credits[t],
                key,
                batch: self.batch,
                cap: self.credit_cap,
            };
            let words = self.cpus.iter().map(|c| &c.credits[t]);
            let verdict =
                ledger::charge_verdict(st, res, payer, charge, words, ty, MallocFlags::NOWAIT);
            self.cpus[cpu].ledgers[t] = local;
            path = match verdict {
                Ok(ledger::Charged::FromHeadroom) => Path::Local,
                Ok(ledger::Charged::Exactly) => Path::Global,
                Err(_) => return Err(SimError::Limit),
            };
        }
        // As the glue: a round from a magazine (loaded, previous or the depot's) notes no class,
        // only a fill does (`LocalLedger::count_charge`; the round's class is in the type's
        // sizemask since the allocation that first brought it, which the model test checks).
        let obj = match self.cpus[cpu].rows[t].alloc(0) {
            Some(o) => o,
            None => {
                if path == Path::Fast {
                    path = Path::Local;
                }
                let depot = &mut self.depots[t];
                let row = &mut self.cpus[cpu].rows[t];
                row.activate(0);
                if row.class(0).reload_from_depot(depot) {
                    row.count(0);
                    row.class(0).alloc().expect("reloaded")
                } else {
                    if row.class(0).loaded_mut().is_none() {
                        let m = boxed_magazine(depot.magsize());
                        assert!(row.class(0).install(m).is_ok());
                    }
                    // A fill takes at most a page of objects (`magazine::trim`).
                    let want = depot.magsize();
                    let n = want.min(fill_rounds(charge));
                    let mut objs = Vec::new();
                    for _ in 0..n {
                        objs.push(self.below_alloc());
                    }
                    let row = &mut self.cpus[cpu].rows[t];
                    let m = row.class(0).loaded_mut().expect("installed");
                    m.set_cap(want);
                    for o in objs {
                        m.push(o).expect("room");
                    }
                    // The requests the row served are folded with the fill.
                    let _ = row.take_calls(0);
                    self.cpus[cpu].ledgers[t].note_class(0);
                    self.cpus[cpu].rows[t].alloc(0).expect("filled")
                }
            }
        };
        Ok((obj, path))
    }

    /// Frees object `obj` of `charge` bytes of type `t` on CPU `cpu`. `in_use` says whether the
    /// caller's reference model has it live (the simulated piece layer's double-free check).
    pub fn free(
        &mut self,
        cpu: usize,
        t: usize,
        obj: usize,
        charge: usize,
        in_use: bool,
    ) -> Result<Path, SimError> {
        if !in_use {
            return Err(SimError::DoubleFree);
        }
        let (ty, _, _) = self.types[t];
        let key = ledger::key(ty);
        let mut path = Path::Fast;
        let SimCpu {
            ledgers, credits, ..
        } = &mut self.cpus[cpu];
        if !ledgers[t].try_uncharge(&credits[t], key, charge, false) {
            path = Path::Local;
            let (_, st, res) = &mut self.types[t];
            if !ledger::uncharge_local(res, &mut ledgers[t], &credits[t], key, charge, false) {
                path = Path::Global;
                let mut here = self.cpus[cpu].ledgers[t];
                for c in &mut self.cpus {
                    ledger::gather(&mut here, &mut c.ledgers[t], key);
                }
                ledger::gather_base(&mut here, st, key);
                self.cpus[cpu].ledgers[t] = here;
                let c = &mut self.cpus[cpu];
                if !ledger::uncharge_local(
                    res,
                    &mut c.ledgers[t],
                    &c.credits[t],
                    key,
                    charge,
                    false,
                ) {
                    return Err(SimError::WrongType);
                }
            }
        }
        if let Err(o) = self.cpus[cpu].rows[t].class(0).free(obj) {
            if path == Path::Fast {
                path = Path::Local;
            }
            // Over the CPU's class budget (other types hold some of it): the full previous
            // magazine's rounds go back to the layer below instead of to the depot.
            let held: usize = self.cpus[cpu].rows.iter().map(|r| r.rounds(0)).sum();
            let budget = class_budget(self.budget_rounds, self.depots[t].magsize());
            if over_budget(held, self.cpus[cpu].rows[t].rounds(0), budget) {
                if let Some(mut prev) = self.cpus[cpu].rows[t].class(0).take_previous() {
                    self.spills += 1;
                    let rounds = prev.take_rounds().to_vec();
                    rounds.into_iter().for_each(|o| self.below_free(o));
                    free_magazine(prev);
                }
            }
            let depot = &mut self.depots[t];
            self.cpus[cpu].rows[t].activate(0);
            let mags = self.cpus[cpu].rows[t].class(0);
            if let Some(s) = mags.unload_or_install(depot, boxed_magazine).spare {
                free_magazine(s);
            }
            mags.free(o).expect("room after unload");
        }
        Ok(path)
    }

    /// The type's statistics, exact (base plus every CPU).
    pub fn exact(&self, t: usize) -> TypeStats {
        let (ty, mut st, _) = self.types[t];
        for c in &self.cpus {
            ledger::exact(&mut st, &c.ledgers[t], ledger::key(ty));
        }
        st
    }

    /// `R` of type `t` and the sum of the CPUs' credit.
    pub fn reserve(&self, t: usize) -> (usize, usize) {
        (
            self.types[t].2.reserved,
            self.cpus.iter().map(|c| c.credits[t].get()).sum(),
        )
    }

    /// Changes a type's limit: every credit is revoked so the new limit holds at once.
    pub fn set_limit(&mut self, t: usize, limit: usize) {
        let (_, st, res) = &mut self.types[t];
        for c in &self.cpus {
            ledger::revoke(res, &c.credits[t]);
        }
        st.limit = limit;
    }

    /// Rounds held by the magazine layer (CPUs and depots).
    pub fn cached(&self) -> usize {
        let cpus: usize = self
            .cpus
            .iter()
            .flat_map(|c| c.rows.iter())
            .map(|r| r.rounds(0))
            .sum();
        cpus + self.depots.iter().map(|d| d.rounds()).sum::<usize>()
    }

    /// Rounds CPU `cpu`'s magazines hold over all types.
    pub fn cpu_rounds(&self, cpu: usize) -> usize {
        self.cpus[cpu].rows.iter().map(|r| r.rounds(0)).sum()
    }

    /// Type 0's depot (to drive its interval and check its counters).
    pub fn depot_mut(&mut self) -> &mut Depot {
        &mut self.depots[0]
    }

    /// Closes every depot's interval.
    pub fn update(&mut self) {
        for d in &mut self.depots {
            d.update();
        }
    }

    /// Trims every depot to its working set: rounds go back to the pool. Returns magazines freed.
    pub fn reap(&mut self) -> usize {
        let mut n = 0;
        for t in 0..self.depots.len() {
            while let Some(m) = self.depots[t].reap() {
                self.release(m);
                n += 1;
            }
        }
        n
    }

    /// The aging pass of CPU `cpu` (`magazine::trim`): the magazines of every type that served no
    /// allocation there since the last pass give their rounds back, and such a type's depot
    /// closes an interval and gives back what stayed out of its working set. Returns the rounds
    /// given back.
    pub fn age(&mut self, cpu: usize) -> usize {
        let before = self.outstanding;
        for t in 0..self.depots.len() {
            let idle = self.cpus[cpu].rows[t].take_idle(0);
            for m in idle.mags.into_iter().flatten().flatten() {
                self.release(m);
            }
            if !idle.visit_depot {
                continue;
            }
            self.depots[t].update();
            while let Some(m) = self.depots[t].reap() {
                self.release(m);
            }
            let holds = self.depots[t].holds_any();
            self.cpus[cpu].rows[t].depot_aged(0, holds);
        }
        before - self.outstanding
    }

    /// Gives a magazine's rounds back to the pool and frees it.
    fn release(&mut self, mut m: MagBox) {
        let rounds = m.take_rounds().to_vec();
        rounds.into_iter().for_each(|o| self.below_free(o));
        free_magazine(m);
    }

    /// Flushes every magazine back to the pool (drain) and folds every CPU's counters into the
    /// types' base statistics.
    pub fn flush(&mut self) {
        let mut mags = Vec::new();
        for c in &mut self.cpus {
            for r in &mut c.rows {
                mags.extend(r.take(0).into_iter().flatten());
                let _ = r.take_calls(0);
            }
        }
        for d in &mut self.depots {
            while let Some(m) = d.take_any() {
                mags.push(m);
            }
        }
        for m in mags {
            self.release(m);
        }
        for t in 0..self.types.len() {
            let (ty, st, res) = &mut self.types[t];
            let key = ledger::key(*ty);
            for c in &mut self.cpus {
                ledger::revoke(res, &c.credits[t]);
                ledger::fold(st, &mut c.ledgers[t], &c.credits[t], key);
            }
        }
    }
}

impl Drop for SimFront {
    fn drop(&mut self) {
        self.flush();
    }
}
