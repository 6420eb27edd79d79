// SPDX-License-Identifier: GPL-2.0

//! The limit verdict of a charge that the fast path did not make, in one place: every path that
//! charges a type under the heap lock (this CPU's slow path, the interrupt fall-back, the core's
//! own charges: runs over 64 KiB and `DIAGNOSTIC`) asks [`charge_verdict`].

use super::{
    charge_base, charge_base_exact, charge_exact, grant, revoke, uncharge_base, uncharge_elsewhere,
    undo_charge_base, Credit, LocalLedger, Reserve,
};
use crate::malloc::{Account, MallocError, MallocFlags, MallocType, TypeStats, Verdict};

/// Who a charge decided under the heap lock is counted on.
pub enum Payer<'a> {
    /// This CPU's ledger (its slot held) with its credit word: served out of a grant of credit
    /// on the terms `batch` and `cap` ([`grant`], usually [`grant_terms`](super::grant_terms)),
    /// else charged exactly ([`charge_exact`]).
    Cpu {
        /// This CPU's ledger of the type.
        local: &'a mut LocalLedger,
        /// This CPU's credit word of the type.
        credit: &'a Credit,
        /// The type's slot key ([`key`](super::key)).
        key: u32,
        /// The least credit a grant gives.
        batch: usize,
        /// The most credit this CPU's frees may build up.
        cap: usize,
    },
    /// The type's base statistics: a call that holds no slot (the core's own charges, the
    /// interrupt fall-back), charged out of the headroom ([`charge_base`]), else exactly
    /// ([`charge_base_exact`]).
    Base,
}

/// Which step of [`charge_verdict`] made a charge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charged {
    /// Out of the headroom `min(limit, HighUse) - R`, no credit revoked.
    FromHeadroom,
    /// Every credit revoked, against the limit on the exact usage.
    Exactly,
}

/// Heap lock held, any context: the limit verdict of a charge of `charge` bytes of `ty` (its
/// statistics `st`, its reserve `res`) that `payer` makes:
///
/// 1. out of the headroom `min(limit, HighUse) - R` if it covers the charge, revoking nothing:
///    a grant of credit that the charge then spends, or a charge of the base;
/// 2. else every CPU's credit word of the type (`credits`: the core knows no CPUs, the caller
///    lists them; the payer's own word among them) is revoked by an exchange, without any
///    slot ([`revoke`]), so that `R` is the exact usage, and the charge is checked against the
///    limit on `R`, recording the exact new `HighUse`;
/// 3. else the limit refuses: `limblocks` is counted and the answer is
///    [`MallocError::at_limit`]'s (`WouldBlock { Limit }` for a `WAITOK` call, which sleeps and
///    asks again).
///
/// On `Ok` the charge is counted on the payer and in `R`, and the answer says which step made
/// it; on `Err` nothing but the revocations and `limblocks` changed.
pub fn charge_verdict<'c>(
    st: &mut TypeStats,
    res: &mut Reserve,
    payer: Payer<'_>,
    charge: usize,
    credits: impl IntoIterator<Item = &'c Credit>,
    ty: MallocType,
    flags: MallocFlags,
) -> Result<Charged, MallocError> {
    let charged = match payer {
        Payer::Cpu {
            local,
            credit,
            key,
            batch,
            cap,
        } => {
            if grant(st, res, local, credit, key, charge, batch, cap)
                && local.try_charge(credit, key, charge)
            {
                return Ok(Charged::FromHeadroom);
            }
            revoke_each(res, credits);
            charge_exact(st, res, local, key, charge)
        }
        Payer::Base => {
            if charge_base(st, res, charge) {
                return Ok(Charged::FromHeadroom);
            }
            revoke_each(res, credits);
            charge_base_exact(st, res, charge)
        }
    };
    if charged {
        return Ok(Charged::Exactly);
    }
    st.limblocks += 1;
    Err(MallocError::at_limit(ty, charge, st.limit, flags))
}

/// Revokes each of `credits` into `res` (heap lock held): `R` is then the exact usage.
fn revoke_each<'c>(res: &mut Reserve, credits: impl IntoIterator<Item = &'c Credit>) {
    for c in credits {
        revoke(res, c);
    }
}

/// The account of a type's usage that the kernel heap gives the malloc core for the core's own
/// charges (runs over 64 KiB, `DIAGNOSTIC`, bad input; [`Account`]): the type's reserve `R`
/// (heap lock held), over every CPU's credit word of the type (`credits`; the core knows no
/// CPUs). No slot is needed:
///
/// * a charge is [`charge_verdict`]'s with the base as the payer: out of the headroom, else on
///   `R` after every credit is revoked (`R` is then the exact usage), recording the exact
///   `HighUse`; the counters go to the base;
/// * a free leaves `R` at once, and the base if it covers it (it does for every run and for
///   every allocation under `DIAGNOSTIC`, which the core charged there), else it is counted as
///   freed elsewhere ([`uncharge_elsewhere`]: readers and folds take it off);
/// * a free of an allocation whose record names no owner is checked against the exact usage:
///   every credit revoked, `R >= charge`.
pub struct ReserveAccount<'a, I> {
    /// The type's reserve.
    pub res: &'a mut Reserve,
    /// Every CPU's credit word of the type.
    pub credits: I,
}

impl<'c, I: Iterator<Item = &'c Credit> + Clone> Account for ReserveAccount<'_, I> {
    fn charge(&mut self, st: &mut TypeStats, ty: MallocType, n: usize, f: MallocFlags) -> Verdict {
        let credits = self.credits.clone();
        charge_verdict(st, self.res, Payer::Base, n, credits, ty, f).map(|_| ())
    }

    fn undo(&mut self, st: &mut TypeStats, charge: usize, high: usize) {
        undo_charge_base(st, self.res, charge, high);
    }

    fn covers(&mut self, _st: &TypeStats, charge: usize) -> bool {
        revoke_each(self.res, self.credits.clone());
        self.res.reserved >= charge
    }

    fn uncharge(&mut self, st: &mut TypeStats, charge: usize) {
        if !uncharge_base(st, self.res, charge) {
            uncharge_elsewhere(self.res, charge);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::grant_terms;
    use super::*;
    use crate::malloc::BlockReason;

    const KEY: u32 = 0x8001;

    fn ty() -> MallocType {
        MallocType::from_raw(1)
    }

    fn cpu<'a>(l: &'a mut LocalLedger, c: &'a Credit, charge: usize) -> Payer<'a> {
        let (batch, cap) = grant_terms(charge);
        Payer::Cpu {
            local: l,
            credit: c,
            key: KEY,
            batch,
            cap,
        }
    }

    /// [`charge_verdict`] of type [`ty`] over the words `credits`.
    fn v(
        st: &mut TypeStats,
        res: &mut Reserve,
        payer: Payer<'_>,
        charge: usize,
        credits: &[&Credit],
        flags: MallocFlags,
    ) -> Result<Charged, MallocError> {
        charge_verdict(st, res, payer, charge, credits.iter().copied(), ty(), flags)
    }

    /// A `NOWAIT` charge of `charge` bytes with the ledger `l` (word `c`) as the payer, on the
    /// grant terms of the kernel heap.
    fn by_cpu(
        st: &mut TypeStats,
        res: &mut Reserve,
        l: &mut LocalLedger,
        c: &Credit,
        charge: usize,
        words: &[&Credit],
    ) -> Result<Charged, MallocError> {
        v(
            st,
            res,
            cpu(l, c, charge),
            charge,
            words,
            MallocFlags::NOWAIT,
        )
    }

    #[test]
    fn the_headroom_serves_a_charge_without_revoking_anybody() {
        let mut st = TypeStats::new("t", "", 1 << 20);
        st.maxused = 1 << 20;
        let mut res = Reserve::default();
        let (mut a, mut b) = (LocalLedger::default(), LocalLedger::default());
        let (ca, cb) = (Credit::new(), Credit::new());
        let words = [&ca, &cb];
        let nowait = MallocFlags::NOWAIT;
        by_cpu(&mut st, &mut res, &mut b, &cb, 64, &words).unwrap();
        let b_credit = cb.get();
        assert!(b_credit > 0, "a grant");
        by_cpu(&mut st, &mut res, &mut a, &ca, 64, &words).unwrap();
        v(&mut st, &mut res, Payer::Base, 4096, &words, nowait).unwrap();
        assert_eq!(cb.get(), b_credit, "B's credit untouched");
        assert!(!ca.is_revoked() && !cb.is_revoked());
        assert_eq!((a.memuse, b.memuse, st.memuse), (64, 64, 4096));
        assert_eq!(res.reserved, 128 + 4096 + ca.get() + cb.get(), "R = U + C");
        assert_eq!(st.limblocks, 0);
    }

    #[test]
    fn past_the_headroom_every_word_is_revoked_and_the_limit_is_checked_on_the_exact_usage() {
        let mut st = TypeStats::new("t", "", 1000);
        let mut res = Reserve::default();
        let (mut a, mut b) = (LocalLedger::default(), LocalLedger::default());
        let (ca, cb) = (Credit::new(), Credit::new());
        let words = [&ca, &cb];
        let nowait = MallocFlags::NOWAIT;
        // No high water yet: no headroom, so the first charge is exact and sets it.
        v(&mut st, &mut res, Payer::Base, 600, &words, nowait).unwrap();
        assert_eq!((st.maxused, res.reserved), (600, 600));
        assert!(super::super::uncharge_base(&mut st, &mut res, 600));
        // A is granted the whole headroom (600) and spends 100 of it.
        by_cpu(&mut st, &mut res, &mut a, &ca, 100, &words).unwrap();
        assert_eq!(
            (res.reserved, ca.get(), a.memuse),
            (600, 500, 100),
            "R = U + C"
        );
        // B's charge of 300 does not fit the headroom (min(limit, HighUse) - R = 0): every word
        // is revoked (R = U = 100), and the exact charge leaves HighUse at 600.
        by_cpu(&mut st, &mut res, &mut b, &cb, 300, &words).unwrap();
        assert!(ca.is_revoked() && cb.is_revoked());
        assert_eq!((res.reserved, st.maxused, b.memuse), (400, 600, 300));
        // The base's charge of 700 passes the limit on the exact usage: refused, counted.
        let before = (st.memuse, st.inuse, st.calls, st.maxused, res.reserved);
        assert_eq!(
            v(&mut st, &mut res, Payer::Base, 700, &words, nowait),
            Err(MallocError::Limit {
                ty: ty(),
                charge: 700
            })
        );
        assert_eq!(
            (st.memuse, st.inuse, st.calls, st.maxused, res.reserved),
            before
        );
        assert_eq!(st.limblocks, 1);
        // 600 fits exactly: the limit is reached, HighUse recorded.
        v(&mut st, &mut res, Payer::Base, 600, &words, nowait).unwrap();
        assert_eq!((res.reserved, st.maxused, st.memuse), (1000, 1000, 600));
    }

    #[test]
    fn the_fallbacks_charge_taken_back_restores_the_high_water_and_keeps_the_invariant() {
        let mut st = TypeStats::new("t", "", 1000);
        let mut res = Reserve::default();
        let (mut a, ca) = (LocalLedger::default(), Credit::new());
        let words = [&ca];
        let nowait = MallocFlags::NOWAIT;
        v(&mut st, &mut res, Payer::Base, 300, &words, nowait).unwrap();
        assert!(super::super::uncharge_base(&mut st, &mut res, 300));
        // A holds credit out of the headroom min(limit, HighUse) - R = 300.
        by_cpu(&mut st, &mut res, &mut a, &ca, 100, &words).unwrap();
        assert_eq!((res.reserved, ca.get(), st.maxused), (300, 200, 300));
        // The fall-back's 400 passes the headroom: A's word revoked, charged exactly, HighUse
        // raised to 500; then no object could be had, under the same hold of the heap lock.
        let before = (st.memuse, st.inuse, st.calls, st.maxused);
        let high = st.maxused;
        assert_eq!(
            v(&mut st, &mut res, Payer::Base, 400, &words, nowait),
            Ok(Charged::Exactly)
        );
        assert_eq!((st.maxused, res.reserved), (500, 500));
        undo_charge_base(&mut st, &mut res, 400, high);
        assert_eq!(
            (st.memuse, st.inuse, st.calls, st.maxused),
            before,
            "no high water that no allocation reached"
        );
        // R is the exact usage (A's 100), no credit out: C == 0 or R <= min(limit, HighUse).
        assert_eq!((res.reserved, ca.get()), (100, 0));
        // A grant after it is out of the restored headroom only: 300 - 100.
        let (mut b, cb) = (LocalLedger::default(), Credit::new());
        by_cpu(&mut st, &mut res, &mut b, &cb, 64, &[&ca, &cb]).unwrap();
        assert!(res.reserved <= st.limit.min(st.maxused));
        assert_eq!(st.maxused, 300);
    }

    #[test]
    fn a_refusal_answers_by_the_flags() {
        let mut st = TypeStats::new("t", "", 100);
        let mut res = Reserve::default();
        let mut l = LocalLedger::default();
        let c = Credit::new();
        let waitok = MallocFlags::WAITOK;
        v(&mut st, &mut res, cpu(&mut l, &c, 64), 64, &[&c], waitok).unwrap();
        assert_eq!(
            v(&mut st, &mut res, cpu(&mut l, &c, 64), 64, &[&c], waitok),
            Err(MallocError::WouldBlock {
                ty: ty(),
                reason: BlockReason::Limit
            }),
            "WAITOK at the limit sleeps"
        );
        assert_eq!(
            v(&mut st, &mut res, Payer::Base, 128, &[&c], waitok),
            Err(MallocError::Limit {
                ty: ty(),
                charge: 128
            }),
            "above the limit itself: waiting could never help"
        );
        assert_eq!(
            v(
                &mut st,
                &mut res,
                Payer::Base,
                64,
                &[&c],
                MallocFlags::NOWAIT
            ),
            Err(MallocError::Limit {
                ty: ty(),
                charge: 64
            })
        );
        assert_eq!((st.limblocks, l.memuse, res.reserved), (3, 64, 64));
    }
}
