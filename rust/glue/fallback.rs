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
//! * `free` (`Heap::free_without_slot`): an object start whose page names another type as its
//!   owner is refused at once, `DoubleFree` if it is on its free list, else `WrongType` naming
//!   the owner (heap lock only). One whose page names the caller's type and whose first word is
//!   not a round mark is freed: a first word that looks like a free-list link is checked against
//!   the free list under the heap lock first (`DoubleFree`); the bytes leave the reserve at once
//!   and are taken off the counters that charged them by readers and folds
//!   (`ledger::uncharge_elsewhere`); waiters are woken; the piece goes back to the piece layer.
//!   `free_magazine_slow` frees an owned piece here too when it finds its slot held. Any other
//!   free still waits for the slot (`Heap::free_object`): a round mark needs the search of every
//!   magazine (the per-boot key of the design would make it exact without one), a page with no
//!   owner the gathering of a cross-CPU usage.
//! * With `DIAGNOSTIC` on (the magazines off, every count folded into the core's), the core does
//!   the call under the heap lock, as the global path would.
//!
//! Each counts in [`Fallbacks`] (the `drain` debugfs file shows them).

use core::ptr::NonNull;

use kernel::{prelude::*, sync::atomic::Relaxed};

use crate::heap::Heap;
use crate::hint::decode_hint;
use crate::magazine::ledger::{self, Payer};
use crate::magazine::marker::is_marked;
use crate::magazines::ledger_slot;
use crate::malloc::{
    hint_class, is_object_start, may_be_free, BlockReason, MallocError, MallocFlags, MallocType,
};

/// Calls served by the interrupt fall-back.
pub(crate) struct Fallbacks {
    /// Allocations.
    pub(crate) mallocs: kernel::sync::atomic::Atomic<usize>,
    /// Frees (taken or refused under the heap lock alone).
    pub(crate) frees: kernel::sync::atomic::Atomic<usize>,
    /// Frees of another type's piece refused without a slot (`WrongType` or `DoubleFree`).
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

    /// A free outside task context whose slot is held (the caller checked both), decided
    /// without any slot where the page hint allows it (`None`: it does not, the caller waits for
    /// the slot as before):
    ///
    /// * an object start on a page that names another type than `ty` as its owner is refused,
    ///   changing nothing: `DoubleFree` if it is on its bucket's free list, else `WrongType`
    ///   naming the owner (the core's order, `check_live`), decided under the heap lock;
    /// * an object start on a page that names `ty` goes to [`Heap::free_fallback`] unless its
    ///   first word is a round mark (then only the search of every magazine decides); a first
    ///   word that looks like a free-list link is checked against the free list there.
    ///
    /// A page naming no owner (shared classes: never in the kernel heap's setting), a first word
    /// that is a round mark, or an address the hint does not place at an object start of ours
    /// give `None`.
    #[cold]
    #[inline(never)]
    pub(crate) fn free_without_slot(
        &self,
        addr: usize,
        ty: MallocType,
        hint: u64,
    ) -> Option<Result<(), MallocError>> {
        let page = decode_hint(addr, hint)?;
        let c = hint_class(page)?;
        let (_, t) = ledger_slot(ty)?;
        if !is_object_start(self.front.table, c, addr) {
            return None;
        }
        let owner = page.owner_slot()?;
        if owner != t {
            self.fallbacks.refused.fetch_add(1, Relaxed);
            return Some(self.with(|s| {
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
        if unsafe { is_marked(addr) } {
            return None;
        }
        // SAFETY: as above.
        let word0 = unsafe { (addr as *const usize).read() };
        Some(self.free_fallback(addr, c, ty, t, may_be_free(c, addr, word0)))
    }

    /// The fall-back free of `addr`, an object start of class `c` whose page names type slot
    /// `t` (`ty`'s) as its owner and whose first word is not a round mark, or that the search of
    /// every magazine found in none (the caller checked all of it). `listed`: its first word
    /// looks like a free-list link, so the free list is checked first (`DoubleFree` if it is
    /// on it). No slot is touched.
    #[cold]
    #[inline(never)]
    pub(crate) fn free_fallback(
        &self,
        addr: usize,
        c: usize,
        ty: MallocType,
        t: usize,
        listed: bool,
    ) -> Result<(), MallocError> {
        let (charge, _) = self.front.cost(c);
        self.fallbacks.frees.fetch_add(1, Relaxed);
        let mut h = self.state.lock();
        if listed && !h.malloc.diagnostic() {
            if let Err(e) = h.malloc.check_object(addr) {
                self.unlock(h);
                return Err(e);
            }
        }
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
