// SPDX-License-Identifier: GPL-2.0

//! The interrupt fall-back: a `malloc` or `free` that must not wait for this CPU's slot (the
//! caller is not in task context and the slot is held) and touches no slot at all
//! (`Documentation/performance.rst`, "The sound design").
//!
//! * `malloc`: the charge is made against the type's reserve under the heap lock, out of the
//!   headroom `min(limit, HighUse) - R` if it covers it (`ledger::charge_base`), else after
//!   every CPU's credit word was revoked by an exchange, against the exact usage, recording the
//!   high water (`ledger::charge_base_exact`); the request and the size class go to the type's
//!   base statistics; one object comes from the piece layer (`take_for_magazine` with a
//!   one-element array, as `serve` does when it has no magazine).
//! * `free`: only a piece whose page names its owner, the caller's type, at an object start,
//!   whose first word is neither a round mark nor a free-list link (the checks are then done:
//!   the type by the page, the double free by the first word); the bytes leave the reserve at once
//!   and are taken off the counters that charged them by readers and folds
//!   (`ledger::uncharge_elsewhere`); waiters are woken; the piece goes back to the piece layer.
//!   Any other free waits for the slot as before (`Heap::free_object`): its checks need every
//!   slot (the exact double-free search, the gathering of a cross-CPU usage).
//! * With `DIAGNOSTIC` on (the magazines off, every count folded into the core's), the core does
//!   the call under the heap lock, as the global path would.
//!
//! Each counts in [`Fallbacks`] (the `drain` debugfs file shows them).

use core::ptr::NonNull;

use kernel::{prelude::*, sync::atomic::Relaxed};

use crate::heap::Heap;
use crate::magazine::ledger;
use crate::magazines::{ledger_slot, limit_error};
use crate::malloc::{BlockReason, MallocError, MallocFlags, MallocType};

/// Calls served by the interrupt fall-back.
pub(crate) struct Fallbacks {
    /// Allocations.
    pub(crate) mallocs: kernel::sync::atomic::Atomic<usize>,
    /// Frees.
    pub(crate) frees: kernel::sync::atomic::Atomic<usize>,
}

impl Fallbacks {
    /// None yet.
    pub(crate) fn new() -> Self {
        Self {
            mallocs: kernel::sync::atomic::Atomic::new(0),
            frees: kernel::sync::atomic::Atomic::new(0),
        }
    }
}

impl Heap {
    /// The fall-back allocation of `size` bytes, an object of class `c`, charged to `ty` (see the
    /// module documentation); `flags` without `ZERO` (the caller zeroes). No slot is touched.
    #[cold]
    #[inline(never)]
    pub(crate) fn malloc_fallback(
        &self,
        size: usize,
        c: usize,
        ty: MallocType,
        flags: MallocFlags,
    ) -> Result<usize, MallocError> {
        let (_, t) = ledger_slot(ty).ok_or(MallocError::UnknownType)?;
        let (charge, bit) = self.front.cost(c);
        self.fallbacks.mallocs.fetch_add(1, Relaxed);
        self.with(|s| {
            if s.malloc.diagnostic() {
                // The magazines are off and every count is in the core's (folded at the switch):
                // the core does the call, as on the global path.
                let p = s.malloc.malloc(size, ty, flags)?;
                if let Ok(st) = s.malloc.type_stats(ty) {
                    s.reserves[t].reserved = st.memuse;
                }
                return Ok(p.as_ptr() as usize);
            }
            {
                let st = s.malloc.type_stats_mut(ty)?;
                let res = &mut s.reserves[t];
                if !ledger::charge_base(st, res, charge) {
                    self.revoke_all(res, t);
                    if !ledger::charge_base_exact(st, res, charge) {
                        st.limblocks += 1;
                        return Err(limit_error(ty, charge, st.limit, flags));
                    }
                }
                st.sizemask |= 1 << bit;
            }
            let mut one = [0usize];
            match s.malloc.take_for_magazine(c, ty, flags, &mut one) {
                Ok(_) => {
                    s.malloc.add_type_magazine_calls(c, ty, 1);
                    Ok(one[0])
                }
                Err(e) => {
                    let st = s.malloc.type_stats_mut(ty)?;
                    ledger::undo_charge_base(st, &mut s.reserves[t], charge);
                    Err(match e {
                        // Growing the page arena may sleep: not here.
                        MallocError::WouldBlock {
                            reason: BlockReason::Arena,
                            ..
                        } => MallocError::NoMemory { ty, size: charge },
                        e => e,
                    })
                }
            }
        })
    }

    /// The fall-back free of `addr`, an object start of class `c` whose page names type slot
    /// `t` (`ty`'s) as its owner and whose first word is neither a round mark nor a free-list
    /// link (the caller checked all of it). No slot is touched.
    #[cold]
    #[inline(never)]
    pub(crate) fn free_fallback(
        &self,
        addr: usize,
        c: usize,
        ty: MallocType,
        t: usize,
    ) -> Result<(), MallocError> {
        let (charge, _) = self.front.cost(c);
        self.fallbacks.frees.fetch_add(1, Relaxed);
        let mut h = self.state.lock();
        if h.malloc.diagnostic() {
            // As in `malloc_fallback`: the core frees it, with its own checks.
            let ptr = NonNull::new(addr as *mut u8).ok_or(MallocError::ForeignPointer { addr })?;
            let r = h.malloc.free(ptr, ty);
            if let Ok(st) = h.malloc.type_stats(ty) {
                h.reserves[t].reserved = st.memuse;
            }
            if r.is_ok() && h.queue.waiting() > 0 {
                self.wake(&mut h);
            }
            self.unlock(h);
            return r;
        }
        h.malloc.type_stats(ty)?;
        ledger::uncharge_elsewhere(&mut h.reserves[t], charge);
        if h.queue.waiting() > 0 {
            self.wake(&mut h);
        }
        // SAFETY: a live object of class `c` of ours (its page's hint and owner say so, and its
        // first word is no free piece's), just uncharged: it goes back as a round would.
        unsafe { h.malloc.return_from_magazine(c, &[addr]) };
        self.unlock(h);
        Ok(())
    }
}
