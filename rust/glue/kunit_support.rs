// SPDX-License-Identifier: GPL-2.0

//! What the module's KUnit suites share: private heaps, types, audits, a second context.
//!
//! The suites live next to the glue they test (`*_kunit.rs` beside each file of `rust/glue/`),
//! behind `CONFIG_KMALLOC43_KUNIT_TEST`, and run at insmod in the guest (after init, so the
//! global service exists). Each covers one concept; every bad input asserts its error and then
//! runs the audits (malloc core, kmem arena, page arena, client arenas). Tests use private
//! heaps (`Heap::new`), so their page counters are exact, except where they test the C ABI,
//! which always goes to the module's service.
//!
//! | suite                | file               | covers                                          |
//! |----------------------|--------------------|-------------------------------------------------|
//! | `kmalloc43_pages`    | `pages_kunit.rs`   | chunk import/release, counters, teardown        |
//! | `kmalloc43_malloc`   | `heap_kunit.rs`    | sizes, alignment, realloc, ZERO, GFP_KERNEL     |
//! | `kmalloc43_limits`   | `heap_kunit.rs`    | NOWAIT at a limit, WAITOK sleeping and woken    |
//! | `kmalloc43_diag`     | `abi_kunit.rs`     | bad malloc/free input, C ABI type errors        |
//! | `kmalloc43_debugfs`  | `debugfs_kunit.rs` | limit and switch parsing through the writes     |
//! | `kmalloc43_vmem`     | `arenas_kunit.rs`  | client arenas through the C ABI                 |
//! | `kmalloc43_contexts` | `context_kunit.rs` | NOWAIT calls in every context the header allows |
//! | `kmalloc43_owners`   | `owners_kunit.rs`  | a going owner: orphans, adoption, disowning     |
//! | `kmalloc43_wrongtype`| `wrongtype_kunit.rs` | wrong-type frees refused exactly, both modes  |
//! | `kmalloc43_nested`   | `nested_kunit.rs`  | interrupts on a CPU whose slot is held          |

pub(crate) use core::ptr::NonNull;

use kernel::ffi::{c_int, c_uint, c_void};

pub(crate) use kernel::{
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, Completion,
    },
    time::{delay::fsleep, Delta},
    workqueue,
};

use kernel::{bindings, ThisModule};

pub(crate) use crate::heap::Heap;
pub(crate) use crate::malloc::{MallocError, MallocFlags, MallocType, SizeClasses, MAX_ALLOC_SIZE};

pub(crate) const WAITOK: MallocFlags = MallocFlags::WAITOK;
pub(crate) const NOWAIT: MallocFlags = MallocFlags::NOWAIT;

/// A private heap with 4-page chunks, DIAGNOSTIC on or off.
pub(crate) fn heap(diagnostic: bool) -> Arc<Heap> {
    Heap::new(2, diagnostic).expect("heap")
}

/// A private heap with 4-page chunks and the size classes `classes`, DIAGNOSTIC on or off.
pub(crate) fn heap_with(classes: SizeClasses, diagnostic: bool) -> Arc<Heap> {
    Heap::with_classes(2, classes, diagnostic).expect("heap")
}

/// Both size-class modes: the suites that exercise buckets run in each.
pub(crate) const MODES: [SizeClasses; 2] = [SizeClasses::Pow2, SizeClasses::Fine];

/// Defines a type on a private heap (`limit` 0: none).
pub(crate) fn ty(h: &Heap, name: &'static str, limit: usize) -> MallocType {
    let limit = if limit == 0 { usize::MAX } else { limit };
    h.define_type(name, "kunit", limit).expect("define")
}

/// Asserts the heap is consistent.
pub(crate) fn audit(h: &Heap) {
    assert_eq!(h.audit(), Ok(()));
}

/// Sleeps until `cond` holds, at most about two seconds; whether it held.
pub(crate) fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if cond() {
            return true;
        }
        fsleep(Delta::from_millis(10));
    }
    cond()
}

/// What a second context reports back.
#[pin_data]
pub(crate) struct Shared {
    #[pin]
    pub(crate) done: Completion,
    pub(crate) finished: Atomic<usize>,
    pub(crate) addr: Atomic<usize>,
}

impl Shared {
    pub(crate) fn new() -> Arc<Self> {
        Arc::pin_init(
            pin_init!(Shared {
                done <- Completion::new(),
                finished: Atomic::new(0),
                addr: Atomic::new(0),
            }),
            GFP_KERNEL,
        )
        .expect("shared")
    }
}

/// Runs `f` on the system workqueue; its address result lands in the returned `Shared`.
pub(crate) fn spawn(f: impl FnOnce() -> usize + Send + 'static) -> Arc<Shared> {
    let shared = Shared::new();
    let s = shared.clone();
    workqueue::system()
        .try_spawn(GFP_KERNEL, move || {
            s.addr.store(f(), Relaxed);
            s.finished.store(1, Relaxed);
            s.done.complete_all();
        })
        .expect("spawn");
    shared
}

/// The C helpers' kthreads on every online CPU (opaque).
#[repr(C)]
pub(crate) struct OnCpus {
    _opaque: [u8; 0],
}

/// The C helpers' irq_work: a callback in hardirq context (opaque).
#[repr(C)]
pub(crate) struct IrqWork {
    _opaque: [u8; 0],
}

// The test helpers of the C file: kthreads bound to every online CPU, irq_work callbacks.
extern "C" {
    pub(crate) fn kmalloc43_c_start_on_cpus(
        f: unsafe extern "C" fn(*mut c_void, c_uint) -> c_int,
        arg: *mut c_void,
    ) -> *mut OnCpus;
    pub(crate) fn kmalloc43_c_wait_on_cpus(r: *mut OnCpus) -> c_int;
    pub(crate) fn kmalloc43_c_on_cpus_done(r: *mut OnCpus) -> bool;
    pub(crate) fn kmalloc43_c_irq_work_new(
        f: unsafe extern "C" fn(*mut c_void),
        arg: *mut c_void,
    ) -> *mut IrqWork;
    pub(crate) fn kmalloc43_c_irq_work_queue(k: *mut IrqWork) -> bool;
    pub(crate) fn kmalloc43_c_irq_work_free(k: *mut IrqWork);
}

/// Spins (or, with `sleep`, sleeps 100 us at a time) until `stage` reaches `target`; `false`,
/// counted in `errors`, if it did not within the bound (about 10 s; the test then fails).
pub(crate) fn wait_for_stage(
    stage: &Atomic<usize>,
    target: usize,
    errors: &Atomic<usize>,
    sleep: bool,
) -> bool {
    let bound = if sleep { 100_000 } else { 1usize << 28 };
    for _ in 0..bound {
        if stage.load(Relaxed) >= target {
            return true;
        }
        if sleep {
            fsleep(Delta::from_micros(100));
        } else {
            core::hint::spin_loop();
        }
    }
    errors.fetch_add(1, Relaxed);
    false
}

/// Runs `kthread` on every online CPU, with a pair of `st` and an irq_work that runs
/// `callback` on `st` (as a `usize`) as its argument, waits for every kthread and frees the
/// irq_work (a pending run synced first). The kthreads' first non-zero result, or
/// `-ENOMEM`.
///
/// # Safety
///
/// `callback` takes a pointer to a `St`, and `kthread` a pointer to an `(Arc<St>, usize)`,
/// valid for the call.
pub(crate) unsafe fn on_cpus_with_irq_work<St>(
    st: &Arc<St>,
    callback: unsafe extern "C" fn(*mut c_void),
    kthread: unsafe extern "C" fn(*mut c_void, c_uint) -> c_int,
) -> c_int {
    let st_arg = Arc::as_ptr(st).cast_mut().cast::<c_void>();
    // SAFETY: `st` outlives the irq_work (freed below, after a sync).
    let work = unsafe { kmalloc43_c_irq_work_new(callback, st_arg) };
    if work.is_null() {
        return ENOMEM.to_errno();
    }
    let pair = (st.clone(), work as usize);
    let arg = (&raw const pair).cast_mut().cast::<c_void>();
    // SAFETY: `pair` outlives every kthread (waited for below).
    let r = unsafe { kmalloc43_c_start_on_cpus(kthread, arg) };
    let ret = if r.is_null() {
        ENOMEM.to_errno()
    } else {
        // SAFETY: `r` came from `kmalloc43_c_start_on_cpus` and is waited for once.
        unsafe { kmalloc43_c_wait_on_cpus(r) }
    };
    // SAFETY: queued only by kthreads that returned; the free syncs a pending run first.
    unsafe { kmalloc43_c_irq_work_free(work) };
    ret
}

/// A suite's cases that KUnit must know to be slow: they run longer than its threshold (one
/// second) on the guest. A C suite lists them with `KUNIT_CASE_SLOW`; the Rust `#[kunit_tests]`
/// macro of this kernel gives every case the `normal` speed, so [`mark_slow`] sets the attribute
/// at module init instead.
pub(crate) struct SlowCases {
    /// The suite's name, as given to `#[kunit_tests]`.
    pub(crate) suite: &'static CStr,
    /// The names of its slow cases (their functions' names).
    pub(crate) cases: &'static [&'static CStr],
}

/// Whether the C string at `name` is `want`.
///
/// # Safety
///
/// `name` points to a NUL-terminated string.
unsafe fn named(name: *const kernel::ffi::c_char, want: &CStr) -> bool {
    // SAFETY: the caller's guarantee.
    unsafe { CStr::from_char_ptr(name) }.to_bytes() == want.to_bytes()
}

/// Gives the cases of `lists` KUnit's `slow` speed attribute (`speed: slow` in the KTAP output,
/// no "Test should be marked slow" warning, the slow timeout, and `kunit.filter=speed>slow`
/// leaves them out), in the suites of `module`. `ENOENT`, with a message naming it, if a suite or
/// a case is not there (a renamed test): the module then refuses to load.
///
/// Called from the module's init: the KUnit executor reads the module's suites only once the
/// module is live (`kunit_module_notify`, `MODULE_STATE_LIVE`), after init returned.
pub(crate) fn mark_slow(module: &ThisModule, lists: &[SlowCases]) -> Result {
    let m = module.as_ptr();
    // SAFETY: `m` is this module, live while its init runs; its suite table
    // (`.kunit_test_suites`) was set up at load and is not read or written by anyone else until
    // init returns (see above).
    let (table, n) = unsafe { ((*m).kunit_suites, (*m).num_kunit_suites) };
    let suites: &[*mut bindings::kunit_suite] = if table.is_null() || n <= 0 {
        &[]
    } else {
        // SAFETY: `table` holds `n` suite pointers (above).
        unsafe { core::slice::from_raw_parts(table, n as usize) }
    };
    for list in lists {
        let mut found = None;
        for &s in suites {
            // SAFETY: each pointer of the table points to a live suite; its name is
            // NUL-terminated.
            if unsafe { named((*s).name.as_ptr(), list.suite) } {
                found = Some(s);
                break;
            }
        }
        let Some(suite) = found else {
            pr_err!("kunit: no suite {:?} to mark slow\n", list.suite);
            return Err(ENOENT);
        };
        for &want in list.cases {
            // SAFETY: the suite is live (above); its case array ends with a case whose
            // `run_case` is NULL, and nothing else accesses it until init returns.
            let mut case = unsafe { (*suite).test_cases };
            loop {
                // SAFETY: `case` is within the array (the loop stops at its terminator).
                let c = unsafe { &mut *case };
                if c.run_case.is_none() {
                    pr_err!(
                        "kunit: no case {:?} in suite {:?} to mark slow\n",
                        want,
                        list.suite
                    );
                    return Err(ENOENT);
                }
                // SAFETY: a case's name is a NUL-terminated string.
                if unsafe { named(c.name, want) } {
                    c.attr.speed = bindings::kunit_speed_KUNIT_SPEED_SLOW;
                    break;
                }
                // SAFETY: not the terminator yet, so the next case is within the array.
                case = unsafe { case.add(1) };
            }
        }
    }
    Ok(())
}
