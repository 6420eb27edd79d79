// SPDX-License-Identifier: GPL-2.0

//! The C functions kmalloc43.ko exports (`rust/include/kmalloc43.h`), declared for Rust.
//!
//! Rust modules cannot import Rust symbols from each other, so a Rust client links against the
//! same `EXPORT_SYMBOL_GPL` C functions a C client uses. Every declaration here must match the
//! header exactly; modpost resolves them from kmalloc43's `Module.symvers`, and loading the client
//! before kmalloc43 fails with "Unknown symbol".
//!
//! Everything here is `unsafe` to call; the safe API is in the sibling modules.

use kernel::ffi::{c_char, c_int, c_uint, c_ulong, c_void};

/// `struct kmalloc43_type`: a malloc type as kmalloc43 sees it.
#[repr(C)]
pub struct RawType {
    /// Short name (`const char *`), shown in debugfs and used for `limits/<name>`.
    pub name: *const c_char,
    /// One-line description (`const char *`).
    pub desc: *const c_char,
    /// Limit in bytes; 0 means no limit.
    pub limit: usize,
    /// Filled by `kmalloc43_type_define()`; opaque to clients.
    pub handle: u32,
}

/// `struct kmalloc43_vmem`: an arena, opaque to clients.
#[repr(C)]
pub struct RawVmem {
    _opaque: [u8; 0],
}

/// `kmalloc43_vmem_import_t`.
pub type ImportFn = unsafe extern "C" fn(
    source: *mut c_void,
    size: usize,
    flags: c_uint,
    base: *mut c_ulong,
) -> c_int;
/// `kmalloc43_vmem_release_t`.
pub type ReleaseFn = unsafe extern "C" fn(source: *mut c_void, base: c_ulong, size: usize);
/// The callback of `kmalloc43_vmem_walk()`.
pub type WalkFn = unsafe extern "C" fn(arg: *mut c_void, base: c_ulong, size: usize);

// `KM43_*` flag bits.
/// `KM43_WAITOK`.
pub const KM43_WAITOK: c_uint = 0x0001;
/// `KM43_NOWAIT`.
pub const KM43_NOWAIT: c_uint = 0x0002;
/// `KM43_ZERO`.
pub const KM43_ZERO: c_uint = 0x0004;
/// `KM43_VM_SLEEP`.
pub const KM43_VM_SLEEP: c_uint = 0x0001;
/// `KM43_VM_NOSLEEP`.
pub const KM43_VM_NOSLEEP: c_uint = 0x0002;
/// `KM43_VM_INSTANTFIT`.
pub const KM43_VM_INSTANTFIT: c_uint = 0x0000;
/// `KM43_VM_BESTFIT`.
pub const KM43_VM_BESTFIT: c_uint = 0x0010;
/// `KM43_VM_NEXTFIT`.
pub const KM43_VM_NEXTFIT: c_uint = 0x0020;
/// `KM43_VMEM_ALLOC`.
pub const KM43_VMEM_ALLOC: c_uint = 0x1;
/// `KM43_VMEM_FREE`.
pub const KM43_VMEM_FREE: c_uint = 0x2;

extern "C" {
    /// `int kmalloc43_type_define(struct kmalloc43_type *type)`.
    pub fn kmalloc43_type_define(ty: *mut RawType) -> c_int;
    /// `int kmalloc43_type_undefine(struct kmalloc43_type *type)`.
    pub fn kmalloc43_type_undefine(ty: *mut RawType) -> c_int;
    /// `void *kmalloc43_malloc(size_t size, struct kmalloc43_type *type, unsigned int flags)`.
    pub fn kmalloc43_malloc(size: usize, ty: *mut RawType, flags: c_uint) -> *mut c_void;
    /// `int kmalloc43_free(void *addr, struct kmalloc43_type *type)`.
    pub fn kmalloc43_free(addr: *mut c_void, ty: *mut RawType) -> c_int;
    /// `void *kmalloc43_realloc(void *addr, size_t size, struct kmalloc43_type *type,
    /// unsigned int flags)`.
    pub fn kmalloc43_realloc(
        addr: *mut c_void,
        size: usize,
        ty: *mut RawType,
        flags: c_uint,
    ) -> *mut c_void;
    /// `size_t kmalloc43_usable_size(const void *addr)`.
    pub fn kmalloc43_usable_size(addr: *const c_void) -> usize;

    /// `int kmalloc43_vmem_import_from_arena(void *source, size_t size, unsigned int flags,
    /// unsigned long *base)`.
    pub fn kmalloc43_vmem_import_from_arena(
        source: *mut c_void,
        size: usize,
        flags: c_uint,
        base: *mut c_ulong,
    ) -> c_int;
    /// `void kmalloc43_vmem_release_to_arena(void *source, unsigned long base, size_t size)`.
    pub fn kmalloc43_vmem_release_to_arena(source: *mut c_void, base: c_ulong, size: usize);
    /// `struct kmalloc43_vmem *kmalloc43_vmem_create(...)`: a valid pointer or an `ERR_PTR`.
    pub fn kmalloc43_vmem_create(
        name: *const c_char,
        base: c_ulong,
        size: usize,
        quantum: usize,
        import: Option<ImportFn>,
        release: Option<ReleaseFn>,
        source: *mut c_void,
        qcache_max: usize,
        flags: c_uint,
    ) -> *mut RawVmem;
    /// `int kmalloc43_vmem_destroy(struct kmalloc43_vmem *vm)`.
    pub fn kmalloc43_vmem_destroy(vm: *mut RawVmem) -> c_int;
    /// `int kmalloc43_vmem_add(struct kmalloc43_vmem *vm, unsigned long base, size_t size,
    /// unsigned int flags)`.
    pub fn kmalloc43_vmem_add(vm: *mut RawVmem, base: c_ulong, size: usize, flags: c_uint)
        -> c_int;
    /// `int kmalloc43_vmem_alloc(struct kmalloc43_vmem *vm, size_t size, unsigned int flags,
    /// unsigned long *addr)`.
    pub fn kmalloc43_vmem_alloc(
        vm: *mut RawVmem,
        size: usize,
        flags: c_uint,
        addr: *mut c_ulong,
    ) -> c_int;
    /// `int kmalloc43_vmem_free(struct kmalloc43_vmem *vm, unsigned long addr, size_t size)`.
    pub fn kmalloc43_vmem_free(vm: *mut RawVmem, addr: c_ulong, size: usize) -> c_int;
    /// `int kmalloc43_vmem_xalloc(...)`.
    pub fn kmalloc43_vmem_xalloc(
        vm: *mut RawVmem,
        size: usize,
        align: usize,
        phase: usize,
        nocross: usize,
        minaddr: c_ulong,
        maxaddr: c_ulong,
        flags: c_uint,
        addr: *mut c_ulong,
    ) -> c_int;
    /// `int kmalloc43_vmem_xfree(struct kmalloc43_vmem *vm, unsigned long addr, size_t size)`.
    pub fn kmalloc43_vmem_xfree(vm: *mut RawVmem, addr: c_ulong, size: usize) -> c_int;
    /// `int kmalloc43_vmem_walk(struct kmalloc43_vmem *vm, unsigned int typemask,
    /// void (*fn)(void *arg, unsigned long base, size_t size), void *arg)`.
    pub fn kmalloc43_vmem_walk(
        vm: *mut RawVmem,
        typemask: c_uint,
        f: Option<WalkFn>,
        arg: *mut c_void,
    ) -> c_int;
    /// `size_t kmalloc43_vmem_size(struct kmalloc43_vmem *vm, unsigned int typemask)`.
    pub fn kmalloc43_vmem_size(vm: *mut RawVmem, typemask: c_uint) -> usize;
}
