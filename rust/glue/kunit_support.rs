// SPDX-License-Identifier: GPL-2.0

//! What the module's KUnit suites share: private heaps, types, audits, a second context.
//!
//! The fixture: [`heap_and_type`] and [`in_every_mode`] set a case up, [`every_page_back`]
//! ends it; [`on_every_cpu`] runs a case's kthreads on every online CPU and
//! [`with_hardirq`] its irq_work (both take the case's state in an `Arc` and a plain Rust
//! function, and wait for their kthreads or free their irq_work before they return); slow cases
//! are listed in each suite's `SLOW` and marked by [`mark_slow`] at module init.
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
//! | `kmalloc43_hostile_free_list` | `heap_kunit.rs` | freed pieces' links overwritten: cut or repaired |
//! | `kmalloc43_diag`     | `abi_kunit.rs`     | bad malloc/free input, C ABI type errors        |
//! | `kmalloc43_debugfs`  | `debugfs_kunit.rs` | limit and switch parsing through the writes     |
//! | `kmalloc43_vmem`     | `arenas_kunit.rs`  | client arenas through the C ABI                 |
//! | `kmalloc43_contexts` | `context_kunit.rs` | NOWAIT calls in every context the header allows |
//! | `kmalloc43_owners`   | `owners_kunit.rs`  | a going owner: orphans, adoption, disowning     |
//! | `kmalloc43_wrongtype`| `wrongtype_kunit.rs` | wrong-type frees refused exactly, both modes  |
//! | `kmalloc43_nested`   | `nested_kunit.rs`  | interrupts on a CPU whose slot is held          |
//! | `kmalloc43_magazines`| `magazines_kunit.rs` | magazines, depots, limits and the SMP stress  |
//! | `kmalloc43_shrinker` | `shrinker_kunit.rs` | the shrinker's count and scan, real pressure   |
//! | `kmalloc43_aging`    | `aging_kunit.rs`   | the timed aging pass and its work               |
//! | `kmalloc43_slotsync` | `slotsync_kunit.rs` | the slot lock's fast and slow mode             |

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

/// Runs `case` once in each size-class mode ([`MODES`]).
pub(crate) fn in_every_mode(case: impl Fn(SizeClasses)) {
    for mode in MODES {
        case(mode);
    }
}

/// A private heap with the size classes `classes` (DIAGNOSTIC on or off) and an unlimited type
/// `name` defined on it.
pub(crate) fn heap_and_type(
    classes: SizeClasses,
    diagnostic: bool,
    name: &'static str,
) -> (Arc<Heap>, MallocType) {
    let h = heap_with(classes, diagnostic);
    let t = ty(&h, name, 0);
    (h, t)
}

/// Defines a type on a private heap (`limit` 0: none).
pub(crate) fn ty(h: &Heap, name: &'static str, limit: usize) -> MallocType {
    let limit = if limit == 0 { usize::MAX } else { limit };
    h.define_type(name, "kunit", limit).expect("define")
}

/// The usable size (the charge) of a `size`-byte allocation of `t`, allocated and freed.
pub(crate) fn charge_of(h: &Heap, t: MallocType, size: usize) -> usize {
    let p = h.malloc(size, t, NOWAIT).expect("malloc");
    let charge = h.usable_size(p).expect("usable size");
    h.free(p, t).expect("free");
    charge
}

/// Asserts the heap is consistent.
pub(crate) fn audit(h: &Heap) {
    assert_eq!(h.audit(), Ok(()));
}

/// How a case ends with a private heap: undefines `types`, drops the heap (the case's last
/// reference) and asserts that every page it took went back to the page allocator.
pub(crate) fn every_page_back(h: Arc<Heap>, types: &[MallocType]) {
    for &t in types {
        h.undefine_type(t).expect("undefine");
    }
    let counters = h.counters().clone();
    drop(h);
    kernel::kunit_assert_eq!(
        "every_page_back",
        c"rust/glue/kunit_support.rs",
        0,
        counters.taken(),
        counters.given()
    );
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
struct OnCpus {
    _opaque: [u8; 0],
}

/// The C helpers' irq_work: a callback in hardirq context (opaque).
#[repr(C)]
struct IrqWork {
    _opaque: [u8; 0],
}

// The test helpers of the C file: kthreads bound to every online CPU, irq_work callbacks. The
// suites reach them through [`on_every_cpu`] and [`with_hardirq`].
extern "C" {
    fn kmalloc43_c_start_on_cpus(
        f: unsafe extern "C" fn(*mut c_void, c_uint) -> c_int,
        arg: *mut c_void,
    ) -> *mut OnCpus;
    fn kmalloc43_c_wait_on_cpus(r: *mut OnCpus) -> c_int;
    fn kmalloc43_c_on_cpus_done(r: *mut OnCpus) -> bool;
    fn kmalloc43_c_irq_work_new(
        f: unsafe extern "C" fn(*mut c_void),
        arg: *mut c_void,
    ) -> *mut IrqWork;
    fn kmalloc43_c_irq_work_queue(k: *mut IrqWork) -> bool;
    fn kmalloc43_c_irq_work_free(k: *mut IrqWork);
}

/// What a C helper runs: `f` on a case's state (boxed, so that a case that a failed KUnit
/// assertion ends, without running destructors, leaks it rather than freeing it under the
/// kthreads or the irq_work).
struct Call<St, F> {
    st: Arc<St>,
    f: F,
}

/// A kthread of [`on_every_cpu`].
type Kthread<St> = fn(&Arc<St>, c_uint) -> c_int;

/// The kthreads of [`on_every_cpu`] while `meanwhile` runs.
///
/// # Invariants
///
/// `r` is NULL (they could not be started) or a live handle of `kmalloc43_c_start_on_cpus`
/// that is waited for only after the last use of this value.
pub(crate) struct CpuThreads {
    r: *mut OnCpus,
}

impl CpuThreads {
    /// Whether the kthreads were started.
    pub(crate) fn started(&self) -> bool {
        !self.r.is_null()
    }

    /// Whether every kthread returned (at once if none could be started).
    pub(crate) fn done(&self) -> bool {
        // SAFETY: a non-NULL `r` is live (the type invariant).
        self.r.is_null() || unsafe { kmalloc43_c_on_cpus_done(self.r) }
    }
}

/// Runs `f(st, cpu)` in a kthread bound to each online CPU while this thread runs `meanwhile`,
/// then waits for every kthread. Returns their first non-zero result (`-ENOMEM` if they could
/// not be started: `meanwhile` then finds them done) and `meanwhile`'s.
pub(crate) fn on_every_cpu<St: Send + Sync, R>(
    st: &Arc<St>,
    f: Kthread<St>,
    meanwhile: impl FnOnce(&CpuThreads) -> R,
) -> (c_int, R) {
    /// # Safety
    ///
    /// `arg` points to a `Call<St, Kthread<St>>` that outlives the call.
    unsafe extern "C" fn run<St>(arg: *mut c_void, cpu: c_uint) -> c_int {
        // SAFETY: the caller's guarantee.
        let call = unsafe { &*arg.cast::<Call<St, Kthread<St>>>() };
        (call.f)(&call.st, cpu)
    }
    let Ok(call) = KBox::new(Call { st: st.clone(), f }, GFP_KERNEL) else {
        return (
            ENOMEM.to_errno(),
            meanwhile(&CpuThreads {
                r: core::ptr::null_mut(),
            }),
        );
    };
    let arg = (&raw const *call).cast_mut().cast::<c_void>();
    // SAFETY: `call` outlives every kthread: they are waited for below, before it is dropped.
    let r = unsafe { kmalloc43_c_start_on_cpus(run::<St>, arg) };
    let threads = CpuThreads { r };
    let out = meanwhile(&threads);
    let ret = if threads.r.is_null() {
        ENOMEM.to_errno()
    } else {
        // SAFETY: `r` came from `kmalloc43_c_start_on_cpus`; this is its only wait.
        unsafe { kmalloc43_c_wait_on_cpus(threads.r) }
    };
    drop(call);
    (ret, out)
}

/// An irq_work of [`with_hardirq`]: queued, it runs its callback in hardirq on this CPU.
///
/// # Invariants
///
/// `work` is a live irq_work of `kmalloc43_c_irq_work_new`, freed only after the last use of
/// this value.
pub(crate) struct Hardirq {
    work: *mut IrqWork,
}

// SAFETY: queueing an irq_work is allowed from any context and on any CPU, concurrently.
unsafe impl Sync for Hardirq {}

impl Hardirq {
    /// Queues the irq_work on this CPU; `false` if it was still pending (it runs once for both).
    pub(crate) fn queue(&self) -> bool {
        // SAFETY: `work` is live (the type invariant).
        unsafe { kmalloc43_c_irq_work_queue(self.work) }
    }
}

/// Makes an irq_work that runs `f(st)` in hardirq, runs `with` with it, then frees it (a
/// pending run synced first). `None`, without calling `with`, if the irq_work could not be
/// made.
pub(crate) fn with_hardirq<St: Send + Sync, R>(
    st: &Arc<St>,
    f: fn(&St),
    with: impl FnOnce(&Hardirq) -> R,
) -> Option<R> {
    /// # Safety
    ///
    /// `arg` points to a `Call<St, fn(&St)>` that outlives the irq_work.
    unsafe extern "C" fn run<St>(arg: *mut c_void) {
        // SAFETY: the caller's guarantee.
        let call = unsafe { &*arg.cast::<Call<St, fn(&St)>>() };
        (call.f)(&call.st)
    }
    let call = KBox::new(Call { st: st.clone(), f }, GFP_KERNEL).ok()?;
    let arg = (&raw const *call).cast_mut().cast::<c_void>();
    // SAFETY: `call` outlives the irq_work: it is freed (a pending run synced) before `call`
    // is dropped.
    let work = unsafe { kmalloc43_c_irq_work_new(run::<St>, arg) };
    if work.is_null() {
        return None;
    }
    let hardirq = Hardirq { work };
    let out = with(&hardirq);
    // SAFETY: the last use of `hardirq`; the free syncs a pending run first.
    unsafe { kmalloc43_c_irq_work_free(hardirq.work) };
    drop(call);
    Some(out)
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

/// A case's state and the irq_work its kthreads raise: what [`on_cpus_with_irq_work`]'s
/// kthreads get.
pub(crate) struct Raising<'a, St> {
    /// The case's state.
    pub(crate) st: Arc<St>,
    /// The irq_work, which runs the case's callback on `st`.
    pub(crate) work: &'a Hardirq,
}

/// Runs `kthread` on every online CPU, with `st` and an irq_work that runs `callback` on `st`,
/// waits for every kthread and frees the irq_work (a pending run synced first). The kthreads'
/// first non-zero result, or `-ENOMEM`.
pub(crate) fn on_cpus_with_irq_work<St: Send + Sync>(
    st: &Arc<St>,
    callback: fn(&St),
    kthread: fn(&Arc<Raising<'_, St>>, c_uint) -> c_int,
) -> c_int {
    with_hardirq(st, callback, |work| {
        let Ok(raising) = Arc::new(
            Raising {
                st: st.clone(),
                work,
            },
            GFP_KERNEL,
        ) else {
            return ENOMEM.to_errno();
        };
        on_every_cpu(&raising, kthread, |_| ()).0
    })
    .unwrap_or(ENOMEM.to_errno())
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
