// SPDX-License-Identifier: GPL-2.0

//! The Rust side of the C ABI of `include/kmalloc43.h`.
//!
//! Every function here is `#[no_mangle] extern "C"`, named `kmalloc43_rust_<name>`, and called
//! only by the exported C wrapper `kmalloc43_<name>` in `kmalloc43_exports.c`. Bad input never
//! panics: it becomes a negative errno (or `NULL`/0), is counted in `totals` (`errors`), and
//! pointer errors of `free`/`realloc` are reported with `pr_err` naming the type and the
//! *hashed* address (`%p`, printed by the C helper), never the raw one.
//!
//! Contexts (enforced with `might_sleep()` where sleeping is allowed):
//! * `malloc`/`realloc` with `KM43_WAITOK`, type define/undefine, vmem create/destroy/add, vmem
//!   alloc/xalloc with `KM43_VM_SLEEP`: process context, no spinlock held.
//! * `malloc`/`realloc` with `KM43_NOWAIT`, `free`, `usable_size`, vmem alloc/xalloc with
//!   `KM43_VM_NOSLEEP`, vmem free/xfree/walk/size: any context, including hardirq.

use core::ptr::{null_mut, NonNull};

use kernel::{
    ffi::{c_char, c_int, c_uint, c_ulong, c_void},
    prelude::*,
};

use crate::arenas::{kinds, VmArena, VmConfig};
use crate::heap::Heap;
use crate::malloc::{MallocError, MallocFlags};
use crate::report::{self, NAME_MAX};
use crate::service::{heap_and_types, service, Service};
use crate::types::Kmalloc43Type;
use crate::vmem::Constraints;

// The section of the two per-object entry points, `kmalloc43_malloc` and `kmalloc43_free`, and
// of nothing else: aligned to a page, so that their fast paths (about 1.6 KiB together) sit at
// the start of a page of their own wherever the rest of the module's code ends. Under QEMU's TCG,
// which the benchmarks run on, a jump from one guest page to another is never chained between
// translation blocks (each such jump looks its target up again), so a fast path that happened to
// cross a page boundary paid for it on every call: the same code measured 20-25 ns (10-12 %)
// slower per hot pair when the linker placed `kmalloc43_malloc` across a boundary
// (`Documentation/performance.rst`, *The malloc lane*). On hardware nothing changes but the
// padding (less than a page of module text).
core::arch::global_asm!(
    ".pushsection .text.kmalloc43_fast,\"ax\",@progbits",
    ".balign 4096",
    ".popsection"
);

// The same for vmem's constant-time pair, `kmalloc43_vmem_xalloc` + `kmalloc43_vmem_xfree` of an
// unconstrained instant fit: the C exports, their Rust sides here, `VmArena::free` and the three
// out-of-line core functions they reach (`instant_fit_fast`, `free_tag`, `coalesce`, which name
// this section under the kernel's `MODULE` cfg), about 6 KiB together, on pages of their own.
// Without it the pair's cost followed wherever the linker put the rest of the module's code: the
// 1-unit pair measured 550-570 ns and then 690-720 ns with no vmem change, after the fast paths
// grew (`Documentation/performance.rst`, *vmem's hot path placed*).
core::arch::global_asm!(
    ".pushsection .text.kmalloc43_vmem,\"ax\",@progbits",
    ".balign 4096",
    ".popsection"
);

extern "C" {
    /// `might_sleep()`, then returns `p` (exports file).
    fn kmalloc43_c_might_sleep_ret(p: *mut c_void) -> *mut c_void;
    /// `pr_err("kmalloc43: %s(%p) type %s: %s\n", ...)` with a hashed `%p` (exports file).
    fn kmalloc43_c_report(
        op: *const c_char,
        addr: *const c_void,
        ty: *const c_char,
        what: *const c_char,
    );
}

/// What went wrong, for the kernel log.
fn describe(e: &MallocError) -> &'static CStr {
    match e {
        MallocError::BadFlags { .. } => c"bad flags",
        MallocError::ZeroSize => c"size 0",
        MallocError::TooLarge { .. } => c"size too large",
        MallocError::UnknownType => c"type not defined",
        MallocError::TypeTableFull => c"type table full",
        MallocError::TypeInUse { .. } => c"type in use",
        MallocError::Limit { .. } => c"type limit",
        MallocError::WouldBlock { .. } => c"would block",
        MallocError::NoMemory { .. } => c"out of memory",
        MallocError::ForeignPointer { .. } => c"pointer not from kmalloc43",
        MallocError::InteriorPointer { .. } => c"interior pointer",
        MallocError::DoubleFree { .. } => c"double free",
        MallocError::WrongType { .. } => c"wrong type",
        MallocError::NotAllocated { .. } => c"not allocated",
        MallocError::NoMetadata => c"no metadata pages",
        MallocError::ModifiedAfterFree { .. } => c"modified after free",
    }
}

/// Counts an error and, unless it is an ordinary shortage, logs it.
fn report_error(
    svc: &Service,
    op: &CStr,
    addr: *const c_void,
    ct: *const Kmalloc43Type,
    e: &MallocError,
) {
    if matches!(e, MallocError::Limit { .. } | MallocError::NoMemory { .. }) {
        return;
    }
    svc.heap.note_error();
    let name = if ct.is_null() {
        c"(null)".as_char_ptr()
    } else {
        // SAFETY: `ct` is the caller's valid type struct.
        let n = unsafe { (*ct).name };
        if n.is_null() {
            c"(null)".as_char_ptr()
        } else {
            n
        }
    };
    let mut buf = [0u8; WRONG_TYPE_LEN];
    let what = wrong_type_owner(&svc.heap, e, &mut buf).unwrap_or_else(|| describe(e));
    // SAFETY: all strings are NUL-terminated; the helper only formats them.
    unsafe { kmalloc43_c_report(op.as_char_ptr(), addr, name, what.as_char_ptr()) };
}

/// Bytes of "wrong type (owner NAME)" and its NUL at most.
pub(crate) const WRONG_TYPE_LEN: usize = WRONG_TYPE_PREFIX.len() + NAME_MAX + 2;

/// The start of a wrong-type report that names the owner.
const WRONG_TYPE_PREFIX: &[u8] = b"wrong type (owner ";

/// For a `WrongType` error that knows the owner: "wrong type (owner NAME)", written into `buf`
/// (the owner's type name, read under the heap lock; the owner is defined: it owns the piece).
pub(crate) fn wrong_type_owner<'a>(
    heap: &Heap,
    e: &MallocError,
    buf: &'a mut [u8; WRONG_TYPE_LEN],
) -> Option<&'a CStr> {
    let MallocError::WrongType {
        owner: Some(owner), ..
    } = e
    else {
        return None;
    };
    let name = heap
        .with(|s| s.malloc.type_stats(*owner).map(|st| st.name))
        .ok()?;
    let name = name.as_bytes().get(..name.len().min(NAME_MAX))?;
    let end = WRONG_TYPE_PREFIX.len() + name.len();
    buf.get_mut(..WRONG_TYPE_PREFIX.len())?
        .copy_from_slice(WRONG_TYPE_PREFIX);
    buf.get_mut(WRONG_TYPE_PREFIX.len()..end)?
        .copy_from_slice(name);
    *buf.get_mut(end)? = b')';
    *buf.get_mut(end + 1)? = 0;
    CStr::from_bytes_with_nul(buf.get(..end + 2)?).ok()
}

/// The service and the client's type, or the error to return.
///
/// # Safety
///
/// `ct` is NULL or a valid `struct kmalloc43_type`.
unsafe fn typed(
    ct: *const Kmalloc43Type,
) -> Result<(&'static Service, crate::malloc::MallocType), MallocError> {
    let svc = service().ok_or(MallocError::UnknownType)?;
    // SAFETY: the caller's guarantee.
    match unsafe { svc.types.handle_of(ct) } {
        Some(ty) => Ok((svc, ty)),
        None => {
            svc.heap.note_error();
            Err(MallocError::UnknownType)
        }
    }
}

/// Rust side of `kmalloc43_type_define()`.
///
/// # Safety
///
/// `ct` is NULL or a valid `struct kmalloc43_type` with valid strings.
#[no_mangle]
pub unsafe extern "C" fn kmalloc43_rust_type_define(ct: *mut Kmalloc43Type) -> c_int {
    let Some(svc) = service() else {
        return ENODEV.to_errno();
    };
    // SAFETY: the caller's guarantee.
    match unsafe { svc.types.define(ct) } {
        Ok(()) => 0,
        Err(e) => {
            svc.heap.note_error();
            e.to_errno()
        }
    }
}

/// Rust side of `kmalloc43_type_undefine()`.
///
/// # Safety
///
/// `ct` is NULL or a valid `struct kmalloc43_type`.
#[no_mangle]
pub unsafe extern "C" fn kmalloc43_rust_type_undefine(ct: *mut Kmalloc43Type) -> c_int {
    let Some(svc) = service() else {
        return ENODEV.to_errno();
    };
    // SAFETY: the caller's guarantee.
    match unsafe { svc.types.undefine(ct) } {
        Ok(()) => 0,
        Err(e) => {
            svc.heap.note_error();
            e.to_errno()
        }
    }
}

/// `kmalloc43_malloc()` itself: the C file exports this function from the header's declaration
/// (`EXPORT_SYMBOL_GPL`), with no C wrapper in between.
///
/// # Safety
///
/// `ct` is NULL or a valid `struct kmalloc43_type`.
#[no_mangle]
#[link_section = ".text.kmalloc43_fast"]
pub unsafe extern "C" fn kmalloc43_malloc(
    size: usize,
    ct: *mut Kmalloc43Type,
    flags: c_uint,
) -> *mut c_void {
    // The fast path first, a leaf with the inline slot lock (`fastpath.rs`); everything else,
    // and every error, in `malloc_any`, which starts over.
    if flags == MallocFlags::NOWAIT.bits() || flags == MallocFlags::WAITOK.bits() {
        // SAFETY: the caller's guarantee.
        if let Some(p) = unsafe { malloc_local(size, ct) } {
            if flags == MallocFlags::WAITOK.bits() {
                // `might_sleep()` once the object is in hand, in a tail call, so that the local
                // path stays a leaf: the check and the voluntary preemption point are the same
                // after a path that did not sleep as before it. (`malloc_any` checks first.)
                // SAFETY: FFI call; returns `p`.
                return unsafe { kmalloc43_c_might_sleep_ret(p) };
            }
            return p;
        }
    }
    // SAFETY: the caller's guarantee.
    unsafe { malloc_any(size, ct, flags) }
}

/// The fast path of `kmalloc43_malloc()` (`Heap::malloc_local`), the type looked up without a
/// side effect; `None`, having changed nothing, sends the call to `malloc_any`.
///
/// # Safety
///
/// `ct` is NULL or a valid `struct kmalloc43_type`.
#[inline(always)]
unsafe fn malloc_local(size: usize, ct: *mut Kmalloc43Type) -> Option<*mut c_void> {
    // The heap and the registry from the fast statics' line, not from the `Service`.
    let (heap, types, front) = heap_and_types()?;
    // SAFETY: the caller's guarantee.
    let ty = unsafe { types.handle_of(ct) }?;
    heap.malloc_local(front, size, ty).map(|a| a as *mut c_void)
}

/// `kmalloc43_malloc()`, every case.
///
/// # Safety
///
/// `ct` is NULL or a valid `struct kmalloc43_type`.
#[inline(never)]
unsafe fn malloc_any(size: usize, ct: *mut Kmalloc43Type, flags: c_uint) -> *mut c_void {
    // SAFETY: the caller's guarantee.
    let (svc, ty) = match unsafe { typed(ct) } {
        Ok(t) => t,
        Err(_) => return null_mut(),
    };
    match svc.heap.malloc(size, ty, MallocFlags::from_bits(flags)) {
        Ok(p) => p.as_ptr().cast(),
        Err(e) => {
            report_error(svc, c"malloc", null_mut(), ct, &e);
            null_mut()
        }
    }
}

/// `kmalloc43_free()` itself, exported like [`kmalloc43_malloc`]. `free(NULL)` returns 0.
///
/// # Safety
///
/// `ct` is NULL or a valid `struct kmalloc43_type`.
#[no_mangle]
#[link_section = ".text.kmalloc43_fast"]
pub unsafe extern "C" fn kmalloc43_free(addr: *mut c_void, ct: *mut Kmalloc43Type) -> c_int {
    // As `kfree(NULL)`: nothing to do, whatever `ct` is (`free_any` checks too).
    if addr.is_null() {
        return 0;
    }
    // As in `kmalloc43_malloc`: the fast path (`Heap::free_local`), then every case.
    // SAFETY: the caller's guarantee.
    if unsafe { free_local(addr, ct) } {
        return 0;
    }
    // SAFETY: the caller's guarantee.
    unsafe { free_any(addr, ct) }
}

/// The fast path of `kmalloc43_free()` (`addr` not NULL), the type looked up without a side
/// effect; `false`, having changed nothing, sends the call to `free_any`.
///
/// # Safety
///
/// `ct` is NULL or a valid `struct kmalloc43_type`.
#[inline(always)]
unsafe fn free_local(addr: *mut c_void, ct: *mut Kmalloc43Type) -> bool {
    let Some((heap, types, front)) = heap_and_types() else {
        return false;
    };
    // SAFETY: the caller's guarantee.
    let Some(ty) = (unsafe { types.handle_of(ct) }) else {
        return false;
    };
    heap.free_local(front, addr as usize, ty)
}

/// `kmalloc43_free()`, every case.
///
/// # Safety
///
/// `ct` is NULL or a valid `struct kmalloc43_type`.
#[inline(never)]
unsafe fn free_any(addr: *mut c_void, ct: *mut Kmalloc43Type) -> c_int {
    let Some(p) = NonNull::new(addr.cast::<u8>()) else {
        return 0;
    };
    // SAFETY: the caller's guarantee.
    let (svc, ty) = match unsafe { typed(ct) } {
        Ok(t) => t,
        Err(_) => return EINVAL.to_errno(),
    };
    match svc.heap.free(p, ty) {
        Ok(()) => 0,
        Err(e) => {
            report_error(svc, c"free", addr, ct, &e);
            EINVAL.to_errno()
        }
    }
}

/// Rust side of `kmalloc43_realloc()`.
///
/// # Safety
///
/// `ct` is NULL or a valid `struct kmalloc43_type`.
#[no_mangle]
pub unsafe extern "C" fn kmalloc43_rust_realloc(
    addr: *mut c_void,
    size: usize,
    ct: *mut Kmalloc43Type,
    flags: c_uint,
) -> *mut c_void {
    let Some(p) = NonNull::new(addr.cast::<u8>()) else {
        // SAFETY: the caller's guarantee.
        return unsafe { kmalloc43_malloc(size, ct, flags) };
    };
    // SAFETY: the caller's guarantee.
    let (svc, ty) = match unsafe { typed(ct) } {
        Ok(t) => t,
        Err(_) => return null_mut(),
    };
    match svc.heap.realloc(p, size, ty, MallocFlags::from_bits(flags)) {
        Ok(p) => p.as_ptr().cast(),
        Err(e) => {
            report_error(svc, c"realloc", addr, ct, &e);
            null_mut()
        }
    }
}

/// Rust side of `kmalloc43_usable_size()`.
#[no_mangle]
pub extern "C" fn kmalloc43_rust_usable_size(addr: *const c_void) -> usize {
    let (Some(svc), Some(p)) = (service(), NonNull::new(addr.cast_mut().cast::<u8>())) else {
        return 0;
    };
    svc.heap.usable_size(p).unwrap_or(0)
}

/// `struct kmalloc43_type_stats` of `include/kmalloc43.h`, as bindgen generates it.
pub type Kmalloc43TypeStats = crate::kmalloc43_abi::kmalloc43_type_stats;

/// Rust side of `kmalloc43_type_stats()`: the type's statistics, exact when read; `-EBUSY`
/// outside task context if a CPU's slot was held ([`crate::heap::Heap::type_stats_any`]).
///
/// # Safety
///
/// `ct` is NULL or a valid `struct kmalloc43_type`; `out` is NULL or valid for a write of a
/// `struct kmalloc43_type_stats`.
#[no_mangle]
pub unsafe extern "C" fn kmalloc43_rust_type_stats(
    ct: *mut Kmalloc43Type,
    out: *mut Kmalloc43TypeStats,
) -> c_int {
    if out.is_null() {
        return EINVAL.to_errno();
    }
    let Some(svc) = service() else {
        return ENODEV.to_errno();
    };
    // SAFETY: the caller's guarantee.
    let Some(ty) = (unsafe { svc.types.handle_of(ct) }) else {
        return ENOENT.to_errno();
    };
    let Some(r) = svc.heap.type_stats_any(ty) else {
        return EBUSY.to_errno();
    };
    let Ok(t) = r else {
        return ENOENT.to_errno();
    };
    let n = |v: usize| v as u64;
    let v = Kmalloc43TypeStats {
        inuse: n(t.inuse),
        requests: t.calls,
        memuse: n(t.memuse),
        high_memuse: n(t.maxused),
        limit: n(t.limit),
        limblocks: t.limblocks,
    };
    // SAFETY: `out` is non-NULL and valid for a write (the caller's guarantee).
    unsafe { out.write(v) };
    0
}

/// `struct kmalloc43_totals` of `include/kmalloc43.h`, as bindgen generates it from the header.
pub type Kmalloc43Totals = crate::kmalloc43_abi::kmalloc43_totals;

/// Rust side of `kmalloc43_totals()`: the numbers of the debugfs `totals` file.
///
/// # Safety
///
/// `out` is NULL or valid for a write of a `struct kmalloc43_totals`.
#[no_mangle]
pub unsafe extern "C" fn kmalloc43_rust_totals(out: *mut Kmalloc43Totals) -> c_int {
    if out.is_null() {
        return EINVAL.to_errno();
    }
    let Some(svc) = service() else {
        return ENODEV.to_errno();
    };
    let t = crate::debugfs::totals(&svc.heap);
    let n = |v: usize| v as u64;
    let v = Kmalloc43Totals {
        pages_taken: n(t.pages_taken),
        pages_given: n(t.pages_given),
        pages_held: n(t.pages_taken.saturating_sub(t.pages_given)),
        data_pages: n(t.data_pages),
        bookkeeping_pages: n(t.bookkeeping_pages),
        diag_pages: n(t.diag_pages),
        tag_pages: n(t.tag_pages),
        arena_bytes: n(t.arena_bytes),
        errors: n(t.errors),
        chunk_order: t.chunk_order,
        reserved: 0,
        shrinker_counts: n(t.shrinker_counts),
        shrinker_scans: n(t.shrinker_scans),
        shrinker_pages_freed: n(t.shrinker_pages_freed),
    };
    // SAFETY: `out` is non-NULL and valid for a write (the caller's guarantee).
    unsafe { out.write(v) };
    0
}

/// `struct kmalloc43_aged` of `include/kmalloc43.h`, as bindgen generates it from the header.
pub type Kmalloc43Aged = crate::kmalloc43_abi::kmalloc43_aged;

/// Rust side of `kmalloc43_age()`: one timed aging pass of the module's heap
/// ([`crate::heap::Heap::timed_pass`]), counted with the periodic work's.
///
/// # Safety
///
/// `out` is NULL or valid for a write of a `struct kmalloc43_aged`; the caller runs in process
/// context (the C wrapper checks it with `might_sleep()`).
#[no_mangle]
pub unsafe extern "C" fn kmalloc43_rust_age(out: *mut Kmalloc43Aged) -> c_int {
    let Some(svc) = service() else {
        return ENODEV.to_errno();
    };
    let pass = svc.heap.timed_pass();
    if !out.is_null() {
        let n = |v: usize| v as u64;
        let v = Kmalloc43Aged {
            rounds: n(pass.rounds),
            clusters: n(pass.clusters),
            pages: n(pass.pages),
        };
        // SAFETY: `out` is non-NULL and valid for a write (the caller's guarantee).
        unsafe { out.write(v) };
    }
    0
}

// ---- vmem --------------------------------------------------------------------------------------

/// `struct kmalloc43_vmem`, opaque to clients: a handle is a pointer to a pinned [`VmArena`].
pub type RawVmem = crate::kmalloc43_abi::kmalloc43_vmem;

/// The arena behind a C handle.
///
/// # Safety
///
/// `vm` is NULL or a live handle from `kmalloc43_vmem_create()`.
unsafe fn arena<'a>(vm: *mut RawVmem) -> Result<&'a VmArena> {
    if vm.is_null() {
        return Err(EINVAL);
    }
    // SAFETY: a live handle points to a pinned `VmArena` (create leaked its box).
    Ok(unsafe { &*vm.cast::<VmArena>() })
}

fn errno(r: Result) -> c_int {
    match r {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// Allocates with `alloc` and stores the address in `*out`. Every argument is checked before
/// anything changes: a NULL `out` is `-EINVAL` without allocating (an allocation whose address
/// could not be returned would leak).
///
/// # Safety
///
/// `out` is NULL or valid for a write.
unsafe fn alloc_into(out: *mut c_ulong, alloc: impl FnOnce() -> Result<usize>) -> c_int {
    if out.is_null() {
        return EINVAL.to_errno();
    }
    match alloc() {
        Ok(a) => {
            // SAFETY: the caller's guarantee; not NULL.
            unsafe { out.write(a as c_ulong) };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// Rust side of `kmalloc43_vmem_create_owned()`; the handle is stored in `*out`.
///
/// # Safety
///
/// `owner` is NULL or the calling module; `name` is a valid C string; `out` is valid for a
/// write; `import`/`release` are NULL or valid functions that accept `source`.
#[no_mangle]
pub unsafe extern "C" fn kmalloc43_rust_vmem_create(
    owner: *mut crate::kmalloc43_abi::module,
    name: *const c_char,
    base: c_ulong,
    size: usize,
    quantum: usize,
    import: Option<crate::arenas::ImportFn>,
    release: Option<crate::arenas::ReleaseFn>,
    source: *mut c_void,
    qcache_max: usize,
    flags: c_uint,
    out: *mut *mut RawVmem,
) -> c_int {
    let Some(svc) = service() else {
        return ENODEV.to_errno();
    };
    if name.is_null() || out.is_null() || crate::arenas::vm_flags(flags).is_err() {
        return EINVAL.to_errno();
    }
    crate::heap::might_sleep();
    let mut buf = [0u8; NAME_MAX + 1];
    let mut len = None;
    for (i, slot) in buf.iter_mut().enumerate() {
        // SAFETY: a valid C string, read up to its NUL.
        let c = unsafe { name.add(i).read() };
        if c == 0 {
            len = Some(i);
            break;
        }
        *slot = c;
    }
    let Some(len) = len.filter(|&l| report::valid_name(&buf[..l])) else {
        return EINVAL.to_errno();
    };
    // SAFETY: checked ASCII.
    let name = unsafe { core::str::from_utf8_unchecked(&buf[..len]) };
    let cfg = VmConfig {
        name,
        base,
        size,
        quantum,
        qcache_max,
        import,
        release,
        source,
        owner: owner.cast_const().cast(),
    };
    match svc.create_arena(&cfg) {
        Ok(p) => {
            // SAFETY: the caller's guarantee.
            unsafe { out.write(p.cast()) };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// Rust side of `kmalloc43_vmem_destroy()`.
///
/// # Safety
///
/// `vm` is NULL or a live handle, not used concurrently and never again after success.
#[no_mangle]
pub unsafe extern "C" fn kmalloc43_rust_vmem_destroy(vm: *mut RawVmem) -> c_int {
    let Some(svc) = service() else {
        return ENODEV.to_errno();
    };
    // SAFETY: the caller's guarantee.
    errno(unsafe { svc.destroy_arena(vm.cast()) })
}

/// Rust side of `kmalloc43_vmem_add()`.
///
/// # Safety
///
/// `vm` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn kmalloc43_rust_vmem_add(
    vm: *mut RawVmem,
    base: c_ulong,
    size: usize,
    flags: c_uint,
) -> c_int {
    // SAFETY: the caller's guarantee.
    errno(unsafe { arena(vm) }.and_then(|a| {
        crate::arenas::vm_flags(flags)?;
        a.add(base, size)
    }))
}

/// Rust side of `kmalloc43_vmem_alloc()`.
///
/// # Safety
///
/// `vm` is NULL or a live handle; `out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn kmalloc43_rust_vmem_alloc(
    vm: *mut RawVmem,
    size: usize,
    flags: c_uint,
    out: *mut c_ulong,
) -> c_int {
    // SAFETY: the caller's guarantee (twice).
    unsafe { alloc_into(out, || arena(vm).and_then(|a| a.alloc(size, flags))) }
}

/// Rust side of `kmalloc43_vmem_free()`.
///
/// # Safety
///
/// `vm` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn kmalloc43_rust_vmem_free(
    vm: *mut RawVmem,
    addr: c_ulong,
    size: usize,
) -> c_int {
    // SAFETY: the caller's guarantee.
    errno(unsafe { arena(vm) }.and_then(|a| a.free(addr, size, false)))
}

/// Rust side of `kmalloc43_vmem_xalloc()`.
///
/// # Safety
///
/// `vm` is NULL or a live handle; `out` is NULL or valid for a write.
#[no_mangle]
#[link_section = ".text.kmalloc43_vmem"]
pub unsafe extern "C" fn kmalloc43_rust_vmem_xalloc(
    vm: *mut RawVmem,
    size: usize,
    align: usize,
    phase: usize,
    nocross: usize,
    minaddr: c_ulong,
    maxaddr: c_ulong,
    flags: c_uint,
    out: *mut c_ulong,
) -> c_int {
    let c = Constraints {
        align,
        phase,
        nocross,
        min: minaddr,
        max: (maxaddr != 0).then_some(maxaddr),
    };
    // SAFETY: the caller's guarantee (twice).
    unsafe { alloc_into(out, || arena(vm).and_then(|a| a.xalloc(size, &c, flags))) }
}

/// Rust side of `kmalloc43_vmem_xfree()`.
///
/// # Safety
///
/// `vm` is NULL or a live handle.
#[no_mangle]
#[link_section = ".text.kmalloc43_vmem"]
pub unsafe extern "C" fn kmalloc43_rust_vmem_xfree(
    vm: *mut RawVmem,
    addr: c_ulong,
    size: usize,
) -> c_int {
    // SAFETY: the caller's guarantee.
    errno(unsafe { arena(vm) }.and_then(|a| a.free(addr, size, true)))
}

/// Rust side of `kmalloc43_vmem_walk()`.
///
/// # Safety
///
/// `vm` is NULL or a live handle; `f` is NULL or a function accepting `arg` that neither sleeps
/// nor calls into any kmalloc43 arena.
#[no_mangle]
pub unsafe extern "C" fn kmalloc43_rust_vmem_walk(
    vm: *mut RawVmem,
    typemask: c_uint,
    f: Option<unsafe extern "C" fn(arg: *mut c_void, base: c_ulong, size: usize)>,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: the caller's guarantee.
    errno(unsafe { arena(vm) }.and_then(|a| {
        let which = kinds(typemask)?;
        let f = f.ok_or(EINVAL)?;
        // SAFETY: the caller's guarantee on `f` and `arg`.
        a.walk(which, |base, size| unsafe { f(arg, base as c_ulong, size) });
        Ok(())
    }))
}

/// Rust side of `kmalloc43_vmem_size()`: 0 for a bad handle or mask.
///
/// # Safety
///
/// `vm` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn kmalloc43_rust_vmem_size(vm: *mut RawVmem, typemask: c_uint) -> usize {
    // SAFETY: the caller's guarantee.
    match (unsafe { arena(vm) }, kinds(typemask)) {
        (Ok(a), Ok(k)) => a.size(k),
        _ => 0,
    }
}

/// Rust side of `kmalloc43_vmem_import_from_arena()`: `source` is a kmalloc43 arena.
///
/// # Safety
///
/// `source` is NULL or a live handle; `base` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn kmalloc43_rust_vmem_import_from_arena(
    source: *mut c_void,
    size: usize,
    flags: c_uint,
    base: *mut c_ulong,
) -> c_int {
    // SAFETY: the caller's guarantee.
    unsafe { kmalloc43_rust_vmem_alloc(source.cast(), size, flags, base) }
}

/// Rust side of `kmalloc43_vmem_release_to_arena()`.
///
/// # Safety
///
/// `source` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn kmalloc43_rust_vmem_release_to_arena(
    source: *mut c_void,
    base: c_ulong,
    size: usize,
) {
    // SAFETY: the caller's guarantee.
    let _ = unsafe { kmalloc43_rust_vmem_free(source.cast(), base, size) };
}
