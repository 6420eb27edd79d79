// SPDX-License-Identifier: GPL-2.0

//! The heap's malloc and free through the magazine layer (`magazines`): the fast, local and
//! global paths described there. The exact readers and flushes that go with them are in
//! `exact.rs`.

use core::ptr::NonNull;

use kernel::prelude::*;

use crate::heap::{might_sleep, Heap, HeapState};
use crate::hint::{decode_hint, page_hint, raw_page_hint};
use crate::kmemleak;
use crate::magazine::ledger::{self, Credit, Payer, Reserve};
use crate::magazine::marker::RoundKey;
use crate::magazine::MagBox;
use crate::magazines::{
    is_round, ledger_slot, round_key, CpuCache, Credits, Front, FrontRef, Reaped,
};
use crate::malloc::{
    class_charge, may_be_free, size_class_charge, BlockReason, MallocError, MallocFlags,
    MallocType, MAX_TYPES,
};
use crate::percpu::{in_task, AllGuard, LocalGuard};
use crate::wait::{Growth, Waitok};

/// Charges `charge` bytes to this CPU's ledger `t` (`key`, credit word `credit`) and takes a
/// round of class `c` from type slot `t`'s magazines: from the loaded or previous magazine, else
/// trading with the type's depot (whose trimming may hand a magazine to `reaped`; without
/// `reaped`, the local path's, the exchange is out of line and gives a reaped magazine back
/// itself). The charge is whole before the pop (`LocalLedger::try_charge`: the credit's exchange,
/// then `memuse`, `inuse` and `calls`; no class: a round's class is in the type's sizemask
/// already, `LocalLedger::classes`), so that neither the ledger nor the charge is needed after a
/// pop that found a round; without a round the charge is taken back (`Heap::undo_charge`, out of
/// the way). `None`: the credit did not cover the charge, or no round.
#[expect(
    clippy::too_many_arguments,
    reason = "the fast path's operands, all in registers"
)]
#[inline(always)]
fn charged_round(
    heap: &Heap,
    cache: &mut CpuCache,
    credit: &Credit,
    c: usize,
    key: u32,
    t: usize,
    charge: usize,
    reaped: Option<&mut Reaped>,
) -> Option<usize> {
    if !cache.ledgers[t].try_charge(credit, key, charge) {
        return None;
    }
    let round = match reaped {
        None => match Front::pop_local(cache, t, c) {
            Some(r) => Some(r),
            None => heap.pop_cold(cache, t, c),
        },
        Some(reaped) => Front::pop(cache, t, c, reaped),
    };
    if round.is_none() {
        heap.undo_charge(cache, credit, t, charge);
    }
    round
}

/// Revokes every CPU's credit of type slot `t` and folds its counters into the core's base
/// statistics (every slot and the heap lock held): the core's own counters are then exact.
pub(crate) fn fold_type(
    all: &mut AllGuard<'_, CpuCache, Credits>,
    s: &mut HeapState,
    ty: MallocType,
) {
    let Some((key, t)) = ledger_slot(ty) else {
        return;
    };
    let Ok(st) = s.malloc.type_stats_mut(ty) else {
        return;
    };
    for cpu in 0..all.len() {
        let credit = &all.shared(cpu)[t];
        ledger::revoke(&mut s.reserves[t], credit);
        ledger::fold(st, &mut all.get(cpu).ledgers[t], credit, key);
    }
    ledger::fold_elsewhere(st, &mut s.reserves[t]);
    s.reserves[t].reserved = st.memuse;
}

impl Heap {
    /// Takes back a charge of `charge` bytes to `cache`'s ledger `t` (credit word `credit`)
    /// whose allocation failed: into the credit, or, if the word was revoked meanwhile, out of
    /// the type's reserve under the heap lock.
    #[inline(always)]
    fn undo_charge(&self, cache: &mut CpuCache, credit: &Credit, t: usize, charge: usize) {
        if !cache.ledgers[t].undo_charge(credit, charge) {
            self.unreserve(t, charge);
        }
    }

    /// The heap-lock part of [`Heap::undo_charge`].
    #[cold]
    #[inline(never)]
    fn unreserve(&self, t: usize, charge: usize) {
        self.with(|s| ledger::unreserve(&mut s.reserves[t], charge));
    }

    /// Allocates `size` bytes charged to `ty`. `WAITOK` may sleep (process context only);
    /// `NOWAIT` never sleeps (any context). `ZERO` zeroes outside every lock.
    #[inline(always)]
    pub(crate) fn malloc(
        &self,
        size: usize,
        ty: MallocType,
        flags: MallocFlags,
    ) -> Result<NonNull<u8>, MallocError> {
        if flags.contains(MallocFlags::WAITOK) {
            might_sleep();
        }
        if !flags.is_valid() {
            return Err(MallocError::BadFlags { bits: flags.bits() });
        }
        let core_flags = MallocFlags::from_bits(flags.bits() & !MallocFlags::ZERO.bits());
        let ((c, charge), (key, t)) =
            match (size_class_charge(self.front.table, size), ledger_slot(ty)) {
                (Some(cc), Some(slot)) => (cc, slot),
                _ => return self.malloc_global(size, ty, flags),
            };
        let fast = {
            let Some(mut g) = self.slot() else {
                return self.malloc_unslotted(size, c, ty, flags);
            };
            // Checked under the slot lock: a DIAGNOSTIC switch turns it off under every slot lock.
            if g.off {
                drop(g);
                return self.malloc_global(size, ty, flags);
            }
            let mut reaped = Reaped::NONE;
            let credit = &g.shared()[t];
            let a = charged_round(self, &mut g, credit, c, key, t, charge, Some(&mut reaped));
            self.give_back_reaped(&mut g, &mut reaped);
            a
        };
        let addr = match fast {
            Some(a) => a,
            None => match self.malloc_slow(size, c, ty, core_flags)? {
                Some(a) => a,
                None => return self.malloc_global(size, ty, flags),
            },
        };
        if flags.contains(MallocFlags::ZERO) {
            // SAFETY: a fresh object of `charge` usable bytes owned by the caller.
            unsafe { core::ptr::write_bytes(addr as *mut u8, 0, charge) };
        }
        kmemleak::alloc(addr, charge);
        NonNull::new(addr as *mut u8).ok_or(MallocError::ForeignPointer { addr })
    }

    /// An allocation of `size` bytes charged to `ty` that this CPU's slot serves alone, with no
    /// call (the inline slot lock makes the ABI's `kmalloc43_malloc` a leaf function on that
    /// path): the slot lock is free, the magazines are on, the credit covers the charge, and the loaded or previous magazine has a round. `None`, having changed
    /// nothing, in every other case: [`Heap::malloc`] then does it all. No flags: the caller
    /// passes `NOWAIT` or `WAITOK` alone here, after `might_sleep` for `WAITOK`.
    #[inline(always)]
    pub(crate) fn malloc_local(
        &self,
        f: &FrontRef<'_>,
        size: usize,
        ty: MallocType,
    ) -> Option<usize> {
        // The class and its charge in one lookup (no test of the class: `size_class_charge`).
        let (c, charge) = size_class_charge(f.table, size)?;
        let (key, t) = ledger_slot(ty)?;
        let a = {
            let mut g = f.cpus.try_local()?;
            if g.off {
                return None;
            }
            let credit = &g.shared()[t];
            charged_round(self, &mut g, credit, c, key, t, charge, None)?
        };
        kmemleak::alloc(a, charge);
        Some(a)
    }

    /// A free of `addr` (type `ty`) that this CPU's slot takes alone, with no call but, where it
    /// is not inline, the page hint's (see [`Heap::malloc_local`]): a piece of ours by its page
    /// hint, owned by `ty` by the same hint, at an object start, whose first word is neither a round mark nor a free-list link,
    /// uncharged within this CPU's credit cap, into a loaded or previous magazine with room, the
    /// magazines on and no waiter at a limit. `false`, having changed nothing, in every other
    /// case: [`Heap::free`] then does it all, with every check (another type's piece is refused
    /// there, `WrongType` naming its owner).
    #[inline(always)]
    pub(crate) fn free_local(&self, f: &FrontRef<'_>, addr: usize, ty: MallocType) -> bool {
        let Some((key, t)) = ledger_slot(ty) else {
            return false;
        };
        let Some(mut g) = f.cpus.try_local() else {
            return false;
        };
        // The hint is read under the slot, preemption off: a read-side section, which a page's
        // give-back waits for, so the hint needs no check word (`hint.rs`). The page names `ty`
        // as the owner and `addr` starts an object: its magazine class.
        let code = decode_hint(raw_page_hint(addr, &g));
        let Some(c) = code.object_of(f.table, t, addr) else {
            return false;
        };
        // Both flags in one test (not `||`: without the branch between them the two adjacent
        // bytes are one 16-bit load and compare).
        if (u16::from(g.off) | u16::from(g.waiters) << 8) != 0 {
            return false;
        }
        // SAFETY: the page hint says `addr` starts an object of ours of class `c`: readable.
        let word0 = unsafe { (addr as *const usize).read() };
        // This boot's round key (the heap's copy), loaded once for the test and the mark.
        let mark = f.key;
        let charge = class_charge(f.table, c);
        let credit = &g.shared()[t];
        // Owned (the page names `ty`, checked above): counted here even if charged elsewhere.
        if may_be_free(c, addr, word0, mark)
            || !g.ledgers[t].try_uncharge(credit, key, charge, true)
        {
            return false;
        }
        // Before the piece can be handed out again: the slot is held, and it is not yet in a
        // magazine or the piece layer.
        kmemleak::free(addr);
        if !Front::push_local(&mut g, t, c, addr, mark) {
            // Uncharged: the free goes on to the depot or the piece layer (an uncharge is never
            // taken back: a revocation may have taken its credit meanwhile).
            self.stash_cold(&mut g, t, c, addr);
        }
        true
    }

    /// Serves a charged allocation of class `c` from `cache`'s magazines of type slot `t`
    /// (credit word `credit`): a round, or a magazine filled from the piece layer (one object
    /// straight from it if the type has no magazines here or no magazine memory could be had).
    /// On error the charge is taken back.
    #[cold]
    #[inline(never)]
    fn serve(
        &self,
        cache: &mut CpuCache,
        credit: &Credit,
        c: usize,
        ty: MallocType,
        flags: MallocFlags,
        t: usize,
    ) -> Result<usize, MallocError> {
        let (charge, _) = self.front.cost(c);
        let mut reaped = Reaped::NONE;
        let popped = Front::pop(cache, t, c, &mut reaped);
        self.give_back_reaped(cache, &mut reaped);
        if let Some(a) = popped {
            cache.ledgers[t].note_class(c);
            return Ok(a);
        }
        let mut moved = 0;
        let filled = match Front::fill_target(cache, t, c) {
            Some((m, calls)) => self.with(|s| {
                // The requests the row served, folded with the fill (the give-back budget of the
                // piece layer counts them), even if the fill fails.
                s.malloc.add_type_magazine_calls(c, ty, calls);
                // At most a page of objects (`magazine::trim`).
                let n = s
                    .malloc
                    .take_for_magazine(c, ty, flags, m.fill_room_for(charge))?;
                m.commit(n);
                moved = n;
                Ok(None)
            }),
            None => {
                // No magazine: one object straight from the piece layer, counted as a request
                // there (a fill is not one).
                let mut one = [0usize];
                self.with(|s| {
                    s.malloc.take_for_magazine(c, ty, flags, &mut one)?;
                    s.malloc.add_type_magazine_calls(c, ty, 1);
                    Ok(Some(one[0]))
                })
            }
        };
        let got = match filled {
            Ok(Some(a)) => Some(a),
            Ok(None) => {
                if let Some(m) = cache.rows[t]
                    .as_deref_mut()
                    .and_then(|r| r.class(c).loaded_mut())
                {
                    let key = round_key();
                    for &r in m.rounds() {
                        // SAFETY: fresh objects of ours, now rounds.
                        unsafe { crate::magazine::marker::mark(r, key) };
                    }
                }
                // Served by the fresh magazine: no depot visit, nothing reaped.
                let a = Front::pop_local(cache, t, c);
                self.note_moved(cache, moved);
                a
            }
            Err(e) => {
                self.undo_charge(cache, credit, t, charge);
                return Err(e);
            }
        };
        match got {
            Some(a) => {
                cache.ledgers[t].note_class(c);
                Ok(a)
            }
            None => {
                self.undo_charge(cache, credit, t, charge);
                Err(MallocError::NoMemory { ty, size: charge })
            }
        }
    }

    /// The local and global paths of a magazine allocation of `size` bytes (class `c`; see
    /// `magazines`); `None` if the magazines were switched off meanwhile (take the global path).
    /// `size` is the request, which the interrupt fall-back's `DIAGNOSTIC` path gives to the
    /// core (which reports it in `NoMemory`).
    ///
    /// The verdict at the limit or past the high water is taken with this CPU's slot and the heap
    /// lock alone: every CPU's credit word is revoked by an exchange, without its slot
    /// (`ledger::revoke`), so that `R` is the exact usage even while other CPUs are half way
    /// through a fast path. Only a `WAITOK` call that must sleep takes every slot, to tell the
    /// frees that somebody waits.
    #[cold]
    #[inline(never)]
    fn malloc_slow(
        &self,
        size: usize,
        c: usize,
        ty: MallocType,
        flags: MallocFlags,
    ) -> Result<Option<usize>, MallocError> {
        let (key, t) = ledger_slot(ty).ok_or(MallocError::UnknownType)?;
        let (charge, _) = self.front.cost(c);
        let mut growth = Growth::new();
        loop {
            let local = {
                let Some(mut g) = self.slot() else {
                    return self.malloc_fallback(size, c, ty, flags).map(Some);
                };
                if g.off {
                    return Ok(None);
                }
                let credit = &g.shared()[t];
                if self.charge_slow(&mut g, credit, ty, key, t, charge, flags)? {
                    Some(self.serve(&mut g, credit, c, ty, flags, t))
                } else {
                    None
                }
            };
            let step = match local {
                Some(r) => r,
                None => {
                    // `WAITOK` at the limit (process context): sleep until a free wakes us, the
                    // waiters flag set on every CPU first so that frees wake instead of keeping
                    // credit. The verdict is taken again under every slot: a free may have come
                    // in between.
                    let mut all = self.front.cpus.all();
                    let cpu = all.this_cpu();
                    if all.get(cpu).off {
                        return Ok(None);
                    }
                    let mut h = self.state.lock();
                    let h_ref = &mut *h;
                    let st = h_ref.malloc.type_stats_mut(ty)?;
                    self.revoke_all(&mut h_ref.reserves[t], t);
                    if !ledger::charge_exact(
                        st,
                        &mut h_ref.reserves[t],
                        &mut all.get(cpu).ledgers[t],
                        key,
                        charge,
                    ) {
                        let ticket = h.queue.enqueue();
                        Front::set_waiters(&mut all, true);
                        self.unlock(h);
                        drop(all);
                        Waitok::sleep(self, ticket);
                        continue;
                    }
                    drop(h);
                    let credit = &all.shared(cpu)[t];
                    self.serve(all.get(cpu), credit, c, ty, flags, t)
                }
            };
            match step {
                Err(MallocError::WouldBlock {
                    ty,
                    reason: BlockReason::Arena,
                }) => {
                    if !growth.grow(self, charge) {
                        return Err(MallocError::NoMemory { ty, size });
                    }
                }
                // `serve` knows the class, not the request.
                other => return other.map(Some).map_err(|e| e.for_request(size)),
            }
        }
    }

    /// This CPU's slot `cache` held: charges `charge` bytes to its ledger `t` (`key`, credit word
    /// `credit`) under the heap lock: out of a credit grant if the headroom allows one, else
    /// exactly, after every CPU's credit is revoked (no other slot taken). `Ok(false)`: a
    /// `WAITOK` call at the limit, which must sleep ([`Heap::malloc_slow`]); another call at the
    /// limit is refused (`limblocks` counted either way).
    #[expect(
        clippy::too_many_arguments,
        reason = "the slot, the type's ledger and the call"
    )]
    fn charge_slow(
        &self,
        cache: &mut CpuCache,
        credit: &Credit,
        ty: MallocType,
        key: u32,
        t: usize,
        charge: usize,
        flags: MallocFlags,
    ) -> Result<bool, MallocError> {
        let (batch, cap) = ledger::grant_terms(charge);
        self.with(|s| {
            let st = s.malloc.type_stats_mut(ty)?;
            let payer = Payer::Cpu {
                local: &mut cache.ledgers[t],
                credit,
                key,
                batch,
                cap,
            };
            match ledger::charge_verdict(
                st,
                &mut s.reserves[t],
                payer,
                charge,
                self.credits_of(t),
                ty,
                flags,
            ) {
                Ok(_) => Ok(true),
                Err(MallocError::WouldBlock { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    /// This CPU's slot; `None` if it is held and the caller must not wait for its holder (it
    /// does not run in task context): the caller then takes the interrupt fall-back
    /// (`fallback`), which touches no slot. In task context the holder is another CPU's (a
    /// holder on this CPU would be running: preemption is off under it), an every-slot holder
    /// that finishes without waiting for this task.
    #[inline(always)]
    pub(crate) fn slot(&self) -> Option<LocalGuard<'_, CpuCache, Credits>> {
        match self.front.cpus.try_local() {
            Some(g) => Some(g),
            None => self.slot_held(),
        }
    }

    /// The held case of [`Heap::slot`].
    #[cold]
    #[inline(never)]
    fn slot_held(&self) -> Option<LocalGuard<'_, CpuCache, Credits>> {
        in_task().then(|| self.front.cpus.local())
    }

    /// A malloc of `size` bytes (class `c`) whose slot was held, outside task context: the
    /// interrupt fall-back (`fallback`), then zeroing and kmemleak as on every path.
    #[cold]
    #[inline(never)]
    fn malloc_unslotted(
        &self,
        size: usize,
        c: usize,
        ty: MallocType,
        flags: MallocFlags,
    ) -> Result<NonNull<u8>, MallocError> {
        let core_flags = MallocFlags::from_bits(flags.bits() & !MallocFlags::ZERO.bits());
        let addr = self.malloc_fallback(size, c, ty, core_flags)?;
        let (charge, _) = self.front.cost(c);
        if flags.contains(MallocFlags::ZERO) {
            // SAFETY: a fresh object of `charge` usable bytes owned by the caller.
            unsafe { core::ptr::write_bytes(addr as *mut u8, 0, charge) };
        }
        kmemleak::alloc(addr, charge);
        NonNull::new(addr as *mut u8).ok_or(MallocError::ForeignPointer { addr })
    }

    /// A free of `ptr` (page hint `hint`) whose slot was held. In task context the holder is
    /// another CPU's ([`Heap::slot`]): wait for it, then every path of [`Heap::free_object`].
    /// Outside it, never wait: the interrupt fall-back decides without a slot where the page hint
    /// places `ptr` at an object start of ours ([`Heap::free_without_slot`]); anything else is
    /// what the slot's path would send to the core as well ([`Heap::free_global`]).
    #[cold]
    #[inline(never)]
    fn free_unslotted(
        &self,
        ptr: NonNull<u8>,
        ty: MallocType,
        hint: u64,
    ) -> Result<(), MallocError> {
        if in_task() {
            // The hint read again under the slot: it may have changed while this task waited.
            let g = self.front.cpus.local();
            let hint = raw_page_hint(ptr.as_ptr() as usize, &g);
            return self.free_held(g, ptr, ty, hint);
        }
        match self.free_without_slot(ptr.as_ptr() as usize, ty, hint) {
            Some(r) => r,
            None => self.free_global(ptr, ty),
        }
    }

    /// Heap lock held, from any context: revokes every CPU's credit of type slot `t` (an
    /// exchange per CPU, no slot taken), so that `res` is the type's exact usage.
    pub(crate) fn revoke_all(&self, res: &mut Reserve, t: usize) {
        for credit in self.credits_of(t) {
            ledger::revoke(res, credit);
        }
    }

    /// Every CPU's credit word of type slot `t` (shared parts of the slots: read without any
    /// slot lock), for the limit verdict (`ledger::charge_verdict`).
    /// None for a slot beyond the table.
    pub(crate) fn credits_of(&self, t: usize) -> impl Iterator<Item = &Credit> + Clone + '_ {
        let n = if t < MAX_TYPES {
            self.front.cpus.len()
        } else {
            0
        };
        (0..n).map(move |cpu| &self.front.cpus.shared(cpu)[t])
    }

    /// Frees an allocation of type `ty` (any context). Wakes tasks waiting at a limit. Called
    /// by [`Heap::free`] (`kmemleak.rs`), which keeps kmemleak's view in step.
    #[inline(always)]
    pub(crate) fn free_object(&self, ptr: NonNull<u8>, ty: MallocType) -> Result<(), MallocError> {
        let addr = ptr.as_ptr() as usize;
        // The slot and the page hint in one C call; every way out below that leaves the fast
        // path drops the slot first.
        let (g, hint) = self.front.cpus.try_local_hint(addr);
        match g {
            Some(g) => self.free_held(g, ptr, ty, hint),
            None => self.free_unslotted(ptr, ty, hint),
        }
    }

    /// [`Heap::free_object`] with this CPU's slot `g` held and `addr`'s page hint `hint` read.
    #[inline(always)]
    fn free_held(
        &self,
        mut g: LocalGuard<'_, CpuCache, Credits>,
        ptr: NonNull<u8>,
        ty: MallocType,
        hint: u64,
    ) -> Result<(), MallocError> {
        let addr = ptr.as_ptr() as usize;
        // The page names `ty` as the owner (every piece has one: `Heap::with_classes`) and
        // `addr` starts an object: the type is decided, and the free is counted on this CPU
        // whichever CPU charged it.
        let found = match ledger_slot(ty) {
            Some(slot) if !g.off => decode_hint(hint)
                .object_of(self.front.table, slot.1, addr)
                .map(|c| (c, slot)),
            _ => None,
        };
        // Another type's piece goes to the core, which refuses it (`WrongType` naming the
        // owner; `DoubleFree` if it is a round or on a free list), changing nothing.
        let Some((c, (key, t))) = found else {
            drop(g);
            return self.free_global(ptr, ty);
        };
        // SAFETY: the page hint says `addr` starts an object of ours of class `c`: readable.
        let word0 = unsafe { (addr as *const usize).read() };
        // This boot's round key, loaded once for the test and the mark.
        let mark = self.front.key;
        if may_be_free(c, addr, word0, mark) {
            drop(g);
            return self.free_suspect(addr, c, ty, word0, mark);
        }
        let (charge, _) = self.front.cost(c);
        let credit = &g.shared()[t];
        if !g.waiters && g.ledgers[t].try_uncharge(credit, key, charge, true) {
            return self.stash(&mut g, t, c, addr, mark);
        }
        drop(g);
        self.free_slow(addr, c, ty)
    }

    /// Puts a freed object of class `c` into `cache`'s magazines of type slot `t` (marked under
    /// `key`, [`round_key`]), or back to the piece layer if no magazine has room.
    #[inline(always)]
    fn stash(
        &self,
        cache: &mut CpuCache,
        t: usize,
        c: usize,
        addr: usize,
        key: RoundKey,
    ) -> Result<(), MallocError> {
        let mut reaped = Reaped::NONE;
        if let Err(a) = Front::push(cache, t, c, addr, key, &mut reaped) {
            // SAFETY: `a` is a live object of class `c` that was just uncharged.
            self.with(|s| unsafe { s.malloc.return_from_magazine(c, &[a]) });
        }
        self.give_back_reaped(cache, &mut reaped);
        Ok(())
    }

    /// A round of class `c` from `cache`'s magazines of type slot `t` through a depot exchange,
    /// out of line, for [`Heap::malloc_local`] when its loaded and previous magazines are empty:
    /// the slot is already held, so the call does not start over on the full path for it (a
    /// reaped magazine goes back before the slot is released). `None` if the depot has no full
    /// magazine either (the full path then fills one).
    #[cold]
    #[inline(never)]
    fn pop_cold(&self, cache: &mut CpuCache, t: usize, c: usize) -> Option<usize> {
        let mut reaped = Reaped::NONE;
        let round = Front::pop(cache, t, c, &mut reaped);
        self.give_back_reaped(cache, &mut reaped);
        round
    }

    /// [`Heap::stash`] out of line, for [`Heap::free_local`] when its magazines are full (the
    /// key loaded again here, so that the fast path need not keep it in a register).
    #[cold]
    #[inline(never)]
    fn stash_cold(&self, cache: &mut CpuCache, t: usize, c: usize, addr: usize) {
        // Always `Ok`: a piece no magazine takes goes to the piece layer.
        let _ = self.stash(cache, t, c, addr, round_key());
    }

    /// Gives the rounds of a magazine the depot's trimming (or the class budget) handed to the
    /// caller back to the piece layer, and frees the magazine (the caller's slot `cache` still
    /// held; the rounds count on its aging clock); nothing if none.
    #[inline(always)]
    fn give_back_reaped(&self, cache: &mut CpuCache, reaped: &mut Reaped) {
        if let Some(m) = reaped.mag.take() {
            self.give_back_reaped_mag(cache, reaped.class, m);
        }
    }

    /// The out-of-line part of [`Heap::give_back_reaped`].
    #[cold]
    #[inline(never)]
    fn give_back_reaped_mag(&self, cache: &mut CpuCache, c: usize, m: MagBox) {
        let n = m.len();
        self.return_magazine(c, m);
        self.note_moved(cache, n);
    }

    /// A free of an object start of class `c` whose first word `word0` was the round mark under
    /// `key` or looked like a free-list link, found with the magazines on. The mark is the
    /// verdict, at once: the piece sits in a magazine (`DoubleFree`; no search, no slot, no lock:
    /// see `magazine::marker`). A link is checked against the free list under the heap lock
    /// (`DoubleFree` if the piece is on it) before the free goes on.
    #[cold]
    #[inline(never)]
    fn free_suspect(
        &self,
        addr: usize,
        c: usize,
        ty: MallocType,
        word0: usize,
        key: RoundKey,
    ) -> Result<(), MallocError> {
        if word0 == key.mark_of(addr) {
            return Err(MallocError::DoubleFree { addr, ty: None });
        }
        self.with(|s| s.malloc.check_object(addr))?;
        self.free_slow(addr, c, ty)
    }

    /// Frees `addr`, an object start of class `c` whose page names `ty` as its owner and whose
    /// checks are done, on the local or global path; the global path of the core if the
    /// magazines were switched off meanwhile.
    #[cold]
    #[inline(never)]
    fn free_slow(&self, addr: usize, c: usize, ty: MallocType) -> Result<(), MallocError> {
        match self.free_magazine_slow(addr, c, ty)? {
            Some(()) => Ok(()),
            None => {
                let ptr =
                    NonNull::new(addr as *mut u8).ok_or(MallocError::ForeignPointer { addr })?;
                self.free_global(ptr, ty)
            }
        }
    }

    /// The local path of a magazine free (`None`: magazines off): `addr` (class `c`) is a piece
    /// whose page names `ty` as its owner, its checks done; it is uncharged on this CPU with its
    /// slot and the heap lock (counted here, whichever CPU charged it), or, outside task context
    /// with the slot held, by the interrupt fall-back without it. No other slot is taken: every
    /// piece has an owner (`Heap::with_classes`), so no free needs every CPU's counters to be
    /// judged (the core's shared classes would, `ledger::gather`; the glue builds none).
    #[cold]
    #[inline(never)]
    fn free_magazine_slow(
        &self,
        addr: usize,
        c: usize,
        ty: MallocType,
    ) -> Result<Option<()>, MallocError> {
        let (key, t) = ledger_slot(ty).ok_or(MallocError::UnknownType)?;
        let (charge, _) = self.front.cost(c);
        // Re-taken: the caller dropped it.
        let Some(mut g) = self.slot() else {
            return self.free_fallback(addr, c, ty, t, false).map(Some);
        };
        if g.off {
            return Ok(None);
        }
        let mut h = self.state.lock();
        let h_ref = &mut *h;
        h_ref.malloc.type_stats(ty)?;
        let credit = &g.shared()[t];
        // Owned: always uncharged.
        ledger::uncharge_local(
            &mut h_ref.reserves[t],
            &mut g.ledgers[t],
            credit,
            key,
            charge,
            true,
        );
        if h.queue.waiting() > 0 {
            self.wake(&mut h);
        }
        drop(h);
        self.stash(&mut g, t, c, addr, round_key()).map(Some)
    }

    /// A malloc the magazines do not serve (DIAGNOSTIC, runs over 64 KiB, bad input): the core
    /// does it under the heap lock alone, its limit checked on the type's reserve
    /// ([`Heap::run`]), from any context.
    #[cold]
    #[inline(never)]
    fn malloc_global(
        &self,
        size: usize,
        ty: MallocType,
        flags: MallocFlags,
    ) -> Result<NonNull<u8>, MallocError> {
        let zero = flags.contains(MallocFlags::ZERO);
        let core_flags = MallocFlags::from_bits(flags.bits() & !MallocFlags::ZERO.bits());
        let (ptr, len) = self.run(size, false, ty, |m, account| {
            let p = m.malloc_in(size, ty, core_flags, account)?;
            let len = if zero || kmemleak::KMEMLEAK {
                m.usable_size(p).unwrap_or(0)
            } else {
                0
            };
            Ok((p, len))
        })?;
        if zero {
            // SAFETY: `ptr` is a fresh allocation of `len` usable bytes owned by the caller.
            unsafe { core::ptr::write_bytes(ptr.as_ptr(), 0, len) };
        }
        kmemleak::alloc(ptr.as_ptr() as usize, len);
        Ok(ptr)
    }

    /// A free the magazines do not take (see [`Heap::malloc_global`]): the core's, after the
    /// round test (a round freed again, as another type say, is `DoubleFree` by its mark, with
    /// no search).
    #[cold]
    #[inline(never)]
    fn free_global(&self, ptr: NonNull<u8>, ty: MallocType) -> Result<(), MallocError> {
        let addr = ptr.as_ptr() as usize;
        self.run(0, true, ty, |m, account| {
            if is_round(m, addr) {
                return Err(MallocError::DoubleFree { addr, ty: None });
            }
            m.free_in(ptr, ty, account)
        })
    }

    /// Resizes an allocation (same contexts as [`Heap::malloc`]); on error `ptr` stays valid.
    pub(crate) fn realloc(
        &self,
        ptr: NonNull<u8>,
        size: usize,
        ty: MallocType,
        flags: MallocFlags,
    ) -> Result<NonNull<u8>, MallocError> {
        if flags.contains(MallocFlags::WAITOK) {
            might_sleep();
        }
        // Outside task context a held slot is not waited for: the magazines are then taken to be
        // on, which every path below allows (with them off, `malloc` and `free` take the core's
        // path under the heap lock in the fall-back, and `usable_size` asks the core).
        let off = self.slot().is_some_and(|g| g.off);
        if off {
            return self.run(size, true, ty, |m, account| {
                let new = m.realloc_in(ptr, size, ty, flags, account)?;
                // Under the heap lock: the old piece cannot have been handed out again yet.
                if kmemleak::KMEMLEAK && new != ptr {
                    kmemleak::free(ptr.as_ptr() as usize);
                    kmemleak::alloc(new.as_ptr() as usize, m.usable_size(new).unwrap_or(size));
                }
                Ok(new)
            });
        }
        if !flags.is_valid() {
            return Err(MallocError::BadFlags { bits: flags.bits() });
        }
        let old = self.usable_size(ptr)?;
        let new_charge = self.with(|s| s.malloc.charge_of(size))?;
        let owner = page_hint(ptr.as_ptr() as usize).and_then(|h| h.owner_slot());
        if new_charge == old || owner.is_some_and(|o| Some(o) != ledger_slot(ty).map(|(_, t)| t)) {
            // Same class: stays in place, once the type is known to cover it. Another type's
            // piece: the core refuses it (`WrongType` naming the owner) before anything changes,
            // where the path below would first charge `ty` a new allocation.
            return self.run(0, false, ty, |m, account| {
                m.realloc_in(ptr, size, ty, flags, account)
            });
        }
        let plain = MallocFlags::from_bits(flags.bits() & !MallocFlags::ZERO.bits());
        let new = self.malloc(size, ty, plain)?;
        // SAFETY: both allocations are live, distinct and at least `min(old, new_charge)` long.
        unsafe {
            core::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), old.min(new_charge));
            if flags.contains(MallocFlags::ZERO) && new_charge > old {
                core::ptr::write_bytes(new.as_ptr().add(old), 0, new_charge - old);
            }
        }
        if let Err(e) = self.free(ptr, ty) {
            let _ = self.free(new, ty);
            return Err(e);
        }
        Ok(new)
    }
}
