// SPDX-License-Identifier: GPL-2.0

//! KUnit suite of the context contract (`kmalloc43.h`, `Documentation/linux.rst`): `NOWAIT`
//! malloc, free, `usable_size`, the type statistics and the totals work in every context
//! `kmalloc` works in. Each case runs the same calls once in each context the C helper
//! `kmalloc43_c_run_in_context` provides (preemption off; under a `spinlock_t` with interrupts
//! off; softirq; hardirq from an hrtimer and from an irq_work, both in the default mode), on a
//! heap in each size-class mode, with DIAGNOSTIC off (the magazine paths) and on (the global
//! path). The test kernel has lockdep, so a lock taken in a context the contract does not allow
//! is a splat, which fails `make check`. Waits are on a completion (a 10 s bound fails the case).

use crate::kunit_support::*;

#[kunit_tests(kmalloc43_contexts)]
mod contexts {
    use super::*;
    use kernel::ffi::{c_int, c_uint, c_void};

    extern "C" {
        fn kmalloc43_c_run_in_context(
            ctx: c_uint,
            f: unsafe extern "C" fn(*mut c_void),
            arg: *mut c_void,
        ) -> c_int;
    }

    /// What the C helper saw in the callback (`KM43_SEEN_*`).
    const SEEN_HARDIRQ: c_int = 0x1;
    const SEEN_SOFTIRQ: c_int = 0x2;
    const SEEN_IRQS_OFF: c_int = 0x4;
    const SEEN_ATOMIC: c_int = 0x8;

    /// Contexts, with the `SEEN_*` bits each must show and must not show.
    const CONTEXTS: [(&str, c_uint, c_int, c_int); 5] = [
        (
            "preemption off",
            0,
            SEEN_ATOMIC,
            SEEN_HARDIRQ | SEEN_SOFTIRQ,
        ),
        (
            "spinlock_t, irqs off",
            1,
            SEEN_ATOMIC | SEEN_IRQS_OFF,
            SEEN_HARDIRQ | SEEN_SOFTIRQ,
        ),
        ("softirq", 2, SEEN_SOFTIRQ | SEEN_ATOMIC, SEEN_HARDIRQ),
        ("hrtimer (default mode)", 3, SEEN_HARDIRQ | SEEN_IRQS_OFF, 0),
        ("irq_work", 4, SEEN_HARDIRQ | SEEN_IRQS_OFF, 0),
    ];

    /// Sizes: small pieces, the largest class, page runs from magazines and a run above them.
    const SIZES: [usize; 7] = [16, 64, 1000, 4096, 8192, 65536, 200_000];

    /// The calls' inputs and verdicts, shared with the callback.
    struct Run<'a> {
        heap: &'a Heap,
        free_ty: MallocType,
        full_ty: MallocType,
        /// Number of the first step that went wrong, 0 if none.
        failed: usize,
    }

    /// The callback: every call the contract allows, each checked.
    ///
    /// # Safety
    ///
    /// `arg` points to a live [`Run`] that nothing else touches until the helper returns.
    unsafe extern "C" fn calls(arg: *mut c_void) {
        // SAFETY: the function's safety requirement.
        let r = unsafe { &mut *arg.cast::<Run<'_>>() };
        r.failed = check_calls(r.heap, r.free_ty, r.full_ty).err().unwrap_or(0);
    }

    fn check_calls(h: &Heap, t: MallocType, full: MallocType) -> Result<(), usize> {
        for (i, &size) in SIZES.iter().enumerate() {
            let step = 10 * (i + 1);
            let p = h.malloc(size, t, NOWAIT).map_err(|_| step + 1)?;
            let usable = h.usable_size(p).map_err(|_| step + 2)?;
            if usable < size {
                return Err(step + 3);
            }
            // Nothing else holds a slot of this heap: outside task context too, an answer,
            // exact (`None` would be `-EBUSY`).
            let st = h.type_stats_any(t).ok_or(step + 7)?.map_err(|_| step + 4)?;
            if st.inuse != 1 || st.memuse != usable {
                return Err(step + 5);
            }
            h.free(p, t).map_err(|_| step + 6)?;
        }
        // At its limit a type refuses NOWAIT at once, whatever the context.
        if !matches!(h.malloc(64, full, NOWAIT), Err(MallocError::Limit { .. })) {
            return Err(100);
        }
        let _ = crate::debugfs::totals(h);
        Ok(())
    }

    fn contexts_in(mode: SizeClasses, diagnostic: bool) {
        let (h, t) = heap_and_type(mode, diagnostic, "ctx");
        let full = ty(&h, "ctx_full", 4096);
        let filler = h.malloc(4096, full, WAITOK).expect("fill the limited type");
        for (name, ctx, must, must_not) in CONTEXTS {
            let mut run = Run {
                heap: &h,
                free_ty: t,
                full_ty: full,
                failed: usize::MAX,
            };
            // A reader that may not sleep answers in established slow mode only (in fast mode
            // it is busy: `slotsync_kunit`): held here, so that every context gets an answer.
            let hold = h.front.cpus.hold_slow();
            // SAFETY: `run` outlives the call (the helper waits for the callback, or cancels it
            // before it returns), and only the callback touches it meanwhile.
            let seen = unsafe {
                kmalloc43_c_run_in_context(ctx, calls, core::ptr::from_mut(&mut run).cast())
            };
            drop(hold);
            assert!(seen >= 0, "{name}: the helper failed ({seen})");
            assert_eq!(seen & must, must, "{name}: seen {seen:#x}");
            assert_eq!(seen & must_not, 0, "{name}: seen {seen:#x}");
            assert_eq!(run.failed, 0, "{name}: step {} failed", run.failed);
            let st = h.type_stats(t).expect("stats");
            assert_eq!((st.inuse, st.memuse), (0, 0), "{name}: everything freed");
        }
        h.free(filler, full).expect("free");
        audit(&h);
    }

    #[test]
    fn nowait_calls_work_in_every_allowed_context() {
        in_every_mode(|mode| contexts_in(mode, false));
    }

    #[test]
    fn nowait_calls_work_in_every_allowed_context_with_diagnostic() {
        in_every_mode(|mode| contexts_in(mode, true));
    }
}
