// SPDX-License-Identifier: GPL-2.0

//! The magazine layer in front of the heap (Bonwick & Adams 2001): per-CPU magazines for every
//! (type, bucket) and (type, page run up to 64 KiB), a depot per (type, class) under its own lock
//! (a type's depots made when it is defined, a CPU's row of its magazines when that CPU first
//! needs one, both freed when it is undefined: `Documentation/magazines.rst`, "Magazines per
//! type"), and per-CPU type ledgers that keep limits and statistics exact
//! (`crate::magazine::ledger`).
//!
//! # Paths
//!
//! * **Fast** (`local` slot only: preemption off on this CPU, its own uncontended slot lock; no
//!   shared lock, no atomic read-modify-write on a shared line): malloc = classify, charge out of
//!   the CPU's credit, pop the loaded (or previous) magazine; free = page hint (O(1), `struct
//!   page`: the class and the owning type), one load of the piece's first word (the round mark
//!   under this boot's key, [`round_key`]: a double free; a free-list link: possibly free),
//!   uncharge into credit, push.
//! * **Local** (slot + a depot lock or the heap lock): a magazine exchange with the depot, a fill
//!   from or a drain to the bucket layer, a credit grant or return.
//! * **Global** (every slot, then the heap lock): a `WAITOK` call that sleeps at a limit, and
//!   everything while DIAGNOSTIC is on or for runs over 64 KiB (the type's per-CPU counters are
//!   folded into the core's and the core does the call). A double free of a round needs no slot
//!   (its mark is the verdict), nor does a free of an object another CPU charged (every piece
//!   has an owning type, `Heap::with_classes`: it is counted where it is freed). Credit revocation at the limit or past
//!   the high water (exact limit and HighUse) needs no slot: each CPU's credit is an atomic word
//!   taken by exchange under the heap lock (`Heap::charge_slow` in `fastpath.rs`).
//! * **Fall-back** (no slot, the heap lock): a call outside task context whose slot is held
//!   (`crate::fallback`).
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
    new_spinlock,
    prelude::*,
    sync::{
        lock::{spinlock::SpinLockBackend, Guard},
        Arc, SpinLock,
    },
};
use pin_init::Zeroable;

use crate::magazine::{
    depot_budget,
    ledger::{self, Credit, LocalLedger},
    marker::{self, KeyCell, RoundKey},
    over_budget, start_magsize, AgeClock, ClassMagazines, Depot, DepotStats, MagBox, Magazine,
};
use crate::malloc::{
    class_charge, class_sizebit, ClassTable, KmemPages, Malloc, MallocType, MAX_TYPES, NCLASSES,
};
use crate::malloc::{is_bucket_class, magazine_rounds};
use crate::percpu::{in_task, AllGuard, LocalRef, PerCpu};

extern "C" {
    /// `get_random_u64()` (exports file).
    fn kmalloc43_c_random_u64() -> u64;
}

/// The round mark's key of this boot (`magazine::marker`): set once at module load, before any
/// heap exists ([`init_round_key`]), then read-only (the kernel write-protects
/// `.data..ro_after_init` once the module's init is done).
#[link_section = ".data..ro_after_init"]
static ROUND_KEY: KeyCell = KeyCell::new();

/// Makes this boot's round key from `get_random_u64()` (module init, before the first heap: a
/// round marked with the previous key would no longer be recognised).
pub(crate) fn init_round_key() {
    // SAFETY: FFI call without arguments.
    ROUND_KEY.set(RoundKey::from_random(unsafe { kmalloc43_c_random_u64() }));
}

/// This boot's round key: one load.
#[inline(always)]
pub(crate) fn round_key() -> RoundKey {
    ROUND_KEY.get()
}

/// Whether `addr` is a round, for a caller that does not know it to be an object start of ours
/// (heap lock held, `m`): a live object start of a magazine class for the core (which counts
/// rounds as live) whose first word is the round mark of this boot. No slot, no search: the mark
/// is the verdict (a live piece carries it only if its client wrote the secret key; see
/// `magazine::marker`). Never with DIAGNOSTIC on: switching it on keeps the magazines off and
/// drains them first, so no round exists and a mark is a live piece's own data, which the core
/// then judges exactly.
pub(crate) fn is_round<K: KmemPages>(m: &Malloc<K>, addr: usize) -> bool {
    if m.diagnostic() || m.check_object(addr).is_err() {
        return false;
    }
    // SAFETY: `check_object` succeeded: `addr` is a live object start of ours, word-aligned and
    // readable.
    unsafe { marker::is_marked(addr, round_key()) }
}

/// The depots of one type, one per magazine class, each under its own lock.
///
/// A plain `SpinLock`, which leaves interrupts on: no interrupt ever waits for a depot lock, so
/// none can spin on one that the code it interrupted holds. Task context waits for a depot lock
/// ([`lock_depot`]; `lock` directly under every slot, which only task context takes); outside
/// task context a depot lock is only *tried* ([`lock_depot`] gives `None`, and the call goes to
/// the piece layer instead of trading with the depot). At most one depot lock is held at a time,
/// always under a slot (the exchange's, fill's or aging pass's own, the timed pass's
/// [`PerCpu::lock_cpu`], or every slot), and only the heap lock is taken inside it. Lockdep
/// agrees without being told: a trylock in an interrupt is no use there for it, so it sees a
/// lock used in task context only (`Documentation/performance.rst`, *The depot exchange
/// (session 7)*).
pub(crate) type TypeDepots = [SpinLock<Depot>; NCLASSES];

/// One CPU's magazines of one type: a loaded and a previous magazine and a request counter per
/// class.
pub(crate) type TypeRow = ClassMagazines<NCLASSES>;

/// The depot of class `c` in `depots`, locked; a failed trylock is counted as contention. In
/// task context it waits for the lock; outside task context it only tries ([`TypeDepots`]):
/// `None` then, and the caller does without the depot (the piece layer serves instead).
fn lock_depot(depots: &TypeDepots, c: usize) -> Option<Guard<'_, Depot, SpinLockBackend>> {
    if let Some(g) = depots[c].try_lock() {
        return Some(g);
    }
    if !in_task() {
        return None;
    }
    let mut g = depots[c].lock();
    g.note_contention();
    Some(g)
}

/// A magazine the depot's working-set trimming took out during a depot visit, with its class.
/// The call that visited the depot owns it (a local of its own) and gives its rounds back to the
/// piece layer before it releases its slot, so no CPU slot ever holds one and the fast paths need
/// not look.
pub(crate) struct Reaped {
    /// The magazine, if any.
    pub(crate) mag: Option<MagBox>,
    /// Its class.
    pub(crate) class: usize,
}

impl Reaped {
    /// Nothing reaped yet.
    pub(crate) const NONE: Self = Self {
        mag: None,
        class: 0,
    };
}

/// One CPU's magazines, request counters and type ledgers.
///
/// The fields are in a fixed order (`repr(C)`), the fast paths' first: the two flags, the row
/// pointers and the ledgers, then what only the slow paths read (depots, aging marks). The slot
/// puts its lock pointer and the credit words ([`Credits`]) before it (`percpu.rs`, `Slot`), so
/// that a pair of a type slot below [`HOT_TYPES`] reads and writes one 4 KiB page of the slot
/// (`Documentation/performance.rst`, "Fewer pages per pair (session 8)"): every page a pair
/// touches is one more entry in the data TLB, and under TCG one more chance that two of them
/// share an entry of QEMU's direct-mapped TLB.
#[repr(C)]
pub(crate) struct CpuCache {
    /// Magazines off (DIAGNOSTIC): every call takes the global path. Set on every CPU at once,
    /// under every slot lock, so that a fast path reads it under its own.
    pub(crate) off: bool,
    /// Somebody sleeps at a limit: frees give their bytes back under the heap lock and wake
    /// them instead of keeping credit. Set on every CPU under every slot lock before the
    /// sleeper sleeps; cleared the same way once nobody waits. (Next to `off`: the free's fast
    /// path tests both with one 16-bit load.)
    pub(crate) waiters: bool,
    /// Rounds this CPU's magazines exchanged with the piece layer since its last aging pass
    /// (`crate::magazine::trim`, `Heap::note_moved` in `aging.rs`).
    pub(crate) age: AgeClock,
    /// Per type slot, this CPU's magazines of the type: made (`GFP_NOWAIT`) by the first call of
    /// the type on this CPU that needs a magazine, under this slot's lock; taken out of every
    /// CPU, flushed, when the type is undefined. `None` until then, or if no memory could be had
    /// (the type's calls then go to the piece layer here).
    pub(crate) rows: [Option<KBox<TypeRow>>; MAX_TYPES],
    /// Per type slot, this CPU's counters of the type (its credit words are [`Credits`], the
    /// slot's shared part).
    pub(crate) ledgers: [LocalLedger; MAX_TYPES],
    /// Per type slot, the type's depots: on every CPU at once (every slot lock held) from the
    /// type's definition to its undefine; `None` for a slot with no type.
    pub(crate) depots: [Option<Arc<TypeDepots>>; MAX_TYPES],
    /// Per class, the type slots whose row here has the class marked for aging (bit `t`: set
    /// with the row's mark, cleared when a pass or the class budget's walk finds the row or the
    /// mark gone): the class budget walks these rows only, and not at all for a type alone.
    pub(crate) users: [TypeMask; NCLASSES],
}

/// The type slots whose fast-path fields in a CPU's slot (its lock pointer, the flags, the
/// credit word, the row pointer and the ledger) all lie in the slot's first 4 KiB page; a
/// type's slot is the lowest free one (`MallocType::index`), so these are the first types
/// defined. (The slot is at least page-aligned: `kmalloc()` aligns a power-of-two size, and
/// a slot of about 10 KiB comes from its 16 KiB cache.)
pub(crate) const HOT_TYPES: usize = (4096
    - crate::percpu::value_offset::<CpuCache, Credits>()
    - core::mem::offset_of!(CpuCache, ledgers))
    / core::mem::size_of::<LocalLedger>();

// The first page's share is what the documentation says it is.
const _: () = assert!(HOT_TYPES >= 40);

/// One bit per type slot.
pub(crate) type TypeMask = u128;

const _: () = assert!(MAX_TYPES <= TypeMask::BITS as usize);

// SAFETY: all zero bytes are a valid `CpuCache`: no rows and no depots (`Option<KBox<_>>` and
// `Option<Arc<_>>` are null pointers when `None`), unused ledgers, flags false, an aging clock at
// the start of its window (a `u32` count), no type marked in `users` (integers).
unsafe impl Zeroable for CpuCache {}

/// One CPU's credit word per type slot: the shared part of its slot (`PerCpu`), which any CPU
/// revokes under the heap lock without the slot's lock (`crate::magazine::ledger`).
pub(crate) type Credits = [Credit; MAX_TYPES];

// SAFETY: a `Credit` is an `AtomicUsize`, for which all zero bytes are 0: no credit.
unsafe impl Zeroable for Credit {}

// SAFETY: all zero bytes are a valid `Magazine` (no link, no rounds, capacity 0: full until
// `set_cap`, which every magazine gets before use).
unsafe impl Zeroable for Magazine {}

// SAFETY: `ClassMagazines` holds `CpuMagazines` (two `Option<MagBox>`: a `repr(transparent)`
// `NonNull`, so zero is `None`), `u64` counters and `u8` aging flags: all zero bytes are
// `ClassMagazines::new()`.
unsafe impl Zeroable for ClassMagazines<NCLASSES> {}

/// The magazine layer of one heap. Its fields are what the fast paths read from the heap, side
/// by side (`repr(C)`: one page of the heap, with `PerCpu`'s pointers).
#[repr(C)]
pub(crate) struct Front {
    /// The heap's size classes (fixed for its life).
    pub(crate) table: &'static ClassTable,
    /// This boot's round key ([`round_key`]), copied when the heap is made (the key is set
    /// before any heap and never changes): the free's fast path reads it here, on a page it
    /// reads anyway, rather than on the page of `.data..ro_after_init` where the key is kept.
    pub(crate) key: RoundKey,
    pub(crate) cpus: PerCpu<CpuCache, Credits>,
}

/// What the fast paths read of a heap's [`Front`] (`Copy`): kept on the module's fast statics'
/// line for the published heap (`crate::service::FastStatics`), so that `kmalloc43_malloc`/
/// `free` take their slot without reading the heap's page (`Documentation/performance.rst`,
/// "Fewer pages per pair").
#[derive(Clone, Copy)]
pub(crate) struct FrontRef<'a> {
    /// [`Front::table`].
    pub(crate) table: &'static ClassTable,
    /// [`Front::key`].
    pub(crate) key: RoundKey,
    /// [`Front::cpus`]' owner part.
    pub(crate) cpus: LocalRef<'a, CpuCache, Credits>,
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
        Ok(Self {
            table,
            key: round_key(),
            cpus: PerCpu::new()?,
        })
    }

    /// What the fast paths read of it ([`FrontRef`]).
    #[inline(always)]
    pub(crate) fn fast_ref(&self) -> FrontRef<'_> {
        FrontRef {
            table: self.table,
            key: self.key,
            cpus: self.cpus.local_ref(),
        }
    }

    /// The first magazine size and the largest of class `c`.
    fn depot_sizes(&self, c: usize) -> (usize, usize) {
        // Classes past the table's count are never used (one depot each all the same, so that a
        // class number indexes every array directly).
        if is_bucket_class(c) && c >= self.table.count() {
            return (1, 1);
        }
        let max = max_rounds(self.table, c);
        (start_magsize(class_charge(self.table, c)).min(max), max)
    }

    /// The depots of a new type (process context: sleeps).
    pub(crate) fn new_depots(&self) -> Result<Arc<TypeDepots>> {
        Arc::pin_init(
            pin_init::pin_init_array_from_fn(|c| {
                let (start, max) = self.depot_sizes(c);
                new_spinlock!(Depot::new(start, max), "kmalloc43_depot")
            }),
            GFP_KERNEL,
        )
    }

    /// Installs a type's depots in slot `t` of every CPU (every slot held). A CPU that has some
    /// keeps them (none has: [`Front::remove_type`] takes them out when a type goes).
    pub(crate) fn install_depots(
        all: &mut AllGuard<'_, CpuCache, Credits>,
        t: usize,
        depots: &Arc<TypeDepots>,
    ) {
        for cpu in 0..all.len() {
            let slot = &mut all.get(cpu).depots[t];
            if slot.is_none() {
                *slot = Some(depots.clone());
            }
        }
    }

    /// Takes type slot `t`'s magazines and depots out of every CPU (every slot held), calling
    /// `give(t, c, mag)` for each magazine still in them (none after a drain) and
    /// `count(t, c, n)` for requests not yet folded; their memory is freed.
    pub(crate) fn remove_type(
        all: &mut AllGuard<'_, CpuCache, Credits>,
        t: usize,
        mut give: impl FnMut(usize, usize, MagBox),
        mut count: impl FnMut(usize, usize, u64),
    ) {
        for cpu in 0..all.len() {
            let cache = all.get(cpu);
            if let Some(mut row) = cache.rows[t].take() {
                Self::empty_row(t, &mut row, &mut give, &mut count);
            }
            if let Some(depots) = cache.depots[t].take() {
                // Every CPU shares them: emptied on the first, freed with the last reference.
                Self::empty_depots(t, &depots, &mut give);
            }
        }
    }

    /// Takes every magazine out of type slot `t`'s depots, calling `give(t, c, mag)` for each.
    fn empty_depots(t: usize, depots: &TypeDepots, give: &mut impl FnMut(usize, usize, MagBox)) {
        for (c, d) in depots.iter().enumerate() {
            loop {
                let m = d.lock().take_any();
                match m {
                    Some(m) => give(t, c, m),
                    None => break,
                }
            }
        }
    }

    /// Takes every magazine and request count out of one CPU's row of type slot `t` (its slot
    /// held): `give(t, c, mag)` for each magazine, `count(t, c, n)` for each class with requests.
    fn empty_row(
        t: usize,
        row: &mut TypeRow,
        give: &mut impl FnMut(usize, usize, MagBox),
        count: &mut impl FnMut(usize, usize, u64),
    ) {
        for c in 0..NCLASSES {
            for m in row.take(c).into_iter().flatten() {
                give(t, c, m);
            }
            let n = row.take_calls(c);
            if n != 0 {
                count(t, c, n);
            }
        }
    }

    /// Switches the magazines on or off on every CPU (every slot held).
    pub(crate) fn set_enabled(all: &mut AllGuard<'_, CpuCache, Credits>, on: bool) {
        for cpu in 0..all.len() {
            all.get(cpu).off = !on;
        }
    }

    /// Tells every CPU whether somebody sleeps at a limit (every slot held).
    pub(crate) fn set_waiters(all: &mut AllGuard<'_, CpuCache, Credits>, waiting: bool) {
        for cpu in 0..all.len() {
            all.get(cpu).waiters = waiting;
        }
    }

    /// Counters of class `c`'s depots, summed over the types (the magazine size: the largest).
    pub(crate) fn depot_stats(&self, c: usize) -> DepotStats {
        let mut all = self.cpus.all();
        let mut sum = DepotStats {
            magsize: self.depot_sizes(c).0,
            ..DepotStats::default()
        };
        let mut first = true;
        for depots in all.get(0).depots.iter().flatten() {
            let d = depots[c].lock().stats();
            sum.magsize = if first {
                d.magsize
            } else {
                sum.magsize.max(d.magsize)
            };
            first = false;
            sum.full += d.full;
            sum.empty += d.empty;
            sum.contended += d.contended;
            sum.resizes += d.resizes;
            sum.reaped += d.reaped;
        }
        sum
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

    /// Pops a round of class `c` from `cache`'s magazines of type slot `t` (loaded, previous,
    /// then a depot exchange, whose trimming may hand a magazine to `reaped`); `None` if the type
    /// has no magazines here or they are empty.
    #[inline(always)]
    pub(crate) fn pop(
        cache: &mut CpuCache,
        t: usize,
        c: usize,
        reaped: &mut Reaped,
    ) -> Option<usize> {
        let CpuCache {
            rows,
            depots,
            users,
            ..
        } = cache;
        if rows[t].is_none() {
            Self::new_row(&mut rows[t], depots[t].as_ref())?;
        }
        let row = rows[t].as_deref_mut()?;
        let r = match row.class(c).alloc() {
            Some(r) => r,
            None => Self::reload(row, &mut users[c], t, depots[t].as_deref()?, reaped, c)?,
        };
        row.count(c);
        Some(Self::took(r))
    }

    /// Pops a round of class `c` from `cache`'s loaded or previous magazine of type slot `t`
    /// only (no depot: no call); `None` if both are empty or the type has none here.
    #[inline(always)]
    pub(crate) fn pop_local(cache: &mut CpuCache, t: usize, c: usize) -> Option<usize> {
        let r = cache.rows[t].as_deref_mut()?.alloc(c)?;
        Some(Self::took(r))
    }

    /// Round `r` just left a magazine (counted by the caller): its round mark cleared.
    #[inline(always)]
    fn took(r: usize) -> usize {
        // SAFETY: a round is a free object of ours, at least 16 bytes and aligned.
        unsafe { marker::unmark(r) };
        r
    }

    /// This CPU's first magazine of a type (`depots`: `None` for a slot with no type): its row,
    /// made with `GFP_NOWAIT` into `slot`; `None` if no memory could be had.
    #[cold]
    #[inline(never)]
    fn new_row(slot: &mut Option<KBox<TypeRow>>, depots: Option<&Arc<TypeDepots>>) -> Option<()> {
        depots?;
        let row = KBox::init(
            pin_init::init_zeroed::<TypeRow>(),
            GFP_NOWAIT | __GFP_NOWARN,
        )
        .ok()?;
        *slot = Some(row);
        Some(())
    }

    /// Both magazines empty: trade with the depot, then pop.
    #[cold]
    #[inline(never)]
    fn reload(
        row: &mut TypeRow,
        users: &mut TypeMask,
        t: usize,
        depots: &TypeDepots,
        reaped: &mut Reaped,
        c: usize,
    ) -> Option<usize> {
        let mut d = lock_depot(depots, c)?;
        if !row.class(c).reload_from_depot(&mut d) {
            return None;
        }
        row.activate(c);
        *users |= 1 << t;
        Self::reap_into(reaped, c, &mut d);
        drop(d);
        row.class(c).alloc()
    }

    /// Working-set trimming during a depot visit: once an interval closed (the depot counts its
    /// operations), one magazine outside the working set leaves with the visiting CPU.
    fn reap_into(reaped: &mut Reaped, c: usize, d: &mut Depot) {
        if reaped.mag.is_none() {
            if let Some(m) = d.reap() {
                *reaped = Reaped {
                    mag: Some(m),
                    class: c,
                };
            }
        }
    }

    /// The magazine to fill for class `c` of type slot `t` (the loaded one, installed if
    /// missing), sized to the depot's current magazine size, and the requests the row served of
    /// the class, taken (the caller folds them into the piece layer with the fill); `None` if the
    /// slot has no type or no magazine memory could be had.
    pub(crate) fn fill_target(
        cache: &mut CpuCache,
        t: usize,
        c: usize,
    ) -> Option<(&mut MagBox, u64)> {
        let CpuCache {
            rows,
            depots,
            users,
            ..
        } = cache;
        if rows[t].is_none() {
            Self::new_row(&mut rows[t], depots[t].as_ref())?;
        }
        let row = rows[t].as_deref_mut()?;
        let size = lock_depot(depots[t].as_deref()?, c)?.magsize();
        row.activate(c);
        users[c] |= 1 << t;
        let mags = row.class(c);
        if mags.loaded_mut().is_none() {
            let m = new_magazine(size)?;
            if let Err(m) = mags.install(m) {
                free_magazine(m);
            }
        }
        mags.loaded_mut()?;
        // Taken only once the fill will happen: the caller folds them.
        let calls = row.take_calls(c);
        let m = row.class(c).loaded_mut()?;
        if m.is_empty() {
            m.set_cap(size);
        }
        Some((m, calls))
    }

    /// Pushes a freed object of class `c` into `cache`'s loaded or previous magazine of type
    /// slot `t` only (no depot: no call), marking it as a round under `key` ([`round_key`]);
    /// `false` (nothing changed) if both are full or the type has none here.
    #[inline(always)]
    pub(crate) fn push_local(
        cache: &mut CpuCache,
        t: usize,
        c: usize,
        addr: usize,
        key: RoundKey,
    ) -> bool {
        let Some(row) = cache.rows[t].as_deref_mut() else {
            return false;
        };
        if row.class(c).free(addr).is_err() {
            return false;
        }
        // SAFETY: `addr` is an object of ours the caller is freeing (at least 16 bytes, aligned).
        unsafe { marker::mark(addr, key) };
        true
    }

    /// Pushes a freed object of class `c` into `cache`'s magazines of type slot `t` (marking it
    /// as a round under `key`; a depot exchange's trimming may hand a magazine to `reaped`).
    /// `Err(addr)` if no magazine had room and no empty one could be had, or the type has none
    /// here: the caller gives it to the piece layer.
    #[inline(always)]
    pub(crate) fn push(
        cache: &mut CpuCache,
        t: usize,
        c: usize,
        addr: usize,
        key: RoundKey,
        reaped: &mut Reaped,
    ) -> Result<(), usize> {
        let CpuCache {
            rows,
            depots,
            users,
            ..
        } = cache;
        if rows[t].is_none() && Self::new_row(&mut rows[t], depots[t].as_ref()).is_none() {
            return Err(addr);
        }
        let (Some(row), Some(depots)) = (rows[t].as_deref_mut(), depots[t].as_deref()) else {
            return Err(addr);
        };
        // SAFETY: `addr` is an object of ours the caller is freeing (at least 16 bytes, aligned).
        unsafe { marker::mark(addr, key) };
        match row.class(c).free(addr) {
            Ok(()) => Ok(()),
            Err(addr) => Self::unload(rows, &mut users[c], t, depots, reaped, c, addr),
        }
    }

    /// Rounds of class `c` in this CPU's rows of the types other than `t` that `users` marks
    /// (the class budget's walk: nothing to walk for a type alone); a mark whose row is gone
    /// (its type undefined) is cleared on the way.
    fn others_rounds(
        rows: &[Option<KBox<TypeRow>>; MAX_TYPES],
        users: &mut TypeMask,
        t: usize,
        c: usize,
    ) -> usize {
        let mut others = *users & !(1 << t);
        let mut held = 0;
        while others != 0 {
            let s = others.trailing_zeros() as usize;
            others &= others - 1;
            match rows.get(s).and_then(|r| r.as_deref()) {
                Some(r) => held += r.rounds(c),
                None => *users &= !(1 << s),
            }
        }
        held
    }

    /// Both magazines of type slot `t` full (`rows`: this CPU's rows, `t`'s present): over
    /// this CPU's class budget (`crate::magazine::trim`: the class's rounds over every type
    /// here, other types holding part of them), the full previous magazine goes to `reaped` (the
    /// caller gives its rounds back to the piece layer); then trade with the depot (or a new
    /// empty magazine), and push.
    #[cold]
    #[inline(never)]
    fn unload(
        rows: &mut [Option<KBox<TypeRow>>; MAX_TYPES],
        users: &mut TypeMask,
        t: usize,
        depots: &TypeDepots,
        reaped: &mut Reaped,
        c: usize,
        addr: usize,
    ) -> Result<(), usize> {
        let held = Self::others_rounds(rows, users, t, c);
        let Some(row) = rows[t].as_deref_mut() else {
            // SAFETY: as in `push`.
            unsafe { marker::unmark(addr) };
            return Err(addr);
        };
        let mine = row.rounds(c);
        row.activate(c);
        *users |= 1 << t;
        let mags = row.class(c);
        let spare = {
            let Some(mut d) = lock_depot(depots, c) else {
                // SAFETY: as above.
                unsafe { marker::unmark(addr) };
                return Err(addr);
            };
            if reaped.mag.is_none() && over_budget(held + mine, mine, depot_budget(&d)) {
                if let Some(m) = mags.take_previous() {
                    *reaped = Reaped {
                        mag: Some(m),
                        class: c,
                    };
                }
            }
            match mags.unload_to_depot(&mut d, None) {
                Ok(s) => {
                    Self::reap_into(reaped, c, &mut d);
                    s
                }
                Err(_) => {
                    drop(d);
                    let size = lock_depot(depots, c).map(|d| d.magsize());
                    let Some(m) = size.and_then(new_magazine) else {
                        // SAFETY: as above.
                        unsafe { marker::unmark(addr) };
                        return Err(addr);
                    };
                    match mags.install(m).err() {
                        None => None,
                        Some(m) => match lock_depot(depots, c) {
                            Some(mut d) => {
                                mags.unload_to_depot(&mut d, Some(m)).unwrap_or_else(|s| s)
                            }
                            // Outside task context, the depot held: the fresh magazine goes
                            // unused and the object to the piece layer.
                            None => {
                                free_magazine(m);
                                // SAFETY: as above.
                                unsafe { marker::unmark(addr) };
                                return Err(addr);
                            }
                        },
                    }
                }
            }
        };
        if let Some(s) = spare {
            free_magazine(s);
        }
        mags.free(addr).inspect_err(|&a| {
            // SAFETY: as above.
            unsafe { marker::unmark(a) };
        })
    }

    /// Whether `addr` sits in any magazine of class `c`, of any type (every slot held): the
    /// exact search, kept as the KUnit suites' cross-check of the round mark's verdict (process
    /// context; the free paths decide by the mark alone).
    #[cfg_attr(
        not(CONFIG_KMALLOC43_KUNIT_TEST),
        expect(dead_code, reason = "the KUnit suites' cross-check")
    )]
    pub(crate) fn holds(all: &mut AllGuard<'_, CpuCache, Credits>, c: usize, addr: usize) -> bool {
        let mut found = false;
        for cpu in 0..all.len() {
            found |= all.get(cpu).rows.iter().flatten().any(|r| r.holds(c, addr));
        }
        for depots in all.get(0).depots.iter().flatten() {
            depots[c].lock().for_each_round(|r| found |= r == addr);
        }
        found
    }

    /// Whether `addr` sits in any magazine at all (every slot held; [`Front::holds`]). A round
    /// is a live piece for the core, whose page carries its hint: a readable hint names the only
    /// class a round at `addr` can be of (none for a run too big to cache); without one (a page
    /// past the hint bitmap, or not ours) every class is searched.
    #[cfg_attr(
        not(CONFIG_KMALLOC43_KUNIT_TEST),
        expect(dead_code, reason = "the KUnit suites' cross-check")
    )]
    pub(crate) fn holds_any(&self, all: &mut AllGuard<'_, CpuCache, Credits>, addr: usize) -> bool {
        match crate::hint::page_hint(addr) {
            Some(code) => code.class().is_some_and(|c| Self::holds(all, c, addr)),
            None => (0..NCLASSES).any(|c| self.in_use(c) && Self::holds(all, c, addr)),
        }
    }

    /// Rounds cached and requests not yet folded, per class, over every type and CPU (every
    /// slot held): one pass over the rows and one over the depots.
    pub(crate) fn tally(
        all: &mut AllGuard<'_, CpuCache, Credits>,
    ) -> ([usize; NCLASSES], [u64; NCLASSES]) {
        let mut rounds = [0usize; NCLASSES];
        let mut calls = [0u64; NCLASSES];
        for cpu in 0..all.len() {
            for row in all.get(cpu).rows.iter().flatten() {
                for c in 0..NCLASSES {
                    rounds[c] += row.rounds(c);
                    calls[c] += row.calls(c);
                }
            }
        }
        for depots in all.get(0).depots.iter().flatten() {
            for (c, d) in depots.iter().enumerate() {
                rounds[c] += d.lock().rounds();
            }
        }
        (rounds, calls)
    }

    /// Takes every magazine out of every CPU and depot (every slot held), calling
    /// `give(t, c, mag)` for each magazine of type slot `t` and class `c` (`give` returns the
    /// rounds and frees the magazine), and every request counter, calling `count(t, c, n)` for
    /// each CPU's non-zero count.
    pub(crate) fn take_all(
        all: &mut AllGuard<'_, CpuCache, Credits>,
        mut give: impl FnMut(usize, usize, MagBox),
        mut count: impl FnMut(usize, usize, u64),
    ) {
        for cpu in 0..all.len() {
            for (t, row) in all.get(cpu).rows.iter_mut().enumerate() {
                if let Some(row) = row {
                    Self::empty_row(t, row, &mut give, &mut count);
                }
            }
        }
        for (t, depots) in all.get(0).depots.iter().enumerate() {
            if let Some(depots) = depots {
                Self::empty_depots(t, depots, &mut give);
            }
        }
    }

    /// This CPU's aging pass (its slot `cache` held; `crate::magazine::trim`): for every type
    /// and class of this CPU's rows, the requests served since the last pass are added to
    /// `calls` (the caller folds them into the piece layer), the magazines of a class that served
    /// none go to `give(c, mag)`, and so do the magazines its depot's working-set trimming takes
    /// out (the depot closes an interval first).
    pub(crate) fn age(
        cache: &mut CpuCache,
        calls: &mut [u64; NCLASSES],
        mut give: impl FnMut(usize, MagBox),
    ) {
        let CpuCache {
            rows,
            depots,
            users,
            ..
        } = cache;
        for (t, (row, depots)) in rows.iter_mut().zip(depots.iter()).enumerate() {
            let Some(row) = row.as_deref_mut() else {
                continue;
            };
            // The classes that may hold something: a pass costs what is in use, not the table.
            for c in row.active_classes() {
                calls[c] += Self::age_class(row, depots.as_deref(), c, &mut give);
                if !row.is_active(c) {
                    users[c] &= !(1 << t);
                }
            }
        }
    }

    /// One class of one row in an aging pass: its requests (returned), its magazines if it
    /// served none since the last pass, and then what its depot's working set no longer needs,
    /// go to `give(c, mag)`.
    fn age_class(
        row: &mut TypeRow,
        depots: Option<&TypeDepots>,
        c: usize,
        give: &mut impl FnMut(usize, MagBox),
    ) -> u64 {
        let idle = row.take_idle(c);
        for m in idle.mags.into_iter().flatten().flatten() {
            give(c, m);
        }
        let (true, Some(depots)) = (idle.visit_depot, depots) else {
            return idle.calls;
        };
        // Outside task context a held depot is left for the next pass (the row stays marked).
        let Some(mut d) = lock_depot(depots, c) else {
            return idle.calls;
        };
        d.update();
        drop(d);
        loop {
            let Some(mut d) = lock_depot(depots, c) else {
                return idle.calls;
            };
            let (m, holds) = (d.reap(), d.holds_any());
            drop(d);
            match m {
                Some(m) => give(c, m),
                None => {
                    row.depot_aged(c, holds);
                    return idle.calls;
                }
            }
        }
    }

    /// Takes the magazines the depots' working sets no longer need (every slot held), calling
    /// `give(t, c, mag)` for each.
    pub(crate) fn reap(
        all: &mut AllGuard<'_, CpuCache, Credits>,
        mut give: impl FnMut(usize, usize, MagBox),
    ) -> usize {
        let mut n = 0;
        for (t, depots) in all.get(0).depots.iter().enumerate() {
            let Some(depots) = depots else { continue };
            for (c, depot) in depots.iter().enumerate() {
                loop {
                    let m = {
                        let mut d = depot.lock();
                        d.update();
                        d.reap()
                    };
                    match m {
                        Some(m) => {
                            give(t, c, m);
                            n += 1;
                        }
                        None => break,
                    }
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

/// The ledger key and slot index of a type (`None` for an index beyond the table).
#[inline]
pub(crate) fn ledger_slot(ty: MallocType) -> Option<(u32, usize)> {
    (ty.index() < MAX_TYPES).then(|| (ledger::key(ty), ty.index()))
}
