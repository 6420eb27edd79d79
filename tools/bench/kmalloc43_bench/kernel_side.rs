// SPDX-License-Identifier: GPL-2.0

//! The kernel's clocks, kmalloc, genalloc, the `.config` facts, a bare spinlock and kthreads
//! bound to CPUs, through the C helpers of
//! `kmalloc43_bench_kernel.c` (prototypes in `kmalloc43_bench_kernel.h`).
//!
//! `kmalloc`, `kfree` and `ksize` are the exception: they are called directly, one call each, as
//! C code calls them (a C helper in between would be a second call, or a tail jump from this
//! module's pages into vmlinux, that C callers do not pay: sessions 3-8 measured `kmalloc` so,
//! `Documentation/performance.rst`). The bench's calls of `kmalloc43_malloc`/`kmalloc43_free`
//! are direct too.

use kernel::bindings;
use kernel::ffi::{c_int, c_uint, c_ulong, c_void};
use kernel::prelude::*;

/// `struct gen_pool`, opaque.
#[repr(C)]
pub(crate) struct RawGenPool {
    _opaque: [u8; 0],
}

extern "C" {
    fn kmalloc43_bench_now_ns() -> u64;
    fn kmalloc43_bench_cycles() -> u64;
    fn kmalloc43_bench_free_pages() -> c_ulong;
    fn kmalloc43_bench_describe_kernel(buf: *mut u8, len: usize) -> usize;
    fn kmalloc43_bench_online_cpus() -> c_uint;
    fn kmalloc43_bench_nothing(arg: *mut c_void);
    fn kmalloc43_bench_settle();
    fn kmalloc43_bench_lock_round();
    fn kmalloc43_bench_irq_round();
    fn kmalloc43_bench_on_cpus(
        ncpus: c_uint,
        f: unsafe extern "C" fn(arg: *mut c_void),
        arg: *mut c_void,
        thread_ns: *mut u64,
    ) -> i64;
    fn kmalloc43_bench_kmalloc_slot(size: usize) -> *const *mut bindings::kmem_cache;
    fn kmalloc43_bench_genalloc_builtin() -> bool;
    fn kmalloc43_bench_pool_create(min_alloc_order: c_int) -> *mut RawGenPool;
    fn kmalloc43_bench_pool_add(pool: *mut RawGenPool, addr: c_ulong, size: usize) -> c_int;
    fn kmalloc43_bench_pool_alloc(pool: *mut RawGenPool, size: usize) -> c_ulong;
    fn kmalloc43_bench_pool_free(pool: *mut RawGenPool, addr: c_ulong, size: usize);
    fn kmalloc43_bench_pool_destroy(pool: *mut RawGenPool);
}

/// A point in time: `ktime_get_ns()` and `get_cycles()` read together.
#[derive(Clone, Copy)]
pub(crate) struct Stamp {
    ns: u64,
    cycles: u64,
}

impl Stamp {
    /// Now.
    pub(crate) fn now() -> Self {
        // SAFETY: both helpers only read clocks; any context.
        unsafe {
            Self {
                ns: kmalloc43_bench_now_ns(),
                cycles: kmalloc43_bench_cycles(),
            }
        }
    }

    /// Nanoseconds and cycles from `self` to now.
    pub(crate) fn elapsed(self) -> Elapsed {
        let end = Self::now();
        Elapsed {
            ns: end.ns.saturating_sub(self.ns),
            cycles: end.cycles.saturating_sub(self.cycles),
        }
    }
}

/// A measured interval.
#[derive(Clone, Copy)]
pub(crate) struct Elapsed {
    /// Nanoseconds (`ktime_get_ns`).
    pub(crate) ns: u64,
    /// Cycle-counter ticks (`get_cycles`, the TSC on x86).
    pub(crate) cycles: u64,
}

impl Elapsed {
    /// The shorter of two intervals (by wall time).
    pub(crate) fn min(self, other: Self) -> Self {
        if other.ns < self.ns {
            other
        } else {
            self
        }
    }
}

/// Pages free in the buddy allocator (`NR_FREE_PAGES`).
pub(crate) fn free_pages() -> u64 {
    // SAFETY: reads a global counter; any context.
    unsafe { kmalloc43_bench_free_pages() as u64 }
}

/// The `.config` facts that decide the comparison (SLUB_TINY, hardened free lists, -O2,
/// preemption model, NR_CPUS, vCPUs online, lockdep), as one line.
pub(crate) struct KernelFacts {
    buf: [u8; 256],
    len: usize,
}

impl KernelFacts {
    /// Reads them.
    pub(crate) fn read() -> Self {
        let mut buf = [0u8; 256];
        // SAFETY: `buf` is writable for its length; the helper writes at most `len` bytes.
        let len = unsafe { kmalloc43_bench_describe_kernel(buf.as_mut_ptr(), buf.len()) };
        Self {
            buf,
            len: len.min(buf.len()),
        }
    }

    /// The line.
    pub(crate) fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

/// CPUs online in the guest.
pub(crate) fn online_cpus() -> u32 {
    // SAFETY: reads a global counter; any context.
    unsafe { kmalloc43_bench_online_cpus() }
}

/// Waits until every RCU callback queued so far ran (kmalloc43's slot locks back in their fast
/// mode after the type definitions' and the previous section's remote takers): sleeps.
pub(crate) fn settle() {
    // SAFETY: FFI call without arguments, in process context (module init).
    unsafe { kmalloc43_bench_settle() }
}

/// An out-of-line C call that does nothing (the price of a call across the module boundary).
#[inline(never)]
pub(crate) fn call_nothing() {
    // SAFETY: the helper ignores its argument.
    unsafe { kmalloc43_bench_nothing(core::ptr::null_mut()) }
}

/// One uncontended `spin_lock_irqsave` + `spin_unlock_irqrestore` on a lock of this module.
pub(crate) fn lock_round() {
    // SAFETY: takes and drops a private spinlock; any context.
    unsafe { kmalloc43_bench_lock_round() }
}

/// One `local_irq_save` + `local_irq_restore`.
pub(crate) fn irq_round() {
    // SAFETY: disables and restores local interrupts; any context.
    unsafe { kmalloc43_bench_irq_round() }
}

/// The times of one [`on_cpus`] run, nanoseconds from the moment every kthread ran.
#[derive(Clone, Copy)]
pub(crate) struct CrewTimes {
    /// Until the last kthread finished.
    pub(crate) all: u64,
    /// Until each kthread finished, by CPU (0 for a CPU that ran none).
    pub(crate) thread: [u64; 2],
}

/// Runs `f(arg)` in one kthread bound to each of CPUs `0..ncpus` (`ncpus` is 1 or 2), released
/// together; returns how long they took, all of them and each.
///
/// # Safety
///
/// `f(arg)` may run on several CPUs at once: whatever `arg` points to stays valid until this
/// returns and is safe to use concurrently from `f`.
pub(crate) unsafe fn on_cpus(
    ncpus: u32,
    f: unsafe extern "C" fn(arg: *mut c_void),
    arg: *mut c_void,
) -> Result<CrewTimes> {
    let mut thread = [0u64; 2];
    if ncpus as usize > thread.len() {
        return Err(EINVAL);
    }
    // SAFETY: process context without locks (kthread creation sleeps); `f`/`arg` per the caller;
    // `thread` has room for `ncpus` entries (checked above).
    let ns = unsafe { kmalloc43_bench_on_cpus(ncpus, f, arg, thread.as_mut_ptr()) };
    if ns < 0 {
        return Err(Error::from_errno(ns as c_int));
    }
    Ok(CrewTimes {
        all: ns as u64,
        thread,
    })
}

/// `kmalloc(size, GFP_KERNEL)` as C code calls it when `size` is not a compile-time constant:
/// one direct call of `__kmalloc_noprof(size, GFP_KERNEL)` (`slab.h`'s `_kmalloc_noprof`; the
/// `kmalloc` macro adds nothing without `CONFIG_MEM_ALLOC_PROFILING`). With
/// `CONFIG_KMALLOC_PARTITION_CACHES` the call would take a token argument too: bindgen's
/// prototype would change and this would not build. Null on failure.
#[inline(always)]
pub(crate) fn kmalloc(size: usize) -> *mut c_void {
    // SAFETY: callers are in process context without locks held, as GFP_KERNEL needs (module
    // init, the bench kthreads).
    unsafe { bindings::__kmalloc_noprof(size, bindings::GFP_KERNEL) }
}

/// The entries of [`kmalloc`] and [`kfree`] in vmlinux (for a debugger following a pair: the
/// profile loops print them).
pub(crate) fn kmalloc_entries() -> [usize; 2] {
    [
        bindings::__kmalloc_noprof as *const () as usize,
        bindings::kfree as *const () as usize,
    ]
}

/// The cache of `kmalloc(size, GFP_KERNEL)` when `size` is a compile-time constant: the entry of
/// `kmalloc_caches` that such a call reads on every call.
///
/// C code with a constant `size` up to `KMALLOC_MAX_CACHE_SIZE` (8 KiB here) reaches another
/// entry than [`kmalloc`]'s: `kmalloc_index(size)` and `kmalloc_type(GFP_KERNEL)` fold to
/// constants, and the call is `__kmalloc_cache_noprof(kmalloc_caches[type][index], GFP_KERNEL,
/// size)`: one load of the cache pointer (the array is not `const` to the compiler) and one
/// direct call, without `__kmalloc_noprof`'s size-to-cache lookup. [`kmalloc_cached`] makes that
/// call.
///
/// # Invariants
///
/// `slot` points into `kmalloc_caches` (vmlinux data, never freed) at a non-null cache.
#[derive(Clone, Copy)]
pub(crate) struct KmallocSlot {
    slot: *const *mut bindings::kmem_cache,
}

impl KmallocSlot {
    /// The slot of `size`; `None` above `KMALLOC_MAX_CACHE_SIZE` (constant sizes go to
    /// `__kmalloc_large_noprof` there) or for 0.
    pub(crate) fn of(size: usize) -> Option<Self> {
        // SAFETY: reads kmalloc's cache table, which is set up before any module loads.
        let slot = unsafe { kmalloc43_bench_kmalloc_slot(size) };
        // SAFETY: a non-null `slot` points into `kmalloc_caches` (the helper's contract).
        (!slot.is_null() && !unsafe { slot.read() }.is_null()).then_some(Self { slot })
    }
}

/// `kmalloc(size, GFP_KERNEL)` with a constant `size`, as C compiles it: the load of `slot`'s
/// cache pointer and one direct call of `__kmalloc_cache_noprof` ([`KmallocSlot`]). Null on
/// failure.
#[inline(always)]
pub(crate) fn kmalloc_cached(slot: KmallocSlot, size: usize) -> *mut c_void {
    // SAFETY: `slot.slot` points at a live cache pointer (type invariant), written only at boot
    // (`__ro_after_init`); the cache's objects are at least `size` bytes (`slot` is `size`'s);
    // process context without locks held, as GFP_KERNEL needs.
    unsafe { bindings::__kmalloc_cache_noprof(slot.slot.read(), bindings::GFP_KERNEL, size) }
}

/// `kmalloc(size, GFP_KERNEL)` with a constant `size` above `KMALLOC_MAX_CACHE_SIZE`, as C
/// compiles it: one direct call of `__kmalloc_large_noprof` (pages from the page allocator).
/// Null on failure.
#[inline(always)]
pub(crate) fn kmalloc_large(size: usize) -> *mut c_void {
    // SAFETY: process context without locks held, as GFP_KERNEL needs.
    unsafe { bindings::__kmalloc_large_noprof(size, bindings::GFP_KERNEL) }
}

/// `kfree(addr)`: one direct call, as C code calls it.
///
/// # Safety
///
/// `addr` is null or came from [`kmalloc`], [`kmalloc_cached`] or [`kmalloc_large`] and is not
/// used afterwards.
#[inline(always)]
pub(crate) unsafe fn kfree(addr: *mut c_void) {
    // SAFETY: guaranteed by the caller.
    unsafe { bindings::kfree(addr) }
}

/// `ksize(addr)`: the bytes kmalloc reserved for the object.
///
/// # Safety
///
/// `addr` came from [`kmalloc`] and is not freed yet.
pub(crate) unsafe fn ksize(addr: *const c_void) -> usize {
    // SAFETY: guaranteed by the caller.
    unsafe { bindings::ksize(addr) }
}

/// Whether genalloc is built into the kernel (else `lib/genalloc.c` is compiled into this module).
pub(crate) fn genalloc_builtin() -> bool {
    // SAFETY: returns a constant.
    unsafe { kmalloc43_bench_genalloc_builtin() }
}

/// A genalloc pool over one span of addresses (never dereferenced), destroyed on drop.
///
/// # Invariants
///
/// `raw` is a pool from `gen_pool_create` that only this value destroys.
pub(crate) struct GenPool {
    raw: *mut RawGenPool,
}

impl GenPool {
    /// A pool with units of `1 << order` bytes covering `[base, base + size)`.
    pub(crate) fn new(order: u32, base: usize, size: usize) -> Result<Self> {
        let order = c_int::try_from(order).map_err(|_| EINVAL)?;
        // SAFETY: process context, no locks held.
        let raw = unsafe { kmalloc43_bench_pool_create(order) };
        if raw.is_null() {
            return Err(ENOMEM);
        }
        let pool = Self { raw };
        // SAFETY: `raw` is a live pool (type invariant); the span is only address arithmetic.
        let rc = unsafe { kmalloc43_bench_pool_add(pool.raw, base as c_ulong, size) };
        if rc != 0 {
            return Err(Error::from_errno(rc));
        }
        Ok(pool)
    }

    /// `gen_pool_alloc`: the address of `size` free bytes, first fit; `None` when full.
    pub(crate) fn alloc(&self, size: usize) -> Option<usize> {
        // SAFETY: `raw` is a live pool (type invariant).
        let addr = unsafe { kmalloc43_bench_pool_alloc(self.raw, size) };
        (addr != 0).then_some(addr as usize)
    }

    /// `gen_pool_free`.
    ///
    /// # Safety
    ///
    /// `[addr, addr + size)` was returned by [`GenPool::alloc`] with this `size` and is not freed
    /// yet (genalloc BUG()s on a double free).
    pub(crate) unsafe fn free(&self, addr: usize, size: usize) {
        // SAFETY: `raw` is a live pool; the range is allocated (caller).
        unsafe { kmalloc43_bench_pool_free(self.raw, addr as c_ulong, size) }
    }
}

impl Drop for GenPool {
    fn drop(&mut self) {
        // SAFETY: `raw` is a live pool (type invariant); callers free every allocation first
        // (gen_pool_destroy BUG()s otherwise).
        unsafe { kmalloc43_bench_pool_destroy(self.raw) }
    }
}
