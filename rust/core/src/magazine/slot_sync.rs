// SPDX-License-Identifier: GPL-2.0

//! The slot lock's two modes: a local acquire without a `lock`-prefixed instruction while no
//! other CPU takes slot locks, and atomic lock words while one does (`rcu_sync` and
//! percpu-rwsem's idea, `kernel/rcu/sync.c`, for the magazine layer's per-CPU slot locks;
//! `Documentation/magazines.rst`, "The slot lock's fast and slow mode").
//!
//! Each CPU's slot has a lock word. Its *owner* (code running on that CPU, with preemption or
//! interrupts off: a read-side critical section of RCU) takes it for the fast paths; an
//! interrupt on that CPU may arrive while the task it interrupted holds it and find it held (it
//! then takes a fall-back that touches no slot). *Remote takers* (task context on any CPU: exact
//! readers, flushes, the aging pass, a sleeper at a limit) take other CPUs' words.
//!
//! * **Fast mode** ([`SlotSync::is_fast`]: the mode word is 0): no remote taker exists or can
//!   take a word before every section that saw this mode has ended. The owner's acquire
//!   ([`try_lock_local`]) is a plain load of the word and, if it is free, a plain store: only
//!   this CPU's contexts touch the word, and a nested interrupt runs to its end before the
//!   context it interrupted goes on, so the load and the store need no atomic read-modify-write
//!   between them ([`SlotSync::try_lock_local`]). The release is a plain (release) store in both
//!   modes.
//! * **Slow mode** (any other mode word): the owner's acquire is a `cmpxchg` from free to held,
//!   as a remote taker's, and a word held by a remote taker is seen held.
//!
//! A remote taker calls [`SlotSync::enter`] before it takes any word and [`SlotSync::exit`]
//! after it released them. The first `enter` sets the mode word (slow) and waits for a grace
//! period ([`GracePeriod::synchronize`]): every section that may have seen fast mode has ended
//! when it returns, and every section that starts later sees slow mode. The last `exit` does not
//! return to fast mode at once: a callback one grace period later does ([`SlotSync::passed`]),
//! unless a taker entered meanwhile, which then needs no grace period of its own. So bursts of
//! remote takers pay one grace period, and the mode never turns fast under a section that saw it
//! slow (the grace period waits for that section).
//!
//! # Why the owner's plain acquire excludes everybody
//!
//! *Against remote takers.* A remote taker holds a word only between an `enter` that returned
//! and its `exit`, so while the mode is not fast and after a grace period that began with the
//! mode word set. An owner section that read fast mode began before that grace period began
//! (a section beginning later sees the mode word, set before the grace period started), so it
//! ended before `enter` returned: its plain acquire and its release are over before any remote
//! access to the word. Conversely the mode turns fast only in [`SlotSync::passed`], a grace
//! period after the last `exit`, whose taker had released every word: sections that read the
//! fast mode word (an acquire load, pairing with the release of the store that set it) see the
//! word free and every write of the remote holder.
//!
//! *Against this CPU's other contexts.* Only the owner's CPU touches its word in fast mode. A
//! context that finds it free and stores it held may be interrupted between its load and its
//! store; the interrupt then either finds it free too (and releases it before it returns: the
//! interrupted context goes on as if nothing happened) or takes its fall-back. After the store,
//! an interrupt finds it held. A compiler barrier after the store keeps the slot's accesses
//! after it.
//!
//! *Across a change of mode.* A section that saw slow mode uses `cmpxchg`; the mode stays slow
//! until that section ends (above), so its word is never taken plainly by another context of
//! its CPU while a remote taker may take it. A section that saw fast mode may be interrupted by
//! one that sees slow mode (a taker entered in between): the interrupt's `cmpxchg` on the same
//! CPU is ordered after the interrupted context's plain store, so it finds the word held.
//!
//! # Atomic context
//!
//! A remote reader outside task context cannot wait for a grace period: [`SlotSync::try_enter`]
//! joins the slow mode only if it is already established (a grace period has passed since it was
//! entered), else it fails and the caller reports "busy" (and may arrange for the mode to be
//! entered from task context so that a later try succeeds).

use core::sync::atomic::{
    compiler_fence, AtomicU32,
    Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst},
};

/// RCU's grace period as the mode protocol needs it.
pub trait GracePeriod {
    /// Waits until every section with preemption or interrupts disabled that began before the
    /// call has ended (`synchronize_rcu()`). Task context.
    fn synchronize(&self);

    /// Arranges for [`SlotSync::passed`] to be called on this protocol's [`SlotSync`] once a grace
    /// period from now has elapsed (`call_rcu()`). Any context. The protocol never has two such
    /// calls pending.
    fn call_after(&self);
}

/// No remote taker, none pending: the owners take their words plainly.
const IDLE: u32 = 0;
/// A remote taker waits for the first grace period after slow mode began.
const ENTER: u32 = 1;
/// Slow mode established: remote takers may take words.
const PASSED: u32 = 2;
/// No remote taker any more; a callback returns to fast mode a grace period from now.
const EXIT: u32 = 3;
/// As [`EXIT`], but a taker came and went meanwhile: the callback waits one more grace period.
const REPLAY: u32 = 4;
/// The mode's bits; the rest of the word counts the remote takers.
const MODE: u32 = 7;
/// One remote taker in the word's count.
const TAKER: u32 = 8;

/// The mode of one set of slot locks: one word, the mode in its low bits and the number of
/// remote takers above them. It is 0 exactly in fast mode (no taker can be counted in it).
///
/// # Invariants
///
/// The mode is one of `IDLE`, `ENTER`, `PASSED`, `EXIT`, `REPLAY`; `IDLE` has no takers, `EXIT`
/// and `REPLAY` have none when their callback runs unless a taker entered after them; a
/// [`GracePeriod::call_after`] is pending exactly in `EXIT` and `REPLAY`.
#[repr(transparent)]
#[derive(Debug, Default)]
pub struct SlotSync {
    word: AtomicU32,
}

impl SlotSync {
    /// Fast mode, no taker.
    pub const fn new() -> Self {
        Self {
            word: AtomicU32::new(IDLE),
        }
    }

    /// The protocol on a word that lives elsewhere (the kernel's lock set, in C).
    ///
    /// # Safety
    ///
    /// `word` is valid, aligned, only ever accessed atomically (as this type does), and lives as
    /// long as `'a`.
    pub unsafe fn from_ptr<'a>(word: *mut u32) -> &'a Self {
        // SAFETY: `SlotSync` is a transparent `AtomicU32`; the caller's promises are
        // `AtomicU32::from_ptr`'s.
        unsafe { &*core::ptr::from_ref(AtomicU32::from_ptr(word)).cast::<Self>() }
    }

    /// Whether the owners may take their words plainly: no remote taker and none pending. Read
    /// by an owner inside its section, before it touches its word (an acquire load: a plain
    /// `mov` on x86).
    #[inline(always)]
    pub fn is_fast(&self) -> bool {
        self.word.load(Acquire) == IDLE
    }

    /// The raw word (mode and takers), for reports and tests.
    pub fn raw(&self) -> u32 {
        self.word.load(Relaxed)
    }

    /// Number of remote takers counted now.
    pub fn takers(&self) -> u32 {
        self.raw() / TAKER
    }

    /// Whether slow mode is established (a grace period passed since it was entered).
    pub fn is_established(&self) -> bool {
        matches!(self.raw() & MODE, PASSED | EXIT | REPLAY)
    }

    /// A remote taker (task context, may sleep) joins slow mode: on return no owner section
    /// that saw fast mode is running, and none will start until [`SlotSync::exit`]. The first
    /// taker after fast mode waits one grace period; one that finds slow mode established does
    /// not wait.
    pub fn enter(&self, gp: &impl GracePeriod) {
        if self.join() {
            gp.synchronize();
            self.establish();
        }
    }

    /// The first half of [`SlotSync::enter`]: counts the taker in, the mode word slow; whether it
    /// must wait for a grace period and then call [`SlotSync::establish`] (slow mode is not
    /// established yet). The two halves are separate for the model test, which runs the grace
    /// period as steps of its own.
    pub fn join(&self) -> bool {
        let old = self
            .word
            .fetch_update(AcqRel, Relaxed, |w| {
                let mode = if w & MODE == IDLE { ENTER } else { w & MODE };
                Some((w & !MODE) + TAKER + mode)
            })
            .unwrap_or_else(|w| w);
        // The mode word is slow since before this call: a grace period from now, every section
        // that may have read it fast has ended. A taker that found `ENTER` waits for a grace
        // period of its own rather than for the first taker's.
        matches!(old & MODE, IDLE | ENTER)
    }

    /// The second half of [`SlotSync::enter`], a grace period after [`SlotSync::join`] asked
    /// for one: slow mode established (unless a callback or another taker established it).
    pub fn establish(&self) {
        let _ = self.word.fetch_update(AcqRel, Relaxed, |w| {
            (w & MODE == ENTER).then_some((w & !MODE) | PASSED)
        });
    }

    /// [`SlotSync::enter`] for a caller that must not wait (outside task context): joins slow
    /// mode only if it is established, else `false` and nothing changed.
    pub fn try_enter(&self) -> bool {
        self.word
            .fetch_update(AcqRel, Relaxed, |w| {
                matches!(w & MODE, PASSED | EXIT | REPLAY).then_some(w + TAKER)
            })
            .is_ok()
    }

    /// A remote taker that entered (and released every word it took) leaves; the last one
    /// arranges the return to fast mode a grace period later. Any context.
    pub fn exit(&self, gp: &impl GracePeriod) {
        let old = self
            .word
            .fetch_update(Release, Relaxed, |w| {
                assert!(w >= TAKER, "slot sync: exit without enter");
                let w = w - TAKER;
                Some(match (w >= TAKER, w & MODE) {
                    (false, PASSED) => (w & !MODE) | EXIT,
                    (false, EXIT) => (w & !MODE) | REPLAY,
                    _ => w,
                })
            })
            .unwrap_or_else(|w| w);
        if old < 2 * TAKER && old & MODE == PASSED {
            gp.call_after();
        }
    }

    /// The callback a grace period after [`GracePeriod::call_after`]: back to fast mode if no
    /// taker came meanwhile; slow mode established if one is in; one more grace period if takers
    /// came and went.
    pub fn passed(&self, gp: &impl GracePeriod) {
        let old = self
            .word
            .fetch_update(AcqRel, Relaxed, |w| {
                Some(if w >= TAKER {
                    (w & !MODE) | PASSED
                } else if w & MODE == REPLAY {
                    EXIT
                } else {
                    IDLE
                })
            })
            .unwrap_or_else(|w| w);
        if old < TAKER && old & MODE == REPLAY {
            gp.call_after();
        }
    }

    /// Before the lock set goes away (no taker left): whether a callback is still pending, after
    /// making sure that it will not ask for another (the caller then waits for it: `rcu_barrier()`).
    pub fn quiesce(&self) -> bool {
        let old = self
            .word
            .fetch_update(AcqRel, Relaxed, |w| {
                (w & MODE == REPLAY).then_some((w & !MODE) | EXIT)
            })
            .unwrap_or_else(|w| w);
        debug_assert!(old < TAKER, "slot sync: takers left at teardown");
        matches!(old & MODE, EXIT | REPLAY)
    }
}

impl SlotSync {
    /// The owner's acquire of its CPU's lock word `word` (0 free, 1 held), inside its section
    /// (preemption or interrupts off): in fast mode a plain load and store, in slow mode a
    /// `cmpxchg` ([`try_lock_atomic`]). Whether it took the word.
    ///
    /// The mode and the word are loaded first and tested together: in fast mode with the word
    /// free (the owner's common case) one test, then the store.
    #[inline(always)]
    pub fn try_lock_local(&self, word: &AtomicU32) -> bool {
        let mode = self.word.load(Acquire);
        if mode | word.load(Relaxed) == 0 {
            // Fast mode: only this CPU's contexts touch the word (module documentation), so no
            // read-modify-write.
            word.store(1, Relaxed);
            // A nested interrupt that finds the word free runs before the slot is touched
            // here: the slot's accesses stay after the store (no instruction: a compiler
            // barrier).
            compiler_fence(SeqCst);
            return true;
        }
        mode != IDLE && try_lock_atomic(word)
    }
}

/// The acquire of a lock word by `cmpxchg` from free (0) to held (1): the owner's in slow mode
/// (and always for lock sets without the fast mode), a remote taker's. Whether it took it.
#[inline(always)]
pub fn try_lock_atomic(word: &AtomicU32) -> bool {
    word.compare_exchange(0, 1, Acquire, Relaxed).is_ok()
}

/// The release of a word [`try_lock_local`] or a remote taker took: a release store of 0 (the
/// same in both modes).
#[inline(always)]
pub fn unlock(word: &AtomicU32) {
    word.store(0, Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    /// A grace period that counts its uses; `call_after` is only recorded.
    #[derive(Default)]
    struct Gp {
        syncs: Cell<u32>,
        calls: Cell<u32>,
    }

    impl GracePeriod for Gp {
        fn synchronize(&self) {
            self.syncs.set(self.syncs.get() + 1);
        }
        fn call_after(&self) {
            self.calls.set(self.calls.get() + 1);
        }
    }

    #[test]
    fn a_burst_of_takers_pays_one_grace_period() {
        let s = SlotSync::new();
        let gp = Gp::default();
        assert!(s.is_fast());
        assert!(!s.try_enter());
        s.enter(&gp);
        assert!(!s.is_fast() && s.is_established() && s.takers() == 1);
        assert_eq!(gp.syncs.get(), 1);
        s.exit(&gp);
        assert_eq!(gp.calls.get(), 1);
        assert!(!s.is_fast());
        for _ in 0..5 {
            s.enter(&gp);
            assert!(s.try_enter());
            s.exit(&gp);
            s.exit(&gp);
        }
        // No grace period waited for and no second callback: the one pending replays.
        assert_eq!((gp.syncs.get(), gp.calls.get()), (1, 1));
        s.passed(&gp);
        assert_eq!(gp.calls.get(), 2);
        assert!(!s.is_fast());
        s.passed(&gp);
        assert!(s.is_fast());
        assert_eq!(s.raw(), 0);
        assert!(!s.quiesce());
    }

    #[test]
    fn a_taker_in_at_the_callback_keeps_slow_mode() {
        let s = SlotSync::new();
        let gp = Gp::default();
        s.enter(&gp);
        s.exit(&gp);
        s.enter(&gp);
        s.passed(&gp);
        assert!(s.is_established() && s.takers() == 1);
        s.exit(&gp);
        assert_eq!(gp.calls.get(), 2);
        assert!(s.quiesce());
        s.passed(&gp);
        assert!(s.is_fast());
    }

    #[test]
    fn quiesce_stops_a_replay() {
        let s = SlotSync::new();
        let gp = Gp::default();
        s.enter(&gp);
        s.exit(&gp);
        s.enter(&gp);
        s.exit(&gp);
        assert!(s.quiesce());
        s.passed(&gp);
        assert_eq!(gp.calls.get(), 1);
        assert!(s.is_fast());
    }

    #[test]
    fn the_local_acquire_in_both_modes() {
        let s = SlotSync::new();
        let gp = Gp::default();
        let w = AtomicU32::new(0);
        assert!(s.try_lock_local(&w));
        assert!(!s.try_lock_local(&w));
        unlock(&w);
        s.enter(&gp);
        assert!(s.try_lock_local(&w));
        assert!(!s.try_lock_local(&w));
        assert!(!try_lock_atomic(&w));
        unlock(&w);
        assert!(try_lock_atomic(&w));
        assert!(!s.try_lock_local(&w));
        unlock(&w);
        s.exit(&gp);
        s.passed(&gp);
        assert!(s.is_fast() && s.try_lock_local(&w));
        unlock(&w);
        assert_eq!(w.load(Relaxed), 0);
    }
}
