// SPDX-License-Identifier: GPL-2.0

//! The kernel glue's magazine layer, one CPU, in front of the host replay
//! ([`super::replay`]): per type a row of loaded and previous magazines per class
//! ([`ClassMagazines`]) and a depot per class ([`Depot`]), sized as the glue sizes them
//! ([`start_magsize`], [`magazine_rounds`]), filled with [`Malloc::take_for_magazine`], emptied
//! with [`Malloc::return_from_magazine`], trimmed as the glue trims on depot visits
//! ([`Depot::reap`]), and bounded by the rules of `magazine::trim` ([`Rules`]): fills of at most a
//! page of objects, a per-CPU class budget shared by the types, and the aging of idle magazines.
//! It lets the replay measure on the host what the objects resting in magazines and depots cost in
//! pages (`make replay` measures the same in the guest, against a magazines-off run). Not
//! modelled: a second CPU, the type ledgers (the replay's types have no limit), the round marks.

use std::collections::BTreeMap;
use std::ptr::NonNull;

use crate::hosted::magazines::{boxed_magazine, free_magazine};
use crate::magazine::{
    depot_budget, over_budget, start_magsize, AgeClock, ClassMagazines, Depot, MagBox, MAG_ROUNDS,
};
use crate::malloc::{
    class_charge, magazine_rounds, size_class, KmemPages, Malloc, MallocError, MallocFlags,
    MallocType, NCLASSES,
};

/// Which of `magazine::trim`'s rules the layer applies (all of them in the kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// A fill takes at most a page of objects ([`crate::magazine::fill_rounds`]); otherwise up to
    /// [`crate::magazine::MAG_START`] whatever their size (session 5's glue).
    pub page_fills: bool,
    /// A free miss over the CPU's class budget gives the previous magazine's rounds back
    /// ([`over_budget`]).
    pub class_budget: bool,
    /// Idle magazines and idle depots' surplus go back every
    /// [`AGE_ROUNDS`](crate::magazine::AGE_ROUNDS) rounds exchanged ([`AgeClock`]).
    pub aging: bool,
}

impl Rules {
    /// Every rule: the kernel glue's magazine layer.
    pub const ALL: Self = Self {
        page_fills: true,
        class_budget: true,
        aging: true,
    };
    /// None: magazines and depots per (type, class) as in session 5.
    pub const NONE: Self = Self {
        page_fills: false,
        class_budget: false,
        aging: false,
    };
}

/// What the rules did over a replay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrimCounts {
    /// Aging passes run by the clock of rounds exchanged.
    pub passes: u64,
    /// Timed passes run ([`MagFront::timed_pass`]).
    pub timed: u64,
    /// Rounds the aging gave back (idle magazines and idle depots' surplus), timed passes
    /// included.
    pub aged: u64,
    /// Free misses over the class budget (their previous magazine's rounds given back).
    pub spills: u64,
    /// Rounds those spills gave back.
    pub spilled: u64,
}

/// One type's magazines (one CPU) and depots.
struct TypeMags {
    row: Box<ClassMagazines<NCLASSES>>,
    depots: Vec<Depot>,
}

/// The simulated magazine layer.
pub struct MagFront {
    types: BTreeMap<u32, TypeMags>,
    rules: Rules,
    clock: AgeClock,
    counts: TrimCounts,
}

impl Default for MagFront {
    fn default() -> Self {
        Self::new()
    }
}

/// A round as the object pointer the replay keeps (rounds are never 0).
fn obj(a: usize) -> NonNull<u8> {
    NonNull::new(a as *mut u8).expect("a magazine round is never null")
}

/// Gives a magazine's rounds back to the piece layer and frees it; the rounds given back.
fn give_back<K: KmemPages>(m: &mut Malloc<K>, c: usize, mut mag: MagBox) -> usize {
    let r = mag.take_rounds();
    let n = r.len();
    // SAFETY: every round is an object of class `c` taken with `take_for_magazine` and freed by
    // the replay (nothing uses it).
    unsafe { m.return_from_magazine(c, r) };
    free_magazine(mag);
    n
}

impl MagFront {
    /// An empty layer with every rule, as the kernel's.
    pub fn new() -> Self {
        Self::with_rules(Rules::ALL)
    }

    /// An empty layer applying `rules`.
    pub fn with_rules(rules: Rules) -> Self {
        Self {
            types: BTreeMap::new(),
            rules,
            clock: AgeClock::new(),
            counts: TrimCounts::default(),
        }
    }

    /// What the rules did so far.
    pub fn trim_counts(&self) -> TrimCounts {
        self.counts
    }

    fn type_mags<K: KmemPages>(&mut self, m: &Malloc<K>, ty: MallocType) -> &mut TypeMags {
        self.types.entry(ty.to_raw()).or_insert_with(|| {
            let classes = m.classes();
            let depots = (0..NCLASSES)
                .map(|c| {
                    let max = magazine_rounds(classes, c, MAG_ROUNDS);
                    Depot::new(start_magsize(class_charge(classes, c)).min(max), max)
                })
                .collect();
            TypeMags {
                row: Box::new(ClassMagazines::new()),
                depots,
            }
        })
    }

    /// Counts `rounds` exchanged with the piece layer; runs an aging pass when a window is over.
    fn moved<K: KmemPages>(&mut self, m: &mut Malloc<K>, rounds: usize) {
        if self.rules.aging && self.clock.note(rounds) {
            self.counts.passes += 1;
            self.age(m);
        }
    }

    /// The timed pass's part of the magazine layer (`Documentation/magazines.rst`, "Timed
    /// aging"; the glue's periodic work runs it on every CPU in turn): the aging pass, run by
    /// time rather than by the clock of rounds exchanged, so that an idle CPU's magazines and
    /// an idle depot are trimmed too. Counted apart from the clock's passes.
    pub fn timed_pass<K: KmemPages>(&mut self, m: &mut Malloc<K>) {
        self.counts.timed += 1;
        self.age(m);
    }

    /// The aging pass: every (type, class) whose magazines served no allocation since the last
    /// pass gives their rounds back, and its depot closes an interval and gives back what stayed
    /// out of its working set.
    fn age<K: KmemPages>(&mut self, m: &mut Malloc<K>) {
        for tm in self.types.values_mut() {
            for c in tm.row.active_classes() {
                let idle = tm.row.take_idle(c);
                m.add_magazine_calls(c, idle.calls);
                for mag in idle.mags.into_iter().flatten().flatten() {
                    self.counts.aged += give_back(m, c, mag) as u64;
                }
                if !idle.visit_depot {
                    continue;
                }
                let d = &mut tm.depots[c];
                d.update();
                while let Some(mag) = d.reap() {
                    self.counts.aged += give_back(m, c, mag) as u64;
                }
                tm.row.depot_aged(c, d.holds_any());
            }
        }
    }

    /// Rounds of class `c` in the loaded and previous magazines of every type.
    fn cpu_rounds(&self, c: usize) -> usize {
        self.types.values().map(|tm| tm.row.rounds(c)).sum()
    }

    /// An object of `bytes` for `ty`: from the magazines, the depot, or a fill (as the glue's
    /// local path); sizes without a magazine class go to `malloc`.
    pub fn malloc<K: KmemPages>(
        &mut self,
        m: &mut Malloc<K>,
        bytes: usize,
        ty: MallocType,
    ) -> Result<NonNull<u8>, MallocError> {
        let Some(c) = size_class(m.classes(), bytes) else {
            return m.malloc(bytes, ty, MallocFlags::NOWAIT);
        };
        let page_fills = self.rules.page_fills;
        let tm = self.type_mags(m, ty);
        if let Some(a) = tm.row.alloc(c) {
            return Ok(obj(a));
        }
        let (row, depot) = (&mut tm.row, &mut tm.depots[c]);
        row.activate(c);
        let mut given = 0;
        if row.class(c).reload_from_depot(depot) {
            let reaped = depot.reap();
            let a = row.class(c).alloc();
            if a.is_some() {
                row.count(c);
            }
            given = reaped.map_or(0, |r| give_back(m, c, r));
            if let Some(a) = a {
                self.moved(m, given);
                return Ok(obj(a));
            }
        }
        let size = depot.magsize();
        let mags = row.class(c);
        if mags.loaded_mut().is_none() {
            if let Err(spare) = mags.install(boxed_magazine(size)) {
                free_magazine(spare);
            }
        }
        let mag = mags.loaded_mut().expect("a loaded magazine was installed");
        if mag.is_empty() {
            mag.set_cap(size);
        }
        let room = if page_fills {
            mag.fill_room_for(class_charge(m.classes(), c))
        } else {
            mag.fill_room()
        };
        let n = m.take_for_magazine(c, ty, MallocFlags::NOWAIT, room)?;
        mag.commit(n);
        let a = row.alloc(c).expect("a fill took at least one object");
        // The allocations the row served, folded with the fill (the heap lock is held for it in
        // the kernel): the piece layer's give-back budget counts them.
        m.add_magazine_calls(c, row.take_calls(c));
        self.moved(m, given + n);
        Ok(obj(a))
    }

    /// Frees `addr`, an object of `bytes` from [`MagFront::malloc`] for `ty`: into the
    /// magazines, trading a full one with the depot (or a new empty magazine) as the glue does,
    /// after giving the previous one's rounds back if the CPU is over the class budget.
    pub fn free<K: KmemPages>(
        &mut self,
        m: &mut Malloc<K>,
        p: NonNull<u8>,
        bytes: usize,
        ty: MallocType,
    ) -> Result<(), MallocError> {
        let Some(c) = size_class(m.classes(), bytes) else {
            return m.free(p, ty);
        };
        let addr = p.as_ptr() as usize;
        let Err(addr) = self.type_mags(m, ty).row.class(c).free(addr) else {
            return Ok(());
        };
        let mut moved = 0;
        if self.rules.class_budget {
            let cpu = self.cpu_rounds(c);
            let tm = self.type_mags(m, ty);
            if over_budget(cpu, tm.row.rounds(c), depot_budget(&tm.depots[c])) {
                if let Some(prev) = tm.row.class(c).take_previous() {
                    let n = give_back(m, c, prev);
                    self.counts.spills += 1;
                    self.counts.spilled += n as u64;
                    moved += n;
                }
            }
        }
        let tm = self.type_mags(m, ty);
        tm.row.activate(c);
        let (mags, depot) = (tm.row.class(c), &mut tm.depots[c]);
        let unloaded = mags.unload_or_install(depot, boxed_magazine);
        let reaped = if unloaded.traded { depot.reap() } else { None };
        if let Some(s) = unloaded.spare {
            free_magazine(s);
        }
        let pushed = mags.free(addr);
        if let Some(r) = reaped {
            moved += give_back(m, c, r);
        }
        if let Err(a) = pushed {
            // SAFETY: `a` is an object of class `c` taken for a magazine, freed by the replay.
            unsafe { m.return_from_magazine(c, &[a]) };
            moved += 1;
        }
        self.moved(m, moved);
        Ok(())
    }

    /// Rounds held in magazines and depots.
    pub fn rounds(&self) -> usize {
        self.types
            .values()
            .map(|tm| {
                (0..NCLASSES)
                    .map(|c| tm.row.rounds(c) + tm.depots[c].rounds())
                    .sum::<usize>()
            })
            .sum()
    }

    /// Flushes every magazine back to the piece layer (the glue's drain) and frees them, and
    /// folds the allocations they served into the piece layer's request counters.
    pub fn flush<K: KmemPages>(&mut self, m: &mut Malloc<K>) {
        for (_, mut tm) in std::mem::take(&mut self.types) {
            for c in 0..NCLASSES {
                m.add_magazine_calls(c, tm.row.take_calls(c));
                for mag in tm.row.take(c).into_iter().flatten() {
                    give_back(m, c, mag);
                }
                while let Some(mag) = tm.depots[c].take_any() {
                    give_back(m, c, mag);
                }
            }
        }
    }
}
