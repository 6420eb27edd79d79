// SPDX-License-Identifier: GPL-2.0

//! The magazine layer in front of the heap (Bonwick & Adams 2001): per-CPU magazines for every
//! bucket and for page runs up to 64 KiB, a depot per class under its own lock, and per-CPU type
//! ledgers that keep limits and statistics exact (`crate::magazine::ledger`).
//!
//! # Paths
//!
//! * **Fast** (`local` slot only: interrupts off on this CPU, its own uncontended slot lock; no
//!   shared lock, no atomic read-modify-write on a shared line): malloc = classify, charge out of
//!   the CPU's credit, pop the loaded (or previous) magazine; free = page hint (O(1), `struct
//!   page`), one load of the piece's first word (round mark or free-list link: possibly free?),
//!   uncharge into credit, push.
//! * **Local** (slot + a depot lock or the heap lock): a magazine exchange with the depot, a fill
//!   from or a drain to the bucket layer, a credit grant or return.
//! * **Global** (every slot, then the heap lock): credit revocation at the limit or past the high
//!   water (exact limit and HighUse), a free of an object another CPU charged, a suspected double
//!   free (searched exactly), and everything while DIAGNOSTIC is on or for runs over 64 KiB (the
//!   type's per-CPU counters are folded into the core's and the core does the call).
//!
//! Lock order: slot locks (one, or all) -> depot lock -> heap lock.
//!
//! # Waiting
//!
//! A `WAITOK` call refused at the limit sleeps on the heap's condition variable after it released
//! the slot locks. While anybody sleeps, frees skip the fast path: they give their bytes back to
//! the pool under the heap lock and wake the sleepers. A fill that finds no pages returns
//! `WouldBlock { Arena }`; the caller grows the page arena outside every lock and retries.

use kernel::{
    new_spinlock_irq,
    prelude::*,
    sync::{
        lock::{spinlock::SpinLockIrqBackend, Guard},
        SpinLockIrq,
    },
};
use pin_init::Zeroable;

use crate::magazine::{
    ledger::{self, LocalLedger},
    marker, CpuMagazines, Depot, DepotStats, MagBox, Magazine,
};
use crate::malloc::{
    class_charge, class_sizebit, BlockReason, ClassTable, MallocError, MallocFlags, MallocType,
    MAX_TYPES, NCLASSES,
};
use crate::malloc::{is_bucket_class, magazine_rounds};
use crate::percpu::{AllGuard, PerCpu};

/// Rounds of a new magazine at most (the depot grows it under contention).
const MAG_START: usize = 15;

/// Credit granted at a time (at least the charge).
const CREDIT_BATCH: usize = 16 * 1024;

/// One CPU's magazines, request counters and type ledgers.
pub(crate) struct CpuCache {
    pub(crate) mags: [CpuMagazines; NCLASSES],
    /// Allocations served from magazines here, per class, not yet folded into the core.
    pub(crate) calls: [u64; NCLASSES],
    pub(crate) ledgers: [LocalLedger; MAX_TYPES],
    /// Magazines off (DIAGNOSTIC): every call takes the global path. Set on every CPU at once,
    /// under every slot lock, so that a fast path reads it under its own.
    pub(crate) off: bool,
    /// Somebody sleeps at a limit: frees give their bytes back under the heap lock and wake
    /// them instead of keeping credit. Set on every CPU under every slot lock before the
    /// sleeper sleeps; cleared the same way once nobody waits.
    pub(crate) waiters: bool,
    /// A magazine the depot's working-set trimming took out during one of this CPU's depot
    /// visits, with its class: its rounds go back to the piece layer before the call returns.
    pub(crate) reaped: Option<MagBox>,
    /// The class of `reaped`.
    pub(crate) reaped_class: usize,
}

// SAFETY: all zero bytes are a valid `CpuCache`: no magazines (`Option<MagBox>` is a
// `repr(transparent)` `NonNull`, so zero is `None`, here and in `reaped`), zero counters, unused
// ledgers, flags false.
unsafe impl Zeroable for CpuCache {}

// SAFETY: all zero bytes are a valid `Magazine` (no link, no rounds, capacity 0: full until
// `set_cap`, which every magazine gets before use).
unsafe impl Zeroable for Magazine {}

/// The magazine layer of one heap.
pub(crate) struct Front {
    /// The heap's size classes (fixed for its life).
    pub(crate) table: &'static ClassTable,
    pub(crate) cpus: PerCpu<CpuCache>,
    depots: KVec<Pin<KBox<SpinLockIrq<Depot>>>>,
}

/// Largest magazine of class `c` (the core's byte budget per class).
fn max_rounds(classes: &ClassTable, c: usize) -> usize {
    magazine_rounds(classes, c, crate::magazine::MAG_ROUNDS)
}

/// A new empty magazine of `cap` rounds (any context: `GFP_NOWAIT`).
pub(crate) fn new_magazine(cap: usize) -> Option<MagBox> {
    let mut m = KBox::init(
        pin_init::init_zeroed::<Magazine>(),
        GFP_NOWAIT | __GFP_NOWARN,
    )
    .ok()?;
    m.set_cap(cap);
    let p = core::ptr::NonNull::from(KBox::leak(m));
    // SAFETY: a fresh, initialised allocation owned by nobody else; freed by `free_magazine`.
    Some(unsafe { MagBox::from_raw(p) })
}

/// Frees a magazine's memory (its rounds must have been given back).
pub(crate) fn free_magazine(m: MagBox) {
    // SAFETY: every `MagBox` of this layer comes from `new_magazine` (a leaked `KBox`).
    drop(unsafe { KBox::from_raw(m.into_raw().as_ptr()) });
}

impl Front {
    /// The magazine layer for a new heap (process context).
    pub(crate) fn new(table: &'static ClassTable) -> Result<Self> {
        let mut depots = KVec::with_capacity(NCLASSES, GFP_KERNEL)?;
        for c in 0..NCLASSES {
            // Classes past the table's count are never used (one depot each all the same, so
            // that a class number indexes every array directly).
            let max = if is_bucket_class(c) && c >= table.count() {
                1
            } else {
                max_rounds(table, c)
            };
            depots.push(
                KBox::pin_init(
                    new_spinlock_irq!(Depot::new(MAG_START.min(max), max), "kmalloc43_depot"),
                    GFP_KERNEL,
                )?,
                GFP_KERNEL,
            )?;
        }
        Ok(Self {
            table,
            cpus: PerCpu::new()?,
            depots,
        })
    }

    /// Switches the magazines on or off on every CPU (every slot held).
    pub(crate) fn set_enabled(all: &mut AllGuard<'_, CpuCache>, on: bool) {
        for cpu in 0..all.len() {
            all.get(cpu).off = !on;
        }
    }

    /// Tells every CPU whether somebody sleeps at a limit (every slot held).
    pub(crate) fn set_waiters(all: &mut AllGuard<'_, CpuCache>, waiting: bool) {
        for cpu in 0..all.len() {
            all.get(cpu).waiters = waiting;
        }
    }

    /// The depot of class `c`, locked; a failed trylock is counted as contention.
    fn depot(&self, c: usize) -> Guard<'_, Depot, SpinLockIrqBackend> {
        if let Some(g) = self.depots[c].try_lock() {
            return g;
        }
        let mut g = self.depots[c].lock();
        g.note_contention();
        g
    }

    /// Counters of class `c`'s depot.
    pub(crate) fn depot_stats(&self, c: usize) -> DepotStats {
        self.depots[c].lock().stats()
    }

    /// Charge and size bit of class `c`.
    #[inline]
    pub(crate) fn cost(&self, c: usize) -> (usize, u32) {
        (class_charge(self.table, c), class_sizebit(c))
    }

    /// Bytes charged for an object of class `c`.
    pub(crate) fn charge(&self, c: usize) -> usize {
        class_charge(self.table, c)
    }

    /// Magazine classes in use: the table's size classes, then the page runs (a class number
    /// below [`NCLASSES`]; the size classes past the table's count are skipped by callers).
    pub(crate) fn in_use(&self, c: usize) -> bool {
        !is_bucket_class(c) || c < self.table.count()
    }

    /// Credit granted at a time for a charge.
    pub(crate) fn batch(charge: usize) -> usize {
        charge.max(CREDIT_BATCH)
    }

    /// Pops a round of class `c` from `cache` (loaded, previous, then a depot exchange).
    #[inline(always)]
    pub(crate) fn pop(&self, cache: &mut CpuCache, c: usize) -> Option<usize> {
        let r = match cache.mags[c].alloc() {
            Some(r) => r,
            None => self.reload(cache, c)?,
        };
        Some(Self::took(cache, c, r))
    }

    /// Pops a round of class `c` from `cache`'s loaded or previous magazine only (no depot: no
    /// call); `None` if both are empty.
    #[inline(always)]
    pub(crate) fn pop_local(cache: &mut CpuCache, c: usize) -> Option<usize> {
        let r = cache.mags[c].alloc()?;
        Some(Self::took(cache, c, r))
    }

    /// Round `r` of class `c` just left `cache`'s magazines: counted, its round mark cleared.
    #[inline(always)]
    fn took(cache: &mut CpuCache, c: usize, r: usize) -> usize {
        // A request counter: 2^64 allocations are out of reach, so no overflow check.
        cache.calls[c] = cache.calls[c].wrapping_add(1);
        // SAFETY: a round is a free object of ours, at least 16 bytes and aligned.
        unsafe { marker::unmark(r) };
        r
    }

    /// Both magazines empty: trade with the depot, then pop.
    #[cold]
    #[inline(never)]
    fn reload(&self, cache: &mut CpuCache, c: usize) -> Option<usize> {
        let mut d = self.depot(c);
        if !cache.mags[c].reload_from_depot(&mut d) {
            return None;
        }
        Self::reap_into(cache, c, &mut d);
        drop(d);
        cache.mags[c].alloc()
    }

    /// Working-set trimming during a depot visit: once an interval closed (the depot counts its
    /// operations), one magazine outside the working set leaves with the visiting CPU.
    fn reap_into(cache: &mut CpuCache, c: usize, d: &mut Depot) {
        if cache.reaped.is_none() {
            if let Some(m) = d.reap() {
                cache.reaped = Some(m);
                cache.reaped_class = c;
            }
        }
    }

    /// The magazine to fill for class `c` (the loaded one, installed if missing), sized to the
    /// depot's current magazine size; `None` if no magazine memory could be had.
    pub(crate) fn fill_target<'a>(
        &self,
        cache: &'a mut CpuCache,
        c: usize,
    ) -> Option<&'a mut MagBox> {
        let size = self.depot(c).magsize();
        if cache.mags[c].loaded_mut().is_none() {
            let m = new_magazine(size)?;
            if let Err(m) = cache.mags[c].install(m) {
                free_magazine(m);
            }
        }
        let m = cache.mags[c].loaded_mut()?;
        if m.is_empty() {
            m.set_cap(size);
        }
        Some(m)
    }

    /// Pushes a freed object of class `c` into `cache`'s loaded or previous magazine only (no
    /// depot: no call), marking it as a round; `false` (nothing changed) if both are full.
    #[inline(always)]
    pub(crate) fn push_local(cache: &mut CpuCache, c: usize, addr: usize) -> bool {
        if cache.mags[c].free(addr).is_err() {
            return false;
        }
        // SAFETY: `addr` is an object of ours the caller is freeing (at least 16 bytes, aligned).
        unsafe { marker::mark(addr) };
        true
    }

    /// Pushes a freed object of class `c` into `cache` (marking it as a round). `Err(addr)` if no
    /// magazine had room and no empty one could be had: the caller gives it to the piece layer.
    #[inline(always)]
    pub(crate) fn push(&self, cache: &mut CpuCache, c: usize, addr: usize) -> Result<(), usize> {
        // SAFETY: `addr` is an object of ours the caller is freeing (at least 16 bytes, aligned).
        unsafe { marker::mark(addr) };
        match cache.mags[c].free(addr) {
            Ok(()) => Ok(()),
            Err(addr) => self.unload(cache, c, addr),
        }
    }

    /// Both magazines full: trade with the depot (or a new empty magazine), then push.
    #[cold]
    #[inline(never)]
    fn unload(&self, cache: &mut CpuCache, c: usize, addr: usize) -> Result<(), usize> {
        let spare = {
            let mut d = self.depot(c);
            match cache.mags[c].unload_to_depot(&mut d, None) {
                Ok(s) => {
                    Self::reap_into(cache, c, &mut d);
                    s
                }
                Err(_) => {
                    drop(d);
                    let Some(m) = new_magazine(self.depot(c).magsize()) else {
                        // SAFETY: as above.
                        unsafe { marker::unmark(addr) };
                        return Err(addr);
                    };
                    match cache.mags[c].install(m).err() {
                        None => None,
                        Some(m) => cache.mags[c]
                            .unload_to_depot(&mut self.depot(c), Some(m))
                            .unwrap_or_else(|s| s),
                    }
                }
            }
        };
        if let Some(s) = spare {
            free_magazine(s);
        }
        cache.mags[c].free(addr).inspect_err(|&a| {
            // SAFETY: as above.
            unsafe { marker::unmark(a) };
        })
    }

    /// Whether `addr` sits in any magazine of class `c` (every slot held): the exact answer to a
    /// suspected double free.
    pub(crate) fn holds(&self, all: &mut AllGuard<'_, CpuCache>, c: usize, addr: usize) -> bool {
        let mut found = false;
        for cpu in 0..all.len() {
            all.get(cpu).mags[c].for_each_round(|r| found |= r == addr);
        }
        self.depots[c].lock().for_each_round(|r| found |= r == addr);
        found
    }

    /// Rounds cached in class `c` (every slot held).
    pub(crate) fn cached(&self, all: &mut AllGuard<'_, CpuCache>, c: usize) -> usize {
        let mut n = self.depots[c].lock().rounds();
        for cpu in 0..all.len() {
            n += all.get(cpu).mags[c].rounds();
        }
        n
    }

    /// Takes every magazine out of every CPU and depot (every slot held), calling `give(c, mag)`
    /// for each; `give` returns the rounds and frees the magazine.
    pub(crate) fn take_all(
        &self,
        all: &mut AllGuard<'_, CpuCache>,
        mut give: impl FnMut(usize, MagBox),
    ) {
        for cpu in 0..all.len() {
            let cache = all.get(cpu);
            if let Some(m) = cache.reaped.take() {
                give(cache.reaped_class, m);
            }
        }
        for c in 0..NCLASSES {
            for cpu in 0..all.len() {
                for m in all.get(cpu).mags[c].take().into_iter().flatten() {
                    give(c, m);
                }
            }
            loop {
                let m = self.depots[c].lock().take_any();
                match m {
                    Some(m) => give(c, m),
                    None => break,
                }
            }
        }
    }

    /// Takes the magazines the depots' working sets no longer need (every slot held).
    pub(crate) fn reap(&self, mut give: impl FnMut(usize, MagBox)) -> usize {
        let mut n = 0;
        for c in 0..NCLASSES {
            loop {
                let m = {
                    let mut d = self.depots[c].lock();
                    d.update();
                    d.reap()
                };
                match m {
                    Some(m) => {
                        give(c, m);
                        n += 1;
                    }
                    None => break,
                }
            }
        }
        n
    }
}

/// Frees a magazine after its rounds went back (helper for `take_all`/`reap` callers).
pub(crate) fn release_magazine(m: MagBox) {
    free_magazine(m);
}

/// The error for an allocation refused at the limit.
pub(crate) fn limit_error(
    ty: MallocType,
    charge: usize,
    limit: usize,
    flags: MallocFlags,
) -> MallocError {
    if charge > limit || flags.contains(MallocFlags::NOWAIT) {
        MallocError::Limit { ty, charge }
    } else {
        MallocError::WouldBlock {
            ty,
            reason: BlockReason::Limit,
        }
    }
}

/// The ledger key and slot index of a type (`None` for an index beyond the table).
#[inline]
pub(crate) fn ledger_slot(ty: MallocType) -> Option<(u32, usize)> {
    (ty.index() < MAX_TYPES).then(|| (ledger::key(ty), ty.index()))
}
