// SPDX-License-Identifier: GPL-2.0

//! Per-CPU slots: a small, safe per-CPU abstraction for the magazine layer.
//!
//! Rust-for-Linux 7.3 has no per-CPU variables, so a [`PerCpu<T>`] is one cache-line-aligned,
//! separately allocated slot per possible CPU id, which begins with the CPU's spinlock (the C
//! file's `struct kmalloc43_pcpu_slot`, which the C side sets up and takes: [`CSlotLock`], so
//! that the lock word is on the slot's own line and page). Access is
//! only through guards that hold the right locks:
//!
//! * [`PerCpu::try_local`], [`PerCpu::local`]: the fast path. Disables preemption (or saves and
//!   disables local interrupts: the lock's flavour, below), reads the CPU id, takes *that* CPU's
//!   lock and yields its slot; `try_local` gives up if the lock is held, `local` waits for it.
//!   The lock is uncontended unless another CPU is taking every lock (or, with preemption off
//!   only, an interrupt arrived while this CPU's holder held it), and its cache line is this
//!   CPU's: the fast path writes no shared cache line. It is a `spinlock_t` for lockdep (the C
//!   side annotates it) but taken with the arch lock directly.
//! * [`PerCpu::lock_cpu`]: one CPU's slot from any CPU (task context), for a periodic pass that
//!   visits the CPUs in turn (the timed aging, `crate::aging`).
//! * [`PerCpu::all`]: every slot at once, locks taken in CPU order nested under one outer lock so
//!   that lockdep accepts one class many times (`spin_lock_nest_lock`): exact readings of
//!   per-CPU counters, drains.
//!
//! The lock's flavour is a type parameter ([`Flavour`]): [`IrqsOff`] (interrupts disabled) for
//! slots that are taken under another lock (the client arenas' quantum caches, under their
//! arena lock), and [`PreemptOff`] (preemption disabled, interrupts left as they are) for the
//! heap's slots, the sound design of `Documentation/performance.rst`: outside task context a
//! [`PreemptOff`] slot is only ever tried, its own CPU's, never waited for. Each flavour's locks
//! are a lockdep class of their own; an interrupt's trylock is annotated as one, so lockdep
//! records no hardirq use of the class for it (as for `local_trylock()`), and a wait outside
//! task context is both a lockdep splat and a warning on the test kernel.
//!
//! Each slot also has a *shared* part `S` next to its `T`, on the same cache line: `S` is `Sync`
//! (atomic words) and reachable from any CPU, in any context, without the slot's lock
//! ([`PerCpu::shared`], and the guards' `shared`). It holds what other CPUs must change without
//! waiting for the slot's holder: the types' credit words, which any CPU revokes with an atomic
//! exchange under the heap lock (`crate::magazine::ledger::Credit`).
//!
//! Where nothing needs the C helpers (Kbuild sets `kmalloc43_inline_slot_lock`: x86-64 without
//! lockdep, interrupt-flag tracing or paravirtualised interrupt and spinlock operations, e.g. the
//! bench kernel), [`PerCpu::local`] does the same inline, without a C call: an `incq` of the
//! per-CPU `__preempt_count` as `preempt_disable()` does (or `pushf; pop; cli` as
//! `local_irq_save()` does), this CPU's id from the per-CPU `cpu_number` as `smp_processor_id()`
//! reads it, and the fast paths of `queued_spin_lock()` and `queued_spin_unlock()` on the same
//! lock word (the C side takes it when the lock is held: a [`PerCpu::all`] holder). Nothing
//! that the C helpers do is left out there: their lockdep and irq-tracing calls are empty on
//! such a kernel. The release is the byte store of `queued_spin_unlock()` and a `decq` of the
//! preemption count, with `__preempt_schedule()` on the cold branch where it reaches zero, as
//! `preempt_enable()` does (or `sti` if interrupts were on). On the test kernel (lockdep) the
//! C helpers take the lock, annotated.
//!
//! The heap's ([`PreemptOff`]) locks have a fast and a slow mode (`crate::magazine::slot_sync`,
//! the protocol; `Documentation/magazines.rst`, "The slot lock's fast and slow mode"). While no
//! other CPU takes them (fast mode), the owner's acquire is a plain load and store of its lock
//! word, no `lock`-prefixed instruction. [`PerCpu::all`] and [`PerCpu::lock_cpu`] enter slow
//! mode first (they may sleep: the first one after fast mode waits for an RCU grace period) and
//! leave it when they are done; the mode turns fast again a grace period after the last one
//! left. In slow mode the owner's acquire is a `cmpxchg`, as before. [`PerCpu::try_all`] (any
//! context) cannot wait for a grace period: it joins slow mode only if it is established, and
//! otherwise fails and *kicks* (a work item enters slow mode and holds it for a second, so that
//! a later try finds it). [`IrqsOff`] locks always use `cmpxchg` (their remote taker runs under
//! the arena's spinlock, where it cannot wait for a grace period).
//!
//! Lock order: the heap's slot locks come before the heap lock and the depot locks (which are
//! taken with a slot lock held), never after; the quantum caches' ([`IrqsOff`]) come after their
//! arena's lock. Like `spin_lock_irqsave`, an [`IrqsOff`] guard restores the interrupt state it
//! saved, so such guards and the other interrupt-disabling locks are released in the reverse
//! order of taking them (scoped guards do that; code that drops one early says why it may).

use core::{
    cell::UnsafeCell,
    marker::PhantomData,
    ops::{Deref, DerefMut},
    ptr::NonNull,
};

#[cfg(kmalloc43_inline_slot_lock)]
use core::sync::atomic::Ordering::Release;
#[cfg(not(kmalloc43_inline_slot_lock))]
use kernel::ffi::c_ulong;
#[cfg(kmalloc43_inline_slot_lock)]
use kernel::ffi::{c_int, c_void};
use kernel::{ffi::c_uint, prelude::*, task::might_sleep, types::Opaque};
use pin_init::Zeroable;

#[cfg(kmalloc43_inline_slot_lock)]
use crate::magazine::slot_sync;
use crate::magazine::slot_sync::{GracePeriod, SlotSync};

/// The C side's lock set (opaque).
#[repr(C)]
pub(crate) struct CLocks {
    _opaque: [u8; 0],
}

/// How the owner of a [`PerCpu`] takes its own CPU's slot: the lock's flavour, a type parameter
/// so that the choice costs nothing at run time. Each flavour's locks are a lockdep class of
/// their own (the C lock set is created with [`Flavour::C_FLAVOUR`]).
pub(crate) trait Flavour {
    /// Local interrupts are disabled while the slot is held (else preemption only).
    const IRQS_OFF: bool;
    /// The C lock set's flavour: its lockdep classes and how the C helpers take a slot
    /// (`KMALLOC43_PCPU_*` in the C file).
    const C_FLAVOUR: c_uint;
}

/// Slots taken with local interrupts disabled: an interrupt can never find its own CPU's slot
/// held, so any context may wait for a slot, and a slot may be taken under another lock (the
/// client arenas' quantum caches take theirs under the arena lock).
pub(crate) struct IrqsOff;

impl Flavour for IrqsOff {
    const IRQS_OFF: bool = true;
    const C_FLAVOUR: c_uint = 0;
}

/// The heap's slots (the magazine layer's `CpuCache`s), taken with preemption disabled only
/// (`Documentation/performance.rst`, the sound design): an interrupt may arrive while its
/// CPU's slot is held and find it held (a *nested holder*, frozen until the interrupt returns).
/// So code that may run outside task context only ever tries its own CPU's slot
/// ([`PerCpu::try_local`]) and never waits for a slot; [`PerCpu::local`] and [`PerCpu::all`]
/// are for task context (the test kernel warns otherwise). In task context a held slot's
/// holder is on another CPU (a holder on this one would be running: preemption is off under
/// it), an all-slot holder that finishes without waiting for this task.
pub(crate) struct PreemptOff;

impl Flavour for PreemptOff {
    const IRQS_OFF: bool = false;
    const C_FLAVOUR: c_uint = 1;
}

extern "C" {
    fn kmalloc43_c_pcpu_locks_new(flavour: c_uint) -> *mut CLocks;
    fn kmalloc43_c_pcpu_slot_lock_size() -> usize;
    fn kmalloc43_c_pcpu_slot_init(l: *mut CLocks, cpu: c_uint, s: *mut CSlotLock);
    fn kmalloc43_c_pcpu_locks_free(l: *mut CLocks);
    fn kmalloc43_c_pcpu_lock_all(l: *mut CLocks) -> c_uint;
    fn kmalloc43_c_pcpu_trylock_all(l: *mut CLocks) -> c_uint;
    fn kmalloc43_c_pcpu_unlock_all(l: *mut CLocks);
    fn kmalloc43_c_pcpu_lock_cpu(l: *mut CLocks, cpu: c_uint) -> bool;
    fn kmalloc43_c_pcpu_unlock_cpu(l: *mut CLocks, cpu: c_uint);
    fn kmalloc43_c_nr_cpu_ids() -> c_uint;
    fn kmalloc43_c_in_task() -> bool;
    fn kmalloc43_c_may_sleep() -> bool;
    fn kmalloc43_c_pcpu_sync_word(l: *mut CLocks) -> *mut u32;
    fn kmalloc43_c_pcpu_sync_call(l: *mut CLocks);
    fn kmalloc43_c_pcpu_kick(l: *mut CLocks);
    fn kmalloc43_c_synchronize_rcu();
}

/// The mode protocol's grace period for the lock set `0`: RCU's.
struct Rcu(NonNull<CLocks>);

impl Rcu {
    /// The lock set's mode word.
    fn sync(&self) -> &SlotSync {
        // SAFETY: `self.0` is a live lock set (the callers': a `PerCpu`'s, or the C side's
        // callbacks on one before it is freed); its mode word is a `u32` only ever accessed
        // atomically (here, and `smp_load_acquire()` in the C helpers) that lives with it.
        unsafe { SlotSync::from_ptr(kmalloc43_c_pcpu_sync_word(self.0.as_ptr())) }
    }
}

impl GracePeriod for Rcu {
    fn synchronize(&self) {
        // SAFETY: FFI call without arguments; the protocol calls it in task context only.
        unsafe { kmalloc43_c_synchronize_rcu() }
    }

    fn call_after(&self) {
        // SAFETY: the lock set is live, and it is freed only after its pending callback ran
        // (`kmalloc43_c_pcpu_locks_free`: `rcu_barrier()`); the protocol never has two pending,
        // so its `rcu_head` is free.
        unsafe { kmalloc43_c_pcpu_sync_call(self.0.as_ptr()) }
    }
}

/// The C side's steps of the mode protocol on lock set `l`: `Some` unless `l` is NULL.
fn rcu_of(l: *mut CLocks) -> Option<Rcu> {
    NonNull::new(l).map(Rcu)
}

/// The kick's work item enters slow mode (task context, may sleep).
///
/// # Safety
///
/// `l` is a live lock set of the [`PreemptOff`] flavour.
#[no_mangle]
pub(crate) unsafe extern "C" fn kmalloc43_rust_pcpu_sync_enter(l: *mut CLocks) {
    if let Some(gp) = rcu_of(l) {
        gp.sync().enter(&gp);
    }
}

/// The kick's work item leaves slow mode (after its hold), or the teardown for it.
///
/// # Safety
///
/// `l` is a live lock set on which `kmalloc43_rust_pcpu_sync_enter` was called.
#[no_mangle]
pub(crate) unsafe extern "C" fn kmalloc43_rust_pcpu_sync_exit(l: *mut CLocks) {
    if let Some(gp) = rcu_of(l) {
        gp.sync().exit(&gp);
    }
}

/// The RCU callback of [`GracePeriod::call_after`].
///
/// # Safety
///
/// `l` is a live lock set whose callback this is.
#[no_mangle]
pub(crate) unsafe extern "C" fn kmalloc43_rust_pcpu_sync_passed(l: *mut CLocks) {
    if let Some(gp) = rcu_of(l) {
        gp.sync().passed(&gp);
    }
}

/// At teardown (no taker left): whether the mode's callback is still pending (the C side then
/// waits for it with `rcu_barrier()`).
///
/// # Safety
///
/// `l` is a live lock set.
#[no_mangle]
pub(crate) unsafe extern "C" fn kmalloc43_rust_pcpu_sync_quiesce(l: *mut CLocks) -> bool {
    rcu_of(l).is_some_and(|gp| gp.sync().quiesce())
}

#[cfg(not(kmalloc43_inline_slot_lock))]
extern "C" {
    fn kmalloc43_c_pcpu_lock_local(l: *mut CLocks) -> c_uint;
    fn kmalloc43_c_pcpu_trylock_local(l: *mut CLocks) -> c_uint;
    fn kmalloc43_c_pcpu_trylock_local_hint(l: *mut CLocks, addr: c_ulong) -> HintCpu;
    fn kmalloc43_c_pcpu_unlock_local(l: *mut CLocks, cpu: c_uint);
}

#[cfg(kmalloc43_inline_slot_lock)]
extern "C" {
    fn kmalloc43_c_pcpu_lock_word(l: *mut CLocks, cpu: c_uint) -> *mut u32;
    fn kmalloc43_c_pcpu_slot_table(l: *mut CLocks) -> *mut *mut c_void;
    fn kmalloc43_c_pcpu_lock_word_slow(word: *mut u32, task_only: bool);
    fn kmalloc43_c_preempt_schedule();
    /// This CPU's id: x86's per-CPU variable that `smp_processor_id()` reads.
    static cpu_number: c_int;
    /// This CPU's preemption count: x86's per-CPU `unsigned long` (Kbuild builds the inline
    /// slot lock only where it is 64 bits wide and `preempt_disable()` is its increment).
    static __preempt_count: u64;
}

/// `preempt_disable()`: an `incq` of this CPU's preemption count.
#[cfg(kmalloc43_inline_slot_lock)]
#[inline(always)]
fn preempt_disable() {
    // SAFETY: a `%gs`-relative increment of this CPU's preemption count, as
    // `__preempt_count_add(1)`; not `nomem`: like `barrier()`, no memory access moves across it.
    unsafe {
        core::arch::asm!("inc qword ptr gs:[rip + {0}]", sym __preempt_count, options(nostack))
    };
}

/// `preempt_enable()`: a `decq` of this CPU's preemption count and, when it reaches zero (a
/// reschedule is due and allowed: the count's top bit is the inverted need-resched flag),
/// `__preempt_schedule()`.
#[cfg(kmalloc43_inline_slot_lock)]
#[inline(always)]
fn preempt_enable() {
    // SAFETY: the decrement matching `preempt_disable`, as `__preempt_count_dec_and_test()`;
    // not `nomem`: no memory access (the slot's, the lock's release) moves below it. On zero
    // the cold branch calls the scheduler, as `preempt_enable()` does.
    unsafe {
        core::arch::asm!(
            "dec qword ptr gs:[rip + {0}]",
            "je {1}",
            sym __preempt_count,
            label { preempt_schedule_cold() },
            options(nostack),
        )
    };
}

/// The cold branch of [`preempt_enable`].
#[cfg(kmalloc43_inline_slot_lock)]
#[cold]
#[inline(never)]
fn preempt_schedule_cold() {
    // SAFETY: called with the preemption count just gone to zero, where `preempt_enable()`
    // calls `__preempt_schedule()`.
    unsafe { kmalloc43_c_preempt_schedule() };
}

/// The interrupt-enable flag of `RFLAGS` (`X86_EFLAGS_IF`).
#[cfg(kmalloc43_inline_slot_lock)]
const EFLAGS_IF: usize = 1 << 9;

/// Saves `RFLAGS` and disables local interrupts: `local_irq_save()` without irq tracing.
#[cfg(kmalloc43_inline_slot_lock)]
#[inline(always)]
fn irq_save() -> usize {
    let flags: usize;
    // SAFETY: `native_save_fl()` and `native_irq_disable()`: a balanced push and pop on the
    // stack and `cli`. Not `nomem`, so, like the kernel's `"memory"` clobber, no memory access
    // moves across it: the slot is only touched after it.
    unsafe { core::arch::asm!("pushfq", "pop {}", "cli", out(reg) flags) };
    flags
}

/// Restores the interrupt state `irq_save` returned: `local_irq_restore()` without irq tracing.
#[cfg(kmalloc43_inline_slot_lock)]
#[inline(always)]
fn irq_restore(flags: usize) {
    if flags & EFLAGS_IF != 0 {
        // SAFETY: `native_irq_enable()`; not `nomem`: a compiler barrier, so the slot's accesses
        // (and the lock's release store) stay before it.
        unsafe { core::arch::asm!("sti", options(nostack)) };
    }
}

/// This CPU's id; interrupts are off (the caller's `irq_save`), so it cannot change.
#[cfg(kmalloc43_inline_slot_lock)]
#[inline(always)]
fn this_cpu() -> usize {
    let cpu: u32;
    // SAFETY: a `%gs`-relative load of the per-CPU `cpu_number`, the instruction that
    // `smp_processor_id()` compiles to; it reads nothing else and writes nothing.
    unsafe {
        core::arch::asm!(
            "mov {0:e}, dword ptr gs:[rip + {1}]",
            out(reg) cpu,
            sym cpu_number,
            options(nostack, readonly, preserves_flags),
        )
    };
    cpu as usize
}

/// `struct kmalloc43_hint_cpu` of the C file: a page hint and a CPU id, returned in two registers.
#[cfg(not(kmalloc43_inline_slot_lock))]
#[repr(C)]
struct HintCpu {
    hint: c_ulong,
    cpu: c_uint,
}

/// `struct kmalloc43_pcpu_slot` of the C file: a CPU's lock (a `spinlock_t`) and the interrupt
/// state its holder saved, set up and used by the C side only, but kept at the start of the
/// CPU's slot (`PerCpu::new` checks the size against the C side's).
#[repr(C)]
pub(crate) struct CSlotLock {
    lock: Opaque<kernel::bindings::spinlock_t>,
    flags: kernel::ffi::c_ulong,
}

/// One CPU's slot, on a cache line of its own: the CPU's lock first (with the inline slot lock
/// its word is at the slot's address: no pointer to load), then the shared part and `T`. The
/// heap's `T` (`CpuCache`) puts its fast paths' fields first, so that a pair of most types
/// touches the slot's first page only (`crate::magazines::HOT_TYPES`), lock included.
#[repr(C, align(64))]
struct Slot<T, S> {
    /// The CPU's lock, the C side's (`kmalloc43_c_pcpu_slot_init`).
    lock: CSlotLock,
    /// The part any CPU may reach without the lock (`S: Sync`).
    shared: S,
    val: UnsafeCell<T>,
}

impl<T, S> Slot<T, S> {
    /// The slot's lock word (the C lock's `arch_spinlock_t`, at the slot's address: checked by
    /// `PerCpu::new`), for the inline slot lock.
    #[cfg(kmalloc43_inline_slot_lock)]
    #[inline(always)]
    fn word(&self) -> *mut u32 {
        self.lock.lock.get().cast::<u32>()
    }
}

/// Where `T` starts in a slot of `T` and `S` (bytes from the slot's start), for layout checks.
pub(crate) const fn value_offset<T, S>() -> usize {
    core::mem::offset_of!(Slot<T, S>, val)
}

// SAFETY: an all-zero `UnsafeCell<T>` is an all-zero `T`, valid because `T: Zeroable`, and
// likewise for `S`; the lock is an `Opaque` (any bytes) and an integer, zero until the C side
// initialises the lock (`kmalloc43_c_pcpu_slot_init`, before the slot is used).
unsafe impl<T: Zeroable, S: Zeroable> Zeroable for Slot<T, S> {}

/// A `T` per possible CPU, each reached under its CPU's lock, and an `S` per possible CPU that
/// anybody may read (`S: Sync`: atomics).
///
/// # Invariants
///
/// * `locks` comes from `kmalloc43_c_pcpu_locks_new`, is owned by this value and has one lock per
///   possible CPU (ids below `slots.len()` = `nr_cpu_ids`; the slot of an id that is not a
///   possible CPU is never reached by a fast path, only under [`PerCpu::all`]).
/// * `slots[cpu]` is accessed only while lock `cpu` is held: by its owner on that CPU with local
///   interrupts or preemption disabled, so that it stays on that CPU ([`LocalGuard`] from
///   [`PerCpu::local`] or [`PerCpu::try_local`]), or from any CPU through
///   [`PerCpu::all`] or, that slot alone, [`PerCpu::lock_cpu`]. A guard is the only way to reach a slot, and it hands out
///   `&mut T` only through `&mut self`, so no two references to one slot coexist.
/// * `slots[cpu].lock` is lock `cpu` of `locks` (`kmalloc43_c_pcpu_slot_init`), and with the
///   inline slot lock its arch lock word is at `slots[cpu]`'s address (`Slot::word`). The C
///   side uses the lock only while `locks` lives, which the slots outlive.
/// * `sync` is `locks`' mode word (`kmalloc43_c_pcpu_sync_word`), live as long as `locks`.
/// * With the inline slot lock, `table` is `locks`' table of slots (`kmalloc43_c_pcpu_slot_table`,
///   `nr_cpu_ids` entries, in the same allocation as the mode word), and `table[cpu]` is
///   `&*slots[cpu]`.
/// * `slots[cpu].shared` is only ever reached through shared references (it is never in a
///   guard's `&mut T`), so any number of them may coexist with the slot's holder.
/// * [`PreemptOff`]: every remote taker of a lock word ([`AllGuard`], [`CpuGuard`]) is a taker
///   of the mode protocol (`locks`' mode word, `sync`) for its whole hold: entered before it
///   takes a word, left after it released them.
pub(crate) struct PerCpu<T, S = (), L: Flavour = PreemptOff> {
    locks: NonNull<CLocks>,
    /// `locks`' mode word (`SlotSync`), read by every owner acquire.
    sync: NonNull<u32>,
    slots: KVec<KBox<Slot<T, S>>>,
    /// The slots' addresses by CPU id, next to the mode word: the owner's acquire reads both
    /// from one page of the C lock set.
    #[cfg(kmalloc43_inline_slot_lock)]
    table: NonNull<NonNull<Slot<T, S>>>,
    _flavour: PhantomData<L>,
}

// SAFETY: the `T`s are reached only under their CPU's lock (type invariant), so sharing the
// `PerCpu` between threads shares the `T`s only under mutual exclusion: `T: Send` suffices; the
// `S`s are shared by reference, from any thread: `S: Sync` (and `Send`, to be dropped anywhere).
unsafe impl<T: Send, S: Send + Sync, L: Flavour> Send for PerCpu<T, S, L> {}
// SAFETY: as above.
unsafe impl<T: Send, S: Send + Sync, L: Flavour> Sync for PerCpu<T, S, L> {}

impl<T: Zeroable, S: Zeroable, L: Flavour> PerCpu<T, S, L> {
    /// A zeroed `T` for every possible CPU id (sleeps: process context).
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: FFI call without arguments.
        let n = unsafe { kmalloc43_c_nr_cpu_ids() } as usize;
        let mut slots = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            slots.push(
                KBox::init(pin_init::init_zeroed::<Slot<T, S>>(), GFP_KERNEL)?,
                GFP_KERNEL,
            )?;
        }
        // SAFETY: FFI call without arguments.
        let c_size = unsafe { kmalloc43_c_pcpu_slot_lock_size() };
        if c_size != core::mem::size_of::<CSlotLock>() {
            pr_err!(
                "slot lock: the C side's is {} bytes, the slot has room for {}\n",
                c_size,
                core::mem::size_of::<CSlotLock>()
            );
            return Err(EINVAL);
        }
        // SAFETY: FFI call; NULL on allocation failure.
        let locks =
            NonNull::new(unsafe { kmalloc43_c_pcpu_locks_new(L::C_FLAVOUR) }).ok_or(ENOMEM)?;
        for (cpu, slot) in slots.iter_mut().enumerate() {
            // SAFETY: `locks` is live and not yet used, `cpu < nr_cpu_ids`; the slot's lock is
            // zeroed, the C side's layout (size checked above), and the slot's box stays put
            // and outlives `locks` (`Drop`, then the field drops).
            unsafe {
                kmalloc43_c_pcpu_slot_init(
                    locks.as_ptr(),
                    cpu as c_uint,
                    core::ptr::from_mut(&mut slot.lock),
                )
            };
            // The inline slot lock takes the word at the slot's address.
            #[cfg(kmalloc43_inline_slot_lock)]
            // SAFETY: `locks` is live, `cpu < nr_cpu_ids`.
            if unsafe { kmalloc43_c_pcpu_lock_word(locks.as_ptr(), cpu as c_uint) } != slot.word() {
                pr_err!("slot lock: the lock word is not at the start of the C lock\n");
                // SAFETY: `locks` is live and unused, freed once.
                unsafe { kmalloc43_c_pcpu_locks_free(locks.as_ptr()) };
                return Err(EINVAL);
            }
        }
        // SAFETY: `locks` is live; a field's address, never NULL.
        let sync = unsafe { NonNull::new_unchecked(kmalloc43_c_pcpu_sync_word(locks.as_ptr())) };
        // SAFETY: `locks` is live; its array of `nr_cpu_ids` slot addresses, never NULL, set
        // above (a slot's address is its lock's: the first field of a `repr(C)` struct).
        #[cfg(kmalloc43_inline_slot_lock)]
        let table = unsafe {
            NonNull::new_unchecked(kmalloc43_c_pcpu_slot_table(locks.as_ptr()))
                .cast::<NonNull<Slot<T, S>>>()
        };
        Ok(Self {
            locks,
            sync,
            slots,
            #[cfg(kmalloc43_inline_slot_lock)]
            table,
            _flavour: PhantomData,
        })
    }
}

impl<T, S, L: Flavour> PerCpu<T, S, L> {
    /// The lock set's mode (`crate::magazine::slot_sync`).
    #[inline(always)]
    pub(crate) fn sync(&self) -> &SlotSync {
        // SAFETY: `sync` is `locks`' mode word, live as long as `self` (type invariant), only
        // ever accessed atomically.
        unsafe { SlotSync::from_ptr(self.sync.as_ptr()) }
    }

    /// A remote taker's entry into slow mode ([`PreemptOff`]; task context, may sleep: the
    /// first taker after fast mode waits for a grace period). [`IrqsOff`] sets have one mode.
    fn remote_enter(&self) {
        if !L::IRQS_OFF {
            might_sleep();
            self.sync().enter(&Rcu(self.locks));
        }
    }

    /// A remote taker leaves (every word it took released): the last one arranges the return
    /// to fast mode a grace period later. Any context.
    fn remote_exit(&self) {
        if !L::IRQS_OFF {
            self.sync().exit(&Rcu(self.locks));
        }
    }

    /// Slow mode entered and held until the guard is dropped (task context, may sleep), for
    /// tests of the atomic-context readers in slow mode.
    #[cfg(CONFIG_KMALLOC43_KUNIT_TEST)]
    pub(crate) fn hold_slow(&self) -> SlowHold<'_, T, S, L> {
        self.remote_enter();
        SlowHold { owner: self }
    }

    /// CPU `cpu`'s shared part (`cpu < nr_cpu_ids`), from any CPU and any context: no lock.
    pub(crate) fn shared(&self, cpu: usize) -> &S {
        &self.slots[cpu].shared
    }

    /// Number of slots (`nr_cpu_ids`).
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// This CPU's slot, with local interrupts (or, [`PreemptOff`], preemption) disabled until
    /// the guard is dropped. [`PreemptOff`]: task context only.
    #[cfg(not(kmalloc43_inline_slot_lock))]
    #[inline]
    pub(crate) fn local(&self) -> LocalGuard<'_, T, S, L> {
        // SAFETY: `locks` is live (type invariant).
        let cpu = unsafe { kmalloc43_c_pcpu_lock_local(self.locks.as_ptr()) } as usize;
        self.local_guard(cpu)
    }

    /// This CPU's slot, with local interrupts (or, [`PreemptOff`], preemption) disabled until
    /// the guard is dropped (inline). [`PreemptOff`]: task context only.
    #[cfg(kmalloc43_inline_slot_lock)]
    #[inline(always)]
    pub(crate) fn local(&self) -> LocalGuard<'_, T, S, L> {
        let r = self.local_ref();
        let (flags, slot) = r.enter();
        if !r.try_lock(slot) {
            // SAFETY: `slot.word()` is this CPU's lock word (type invariant); the C side spins in
            // `arch_spin_lock` until it has the lock (warning first if a [`PreemptOff`] slot
            // is waited for outside task context).
            unsafe { kmalloc43_c_pcpu_lock_word_slow(slot.word(), !L::IRQS_OFF) };
        }
        LocalRef::held(flags, slot)
    }

    /// Leaves what [`LocalRef::enter`] entered: the interrupt state `flags` restored (or,
    /// [`PreemptOff`], preemption enabled again).
    #[cfg(kmalloc43_inline_slot_lock)]
    #[inline(always)]
    fn leave(flags: usize) {
        if L::IRQS_OFF {
            irq_restore(flags);
        } else {
            preempt_enable();
        }
    }

    /// [`PerCpu::local`] if this CPU's lock is free at once (it is, unless a [`PerCpu::all`]
    /// holder on another CPU has it), else `None`, with no C call: the inline fast paths.
    #[cfg(kmalloc43_inline_slot_lock)]
    #[inline(always)]
    pub(crate) fn try_local(&self) -> Option<LocalGuard<'_, T, S, L>> {
        self.local_ref().try_local()
    }

    /// What this CPU's owner needs to take its slot ([`LocalRef`]), to be kept elsewhere.
    #[cfg(kmalloc43_inline_slot_lock)]
    #[inline(always)]
    pub(crate) fn local_ref(&self) -> LocalRef<'_, T, S, L> {
        LocalRef {
            sync: self.sync,
            table: self.table,
            _owner: PhantomData,
        }
    }

    /// What this CPU's owner needs to take its slot ([`LocalRef`]), to be kept elsewhere.
    #[cfg(not(kmalloc43_inline_slot_lock))]
    #[inline(always)]
    pub(crate) fn local_ref(&self) -> LocalRef<'_, T, S, L> {
        LocalRef { owner: self }
    }

    /// [`PerCpu::local`] if this CPU's lock is free at once, else `None` (interrupts restored,
    /// nothing touched).
    #[cfg(not(kmalloc43_inline_slot_lock))]
    #[inline(always)]
    pub(crate) fn try_local(&self) -> Option<LocalGuard<'_, T, S, L>> {
        // SAFETY: `locks` is live (type invariant).
        let cpu = unsafe { kmalloc43_c_pcpu_trylock_local(self.locks.as_ptr()) };
        (cpu != c_uint::MAX).then(|| self.local_guard(cpu as usize))
    }

    /// [`PerCpu::try_local`] and the raw page hint of `addr` (`crate::hint`), read after it, in
    /// one C call: under the slot, or, if it was held, under `rcu_read_lock()` (a read-side
    /// section either way, `crate::hint::ReadSide`).
    #[cfg(not(kmalloc43_inline_slot_lock))]
    #[inline]
    pub(crate) fn try_local_hint(&self, addr: usize) -> (Option<LocalGuard<'_, T, S, L>>, u64) {
        // SAFETY: `locks` is live (type invariant); the C side reads `addr`'s `struct page` only
        // if its hint bit is set (a heap's page, so it exists), in a read-side section.
        let r =
            unsafe { kmalloc43_c_pcpu_trylock_local_hint(self.locks.as_ptr(), addr as c_ulong) };
        let g = (r.cpu != c_uint::MAX).then(|| self.local_guard(r.cpu as usize));
        (g, r.hint as u64)
    }

    /// [`PerCpu::try_local`] and the raw page hint of `addr` (`crate::hint`), read after it
    /// (the slot lock is inline): under the slot, or, if it was held, under `rcu_read_lock()`.
    #[cfg(kmalloc43_inline_slot_lock)]
    #[inline(always)]
    pub(crate) fn try_local_hint(&self, addr: usize) -> (Option<LocalGuard<'_, T, S, L>>, u64) {
        let g = self.try_local();
        let hint = match &g {
            Some(g) => crate::hint::raw_page_hint(addr, g),
            None => crate::hint::raw_page_hint(addr, &kernel::sync::rcu::read_lock()),
        };
        (g, hint)
    }

    /// The guard of slot `cpu`, whose lock the caller just took on this CPU.
    #[cfg(not(kmalloc43_inline_slot_lock))]
    #[inline(always)]
    fn local_guard(&self, cpu: usize) -> LocalGuard<'_, T, S, L> {
        // The C side returns this CPU's id, below `nr_cpu_ids` = `slots.len()`; a bounds check
        // that cannot fail, done once here rather than at every access through the guard.
        let slot = NonNull::from(&*self.slots[cpu]);
        LocalGuard {
            owner: self,
            cpu,
            slot,
            _not_send: PhantomData,
        }
    }

    /// Every slot (task context, may sleep: [`PreemptOff`] slots enter slow mode first).
    pub(crate) fn all(&self) -> AllGuard<'_, T, S, L> {
        self.remote_enter();
        // SAFETY: `locks` is live (type invariant).
        let cpu = unsafe { kmalloc43_c_pcpu_lock_all(self.locks.as_ptr()) } as usize;
        AllGuard {
            owner: self,
            cpu,
            _not_send: PhantomData,
        }
    }

    /// CPU `cpu`'s slot, taken from whichever CPU the caller runs on (task context: it may wait
    /// for the slot's holder), with preemption (or, [`IrqsOff`], local interrupts) disabled on
    /// the caller's CPU until the guard is dropped: a periodic pass that visits each CPU's slot
    /// in turn (`crate::aging`) without stopping every CPU at once as [`PerCpu::all`] does.
    /// `None` for an id that is not a possible CPU (its slot is never used).
    ///
    /// To `cpu`'s own fast paths this holder is like a [`PerCpu::all`] holder on another CPU:
    /// their trylock fails (they take the fall-back), their wait ends when it is done, and it
    /// waits for nothing they hold (it takes only the depot and heap locks under the slot, as
    /// they do).
    pub(crate) fn lock_cpu(&self, cpu: usize) -> Option<CpuGuard<'_, T, S, L>> {
        let id = c_uint::try_from(cpu).ok()?;
        if cpu >= self.slots.len() {
            return None;
        }
        self.remote_enter();
        // SAFETY: `locks` is live (type invariant); the C side checks that `id` is a possible
        // CPU, takes nothing otherwise.
        if !unsafe { kmalloc43_c_pcpu_lock_cpu(self.locks.as_ptr(), id) } {
            self.remote_exit();
            return None;
        }
        Some(CpuGuard {
            owner: self,
            cpu,
            _not_send: PhantomData,
        })
    }

    /// Every slot if none is held at the moment (each lock tried once, none waited for), else
    /// `None` with nothing taken: for readers that may not sleep (outside task context a
    /// holder may be the code they interrupted). [`PreemptOff`] slots are tried only in
    /// established slow mode: in fast mode (or while it is being entered) `None`, and a kick
    /// that enters slow mode from a work item and holds it for a second, so that a try a
    /// moment later finds it.
    pub(crate) fn try_all(&self) -> Option<AllGuard<'_, T, S, L>> {
        if !L::IRQS_OFF && !self.sync().try_enter() {
            // SAFETY: `locks` is live (type invariant); queueing a work item, any context.
            unsafe { kmalloc43_c_pcpu_kick(self.locks.as_ptr()) };
            return None;
        }
        // SAFETY: `locks` is live (type invariant).
        let cpu = unsafe { kmalloc43_c_pcpu_trylock_all(self.locks.as_ptr()) };
        if cpu == c_uint::MAX {
            // Nothing taken: no guard may exist (its drop would release every lock).
            self.remote_exit();
            return None;
        }
        Some(AllGuard {
            owner: self,
            cpu: cpu as usize,
            _not_send: PhantomData,
        })
    }
}

/// What this CPU's owner needs of a [`PerCpu`] to take its slot ([`LocalRef::try_local`]), a
/// copy that may be kept elsewhere for as long as the `PerCpu` lives: with the inline slot lock,
/// the mode word's and the slot table's addresses (both in the C lock set's allocation), so that
/// a fast path that keeps them beside its other read-mostly words (the module's fast statics)
/// takes its slot without reading the `PerCpu` (one data page fewer per pair); else the
/// `PerCpu` itself.
#[cfg(kmalloc43_inline_slot_lock)]
pub(crate) struct LocalRef<'a, T, S, L: Flavour = PreemptOff> {
    /// `PerCpu::sync`.
    sync: NonNull<u32>,
    /// `PerCpu::table`.
    table: NonNull<NonNull<Slot<T, S>>>,
    _owner: PhantomData<&'a PerCpu<T, S, L>>,
}

/// See the inline slot lock's [`LocalRef`].
#[cfg(not(kmalloc43_inline_slot_lock))]
pub(crate) struct LocalRef<'a, T, S, L: Flavour = PreemptOff> {
    owner: &'a PerCpu<T, S, L>,
}

impl<T, S, L: Flavour> Clone for LocalRef<'_, T, S, L> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, S, L: Flavour> Copy for LocalRef<'_, T, S, L> {}

#[cfg(not(kmalloc43_inline_slot_lock))]
impl<'a, T, S, L: Flavour> LocalRef<'a, T, S, L> {
    /// [`PerCpu::try_local`].
    #[inline(always)]
    pub(crate) fn try_local(self) -> Option<LocalGuard<'a, T, S, L>> {
        self.owner.try_local()
    }
}

#[cfg(kmalloc43_inline_slot_lock)]
impl<'a, T, S, L: Flavour> LocalRef<'a, T, S, L> {
    /// [`PerCpu::try_local`] from the copy.
    #[inline(always)]
    pub(crate) fn try_local(self) -> Option<LocalGuard<'a, T, S, L>> {
        let (flags, slot) = self.enter();
        if !self.try_lock(slot) {
            PerCpu::<T, S, L>::leave(flags);
            return None;
        }
        Some(Self::held(flags, slot))
    }

    /// The lock set's mode (`crate::magazine::slot_sync`).
    #[inline(always)]
    fn sync(&self) -> &SlotSync {
        // SAFETY: `sync` is the `PerCpu`'s mode word, live as long as it (borrowed for `'a`),
        // only ever accessed atomically.
        unsafe { SlotSync::from_ptr(self.sync.as_ptr()) }
    }

    /// Local interrupts (or, [`PreemptOff`], preemption) off; the saved interrupt state and
    /// this CPU's slot.
    #[inline(always)]
    fn enter(&self) -> (usize, &'a Slot<T, S>) {
        let flags = if L::IRQS_OFF {
            irq_save()
        } else {
            preempt_disable();
            0
        };
        let cpu = this_cpu();
        // SAFETY: `cpu` is this CPU's id, below `nr_cpu_ids`, the table's length (type
        // invariant of `PerCpu`), so the entry is in bounds (no bounds check: it could never
        // fail); it is `&*slots[cpu]`, which lives as long as the `PerCpu` borrowed for `'a`.
        (flags, unsafe { self.table.add(cpu).read().as_ref() })
    }

    /// The owner's acquire of `slot`'s lock word, this CPU's, inside the section
    /// [`LocalRef::enter`] began: [`PreemptOff`], `SlotSync::try_lock_local` (in fast mode a
    /// plain load and store); [`IrqsOff`], the fast path of `queued_spin_lock()`, one `cmpxchg`
    /// from 0 to locked. Whether it took the lock.
    #[inline(always)]
    fn try_lock(&self, slot: &Slot<T, S>) -> bool {
        // SAFETY: `slot.word()` is its CPU's lock word, live with the slot (type invariant of
        // `PerCpu`); every access to it is atomic (here, the C side's `arch_spin_lock`/`unlock`).
        let word = unsafe { core::sync::atomic::AtomicU32::from_ptr(slot.word()) };
        if L::IRQS_OFF {
            slot_sync::try_lock_atomic(word)
        } else {
            self.sync().try_lock_local(word)
        }
    }

    /// The guard of `slot`, locked by this CPU with interrupts (`flags` saved) or preemption
    /// off.
    #[inline(always)]
    fn held(flags: usize, slot: &'a Slot<T, S>) -> LocalGuard<'a, T, S, L> {
        LocalGuard {
            _owner: PhantomData,
            slot: NonNull::from(slot),
            flags,
            _not_send: PhantomData,
        }
    }
}

/// Whether the caller runs in task context (`in_task()`): only there may it wait for a slot
/// whose holder is not known to be running (`crate::fallback`).
#[cold]
pub(crate) fn in_task() -> bool {
    // SAFETY: FFI call without arguments; it reads this CPU's preemption count.
    unsafe { kmalloc43_c_in_task() }
}

/// Whether the caller may sleep (task context, preemptible, outside `rcu_read_lock()`; never on
/// a kernel without the preemption count): only then may it wait for [`PerCpu::all`]'s grace
/// period.
pub(crate) fn may_sleep() -> bool {
    // SAFETY: FFI call without arguments; it reads this CPU's preemption state.
    unsafe { kmalloc43_c_may_sleep() }
}

/// Slow mode held ([`PerCpu::hold_slow`]).
#[cfg(CONFIG_KMALLOC43_KUNIT_TEST)]
pub(crate) struct SlowHold<'a, T, S, L: Flavour> {
    owner: &'a PerCpu<T, S, L>,
}

#[cfg(CONFIG_KMALLOC43_KUNIT_TEST)]
impl<T, S, L: Flavour> Drop for SlowHold<'_, T, S, L> {
    fn drop(&mut self) {
        self.owner.remote_exit();
    }
}

impl<T, S, L: Flavour> Drop for PerCpu<T, S, L> {
    fn drop(&mut self) {
        // SAFETY: `locks` is live and owned (type invariant), and no guard borrows `self` now.
        unsafe { kmalloc43_c_pcpu_locks_free(self.locks.as_ptr()) };
    }
}

/// One CPU's slot, its lock held (and local interrupts or preemption disabled).
pub(crate) struct LocalGuard<'a, T, S = (), L: Flavour = PreemptOff> {
    #[cfg(not(kmalloc43_inline_slot_lock))]
    owner: &'a PerCpu<T, S, L>,
    #[cfg(not(kmalloc43_inline_slot_lock))]
    cpu: usize,
    /// The guard borrows the `PerCpu` (its slot and lock word).
    #[cfg(kmalloc43_inline_slot_lock)]
    _owner: PhantomData<&'a PerCpu<T, S, L>>,
    /// `owner.slots[cpu]`, looked up once.
    slot: NonNull<Slot<T, S>>,
    /// The interrupt state saved by the inline slot lock ([`IrqsOff`]).
    #[cfg(kmalloc43_inline_slot_lock)]
    flags: usize,
    /// The lock must be released on the CPU that took it with interrupts or preemption off.
    _not_send: PhantomData<*mut ()>,
}

impl<'a, T, S, L: Flavour> LocalGuard<'a, T, S, L> {
    /// This slot's shared part, for as long as the `PerCpu` lives (not tied to the guard: it
    /// needs no lock).
    #[inline(always)]
    pub(crate) fn shared(&self) -> &'a S {
        // SAFETY: `slot` is `owner.slots[cpu]`, which lives as long as the `PerCpu` borrowed for
        // `'a`; its `shared` part is only ever reached by shared reference (type invariant of
        // `PerCpu`), never through the `&mut T` the guard hands out.
        unsafe { &(*self.slot.as_ptr()).shared }
    }
}

impl<T, S, L: Flavour> Deref for LocalGuard<'_, T, S, L> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: `slot` is `owner.slots[cpu]`, and lock `cpu` is held for the guard's life, so
        // no other reference to the slot exists (type invariant of `PerCpu`).
        unsafe { &*self.slot.as_ref().val.get() }
    }
}

impl<T, S, L: Flavour> DerefMut for LocalGuard<'_, T, S, L> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only reference.
        unsafe { &mut *self.slot.as_ref().val.get() }
    }
}

impl<T, S, L: Flavour> Drop for LocalGuard<'_, T, S, L> {
    #[cfg(not(kmalloc43_inline_slot_lock))]
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: this guard holds lock `cpu` and the interrupt-disable count it took.
        unsafe { kmalloc43_c_pcpu_unlock_local(self.owner.locks.as_ptr(), self.cpu as c_uint) };
    }

    #[cfg(kmalloc43_inline_slot_lock)]
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: `slot` is `owner.slots[cpu]` (live while `owner` is), whose `lock` is lock
        // `cpu`'s word. `queued_spin_unlock()`: a release store of 0 to the locked byte, byte 0
        // of the word on x86 (the C side checks the layout), which this guard holds.
        unsafe {
            core::sync::atomic::AtomicU8::from_ptr(self.slot.as_ref().word().cast::<u8>())
                .store(0, Release)
        };
        PerCpu::<T, S, L>::leave(self.flags);
    }
}

/// One CPU's slot taken from any CPU ([`PerCpu::lock_cpu`]): its lock held, preemption (or
/// local interrupts) disabled on the holder's CPU.
pub(crate) struct CpuGuard<'a, T, S = (), L: Flavour = PreemptOff> {
    owner: &'a PerCpu<T, S, L>,
    cpu: usize,
    /// The lock must be released on the CPU that took it with preemption or interrupts off.
    _not_send: PhantomData<*mut ()>,
}

impl<T, S, L: Flavour> Deref for CpuGuard<'_, T, S, L> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: lock `cpu` is held for the guard's life, so no other reference to the slot
        // exists (type invariant of `PerCpu`).
        unsafe { &*self.owner.slots[self.cpu].val.get() }
    }
}

impl<T, S, L: Flavour> DerefMut for CpuGuard<'_, T, S, L> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only reference.
        unsafe { &mut *self.owner.slots[self.cpu].val.get() }
    }
}

impl<T, S, L: Flavour> Drop for CpuGuard<'_, T, S, L> {
    fn drop(&mut self) {
        // SAFETY: this guard holds lock `cpu` (below `nr_cpu_ids`, checked by `lock_cpu`) and
        // the preemption or interrupt state `kmalloc43_c_pcpu_lock_cpu` took on this CPU.
        unsafe { kmalloc43_c_pcpu_unlock_cpu(self.owner.locks.as_ptr(), self.cpu as c_uint) };
        self.owner.remote_exit();
    }
}

/// Every CPU's slot, every lock held (and local interrupts disabled).
pub(crate) struct AllGuard<'a, T, S = (), L: Flavour = PreemptOff> {
    owner: &'a PerCpu<T, S, L>,
    cpu: usize,
    _not_send: PhantomData<*mut ()>,
}

impl<'a, T, S, L: Flavour> AllGuard<'a, T, S, L> {
    /// The CPU the guard's holder runs on (interrupts are off: it cannot change).
    pub(crate) fn this_cpu(&self) -> usize {
        self.cpu
    }

    /// CPU `cpu`'s slot (`cpu < len()`).
    pub(crate) fn get(&mut self, cpu: usize) -> &mut T {
        // SAFETY: every lock is held for the guard's life, and `&mut self` makes this the only
        // reference to any slot.
        unsafe { &mut *self.owner.slots[cpu].val.get() }
    }

    /// Number of slots.
    pub(crate) fn len(&self) -> usize {
        self.owner.slots.len()
    }

    /// CPU `cpu`'s shared part (`cpu < len()`), for as long as the `PerCpu` lives.
    pub(crate) fn shared(&self, cpu: usize) -> &'a S {
        self.owner.shared(cpu)
    }
}

impl<T, S, L: Flavour> Drop for AllGuard<'_, T, S, L> {
    fn drop(&mut self) {
        // SAFETY: this guard holds every lock and the interrupt-disable count it took.
        unsafe { kmalloc43_c_pcpu_unlock_all(self.owner.locks.as_ptr()) };
        self.owner.remote_exit();
    }
}
