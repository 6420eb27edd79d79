// SPDX-License-Identifier: GPL-2.0

//! Exact per-type accounting without shared writes on the fast path: per-CPU counters and
//! per-CPU *credits*.
//!
//! Each CPU keeps, per type, a [`LocalLedger`]: the bytes and allocations it charged (minus those
//! it uncharged), written only by the holder of its CPU's slot, and a [`Credit`]: bytes it may
//! still charge on its own, one atomic word that any CPU may *revoke* at any time, under the heap
//! lock, without the slot (`Documentation/performance.rst`, "The sound design").
//!
//! # Why limits and HighUse stay exact
//!
//! Let `U` be the type's exact usage (the base in [`TypeStats`] plus every CPU's `memuse`, plus
//! the charges in flight: a credit spent by a successful exchange whose holder has not yet added
//! it to its `memuse`, or the reverse) and `C` the credits held by all CPUs (a revoked word counts
//! as 0). The type's [`Reserve`] holds `R = U + C` exactly, at every instant: each byte of credit
//! is either spent by a successful `cmpxchg` of its word (it is then usage) or taken by the `xchg`
//! of a revocation (then out of `R`), never both, and everything that changes `R` runs under the
//! heap lock. The invariant is
//!
//! > `C == 0`, or `R <= min(limit, HighUse)`,
//!
//! because credit is only ever *granted* ([`grant`]) out of `min(limit, HighUse) - R`.
//!
//! * A fast charge spends credit ([`LocalLedger::try_charge`]: one `cmpxchg`): `U` grows but
//!   stays `<= R <= min(limit, HighUse)`. So it can neither pass the limit nor raise the high
//!   water, and skipping both checks is exact.
//! * A charge the credit does not cover first tries a grant. If the headroom is too small, every
//!   CPU's credit is revoked ([`revoke`]: one `xchg` each, no slot needed): now `R == U` exactly,
//!   the limit is checked against the true usage, and a charge that raises the high water records
//!   the exact new `HighUse` ([`charge_exact`], [`charge_base`]). A holder frozen half way through
//!   its counters changes no verdict: the verdicts are taken on `R`, never on a sum of counters.
//! * A fast free turns usage back into credit ([`LocalLedger::try_uncharge`]: one `cmpxchg`
//!   that a revoked word or the cap refuses); otherwise the bytes go back to the pool under the
//!   lock ([`uncharge_local`]), with the credit above half the cap, so that a batch of frees
//!   takes the lock once per `cap / 2` bytes, not once per free.
//! * A charge taken back (no object could be had) whose exchange finds the word revoked
//!   ([`LocalLedger::undo_charge`]) takes its bytes out of `R` under the heap lock instead
//!   ([`unreserve`]). A fast uncharge is never taken back: a free whose magazine has no room
//!   goes on to the depot or the piece layer.
//! * The high water of a charge taken back: a base charge taken back under the same hold of the
//!   heap lock as the charge ([`undo_charge_base`]: the interrupt fall-back, the core's own
//!   charges through [`ReserveAccount`]) restores `HighUse` to what it was before the charge,
//!   since no credit can have been granted against the raised value. A CPU's charge is taken
//!   back after the heap lock was dropped (its magazine is filled under a later hold): other
//!   CPUs may have been granted credit out of `min(limit, HighUse) - R` with the raised
//!   `HighUse` meanwhile, and lowering it again would leave `C > 0` with `R` above it. So that
//!   charge keeps its high water: it was usage in flight, which `U` counts.
//!
//! # The key test
//!
//! A ledger counts for one type at a time ([`LocalLedger::key`], claimed by a grant, an exact
//! charge or an owned free under the heap lock, after the type was found defined), and each fast
//! exchange is guarded by the *key test*: a stale handle, whose generation is not the slot's
//! current one, fails it and goes to the full path, which refuses it. The test is what checks the
//! handle's generation on the fast paths (the glue's type lookup, `malloc::ClientTable::find`,
//! checks the client struct's address, not the generation). It would be redundant for a caller
//! that refused every handle but the slot's current one with the CPU's slot held, because
//!
//! > a credit word that is not revoked and not 0, or a cap above 0, exists only while its
//! > ledger is claimed for the type currently defined in its slot:
//!
//! * a word becomes live only by a [`grant`], which claims the ledger for the charge's type
//!   first; a cap is set only there. Both stay with the ledger's slot holder and the heap lock;
//! * a claim with another key resets the cap (and is only made for a type found defined, so never
//!   while another type's word is live in the slot, by the next point);
//! * a type leaves its slot only after every CPU's word was revoked and every ledger folded,
//!   under every slot ([`revoke`], [`fold`]: the cap goes to 0, the word stays [`REVOKED`] until
//!   the next grant), and the slot's next type is defined after that. A slot whose type was not
//!   undefined after all (live allocations) was folded just the same: its ledgers claim again.
//!
//! So a fast charge (a word of at least the charge) and a fast free of an owned piece (at least
//! one byte: a word not revoked and a cap of at least the charge) find the ledger claimed for the
//! slot's current type. The model test (`ledger/model.rs`) defines and undefines the slot's type
//! between any two steps, runs the fast exchanges without the key test, and checks the invariant
//! after every step. The test stays all the same: the generation has to be compared somewhere,
//! and a compare in the type lookup (the struct's handle against the slot's current one, under
//! the slot lock) costs what the key test does (`Documentation/performance.rst`, *The ledger's
//! key test and the leaf paths (session 8)*). What is left of its cost is the compare and its
//! branch: the key is the client struct's handle field itself ([`key`]), already in a register.
//!
//! Readers take every slot lock and sum ([`exact`]): the counters are exact when read. Steady
//! churn below the high water never leaves the CPU.
//!
//! A CPU's `memuse` and `inuse` are signed, kept modulo 2^64 (wrapping arithmetic): a free of
//! an object whose page names its type as the owner (*owned*: the type is decided exactly, and
//! first) is counted on the CPU that frees it, which may take its counters below zero; the type's
//! exact usage is the base plus the wrapping sum of every CPU's, never negative. A free whose
//! page names no owner (a shared class) is checked by the counters, as before: one this CPU's
//! counters cover (read as signed) is covered by the type's; one they do not cover gathers every
//! CPU's usage into this one ([`gather`]) and is refused (`WrongType`) only if the type's exact
//! total cannot cover it.

use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::malloc::{classes_sizemask, MallocType, TypeStats, NCLASSES};

/// The largest credit, cap or charge: `2^62 - 1` on a 64-bit machine. Above it, a credit word
/// is [`REVOKED`].
pub const CREDIT_MAX: usize = usize::MAX >> 2;

/// A revoked credit word: the top two bits set. Both fast exchanges refuse it: a charge's
/// `REVOKED - charge` keeps the sign bit (every charge is at most [`CREDIT_MAX`]), and an
/// uncharge's `REVOKED + charge` is above every cap (caps are at most [`CREDIT_MAX`]).
pub const REVOKED: usize = !CREDIT_MAX;

/// One CPU's credit for one type: bytes it may charge without the heap lock.
///
/// # Invariants
///
/// The word is [`REVOKED`] or at most [`CREDIT_MAX`]. Only the holder of its CPU's slot moves it
/// by a fast exchange ([`Credit::try_take`], [`Credit::try_give`], [`Credit::try_return`]) or
/// stores it ([`Credit::set`], heap lock held too); any CPU, in any context, may revoke it
/// ([`Credit::revoke`], heap lock held). The stores and the revocations are therefore ordered
/// by the heap lock, and the exchanges of the holder are atomic against both.
#[derive(Debug, Default)]
#[repr(transparent)]
pub struct Credit(AtomicUsize);

impl Credit {
    /// No credit (not revoked: nothing to revoke).
    pub const fn new() -> Self {
        Self(AtomicUsize::new(0))
    }

    /// The credit now; a revoked word is 0.
    #[inline]
    pub fn get(&self) -> usize {
        let v = self.0.load(Relaxed);
        if v > CREDIT_MAX {
            0
        } else {
            v
        }
    }

    /// Whether the word is revoked (no fast exchange succeeds until the next grant).
    pub fn is_revoked(&self) -> bool {
        self.0.load(Relaxed) == REVOKED
    }

    /// Slot holder: spends `charge` (at most [`CREDIT_MAX`]) bytes of credit with one `cmpxchg`;
    /// `false`, changing nothing, if the credit does not cover it, the word is revoked, or a
    /// revocation came in between.
    #[inline(always)]
    pub fn try_take(&self, charge: usize) -> bool {
        debug_assert!(charge <= CREDIT_MAX);
        let old = self.0.load(Relaxed);
        let new = old.wrapping_sub(charge);
        // `old` is at most CREDIT_MAX or REVOKED and `charge` at most CREDIT_MAX, so `new` has the
        // sign bit exactly when `charge > old` or `old` is REVOKED (type invariant).
        (new as isize) >= 0 && self.0.compare_exchange(old, new, Relaxed, Relaxed).is_ok()
    }

    /// Slot holder: adds `charge` bytes of credit with one `cmpxchg` if the credit stays at most
    /// `cap` (at most [`CREDIT_MAX`]); `false`, changing nothing, past the cap, on a revoked word,
    /// or if a revocation came in between.
    #[inline(always)]
    pub fn try_give(&self, charge: usize, cap: usize) -> bool {
        debug_assert!(charge <= CREDIT_MAX && cap <= CREDIT_MAX);
        let old = self.0.load(Relaxed);
        // No wrap: `old <= REVOKED` and `charge <= CREDIT_MAX` (type invariant), and a REVOKED sum
        // is above `cap`.
        let new = old.wrapping_add(charge);
        new <= cap && self.0.compare_exchange(old, new, Relaxed, Relaxed).is_ok()
    }

    /// Slot holder: gives back `charge` bytes just taken ([`Credit::try_take`]), with no cap;
    /// `false`, changing nothing, if the word was revoked since (the bytes must then leave `R`:
    /// [`unreserve`]).
    #[inline(always)]
    pub fn try_return(&self, charge: usize) -> bool {
        let old = self.0.load(Relaxed);
        // Only a revocation changes the word under the holder, so a failed exchange means it is
        // revoked now.
        old <= CREDIT_MAX
            && self
                .0
                .compare_exchange(old, old + charge, Relaxed, Relaxed)
                .is_ok()
    }

    /// Heap lock held, any context, no slot needed: takes the whole credit (`xchg` with
    /// [`REVOKED`]); the bytes taken (0 if it was revoked already), which the caller takes out of
    /// `R`.
    #[inline]
    pub fn revoke(&self) -> usize {
        let old = self.0.swap(REVOKED, Relaxed);
        if old > CREDIT_MAX {
            0
        } else {
            old
        }
    }

    /// Slot holder with the heap lock (so no revocation runs meanwhile): sets the credit to
    /// `v` (at most [`CREDIT_MAX`]).
    #[inline]
    fn set(&self, v: usize) {
        debug_assert!(v <= CREDIT_MAX);
        self.0.store(v, Relaxed);
    }
}

/// One CPU's share of one type's accounting (its credit is the separate [`Credit`] word, which
/// other CPUs may revoke).
///
/// # Invariants
///
/// `key == 0` implies every counter is zero. Only the holder of the CPU's slot (its owner on the
/// fast path, or an all-slot holder) reads or writes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalLedger {
    /// The type this slot counts for ([`key`]), 0 if unused.
    pub key: u32,
    /// Most credit fast frees may build up here: set by a grant. A revocation leaves it: a
    /// [`REVOKED`] word refuses every fast free (which then gives its bytes back to the pool under
    /// the lock, keeping the invariant when a limit was lowered below the usage).
    pub cap: usize,
    /// Bytes charged here less bytes uncharged here, modulo 2^64: above `isize::MAX` (negative)
    /// when this CPU freed more of the type's owned objects than it charged (module
    /// documentation). Only wrapping sums of these mean anything.
    pub memuse: usize,
    /// Allocations charged here less those uncharged here, as `memuse`.
    pub inuse: usize,
    /// Allocations charged here ever.
    pub calls: u64,
    /// Magazine classes used here: bit `c` for class `c` (readers convert the set to
    /// [`TypeStats::sizemask`] with [`classes_sizemask`]: one `or` of `1 << c`, instead of
    /// computing the size bit). Only objects that did not come out of a magazine note their
    /// class here (the glue's fills): a round of class `c` in a magazine of the type is a piece a
    /// fill brought (noted then) or an object of the type freed into it, allocated (and noted,
    /// here or in the core's sizemask) before; the sizemask only grows, folds keep it, and a
    /// type's magazines are drained before its slot can be defined again. So every round's class
    /// is in the type's sizemask already, and a round taken from a magazine notes nothing.
    pub classes: u64,
}

/// The slot key of a type handle: the value the C ABI's client struct holds in its handle field
/// (`malloc::ClientTable::handle_value`: the raw handle plus one), so that the fast paths compare
/// the ledger with the field they read, with no arithmetic. Never 0 for a type that can be
/// defined: only the raw handle `u32::MAX` (slot index `0xffff`, past every slot) wraps to 0.
#[inline(always)]
pub const fn key(ty: MallocType) -> u32 {
    ty.to_raw().wrapping_add(1)
}

impl LocalLedger {
    /// Fast charge out of this CPU's `credit`; `false`, changing nothing, if it does not cover
    /// `charge` (or was revoked). Once the object is in hand the caller records its size class
    /// with [`LocalLedger::note_class`] unless it is a round (whose class the type's sizemask has:
    /// see `classes`); without an object it takes the charge back with
    /// [`LocalLedger::undo_charge`].
    #[inline(always)]
    pub fn try_charge(&mut self, credit: &Credit, key: u32, charge: usize) -> bool {
        if self.key != key || !credit.try_take(charge) {
            return false;
        }
        self.count_charge(charge);
        true
    }

    /// Counts a charge of `charge` bytes whose credit was spent ([`LocalLedger::try_charge`]):
    /// `memuse`, `inuse` and `calls`, not the class. The magazine fast paths count a round with
    /// this alone: a round's class is already in the type's sizemask (see `classes`), so only an
    /// object that did not come from a magazine (a fill) notes its class
    /// ([`LocalLedger::note_class`]).
    #[inline(always)]
    pub fn count_charge(&mut self, charge: usize) {
        // The fast path's arithmetic, without overflow checks (issue 8: each is a compare and a
        // branch on every allocation), because none can overflow: this CPU's `memuse` plus the
        // spent credit is part of `R` (module documentation), a `usize`; `inuse` counts charges
        // of at least one byte each, so it stays at most `memuse`; `calls` would need 2^64
        // allocations.
        self.memuse = self.memuse.wrapping_add(charge);
        self.inuse = self.inuse.wrapping_add(1);
        self.calls = self.calls.wrapping_add(1);
    }

    /// Records that magazine class `c` (below [`NCLASSES`], at most 64) was used (after a
    /// successful charge).
    #[inline(always)]
    pub fn note_class(&mut self, c: usize) {
        debug_assert!(c < NCLASSES);
        // `c < NCLASSES <= 64`: the shift never wraps (a wrapping shift has no overflow check).
        self.classes |= 1u64.wrapping_shl(c as u32);
    }

    /// Takes back a charge made here ([`LocalLedger::try_charge`] or [`charge_exact`]) whose
    /// allocation then failed. The bytes become credit (`R` unchanged; the invariant holds
    /// because the charge itself fitted below `min(limit, HighUse)`), or, if the word was revoked
    /// meanwhile, `false`: the caller must take them out of `R` under the heap lock
    /// ([`unreserve`]). The high water stays (module documentation: credit may have been
    /// granted against it since the heap lock was dropped), unlike [`undo_charge_base`]'s.
    #[inline(always)]
    #[must_use]
    pub fn undo_charge(&mut self, credit: &Credit, charge: usize) -> bool {
        self.memuse = self.memuse.wrapping_sub(charge);
        self.inuse = self.inuse.wrapping_sub(1);
        self.calls -= 1;
        credit.try_return(charge)
    }

    /// Fast uncharge into this CPU's `credit`, as long as the credit stays within its cap and is
    /// not revoked; `false`, changing nothing, if the exchange refuses or, for a free that is not
    /// `owned` (module documentation), if this CPU's counters do not cover it.
    #[inline(always)]
    pub fn try_uncharge(&mut self, credit: &Credit, key: u32, charge: usize, owned: bool) -> bool {
        if self.key != key || (!owned && !self.covers(charge)) {
            return false;
        }
        if !credit.try_give(charge, self.cap) {
            return false;
        }
        self.count_uncharge(charge);
        true
    }

    /// Whether this CPU's counters, read as signed, cover a free of `charge` bytes.
    #[inline(always)]
    fn covers(&self, charge: usize) -> bool {
        (self.memuse as isize) >= charge as isize && (self.inuse as isize) > 0
    }

    /// The plain counters of an uncharge (below zero for a free of an object charged elsewhere).
    #[inline(always)]
    fn count_uncharge(&mut self, charge: usize) {
        self.memuse = self.memuse.wrapping_sub(charge);
        self.inuse = self.inuse.wrapping_sub(1);
    }

    /// Makes the ledger count for `key`, clearing a stale one (which must count nothing).
    fn claim(&mut self, key: u32) {
        if self.key != key {
            debug_assert!(self.is_idle(), "a stale slot still counts");
            *self = LocalLedger {
                key,
                ..LocalLedger::default()
            };
        }
    }

    /// Whether the slot counts nothing.
    pub fn is_idle(&self) -> bool {
        self.memuse == 0 && self.inuse == 0 && self.calls == 0
    }
}

/// The global part of a type's accounting that the fast path does not touch: `R = U + C` (module
/// documentation), and the frees that no CPU's counters took, under the heap lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reserve {
    /// Exact usage plus every CPU's credit.
    pub reserved: usize,
    /// Bytes freed without a slot (the interrupt fall-back, [`uncharge_elsewhere`]) and not yet
    /// taken off the counters that charged them: the type's exact usage is the base plus every
    /// CPU's counters *less* these ([`exact_elsewhere`]) until a fold takes them off the base
    /// ([`fold_elsewhere`]).
    pub freed_bytes: usize,
    /// Objects freed so ([`Reserve::freed_bytes`]).
    pub freed: usize,
}

/// The least credit a grant gives: 16 KiB (a charge's step is never below it).
pub const GRANT_MIN: usize = 16 * 1024;

/// Objects of its class a grant covers: about four magazines of the first size (15 rounds).
pub const GRANT_OBJECTS: usize = 64;

/// The largest step for a charge that fits it: 64 KiB, the largest run the magazines serve.
pub const GRANT_MAX: usize = 64 * 1024;

/// A CPU's credit for a type is capped at this many grant steps.
pub const GRANT_CAP_STEPS: usize = 4;

/// The terms of a grant for a charge of `charge` bytes: `(batch, cap)` for [`grant`]. The step
/// covers [`GRANT_OBJECTS`] objects of the charge, within [`GRANT_MIN`]..=[`GRANT_MAX`] and never
/// below the charge itself; the cap is [`GRANT_CAP_STEPS`] steps. So a CPU holds at most
/// `4 * max(64 KiB, charge)` bytes of credit per type (256 KiB for every charge the magazines
/// serve), as a 64 KiB charge already could with a fixed 16 KiB step; a batch of 256 objects
/// of 512 B-2 KiB takes 4-8 grants without credit (8-32 at 16 KiB steps), fewer on credit its
/// frees left.
pub fn grant_terms(charge: usize) -> (usize, usize) {
    let step = charge
        .saturating_mul(GRANT_OBJECTS)
        .clamp(GRANT_MIN, GRANT_MAX)
        .max(charge)
        .min(CREDIT_MAX);
    (step, step.saturating_mul(GRANT_CAP_STEPS).min(CREDIT_MAX))
}

/// Heap lock and this CPU's slot held: grants this CPU enough credit for `charge` (at least
/// `batch` if the headroom allows) out of `min(limit, HighUse) - R`, and lets its frees build up
/// to `cap` bytes of credit. `false` if the headroom is too small: revoke and [`charge_exact`].
#[expect(
    clippy::too_many_arguments,
    reason = "the ledger, its credit word and the grant's terms"
)]
pub fn grant(
    st: &TypeStats,
    res: &mut Reserve,
    local: &mut LocalLedger,
    credit: &Credit,
    key: u32,
    charge: usize,
    batch: usize,
    cap: usize,
) -> bool {
    local.claim(key);
    // No revocation runs meanwhile (they take the heap lock), and only this slot's holder
    // exchanges the word: it stays as read until the store.
    let have = credit.get();
    let need = charge.saturating_sub(have);
    let headroom = st.limit.min(st.maxused).saturating_sub(res.reserved);
    if need > headroom {
        return false;
    }
    let g = need.max(batch).min(headroom);
    let now = (have + g).min(CREDIT_MAX);
    credit.set(now);
    local.cap = cap.max(now).min(CREDIT_MAX);
    res.reserved += now - have;
    true
}

/// Heap lock held, any context, no slot needed: takes back one CPU's credit.
#[inline]
pub fn revoke(res: &mut Reserve, credit: &Credit) {
    res.reserved -= credit.revoke();
}

/// Heap lock held: the bytes of a charge taken back after its credit word was revoked
/// ([`LocalLedger::undo_charge`] returned `false`) leave `R`. The high water stays, as for
/// [`LocalLedger::undo_charge`].
pub fn unreserve(res: &mut Reserve, charge: usize) {
    res.reserved -= charge;
}

/// Heap lock and this CPU's slot held, every credit revoked (so `R` is the exact usage):
/// charges `charge` bytes to this CPU, checking the limit against the true usage and recording
/// the exact high water. `false` at the limit (nothing changed).
pub fn charge_exact(
    st: &mut TypeStats,
    res: &mut Reserve,
    local: &mut LocalLedger,
    key: u32,
    charge: usize,
) -> bool {
    local.claim(key);
    if !reserve_exact(st, res, charge) {
        return false;
    }
    local.count_charge(charge);
    true
}

/// `R += charge` if the limit allows it, recording the exact high water (every credit revoked,
/// heap lock held).
fn reserve_exact(st: &mut TypeStats, res: &mut Reserve, charge: usize) -> bool {
    match res.reserved.checked_add(charge) {
        Some(total) if total <= st.limit => {
            res.reserved = total;
            st.maxused = st.maxused.max(total);
            true
        }
        _ => false,
    }
}

/// Heap lock held, no slot: charges `charge` bytes to the type's base statistics (a call that
/// uses no CPU slot: the core's own charges, an interrupt's fall-back) if the headroom
/// `min(limit, HighUse) - R` covers it, so that no credit need be revoked; `false`, changing
/// nothing, if not: revoke every credit, then [`charge_base_exact`].
pub fn charge_base(st: &mut TypeStats, res: &mut Reserve, charge: usize) -> bool {
    let headroom = st.limit.min(st.maxused).saturating_sub(res.reserved);
    if charge > headroom {
        return false;
    }
    res.reserved += charge;
    count_base(st, charge);
    true
}

/// Heap lock held, every credit revoked (so `R` is the exact usage), no slot: charges `charge`
/// bytes to the type's base statistics, checking the limit against the true usage and recording
/// the exact high water. `false` at the limit (nothing changed).
pub fn charge_base_exact(st: &mut TypeStats, res: &mut Reserve, charge: usize) -> bool {
    if !reserve_exact(st, res, charge) {
        return false;
    }
    count_base(st, charge);
    true
}

/// The base statistics of a charge (heap lock held).
fn count_base(st: &mut TypeStats, charge: usize) {
    st.memuse += charge;
    st.inuse += 1;
    st.calls += 1;
}

/// Heap lock and this CPU's slot held: uncharges a free that is `owned` or that this CPU's
/// counters cover, and gives the bytes (and the credit above half the slot's cap) back to the
/// pool. `false` if it is neither.
pub fn uncharge_local(
    res: &mut Reserve,
    local: &mut LocalLedger,
    credit: &Credit,
    key: u32,
    charge: usize,
    owned: bool,
) -> bool {
    if owned {
        local.claim(key);
    }
    if local.key != key || (!owned && !local.covers(charge)) {
        return false;
    }
    local.count_uncharge(charge);
    res.reserved -= charge;
    // Hysteresis, as a magazine exchange trades a whole magazine rather than a round: the credit
    // goes down to half the cap, so that the next `cap / 2` bytes of frees are fast again. Trimmed
    // only to the cap, every free of a batch that outgrows it took this path under the heap lock
    // (Documentation/performance.rst: a batch of 256 2 KiB pairs cost 2.3 times one of 1 KiB).
    // The heap lock keeps revocations out and the slot the exchanges: the word stays as read.
    let keep = local.cap / 2;
    let have = credit.get();
    if have > keep {
        res.reserved -= have - keep;
        credit.set(keep);
    }
    true
}

/// Heap lock and every slot held: moves `from`'s usage (not its history) to `into`, so that a
/// free of an object charged on another CPU finds it here.
pub fn gather(into: &mut LocalLedger, from: &mut LocalLedger, key: u32) {
    into.claim(key);
    if from.key != key {
        return;
    }
    into.memuse = into.memuse.wrapping_add(from.memuse);
    into.inuse = into.inuse.wrapping_add(from.inuse);
    from.memuse = 0;
    from.inuse = 0;
}

/// Heap lock and every slot held: moves the usage in the type's base statistics (charged
/// without magazines, or folded there) to `into` as well, so that one counter holds the type's
/// whole usage before a free is judged against it.
pub fn gather_base(into: &mut LocalLedger, st: &mut TypeStats, key: u32) {
    into.claim(key);
    into.memuse = into.memuse.wrapping_add(st.memuse);
    into.inuse = into.inuse.wrapping_add(st.inuse);
    st.memuse = 0;
    st.inuse = 0;
}

/// Heap lock and every slot held, after every CPU's usage and the base's were gathered into
/// `into` ([`gather`], [`gather_base`]): takes the frees of [`uncharge_elsewhere`] off it too, so
/// that it holds the type's exact usage before a free is judged against it.
pub fn gather_elsewhere(into: &mut LocalLedger, res: &mut Reserve) {
    into.memuse = into.memuse.wrapping_sub(res.freed_bytes);
    into.inuse = into.inuse.wrapping_sub(res.freed);
    res.freed_bytes = 0;
    res.freed = 0;
}

/// Heap lock and every slot held, `credit` revoked: folds a CPU's counters into the type's base
/// statistics and frees the slot (type undefine, DIAGNOSTIC switch, unload). The base is exact
/// once every CPU's are folded (and [`fold_elsewhere`] applied), not in between.
pub fn fold(st: &mut TypeStats, local: &mut LocalLedger, credit: &Credit, key: u32) {
    debug_assert_eq!(credit.get(), 0, "credits must be revoked first");
    if local.key == key {
        // Wrapping: a CPU's counters may be below zero; once every CPU is folded the base is the
        // exact usage.
        st.memuse = st.memuse.wrapping_add(local.memuse);
        st.inuse = st.inuse.wrapping_add(local.inuse);
        st.calls += local.calls;
        st.sizemask |= classes_sizemask(local.classes);
    }
    *local = LocalLedger::default();
}

/// Heap lock held: uncharges a free from the type's base statistics (usage folded there, or
/// charged without magazines); `false` if the base does not cover it.
pub fn uncharge_base(st: &mut TypeStats, res: &mut Reserve, charge: usize) -> bool {
    if st.inuse == 0 || st.memuse < charge {
        return false;
    }
    st.memuse -= charge;
    st.inuse -= 1;
    res.reserved -= charge;
    true
}

/// Heap lock held, no slot: uncharges a free of an object that some CPU's counters or the base
/// may count (the interrupt fall-back, which may read no slot). The bytes leave `R` at once; the
/// counters that charged them are corrected by readers ([`exact_elsewhere`]) and folds
/// ([`fold_elsewhere`]). The caller has decided already that the object is a live one of this
/// type (its page's owner), so the type's exact usage covers it.
pub fn uncharge_elsewhere(res: &mut Reserve, charge: usize) {
    res.reserved -= charge;
    res.freed_bytes += charge;
    res.freed += 1;
}

/// Heap lock held since the charge: takes back a base charge ([`charge_base`],
/// [`charge_base_exact`], [`charge_verdict`] with the base as the payer) whose allocation then
/// failed, and restores the high water to `high`, what it was before the charge
/// ([`TypeStats::take_back`]). Sound because the heap lock was never dropped in between: no
/// credit was granted against the raised high water, and every revocation meanwhile only
/// lowered `C` and `R`, so `C == 0 or R <= min(limit, HighUse)` holds with `high` as it did
/// before the charge.
pub fn undo_charge_base(st: &mut TypeStats, res: &mut Reserve, charge: usize, high: usize) {
    st.take_back(charge, high);
    res.reserved -= charge;
}

/// Heap lock held: takes the frees of [`uncharge_elsewhere`] off an exact reading in progress
/// (after every CPU's counters were added: the sum is never below them).
pub fn exact_elsewhere(reading: &mut TypeStats, res: &Reserve) {
    reading.memuse = reading.memuse.wrapping_sub(res.freed_bytes);
    reading.inuse = reading.inuse.wrapping_sub(res.freed);
}

/// Heap lock and every slot held, every CPU's counters folded into the base ([`fold`]): takes
/// the frees of [`uncharge_elsewhere`] off the base, which then holds the exact usage.
pub fn fold_elsewhere(st: &mut TypeStats, res: &mut Reserve) {
    exact_elsewhere(st, res);
    res.freed_bytes = 0;
    res.freed = 0;
}

/// Adds one CPU's counters to an exact reading in progress (start from the base statistics;
/// every slot held).
pub fn exact(reading: &mut TypeStats, local: &LocalLedger, key: u32) {
    if local.key != key {
        return;
    }
    reading.memuse = reading.memuse.wrapping_add(local.memuse);
    reading.inuse = reading.inuse.wrapping_add(local.inuse);
    reading.calls += local.calls;
    reading.sizemask |= classes_sizemask(local.classes);
}

mod verdict;
pub use verdict::{charge_verdict, Charged, Payer, ReserveAccount};

#[cfg(test)]
mod model;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::malloc::TypeStats;

    fn stats(limit: usize) -> TypeStats {
        TypeStats {
            maxused: limit,
            ..TypeStats::new("t", "test", limit)
        }
    }

    #[test]
    fn the_revoked_word_refuses_every_exchange_at_the_edges() {
        let c = Credit::new();
        assert_eq!(c.get(), 0);
        assert!(!c.try_take(1), "no credit");
        assert!(c.try_give(CREDIT_MAX, CREDIT_MAX), "up to the largest cap");
        assert!(!c.try_give(1, CREDIT_MAX), "past the cap");
        assert!(c.try_take(CREDIT_MAX), "the largest charge");
        assert_eq!(c.get(), 0);
        assert!(c.try_give(64, 64));
        assert_eq!(c.revoke(), 64);
        assert!(c.is_revoked());
        assert_eq!(c.get(), 0, "a revoked word counts as 0");
        assert_eq!(c.revoke(), 0, "nothing left to take");
        for charge in [0, 1, 64, CREDIT_MAX / 2, CREDIT_MAX] {
            assert!(!c.try_take(charge), "take {charge} of a revoked word");
            assert!(
                !c.try_give(charge, CREDIT_MAX),
                "give {charge} to a revoked word"
            );
            assert!(!c.try_return(charge), "return {charge} to a revoked word");
            assert!(c.is_revoked(), "a refused exchange changes nothing");
        }
        // A grant makes it a plain credit again.
        let st = stats(1 << 20);
        let mut res = Reserve::default();
        let mut l = LocalLedger::default();
        assert!(grant(&st, &mut res, &mut l, &c, 7, 64, 256, 1024));
        assert_eq!((c.get(), res.reserved), (256, 256));
        assert!(l.try_charge(&c, 7, 64));
        assert_eq!(res.reserved, l.memuse + c.get());
    }

    #[test]
    fn the_key_is_the_client_structs_handle_field_and_never_0() {
        use crate::malloc::{ClientTable, MAX_TYPES};
        for index in [0u32, 1, MAX_TYPES as u32 - 1] {
            for generation in [0u32, 1, 0x7fff, 0xffff] {
                let ty = MallocType::from_raw(generation << 16 | index);
                assert_eq!(key(ty), ClientTable::handle_value(ty));
                assert_ne!(key(ty), 0, "{ty:?}");
            }
        }
        // Another generation of the same slot is another key: the key test refuses it.
        assert_ne!(
            key(MallocType::from_raw(0x0001_0005)),
            key(MallocType::from_raw(0x0002_0005))
        );
    }

    #[test]
    fn a_charge_taken_back_after_a_revocation_leaves_the_reserve() {
        let st = stats(1 << 20);
        let mut res = Reserve::default();
        let mut l = LocalLedger::default();
        let c = Credit::new();
        assert!(grant(&st, &mut res, &mut l, &c, 7, 64, 256, 1024));
        let before = l;
        assert!(l.try_charge(&c, 7, 64));
        assert!(l.undo_charge(&c, 64), "not revoked: back to credit");
        assert_eq!((l, c.get()), (before, 256));
        assert!(l.try_charge(&c, 7, 64));
        revoke(&mut res, &c);
        assert_eq!(res.reserved, 64, "R = U: the charge in flight is usage");
        assert!(!l.undo_charge(&c, 64), "revoked meanwhile");
        unreserve(&mut res, 64);
        assert_eq!((res.reserved, l.memuse, l.inuse, l.calls), (0, 0, 0, 0));
    }

    #[test]
    fn a_wrong_key_or_uncovered_free_changes_nothing() {
        let st = stats(1 << 20);
        let mut res = Reserve::default();
        let mut l = LocalLedger::default();
        let c = Credit::new();
        assert!(grant(&st, &mut res, &mut l, &c, 0x8001, 64, 256, 1024));
        assert!(l.try_charge(&c, 0x8001, 64));
        let (before, credit) = (l, c.get());
        assert!(!l.try_uncharge(&c, 0x8002, 64, false));
        assert!(!l.try_charge(&c, 0x8002, 64));
        assert!(
            !l.try_uncharge(&c, 0x8001, 128, false),
            "more than this CPU charged"
        );
        assert_eq!((l, c.get()), (before, credit));
        assert!(l.try_uncharge(&c, 0x8001, 64, false));
        assert_eq!((l.memuse, l.inuse, c.get()), (0, 0, 256));
    }

    #[test]
    fn base_charges_use_the_headroom_then_the_exact_limit() {
        let mut st = stats(1000);
        st.maxused = 0;
        let mut res = Reserve::default();
        let c = Credit::new();
        let mut l = LocalLedger::default();
        // No high water yet: no headroom, the exact charge records it.
        assert!(!charge_base(&mut st, &mut res, 100));
        assert!(charge_base_exact(&mut st, &mut res, 100));
        assert_eq!((st.memuse, st.maxused, res.reserved), (100, 100, 100));
        assert!(uncharge_base(&mut st, &mut res, 100));
        // Below the high water, the headroom serves it without a revocation.
        assert!(charge_base(&mut st, &mut res, 60));
        assert!(!charge_base(&mut st, &mut res, 60), "past the high water");
        // A CPU's credit counts in R: the exact charge only after it is revoked.
        assert!(charge_exact(&mut st, &mut res, &mut l, 7, 900));
        assert!(l.undo_charge(&c, 900), "taken back into credit");
        assert_eq!((res.reserved, c.get()), (960, 900));
        assert!(
            !charge_base_exact(&mut st, &mut res, 100),
            "R = 960: over the limit"
        );
        revoke(&mut res, &c);
        assert!(charge_base_exact(&mut st, &mut res, 100));
        assert!(!charge_base_exact(&mut st, &mut res, 841), "one byte over");
        assert!(charge_base_exact(&mut st, &mut res, 840));
        assert_eq!((st.memuse, st.maxused, res.reserved), (1000, 1000, 1000));
    }

    #[test]
    fn grant_terms_cover_a_class_bounded_per_cpu() {
        assert_eq!(
            grant_terms(16),
            (16 * 1024, 64 * 1024),
            "small: 16 KiB steps"
        );
        assert_eq!(grant_terms(256), (16 * 1024, 64 * 1024));
        assert_eq!(grant_terms(512), (32 * 1024, 128 * 1024), "64 objects");
        assert_eq!(grant_terms(1024), (64 * 1024, 256 * 1024));
        assert_eq!(grant_terms(2048), (64 * 1024, 256 * 1024), "at most 64 KiB");
        assert_eq!(grant_terms(64 * 1024), (64 * 1024, 256 * 1024));
        assert_eq!(
            grant_terms(1 << 20),
            (1 << 20, 4 << 20),
            "never below the charge"
        );
        assert_eq!(grant_terms(CREDIT_MAX), (CREDIT_MAX, CREDIT_MAX));
        for charge in 1..=64 * 1024 {
            let (step, cap) = grant_terms(charge);
            assert!(
                step >= charge && cap <= 256 * 1024,
                "{charge}: {step}, {cap}"
            );
        }
    }

    #[test]
    fn a_free_past_the_cap_gives_back_half_the_cap_so_the_next_frees_are_fast() {
        let st = stats(1 << 20);
        let mut res = Reserve::default();
        let mut l = LocalLedger::default();
        let c = Credit::new();
        let key = 7;
        let (charge, batch) = (2048, 16 * 1024);
        // 256 objects of 2 KiB live, charged in grants of `batch`.
        for _ in 0..256 {
            if !l.try_charge(&c, key, charge) {
                assert!(grant(
                    &st,
                    &mut res,
                    &mut l,
                    &c,
                    key,
                    charge,
                    batch,
                    4 * batch
                ));
                assert!(l.try_charge(&c, key, charge));
            }
        }
        let mut slow = 0;
        for _ in 0..256 {
            if !l.try_uncharge(&c, key, charge, false) {
                assert!(uncharge_local(&mut res, &mut l, &c, key, charge, false));
                assert_eq!(c.get(), l.cap / 2);
                slow += 1;
            }
            assert_eq!(
                res.reserved,
                l.memuse + c.get(),
                "R = U + C after every free"
            );
        }
        assert_eq!((l.memuse, l.inuse), (0, 0));
        // Once past the cap (64 KiB), one free in 16 (32 KiB) takes the lock, not every one.
        assert!(slow <= 256 / 16, "{slow} frees under the lock");
        assert!(c.get() <= l.cap);
    }

    #[test]
    fn a_free_elsewhere_is_taken_off_readings_and_folds() {
        let st0 = stats(1 << 20);
        let mut st = st0;
        let mut res = Reserve::default();
        let mut l = LocalLedger::default();
        let c = Credit::new();
        assert!(grant(&st, &mut res, &mut l, &c, 7, 64, 256, 1024));
        assert!(l.try_charge(&c, 7, 64));
        assert!(l.try_charge(&c, 7, 64));
        // One of the two, freed by a fall-back: no counter of this CPU is touched.
        uncharge_elsewhere(&mut res, 64);
        assert_eq!(res.reserved, l.memuse - 64 + c.get(), "R = U + C");
        let mut reading = st;
        exact(&mut reading, &l, 7);
        exact_elsewhere(&mut reading, &res);
        assert_eq!((reading.memuse, reading.inuse, reading.calls), (64, 1, 2));
        revoke(&mut res, &c);
        fold(&mut st, &mut l, &c, 7);
        fold_elsewhere(&mut st, &mut res);
        assert_eq!((st.memuse, st.inuse, st.calls), (64, 1, 2));
        assert_eq!((res.reserved, res.freed_bytes, res.freed), (64, 0, 0));
        // A base charge taken back leaves nothing.
        let high = st.maxused;
        assert!(charge_base(&mut st, &mut res, 64));
        undo_charge_base(&mut st, &mut res, 64, high);
        assert_eq!(
            (st.memuse, st.inuse, st.calls, res.reserved),
            (64, 1, 2, 64)
        );
        assert_eq!(st.maxused, st0.maxused);
    }

    #[test]
    fn an_owned_free_elsewhere_takes_that_cpus_counters_below_zero_and_the_sum_stays_exact() {
        let mut st = stats(1 << 20);
        let mut res = Reserve::default();
        let (mut a, mut b) = (LocalLedger::default(), LocalLedger::default());
        let (ca, cb) = (Credit::new(), Credit::new());
        assert!(grant(&st, &mut res, &mut a, &ca, 7, 64, 256, 1024));
        assert!(a.try_charge(&ca, 7, 64));
        assert!(a.try_charge(&ca, 7, 64));
        // B never charged the type: not covered, unless owned.
        assert!(!b.try_uncharge(&cb, 7, 64, false));
        assert!(!uncharge_local(&mut res, &mut b, &cb, 7, 64, false));
        assert!(uncharge_local(&mut res, &mut b, &cb, 7, 64, true));
        assert!(grant(&st, &mut res, &mut b, &cb, 7, 0, 0, 1024));
        assert!(b.try_uncharge(&cb, 7, 64, true), "fast, into B's credit");
        assert_eq!((b.memuse as isize, b.inuse as isize), (-128, -2));
        assert!(
            !b.try_uncharge(&cb, 7, 64, false),
            "negative counters cover nothing"
        );
        let mut reading = st;
        exact(&mut reading, &a, 7);
        exact(&mut reading, &b, 7);
        assert_eq!((reading.memuse, reading.inuse, reading.calls), (0, 0, 2));
        assert_eq!(res.reserved, ca.get() + cb.get(), "R = U + C with U = 0");
        revoke(&mut res, &ca);
        revoke(&mut res, &cb);
        fold(&mut st, &mut b, &cb, 7);
        fold(&mut st, &mut a, &ca, 7);
        assert_eq!((st.memuse, st.inuse, st.calls, res.reserved), (0, 0, 2, 0));
    }

    #[test]
    fn a_free_after_a_revocation_gives_its_bytes_to_the_pool() {
        let st = stats(1 << 20);
        let mut res = Reserve::default();
        let mut l = LocalLedger::default();
        let c = Credit::new();
        assert!(grant(&st, &mut res, &mut l, &c, 7, 64, 256, 1024));
        assert!(l.try_charge(&c, 7, 64));
        revoke(&mut res, &c);
        assert!(
            !l.try_uncharge(&c, 7, 64, false),
            "the cap is left, the word refuses"
        );
        assert!(uncharge_local(&mut res, &mut l, &c, 7, 64, false));
        assert!(c.is_revoked(), "no credit made out of a revoked word");
        assert_eq!((res.reserved, l.memuse), (0, 0));
    }

    #[test]
    fn the_classes_noted_read_as_the_size_bits_of_the_core() {
        use crate::malloc::{class_sizebit, MAX_CLASSES};
        // Every class alone, and a few mixes of size classes and page runs: an exact reading
        // and a fold give the size bits `class_sizebit` gives them, as the core records them.
        let mut sets: Vec<Vec<usize>> = (0..NCLASSES).map(|c| vec![c]).collect();
        sets.push(vec![0, 5, MAX_CLASSES - 1]);
        sets.push(vec![3, MAX_CLASSES, NCLASSES - 1]);
        sets.push((0..NCLASSES).collect());
        for set in sets {
            let mut l = LocalLedger {
                key: 7,
                ..LocalLedger::default()
            };
            set.iter().for_each(|&c| l.note_class(c));
            let want = set.iter().fold(0u64, |m, &c| m | 1 << class_sizebit(c));
            let mut reading = stats(1 << 20);
            exact(&mut reading, &l, 7);
            assert_eq!(reading.sizemask, want, "classes {set:?}");
            let mut st = stats(1 << 20);
            fold(&mut st, &mut l, &Credit::new(), 7);
            assert_eq!(st.sizemask, want, "classes {set:?} folded");
        }
    }
}
