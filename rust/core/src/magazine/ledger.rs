// SPDX-License-Identifier: GPL-2.0

//! Exact per-type accounting without shared writes on the fast path: per-CPU counters and
//! per-CPU *credits*.
//!
//! Each CPU keeps, per type, a [`LocalLedger`]: the bytes and allocations it charged (minus those
//! it uncharged) and a *credit*, bytes it may still charge on its own. Only its owner writes it on
//! the fast path; everything else happens under the heap lock with the owner's slot lock (one CPU)
//! or every slot lock (all CPUs) held, as each function says.
//!
//! # Why limits and HighUse stay exact
//!
//! Let `U` be the type's exact usage (the base in [`TypeStats`] plus every CPU's `memuse`) and
//! `C` the credits held by all CPUs. The type's [`Reserve`] holds `R = U + C` exactly: the fast
//! paths move bytes between `memuse` and `credit` of one CPU and leave `R` alone; everything that
//! changes `R` runs under the heap lock. The invariant is
//!
//! > `C == 0`, or `R <= min(limit, HighUse)`,
//!
//! because credit is only ever *granted* ([`grant`]) out of `min(limit, HighUse) - R`.
//!
//! * A fast charge spends credit: `U` grows but stays `<= R <= min(limit, HighUse)`. So it can
//!   neither pass the limit nor raise the high water, and skipping both checks is exact.
//! * A charge the credit does not cover first tries a grant. If the headroom is too small, every
//!   CPU's credit is revoked ([`revoke`], all slots held): now `R == U` exactly, the limit is
//!   checked against the true usage, and a charge that raises the high water records the exact
//!   new `HighUse` ([`charge_exact`]).
//! * A fast free turns usage back into credit (`R` unchanged) up to a cap; beyond it the bytes go
//!   back to the pool under the lock ([`uncharge_local`]), with the credit above half the cap, so
//!   that a batch of frees takes the lock once per `cap / 2` bytes, not once per free.
//!
//! Readers take every slot lock and sum ([`exact`]): the counters are exact when read. Steady
//! churn below the high water never leaves the CPU.
//!
//! Frees stay checked as before: a CPU's `memuse`/`inuse` never go negative, so a free its own
//! counters cover is covered by the type's; a free they do not cover (an object allocated on
//! another CPU) gathers every CPU's usage into this one ([`gather`]) and is refused
//! (`WrongType`) only if the type's exact total cannot cover it.

use crate::malloc::{MallocType, TypeStats};

/// One CPU's share of one type's accounting.
///
/// # Invariants
///
/// `key == 0` implies every counter is zero. Only the owning CPU changes it outside a section
/// that holds its slot lock from another CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalLedger {
    /// The type this slot counts for ([`key`]), 0 if unused.
    pub key: u32,
    /// Bytes this CPU may still charge without asking.
    pub credit: usize,
    /// Most credit fast frees may build up here: set by a grant, 0 once revoked (then frees give
    /// their bytes back to the pool under the lock, which keeps the invariant when a limit was
    /// lowered below the usage).
    pub cap: usize,
    /// Bytes charged here and not uncharged here.
    pub memuse: usize,
    /// Allocations charged here and not uncharged here.
    pub inuse: usize,
    /// Allocations charged here ever.
    pub calls: u64,
    /// Size classes used here (as [`TypeStats::sizemask`]).
    pub sizemask: u64,
}

/// The slot key of a type handle: never 0 (bit 15 is above every type index).
pub const fn key(ty: MallocType) -> u32 {
    ty.to_raw() | 0x8000
}

impl LocalLedger {
    /// Fast charge out of this CPU's credit; `false` if it does not cover `charge`. The caller
    /// records the size class with [`LocalLedger::note_size`] once the object is in hand, or
    /// takes the charge back with [`LocalLedger::undo_charge`].
    #[inline(always)]
    pub fn try_charge(&mut self, key: u32, charge: usize) -> bool {
        if self.key != key || self.credit < charge {
            return false;
        }
        // The fast path's arithmetic, without overflow checks (issue 8: each is a compare and a
        // branch on every allocation), because none can overflow: this CPU's `memuse + credit`
        // is part of `R` (module documentation), a `usize`, and `charge <= credit`, so the new
        // `memuse` is at most the old `memuse + credit`; `inuse` counts charges of at least one
        // byte each, so it stays at most `memuse`; `calls` would need 2^64 allocations.
        self.credit -= charge;
        self.memuse = self.memuse.wrapping_add(charge);
        self.inuse = self.inuse.wrapping_add(1);
        self.calls = self.calls.wrapping_add(1);
        true
    }

    /// Records that size bit `sizebit` was used (after a successful charge).
    #[inline]
    pub fn note_size(&mut self, sizebit: u32) {
        self.sizemask |= 1 << sizebit;
    }

    /// Takes back a charge made here ([`LocalLedger::try_charge`] or [`charge_exact`]) whose
    /// allocation then failed. The bytes become credit: `R` is unchanged, and the invariant holds
    /// because the charge itself fitted below `min(limit, HighUse)`.
    #[inline(always)]
    pub fn undo_charge(&mut self, charge: usize) {
        self.memuse -= charge;
        self.inuse -= 1;
        self.calls -= 1;
        self.credit += charge;
    }

    /// Settles a charge made here once the allocation it paid for is known: with an object
    /// (`Some`), records its size class ([`LocalLedger::note_size`]); without, takes the charge
    /// back ([`LocalLedger::undo_charge`]). Returns `object`.
    #[inline(always)]
    pub fn settle(&mut self, object: Option<usize>, charge: usize, sizebit: u32) -> Option<usize> {
        match object {
            Some(_) => self.note_size(sizebit),
            None => self.undo_charge(charge),
        }
        object
    }

    /// Fast uncharge into this CPU's credit, as long as the credit stays within its cap;
    /// `false` if this CPU's counters do not cover the free or the cap would be passed.
    #[inline(always)]
    pub fn try_uncharge(&mut self, key: u32, charge: usize) -> bool {
        // `credit + charge` saturates instead of checking for overflow: a sum past `usize::MAX`
        // is past the cap too. The updates below cannot wrap: each was just compared.
        if self.key != key
            || self.memuse < charge
            || self.inuse == 0
            || self.credit.saturating_add(charge) > self.cap
        {
            return false;
        }
        self.memuse -= charge;
        self.inuse -= 1;
        self.credit = self.credit.wrapping_add(charge);
        true
    }

    /// Takes back an uncharge ([`LocalLedger::try_uncharge`]) whose free then did not happen
    /// here (no magazine had room): the counters are as they were before it.
    #[inline(always)]
    pub fn undo_uncharge(&mut self, charge: usize) {
        self.credit -= charge;
        self.memuse += charge;
        self.inuse += 1;
    }

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
        self.credit == 0 && self.memuse == 0 && self.inuse == 0 && self.calls == 0
    }
}

/// The global part of a type's accounting that the fast path does not touch: `R = U + C` (module
/// documentation), under the heap lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reserve {
    /// Exact usage plus every CPU's credit.
    pub reserved: usize,
}

/// Heap lock and this CPU's slot held: grants this CPU enough credit for `charge` (at least
/// `batch` if the headroom allows) out of `min(limit, HighUse) - R`, and lets its frees build up
/// to `cap` bytes of credit. `false` if the headroom is too small: revoke and [`charge_exact`].
pub fn grant(
    st: &TypeStats,
    res: &mut Reserve,
    local: &mut LocalLedger,
    key: u32,
    charge: usize,
    batch: usize,
    cap: usize,
) -> bool {
    local.claim(key);
    let need = charge.saturating_sub(local.credit);
    let headroom = st.limit.min(st.maxused).saturating_sub(res.reserved);
    if need > headroom {
        return false;
    }
    let g = need.max(batch).min(headroom);
    local.credit += g;
    local.cap = cap.max(local.credit);
    res.reserved += g;
    true
}

/// Heap lock and `local`'s slot held: takes back that CPU's credit.
pub fn revoke(res: &mut Reserve, local: &mut LocalLedger) {
    res.reserved -= local.credit;
    local.credit = 0;
    local.cap = 0;
}

/// Heap lock and every slot held, every credit revoked (so `R` is the exact usage): charges
/// `charge` bytes to this CPU, checking the limit against the true usage and recording the exact
/// high water. `false` at the limit (nothing changed).
pub fn charge_exact(
    st: &mut TypeStats,
    res: &mut Reserve,
    local: &mut LocalLedger,
    key: u32,
    charge: usize,
) -> bool {
    local.claim(key);
    debug_assert_eq!(local.credit, 0, "credits must be revoked first");
    match res.reserved.checked_add(charge) {
        Some(total) if total <= st.limit => {
            res.reserved = total;
            st.maxused = st.maxused.max(total);
            local.memuse += charge;
            local.inuse += 1;
            local.calls += 1;
            true
        }
        _ => false,
    }
}

/// Heap lock and this CPU's slot held: uncharges a free this CPU's counters cover and gives the
/// bytes (and the credit above half the slot's cap) back to the pool. `false` if they do not
/// cover it.
pub fn uncharge_local(res: &mut Reserve, local: &mut LocalLedger, key: u32, charge: usize) -> bool {
    if local.key != key || local.memuse < charge || local.inuse == 0 {
        return false;
    }
    local.memuse -= charge;
    local.inuse -= 1;
    res.reserved -= charge;
    // Hysteresis, as a magazine exchange trades a whole magazine rather than a round: the credit
    // goes down to half the cap, so that the next `cap / 2` bytes of frees are fast again. Trimmed
    // only to the cap, every free of a batch that outgrows it took this path under the heap lock
    // (Documentation/performance.rst: a batch of 256 2 KiB pairs cost 2.3 times one of 1 KiB).
    let keep = local.cap / 2;
    if local.credit > keep {
        res.reserved -= local.credit - keep;
        local.credit = keep;
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
    into.memuse += from.memuse;
    into.inuse += from.inuse;
    from.memuse = 0;
    from.inuse = 0;
}

/// Heap lock and every slot held: moves the usage in the type's base statistics (charged
/// without magazines, or folded there) to `into` as well, so that one counter holds the type's
/// whole usage before a free is judged against it.
pub fn gather_base(into: &mut LocalLedger, st: &mut TypeStats, key: u32) {
    into.claim(key);
    into.memuse += st.memuse;
    into.inuse += st.inuse;
    st.memuse = 0;
    st.inuse = 0;
}

/// Heap lock and every slot held, credits revoked: folds a CPU's counters into the type's base
/// statistics and frees the slot (type undefine, DIAGNOSTIC switch, unload).
pub fn fold(st: &mut TypeStats, local: &mut LocalLedger, key: u32) {
    if local.key == key {
        debug_assert_eq!(local.credit, 0, "credits must be revoked first");
        st.memuse += local.memuse;
        st.inuse += local.inuse;
        st.calls += local.calls;
        st.sizemask |= local.sizemask;
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

/// Adds one CPU's counters to an exact reading in progress (start from the base statistics;
/// every slot held).
pub fn exact(reading: &mut TypeStats, local: &LocalLedger, key: u32) {
    if local.key != key {
        return;
    }
    reading.memuse += local.memuse;
    reading.inuse += local.inuse;
    reading.calls += local.calls;
    reading.sizemask |= local.sizemask;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::malloc::TypeStats;

    fn stats(limit: usize) -> TypeStats {
        TypeStats {
            name: "t",
            description: "test",
            limit,
            inuse: 0,
            calls: 0,
            memuse: 0,
            maxused: limit,
            limblocks: 0,
            mapblocks: 0,
            sizemask: 0,
        }
    }

    #[test]
    fn undo_uncharge_restores_the_counters_of_before_the_uncharge() {
        let st = stats(1 << 20);
        let mut res = Reserve::default();
        let mut l = LocalLedger::default();
        assert!(grant(&st, &mut res, &mut l, 0x8001, 64, 256, 1024));
        assert!(l.try_charge(0x8001, 64));
        assert!(l.try_charge(0x8001, 64));
        let before = l;
        assert!(l.try_uncharge(0x8001, 64));
        assert_ne!(l, before);
        l.undo_uncharge(64);
        assert_eq!(l, before);
        // A wrong key changes nothing, so nothing needs undoing.
        assert!(!l.try_uncharge(0x8002, 64));
        assert_eq!(l, before);
    }

    #[test]
    fn settle_keeps_a_charge_with_an_object_and_takes_it_back_without() {
        let st = stats(1 << 20);
        let mut res = Reserve::default();
        let mut l = LocalLedger::default();
        assert!(grant(&st, &mut res, &mut l, 0x8001, 64, 256, 1024));
        let before = l;
        assert!(l.try_charge(0x8001, 64));
        assert_eq!(l.settle(None, 64, 3), None);
        assert_eq!(l, before);
        assert!(l.try_charge(0x8001, 64));
        assert_eq!(l.settle(Some(0x1000), 64, 3), Some(0x1000));
        assert_eq!((l.memuse, l.inuse, l.sizemask), (64, 1, 1 << 3));
        assert_eq!(l.credit + 64, before.credit);
    }

    #[test]
    fn a_free_past_the_cap_gives_back_half_the_cap_so_the_next_frees_are_fast() {
        let st = stats(1 << 20);
        let mut res = Reserve::default();
        let mut l = LocalLedger::default();
        let key = 7;
        let (charge, batch) = (2048, 16 * 1024);
        // 256 objects of 2 KiB live, charged in grants of `batch`.
        for _ in 0..256 {
            if !l.try_charge(key, charge) {
                assert!(grant(&st, &mut res, &mut l, key, charge, batch, 4 * batch));
                assert!(l.try_charge(key, charge));
            }
        }
        let mut slow = 0;
        for _ in 0..256 {
            if !l.try_uncharge(key, charge) {
                assert!(uncharge_local(&mut res, &mut l, key, charge));
                assert_eq!(l.credit, l.cap / 2);
                slow += 1;
            }
            assert_eq!(
                res.reserved,
                l.memuse + l.credit,
                "R = U + C after every free"
            );
        }
        assert_eq!((l.memuse, l.inuse), (0, 0));
        // Once past the cap (64 KiB), one free in 16 (32 KiB) takes the lock, not every one.
        assert!(slow <= 256 / 16, "{slow} frees under the lock");
        assert!(l.credit <= l.cap);
    }
}
