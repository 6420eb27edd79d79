// SPDX-License-Identifier: GPL-2.0

//! Client ownership: the modules that own types and arenas, and what happens when one goes.
//!
//! A type (`struct kmalloc43_type`'s `owner`) and an arena (`kmalloc43_vmem_create_owned`'s
//! `owner`) record their owning module (`THIS_MODULE`; NULL for built-in code, which never goes).
//! A module notifier in the C file (the API is C-only) calls [`kmalloc43_rust_module_going`] when
//! a module goes (`MODULE_STATE_GOING`): after its exit function ran (or its init failed), before
//! its memory is freed. Whatever the module left behind must stop pointing into it then:
//!
//! * its types are undefined, or orphaned if they still have live allocations
//!   ([`crate::types::TypeRegistry::module_going`], decided by the core's
//!   [`crate::malloc::Registry::module_going`]);
//! * its arenas are orphaned, and they and every arena whose import or release function lies in
//!   its code are disowned: no function of the module is called again
//!   ([`crate::service::Service`]'s `arenas_going`, decided by [`crate::malloc::arena_fate`];
//!   [`crate::arenas::VmArena::disown`]).
//!
//! Races: the notifier runs in the unloading task while other CPUs call into kmalloc43. A type is
//! found by the lock-free owner table, which the notifier clears for an orphan (a call through the
//! old struct is refused from then on; before, the struct is still there). An arena's source
//! functions are only called between `VmArena::enter_source` and its guard's drop, counted under
//! the arena lock; disowning sets the flag under the same lock and waits until no call is in
//! flight, so once the notifier returns no CPU is inside the module's functions.

use kernel::{
    ffi::{c_char, c_ulong, c_void},
    prelude::*,
};

use crate::service::service;

extern "C" {
    fn kmalloc43_c_module_notifier_register() -> kernel::ffi::c_int;
    fn kmalloc43_c_module_notifier_unregister();
    fn kmalloc43_c_within_module(addr: c_ulong, module: *const c_void) -> bool;
}

pub(crate) use crate::malloc::ModuleName;

/// Copies a module's name from a C string (at most [`crate::malloc::MODULE_NAME_MAX`] bytes of
/// it; NULL gives [`ModuleName::NONE`]).
///
/// # Safety
///
/// `s` is NULL or a valid NUL-terminated string.
pub(crate) unsafe fn module_name_from_c(s: *const c_char) -> ModuleName {
    let mut buf = [0u8; crate::malloc::MODULE_NAME_MAX];
    let mut len = 0;
    if !s.is_null() {
        while len < buf.len() {
            // SAFETY: NUL-terminated per the caller; we stop at the NUL.
            let c = unsafe { s.add(len).read() };
            if c == 0 {
                break;
            }
            buf[len] = c;
            len += 1;
        }
    }
    ModuleName::new(&buf[..len])
}

/// The core's log notes (text decided in `crate::malloc`) through the kernel's `pr_*!`, whose
/// `{}` takes `kernel::fmt::Display`.
macro_rules! core_display {
    ($($t:ty),*) => {$(
        impl kernel::fmt::Display for $t {
            fn fmt(&self, f: &mut kernel::fmt::Formatter<'_>) -> kernel::fmt::Result {
                core::fmt::Display::fmt(self, f)
            }
        }
    )*};
}
core_display!(
    crate::malloc::Note<'_>,
    crate::malloc::ArenaNote<'_>,
    crate::malloc::ShownName
);

/// `module_name(owner)`: the name of the module at `owner` (a `struct module *`), `NONE` for NULL.
///
/// # Safety
///
/// `owner` is NULL or a module that is loaded (or going: its memory is still there).
pub(crate) unsafe fn module_name_of(owner: *const c_void) -> ModuleName {
    extern "C" {
        fn kmalloc43_c_module_name(module: *const c_void) -> *const c_char;
    }
    if owner.is_null() {
        return ModuleName::NONE;
    }
    // SAFETY: a live module per the caller; the helper returns its NUL-terminated name.
    unsafe { module_name_from_c(kmalloc43_c_module_name(owner)) }
}

/// Whether `addr` lies in the memory of `module` (code or data).
///
/// # Safety
///
/// `module` is a module whose memory is still there (loaded, or going).
pub(crate) unsafe fn within_module(addr: usize, module: *const c_void) -> bool {
    // SAFETY: the caller's guarantee; the helper only compares against its memory ranges.
    unsafe { kmalloc43_c_within_module(addr as c_ulong, module) }
}

/// The registered module notifier; unregistered on drop (which waits for a running notification).
pub(crate) struct ModuleNotifier(());

impl ModuleNotifier {
    /// Registers the notifier: from now on [`kmalloc43_rust_module_going`] runs for every module
    /// that goes. The service must be published first.
    pub(crate) fn register() -> Result<Self> {
        // SAFETY: registers a static notifier block of the C file.
        kernel::error::to_result(unsafe { kmalloc43_c_module_notifier_register() })?;
        Ok(Self(()))
    }
}

impl Drop for ModuleNotifier {
    fn drop(&mut self) {
        // SAFETY: registered by `register`.
        unsafe { kmalloc43_c_module_notifier_unregister() };
    }
}

/// Called by the module notifier when `module` goes (process context, may sleep): its leftovers
/// are reported, its types orphaned and its arenas disowned (see the module documentation).
///
/// # Safety
///
/// `module` is the going module, whose memory is still there; `name` is its name.
#[no_mangle]
pub unsafe extern "C" fn kmalloc43_rust_module_going(module: *const c_void, name: *const c_char) {
    // The notifier is unregistered before the service is retracted, and waits for this call.
    let Some(svc) = service() else {
        return;
    };
    // SAFETY: the caller's guarantee.
    let name = unsafe { module_name_from_c(name) };
    // SAFETY: as above.
    unsafe {
        svc.types.module_going(module, &name);
        svc.arenas_going(module, &name);
    }
}
