// SPDX-License-Identifier: GPL-2.0

//! Per-CPU slots: a small, safe per-CPU abstraction for the magazine layer.
//!
//! Rust-for-Linux 7.3 has no per-CPU variables, so a [`PerCpu<T>`] is one cache-line-aligned,
//! separately allocated slot per possible CPU id, plus one spinlock per CPU (in the C file:
//! `alloc_percpu(spinlock_t)`, so each lock word lives in its CPU's own per-CPU memory). Access is
//! only through guards that hold the right locks:
//!
//! * [`PerCpu::local`]: the fast path. Saves and disables local interrupts, reads the CPU id,
//!   takes *that* CPU's lock and yields its slot. The lock is uncontended unless another CPU is
//!   taking every lock, and its cache line is this CPU's: the fast path writes no shared cache
//!   line. It is a `spinlock_t` for lockdep (the C side annotates it) but taken with the arch
//!   lock directly: interrupts are off, so preemption needs no separate count.
//! * [`PerCpu::all`]: every slot at once, locks taken in CPU order nested under one outer lock so
//!   that lockdep accepts one class many times (`spin_lock_nest_lock`): exact readings of
//!   per-CPU counters, credit revocation, drains.
//!
//! Lock order: the slot locks come before the heap lock and the depot locks (which are taken with
//! a slot lock held), never after. Like `spin_lock_irqsave`, a guard restores the interrupt state
//! it saved, so guards and the other interrupt-disabling locks are released in the reverse order
//! of taking them (scoped guards do that; code that drops one early says why it may).

use core::{
    cell::UnsafeCell,
    marker::PhantomData,
    ops::{Deref, DerefMut},
    ptr::NonNull,
};

use kernel::{
    ffi::{c_uint, c_ulong},
    prelude::*,
};
use pin_init::Zeroable;

/// The C side's lock set (opaque).
#[repr(C)]
pub(crate) struct CLocks {
    _opaque: [u8; 0],
}

extern "C" {
    fn kmalloc43_c_pcpu_locks_new() -> *mut CLocks;
    fn kmalloc43_c_pcpu_locks_free(l: *mut CLocks);
    fn kmalloc43_c_pcpu_lock_local(l: *mut CLocks) -> c_uint;
    fn kmalloc43_c_pcpu_lock_local_hint(l: *mut CLocks, addr: c_ulong) -> HintCpu;
    fn kmalloc43_c_pcpu_unlock_local(l: *mut CLocks, cpu: c_uint);
    fn kmalloc43_c_pcpu_lock_all(l: *mut CLocks) -> c_uint;
    fn kmalloc43_c_pcpu_unlock_all(l: *mut CLocks);
    fn kmalloc43_c_nr_cpu_ids() -> c_uint;
}

/// `struct kmalloc43_hint_cpu` of the C file: a page hint and a CPU id, returned in two registers.
#[repr(C)]
struct HintCpu {
    hint: c_ulong,
    cpu: c_uint,
}

/// One CPU's slot, on a cache line of its own.
#[repr(C, align(64))]
struct Slot<T>(UnsafeCell<T>);

// SAFETY: an all-zero `UnsafeCell<T>` is an all-zero `T`, valid because `T: Zeroable`.
unsafe impl<T: Zeroable> Zeroable for Slot<T> {}

/// A `T` per possible CPU.
///
/// # Invariants
///
/// * `locks` comes from `kmalloc43_c_pcpu_locks_new`, is owned by this value and has one lock per
///   possible CPU (ids below `slots.len()` = `nr_cpu_ids`; the slot of an id that is not a
///   possible CPU is never reached by a fast path, only under [`PerCpu::all`]).
/// * `slots[cpu]` is accessed only while lock `cpu` is held: by its owner on that CPU with local
///   interrupts disabled ([`LocalGuard`] from [`PerCpu::local`]), or from any CPU through
///   [`PerCpu::all`]. A guard is the only way to reach a slot, and it hands out
///   `&mut T` only through `&mut self`, so no two references to one slot coexist.
pub(crate) struct PerCpu<T> {
    locks: NonNull<CLocks>,
    slots: KVec<KBox<Slot<T>>>,
}

// SAFETY: the slots are reached only under their CPU's lock (type invariant), so sharing the
// `PerCpu` between threads shares the `T`s only under mutual exclusion: `T: Send` suffices.
unsafe impl<T: Send> Send for PerCpu<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for PerCpu<T> {}

impl<T: Zeroable> PerCpu<T> {
    /// A zeroed `T` for every possible CPU id (sleeps: process context).
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: FFI call without arguments.
        let n = unsafe { kmalloc43_c_nr_cpu_ids() } as usize;
        let mut slots = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            slots.push(
                KBox::init(pin_init::init_zeroed::<Slot<T>>(), GFP_KERNEL)?,
                GFP_KERNEL,
            )?;
        }
        // SAFETY: FFI call without arguments; NULL on allocation failure.
        let locks = NonNull::new(unsafe { kmalloc43_c_pcpu_locks_new() }).ok_or(ENOMEM)?;
        Ok(Self { locks, slots })
    }
}

impl<T> PerCpu<T> {
    /// This CPU's slot, with local interrupts disabled until the guard is dropped.
    #[inline]
    pub(crate) fn local(&self) -> LocalGuard<'_, T> {
        // SAFETY: `locks` is live (type invariant).
        let cpu = unsafe { kmalloc43_c_pcpu_lock_local(self.locks.as_ptr()) } as usize;
        self.local_guard(cpu)
    }

    /// The guard of slot `cpu`, whose lock the caller just took on this CPU.
    #[inline(always)]
    fn local_guard(&self, cpu: usize) -> LocalGuard<'_, T> {
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

    /// [`PerCpu::local`] and the raw page hint of `addr` (`crate::hint`), read first, in one C
    /// call: `free`'s fast path needs both.
    #[inline]
    pub(crate) fn local_hint(&self, addr: usize) -> (LocalGuard<'_, T>, u64) {
        // SAFETY: `locks` is live (type invariant); the C side reads `addr`'s `struct page` only
        // if the page is a heap's (its bit in the hint bitmap is set), so it exists.
        let r = unsafe { kmalloc43_c_pcpu_lock_local_hint(self.locks.as_ptr(), addr as c_ulong) };
        (self.local_guard(r.cpu as usize), r.hint as u64)
    }

    /// Every slot.
    pub(crate) fn all(&self) -> AllGuard<'_, T> {
        // SAFETY: `locks` is live (type invariant).
        let cpu = unsafe { kmalloc43_c_pcpu_lock_all(self.locks.as_ptr()) } as usize;
        AllGuard {
            owner: self,
            cpu,
            _not_send: PhantomData,
        }
    }
}

impl<T> Drop for PerCpu<T> {
    fn drop(&mut self) {
        // SAFETY: `locks` is live and owned (type invariant), and no guard borrows `self` now.
        unsafe { kmalloc43_c_pcpu_locks_free(self.locks.as_ptr()) };
    }
}

/// One CPU's slot, its lock held (and local interrupts disabled).
pub(crate) struct LocalGuard<'a, T> {
    owner: &'a PerCpu<T>,
    cpu: usize,
    /// `owner.slots[cpu]`, looked up once.
    slot: NonNull<Slot<T>>,
    /// The lock must be released on the CPU that took it with interrupts off.
    _not_send: PhantomData<*mut ()>,
}

impl<T> Deref for LocalGuard<'_, T> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: `slot` is `owner.slots[cpu]`, and lock `cpu` is held for the guard's life, so
        // no other reference to the slot exists (type invariant of `PerCpu`).
        unsafe { &*self.slot.as_ref().0.get() }
    }
}

impl<T> DerefMut for LocalGuard<'_, T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only reference.
        unsafe { &mut *self.slot.as_ref().0.get() }
    }
}

impl<T> Drop for LocalGuard<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: this guard holds lock `cpu` and the interrupt-disable count it took.
        unsafe { kmalloc43_c_pcpu_unlock_local(self.owner.locks.as_ptr(), self.cpu as c_uint) };
    }
}

/// Every CPU's slot, every lock held (and local interrupts disabled).
pub(crate) struct AllGuard<'a, T> {
    owner: &'a PerCpu<T>,
    cpu: usize,
    _not_send: PhantomData<*mut ()>,
}

impl<T> AllGuard<'_, T> {
    /// The CPU the guard's holder runs on (interrupts are off: it cannot change).
    pub(crate) fn this_cpu(&self) -> usize {
        self.cpu
    }

    /// CPU `cpu`'s slot (`cpu < len()`).
    pub(crate) fn get(&mut self, cpu: usize) -> &mut T {
        // SAFETY: every lock is held for the guard's life, and `&mut self` makes this the only
        // reference to any slot.
        unsafe { &mut *self.owner.slots[cpu].0.get() }
    }

    /// Two distinct CPUs' slots at once (`a != b`, both `< len()`).
    pub(crate) fn pair(&mut self, a: usize, b: usize) -> (&mut T, &mut T) {
        assert!(a != b);
        // SAFETY: every lock is held; `a != b` so the two references are to different slots, and
        // `&mut self` excludes any other.
        unsafe {
            (
                &mut *self.owner.slots[a].0.get(),
                &mut *self.owner.slots[b].0.get(),
            )
        }
    }

    /// Number of slots.
    pub(crate) fn len(&self) -> usize {
        self.owner.slots.len()
    }
}

impl<T> Drop for AllGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this guard holds every lock and the interrupt-disable count it took.
        unsafe { kmalloc43_c_pcpu_unlock_all(self.owner.locks.as_ptr()) };
    }
}
