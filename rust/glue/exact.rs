// SPDX-License-Identifier: GPL-2.0

//! The exact readers and flushes of the magazine layer (`magazines`, `fastpath`): type and
//! bucket statistics folded from every CPU, drain and trim, limit changes, undefine and the
//! DIAGNOSTIC switch, each with every per-CPU slot and the heap lock held so that what it reads
//! or changes is exact; and the usable size, which needs the heap lock only (a round is known by
//! its mark).

use core::{cell::Cell, ptr::NonNull};

use kernel::prelude::*;

use crate::fastpath::fold_type;
use crate::heap::{Heap, HeapState};
use crate::magazine::ledger;
use crate::magazine::MagBox;
use crate::magazines::{is_round, ledger_slot, release_magazine, CpuCache, Credits, Front};
use crate::malloc::{
    BucketStats, ClassTable, LargeStats, MallocError, MallocType, TypeStats, MAX_CLASSES, NCLASSES,
};
use crate::percpu::{may_sleep, AllGuard};

/// One row of [`Heap::for_each_bucket`].
pub(crate) enum BucketRow<'a> {
    /// Size class `i`.
    Class(usize, &'a BucketStats),
    /// Page runs.
    Large(&'a LargeStats),
}

/// Folds `n` allocations of class `c` that type slot `t`'s magazines served into the core's
/// request counters: the type's own bucket's if the type is still defined, else the class's.
fn add_calls(s: &mut HeapState, t: usize, c: usize, n: u64) {
    match s.malloc.type_handle(t) {
        Some(ty) => s.malloc.add_type_magazine_calls(c, ty, n),
        None => s.malloc.add_magazine_calls(c, n),
    }
}

impl Heap {
    /// Bytes usable at `ptr`; a round (an object in a magazine, by its mark: `is_round`) is
    /// free: `NotAllocated`. The heap lock only, in any context: no slot, no search.
    pub(crate) fn usable_size(&self, ptr: NonNull<u8>) -> Result<usize, MallocError> {
        let addr = ptr.as_ptr() as usize;
        self.with(|s| {
            let n = s.malloc.usable_size(ptr)?;
            if is_round(&s.malloc, addr) {
                return Err(MallocError::NotAllocated { addr });
            }
            Ok(n)
        })
    }

    /// Statistics of a type, exact (the core's base plus every CPU's counters), waiting for
    /// every slot: task context only (see [`Heap::type_stats_any`]).
    pub(crate) fn type_stats(&self, ty: MallocType) -> Result<TypeStats, MallocError> {
        self.type_stats_under(self.front.cpus.all(), ty)
    }

    /// [`Heap::type_stats`] from any context (`kmalloc43_type_stats`). A caller that may not
    /// sleep cannot wait for the slot locks' slow mode (a grace period), and outside task
    /// context no slot may be waited for (its holder may be the code this interrupt
    /// interrupted): every slot is only tried, in established slow mode only
    /// ([`crate::percpu::PerCpu::try_all`], which kicks it otherwise), and `None` (the ABI's
    /// `-EBUSY`) says that the mode was fast or a slot was held. Exact whenever it answers.
    pub(crate) fn type_stats_any(&self, ty: MallocType) -> Option<Result<TypeStats, MallocError>> {
        let all = if may_sleep() {
            self.front.cpus.all()
        } else {
            self.front.cpus.try_all()?
        };
        Some(self.type_stats_under(all, ty))
    }

    /// [`Heap::type_stats`] with every slot held (`all`).
    fn type_stats_under(
        &self,
        mut all: AllGuard<'_, CpuCache, Credits>,
        ty: MallocType,
    ) -> Result<TypeStats, MallocError> {
        let (mut st, res) = self.with(|s| {
            let res = ledger_slot(ty).map(|(_, t)| s.reserves[t]);
            s.malloc.type_stats(ty).map(|st| (st, res))
        })?;
        if let (Some((key, t)), Some(res)) = (ledger_slot(ty), res) {
            for cpu in 0..all.len() {
                ledger::exact(&mut st, &all.get(cpu).ledgers[t], key);
            }
            ledger::exact_elsewhere(&mut st, &res);
        }
        Ok(st)
    }

    /// Calls `f` with every type's exact statistics (under every lock: `f` must not sleep).
    pub(crate) fn for_each_type<E>(
        &self,
        mut f: impl FnMut(&TypeStats, &ClassTable) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut all = self.front.cpus.all();
        self.with(|s| {
            let classes = s.malloc.classes();
            for (ty, mut st) in s.malloc.types() {
                if let Some((key, t)) = ledger_slot(ty) {
                    for cpu in 0..all.len() {
                        ledger::exact(&mut st, &all.get(cpu).ledgers[t], key);
                    }
                    ledger::exact_elsewhere(&mut st, &s.reserves[t]);
                }
                f(&st, classes)?;
            }
            Ok(())
        })
    }

    /// Calls `row` with every size class's statistics and then `large` with the page runs',
    /// exact: objects in magazines count as free pieces of their class (and not as live runs),
    /// allocations served from magazines as requests. Under every lock: the callbacks must not
    /// sleep.
    pub(crate) fn for_each_bucket<E>(
        &self,
        mut row: impl FnMut(&ClassTable, BucketRow<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        // Held until the core is read too: the rounds cannot move meanwhile.
        let mut all = self.front.cpus.all();
        let (cached, calls) = Front::tally(&mut all);
        self.with(|s| {
            let classes = s.malloc.classes();
            for i in 0..classes.count() {
                if let Some(mut b) = s.malloc.bucket_stats(i) {
                    b.totalfree += cached[i];
                    b.calls += calls[i];
                    row(classes, BucketRow::Class(i, &b))?;
                }
            }
            let mut l = s.malloc.large_stats();
            for c in MAX_CLASSES..NCLASSES {
                let pages = c - MAX_CLASSES + 1;
                l.inuse -= cached[c];
                l.pages -= cached[c] * pages;
                l.calls += calls[c];
            }
            row(classes, BucketRow::Large(&l))
        })
    }

    /// Flushes every magazine back to the piece layer and folds every CPU's counters into the
    /// core (the `drain` file, type undefine, DIAGNOSTIC switches, unload). Returns the rounds
    /// given back.
    pub(crate) fn drain(&self) -> usize {
        self.drain_giving(&Cell::new(0))
    }

    /// [`Heap::drain`], adding to `given` the pages it gave back to the page allocator: a round
    /// going back can empty a chunk (a page run that was its last allocation, or a cluster the
    /// give-back window returns to kmem meanwhile), which goes to the page allocator at once.
    pub(crate) fn drain_giving(&self, given: &Cell<usize>) -> usize {
        let mut all = self.front.cpus.all();
        let mut rounds = 0;
        Front::take_all(
            &mut all,
            |_, c, m| rounds += self.give_back(c, m, given),
            |t, c, n| self.with_giving(given, |s| add_calls(s, t, c, n)),
        );
        self.with_giving(given, |s| {
            for i in 0..crate::malloc::MAX_TYPES {
                if let Some(ty) = s.malloc.type_handle(i) {
                    fold_type(&mut all, s, ty);
                }
            }
        });
        rounds
    }

    /// Gives a magazine's rounds of class `c` back to the piece layer and frees it (a slot lock
    /// held), adding the pages given back to the page allocator to `given`; the number of
    /// rounds.
    pub(crate) fn give_back(&self, c: usize, mut m: MagBox, given: &Cell<usize>) -> usize {
        let r = m.take_rounds();
        let n = r.len();
        // SAFETY: rounds of class `c` from this heap's magazines, free.
        self.with_giving(given, |s| unsafe { s.malloc.return_from_magazine(c, r) });
        release_magazine(m);
        n
    }

    /// Working-set trimming: gives back the depots' magazines unused for a whole interval.
    pub(crate) fn trim(&self) -> usize {
        let mut all = self.front.cpus.all();
        Front::reap(&mut all, |_, c, m| {
            self.give_back(c, m, &Cell::new(0));
        })
    }

    /// Changes a type's limit (every credit revoked first, so it holds at once) and wakes the
    /// tasks waiting at it.
    pub(crate) fn set_limit(&self, ty: MallocType, limit: usize) -> Result<(), MallocError> {
        let mut all = self.front.cpus.all();
        let mut g = self.state.lock();
        fold_type(&mut all, &mut g, ty);
        g.malloc.set_limit(ty, limit)?;
        if g.queue.waiting() > 0 {
            self.wake(&mut g);
        }
        Ok(())
    }

    /// Undefines a type with no live allocation (magazines flushed and counters folded first);
    /// then its magazines' and depots' memory goes.
    pub(crate) fn undefine_type(&self, ty: MallocType) -> Result<TypeStats, MallocError> {
        self.drain();
        let mut all = self.front.cpus.all();
        let st = self.with(|s| {
            fold_type(&mut all, s, ty);
            s.malloc.undefine_type(ty)
        })?;
        if let Some((_, t)) = ledger_slot(ty) {
            // Empty since the drain, unless a call racing with the undefine (the caller's bug)
            // refilled them: whatever they hold goes back first.
            Front::remove_type(
                &mut all,
                t,
                |_, c, m| {
                    self.give_back(c, m, &Cell::new(0));
                },
                |t, c, n| self.with(|s| add_calls(s, t, c, n)),
            );
        }
        Ok(st)
    }

    /// Switches DIAGNOSTIC mode: the magazines are flushed and stay off while it is on.
    pub(crate) fn set_diagnostic(&self, on: bool) -> Result<(), MallocError> {
        if on {
            // Under every slot lock: no fast path is half-way, and each checks under its own.
            Front::set_enabled(&mut self.front.cpus.all(), false);
            self.drain();
        }
        let r = self.with(|s| s.malloc.set_diagnostic(on));
        if !on && r.is_ok() {
            Front::set_enabled(&mut self.front.cpus.all(), true);
        }
        r
    }

    /// A sleeper left: once nobody waits any more, frees keep their credit again.
    pub(crate) fn waiter_left(&self) {
        let mut all = self.front.cpus.all();
        if self.with(|s| s.queue.waiting()) == 0 {
            Front::set_waiters(&mut all, false);
        }
    }
}
