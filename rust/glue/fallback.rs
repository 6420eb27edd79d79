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
//!   one-element array, as `serve` does when it has no magazine). If none can be had, the
//!   charge is taken back under the same hold of the heap lock, the high water with it
//!   (`ledger::undo_charge_base`), and `NoMemory` names the requested size, as the core's does.
//! * `free` (`Heap::free_without_slot`): every object start of ours is decided here (every piece
//!   has an owning type in its page hint, `Heap::with_classes`). A round (its first word the
//!   mark under this boot's secret key, `magazines::round_key`) is `DoubleFree` at once, whatever
//!   the type given; an object start whose page names another type is refused, `DoubleFree` if it
//!   is on its free list, else `WrongType` naming the owner; one whose page names the caller's
//!   type is freed, a first word that looks like a free-list link checked against the free list
//!   first (`DoubleFree`). All of it under the heap lock, with no slot and no search. The bytes
//!   leave the reserve at once and are taken off the counters that charged them by readers and
//!   folds (`ledger::uncharge_elsewhere`); waiters are woken; the piece goes back to the piece
//!   layer. `free_magazine_slow` frees an owned piece here too when it finds its slot held. What
//!   the page hint does not place at an object start of ours goes to the core
//!   (`Heap::free_global`), as it would with the slot.
//! * With `DIAGNOSTIC` on (the magazines off), the core does the call under the heap lock, its
//!   limit checked on the type's reserve, as the global path does (`Heap::run`).
//!
//! Each counts in [`Fallbacks`] (the `drain` debugfs file shows them).

use core::ptr::NonNull;

use kernel::{prelude::*, sync::atomic::Relaxed};

use crate::heap::Heap;
use crate::hint::decode_hint;
use crate::magazine::ledger::{self, Payer, ReserveAccount};
use crate::magazines::{is_round, ledger_slot, round_key};
use crate::malloc::{may_be_free, BlockReason, MallocError, MallocFlags, MallocType};

/// Calls served by the interrupt fall-back.
pub(crate) struct Fallbacks {
    /// Allocations.
    pub(crate) mallocs: kernel::sync::atomic::Atomic<usize>,
    /// Frees (taken or refused under the heap lock alone).
    pub(crate) frees: kernel::sync::atomic::Atomic<usize>,
    /// Frees of another type's piece refused without a slot (`WrongType`, or `DoubleFree` for a
    /// round or a piece on its free list).
    pub(crate) refused: kernel::sync::atomic::Atomic<usize>,
}

impl Fallbacks {
    /// None yet.
    pub(crate) fn new() -> Self {
        Self {
            mallocs: kernel::sync::atomic::Atomic::new(0),
            frees: kernel::sync::atomic::Atomic::new(0),
            refused: kernel::sync::atomic::Atomic::new(0),
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
                // The magazines are off: the core does the call, as on the global path.
                let mut account = ReserveAccount {
                    res: &mut s.reserves[t],
                    credits: self.credits_of(t),
                };
                let p = s.malloc.malloc_in(size, ty, flags, &mut account)?;
                return Ok(p.as_ptr() as usize);
            }
            let high = {
                let st = s.malloc.type_stats_mut(ty)?;
                let high = st.maxused;
                let credits = self.credits_of(t);
                ledger::charge_verdict(
                    st,
                    &mut s.reserves[t],
                    Payer::Base,
                    charge,
                    credits,
                    ty,
                    flags,
                )?;
                st.sizemask |= 1 << bit;
                high
            };
            let mut one = [0usize];
            match s.malloc.take_for_magazine(c, ty, flags, &mut one) {
                Ok(_) => {
                    s.malloc.add_type_magazine_calls(c, ty, 1);
                    Ok(one[0])
                }
                Err(e) => {
                    let st = s.malloc.type_stats_mut(ty)?;
                    // Under the same hold of the heap lock as the charge: the high water goes
                    // back too.
                    ledger::undo_charge_base(st, &mut s.reserves[t], charge, high);
                    Err(match e {
                        // Growing the page arena may sleep: not here.
                        MallocError::WouldBlock {
                            reason: BlockReason::Arena,
                            ..
                        } => MallocError::NoMemory { ty, size },
                        e => e.for_request(size),
                    })
                }
            }
        })
    }

    /// A free outside task context whose slot is held (the caller checked both), decided
    /// without any slot (`None`: the page hint does not place `addr` at an object start of ours,
    /// the caller sends it to the core):
    ///
    /// * an object start on a page that names another type than `ty` as its owner is refused,
    ///   changing nothing: `DoubleFree` if it is a round or on its bucket's free list, else
    ///   `WrongType` naming the owner (the core's order, `check_live`), decided under the heap
    ///   lock;
    /// * an object start on a page that names `ty` goes to [`Heap::free_fallback`], which
    ///   refuses a round (`DoubleFree`) and checks a first word that looks like a free-list link
    ///   against the free list.
    #[cold]
    #[inline(never)]
    pub(crate) fn free_without_slot(
        &self,
        addr: usize,
        ty: MallocType,
        hint: u64,
    ) -> Option<Result<(), MallocError>> {
        let code = decode_hint(hint);
        let c = code.class()?;
        let (_, t) = ledger_slot(ty)?;
        if !code.starts_object(self.front.table, addr) {
            return None;
        }
        let owner = code.owner_slot()?;
        if owner != t {
            self.fallbacks.refused.fetch_add(1, Relaxed);
            return Some(self.with(|s| {
                if is_round(&s.malloc, addr) {
                    return Err(MallocError::DoubleFree { addr, ty: None });
                }
                s.malloc.check_object(addr)?;
                Err(MallocError::WrongType {
                    addr,
                    given: ty,
                    owner: s.malloc.type_handle(owner),
                })
            }));
        }
        // SAFETY: the page hint says `addr` starts an object of ours of class `c`: word-aligned
        // and readable.
        let word0 = unsafe { (addr as *const usize).read() };
        Some(self.free_fallback(addr, c, ty, t, may_be_free(c, addr, word0, round_key())))
    }

    /// The fall-back free of `addr`, an object start of class `c` whose page names type slot
    /// `t` (`ty`'s) as its owner. `suspect`: its first word is the round mark or looks like a
    /// free-list link ([`may_be_free`]), so it is checked first: a round is `DoubleFree` at once
    /// (no search), a piece on its free list too; otherwise the caller did the checks. No slot
    /// is touched.
    #[cold]
    #[inline(never)]
    pub(crate) fn free_fallback(
        &self,
        addr: usize,
        c: usize,
        ty: MallocType,
        t: usize,
        suspect: bool,
    ) -> Result<(), MallocError> {
        let (charge, _) = self.front.cost(c);
        self.fallbacks.frees.fetch_add(1, Relaxed);
        let mut h = self.state.lock();
        if suspect && !h.malloc.diagnostic() {
            let verdict = if is_round(&h.malloc, addr) {
                Err(MallocError::DoubleFree { addr, ty: None })
            } else {
                h.malloc.check_object(addr).map(|_| ())
            };
            if let Err(e) = verdict {
                self.unlock(h);
                return Err(e);
            }
        }
        if h.malloc.diagnostic() {
            // As in `malloc_fallback`: the core frees it, with its own checks.
            let ptr = NonNull::new(addr as *mut u8).ok_or(MallocError::ForeignPointer { addr })?;
            let g = &mut *h;
            let mut account = ReserveAccount {
                res: &mut g.reserves[t],
                credits: self.credits_of(t),
            };
            let r = g.malloc.free_in(ptr, ty, &mut account);
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
        // SAFETY: a live object of class `c` of ours (its page's hint and owner say so, and it is
        // neither a round nor on a free list), just uncharged: it goes back as a round would.
        unsafe { h.malloc.return_from_magazine(c, &[addr]) };
        self.unlock(h);
        Ok(())
    }
}
