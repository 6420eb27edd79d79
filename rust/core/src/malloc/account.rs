// SPDX-License-Identifier: GPL-2.0

//! Where the core checks a type's limit and counts its usage: an [`Account`].
//!
//! A malloc core alone keeps each type's usage in its statistics ([`TypeStats`]): the limit
//! and the high water are decided on `memuse` ([`Own`], what [`Malloc::malloc`],
//! [`Malloc::free`] and [`Malloc::realloc`] use). Behind a per-CPU layer the statistics are only
//! the *base* of the usage (each CPU counts its own charges), so the caller gives the core an
//! account of its own ([`Malloc::malloc_in`], [`Malloc::free_in`], [`Malloc::realloc_in`]): the
//! kernel heap's is the type's reserve `R` of the magazine layer's ledger, the exact usage once
//! every CPU's credit is revoked (`magazine::ledger::ReserveAccount`), so that the core's own
//! charges (runs over 64 KiB, `DIAGNOSTIC`) need no per-CPU counter folded first.
//!
//! [`Malloc::malloc`]: super::Malloc::malloc
//! [`Malloc::free`]: super::Malloc::free
//! [`Malloc::realloc`]: super::Malloc::realloc
//! [`Malloc::malloc_in`]: super::Malloc::malloc_in
//! [`Malloc::free_in`]: super::Malloc::free_in
//! [`Malloc::realloc_in`]: super::Malloc::realloc_in

use super::{MallocError, MallocFlags, MallocType, TypeStats};

/// What [`Account::charge`] answers: charged, or the limit's refusal.
pub type Verdict = Result<(), MallocError>;

/// A type's usage as the core's own charges see it (the core's lock held).
pub trait Account {
    /// Checks the limit for a charge of `n` bytes of `ty` (statistics `st`; flags `f`) and counts it:
    /// `memuse`, `inuse` and `calls` (in the statistics' base) and the high water `maxused`,
    /// exactly. At the limit: `limblocks` counted, nothing else, and the answer is
    /// [`MallocError::at_limit`]'s.
    fn charge(&mut self, st: &mut TypeStats, ty: MallocType, n: usize, f: MallocFlags) -> Verdict;

    /// Takes back a charge whose allocation then failed, under the same hold of the core's lock
    /// as the charge, restoring the high water to `high`, what it was before the charge
    /// ([`TypeStats::take_back`]).
    fn undo(&mut self, st: &mut TypeStats, charge: usize, high: usize);

    /// Whether the type's exact usage holds at least one allocation of `charge` bytes: the check
    /// of a free or resize of an allocation whose record names no owner (a shared class).
    fn covers(&mut self, st: &TypeStats, charge: usize) -> bool;

    /// Uncharges a free of `charge` bytes that [`Account::covers`] or the owner allowed.
    fn uncharge(&mut self, st: &mut TypeStats, charge: usize);
}

/// The core's own account: the statistics are the usage.
pub struct Own;

impl Account for Own {
    fn charge(&mut self, st: &mut TypeStats, ty: MallocType, n: usize, f: MallocFlags) -> Verdict {
        match st.memuse.checked_add(n) {
            Some(total) if total <= st.limit => {
                st.memuse = total;
                st.inuse += 1;
                st.calls += 1;
                st.maxused = st.maxused.max(total);
                Ok(())
            }
            _ => {
                st.limblocks += 1;
                Err(MallocError::at_limit(ty, n, st.limit, f))
            }
        }
    }

    fn undo(&mut self, st: &mut TypeStats, charge: usize, high: usize) {
        st.take_back(charge, high);
    }

    fn covers(&mut self, st: &TypeStats, charge: usize) -> bool {
        st.inuse > 0 && st.memuse >= charge
    }

    fn uncharge(&mut self, st: &mut TypeStats, charge: usize) {
        st.inuse -= 1;
        st.memuse -= charge;
    }
}
