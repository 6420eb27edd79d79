// SPDX-License-Identifier: GPL-2.0

//! Malloc types: the statically defined owners every allocation is charged to, like FreeBSD's
//! `MALLOC_DEFINE`.

use core::ffi::CStr;

use kernel::{
    error::to_result,
    prelude::*,
    str::as_char_ptr_in_const_context,
    sync::atomic::{Acquire, Atomic, Relaxed, Release},
    types::Opaque,
};

use super::ffi::{self, RawType};

/// A type's statistics: `struct kmalloc43_type_stats` (`inuse`, `requests`, `memuse`,
/// `high_memuse`, `limit`, `limblocks`).
pub type TypeStats = ffi::kmalloc43_type_stats;

/// [`MallocType::state`]: not defined with kmalloc43.
const UNDEFINED: u32 = 0;
/// [`MallocType::state`]: a define or undefine is in progress.
const CHANGING: u32 = 1;
/// [`MallocType::state`]: defined; allocations may be charged to it.
const DEFINED: u32 = 2;

/// A malloc type: a name, a description and a limit that kmalloc43 keeps statistics for
/// (`/sys/kernel/debug/kmalloc43/types`) and enforces.
///
/// Lives in a `static` (see [`define_type!`](crate::kmalloc43::define_type)), is defined with
/// kmalloc43 by [`MallocType::define`] at module init and undefined when the returned
/// [`TypeRegistration`] is dropped at module exit.
///
/// Its owner is the client module (`THIS_MODULE`). If the module unloads with the type still
/// defined (a registration leaked, or refused because of live allocations), kmalloc43 undefines
/// it, or orphans it while allocations are live; the module's next load adopts the orphan when
/// it defines the type again (see `kmalloc43.h`).
///
/// # Invariants
///
/// - `raw` is only written by kmalloc43 (`kmalloc43_type_define`/`_undefine`), and only while
///   `state` is `CHANGING`, which one thread at a time holds; kmalloc43 reads it in allocation
///   calls, which this wrapper only makes while `state` is `DEFINED`.
/// - `raw.name` and `raw.desc` point to the `'static` strings `name` and `desc`.
pub struct MallocType {
    raw: Opaque<RawType>,
    name: &'static CStr,
    limit: usize,
    state: Atomic<u32>,
}

// SAFETY: kmalloc43 serializes its accesses to a type internally; on the Rust side `raw` is only
// handed to kmalloc43, and the define/undefine transitions are serialized by `state` (see the
// type invariants). The names are `'static` immutable strings.
unsafe impl Sync for MallocType {}
// SAFETY: Same reasoning as for `Sync`: nothing in a `MallocType` is tied to a thread.
unsafe impl Send for MallocType {}

impl MallocType {
    /// A type named `name` (short, shown in debugfs and as `limits/<name>`), described by
    /// `desc`, limited to `limit` bytes in use at once (0: no limit). Not yet defined.
    pub const fn new(name: &'static CStr, desc: &'static CStr, limit: usize) -> Self {
        Self {
            raw: Opaque::new(RawType {
                name: as_char_ptr_in_const_context(name),
                desc: as_char_ptr_in_const_context(desc),
                limit,
                owner: super::this_module(),
                handle: 0,
            }),
            name,
            limit,
            state: Atomic::new(UNDEFINED),
        }
    }

    /// The short name.
    pub fn name(&self) -> &'static CStr {
        self.name
    }

    /// The limit given at definition, in bytes (0: none). Root can change the live limit
    /// through debugfs; `/sys/kernel/debug/kmalloc43/types` shows the current one.
    pub fn initial_limit(&self) -> usize {
        self.limit
    }

    /// Whether the type is currently defined with kmalloc43.
    pub fn is_defined(&self) -> bool {
        self.state.load(Acquire) == DEFINED
    }

    /// Defines the type with kmalloc43. Returns the registration that undefines it on drop:
    /// keep it for as long as the type is used (typically in the module's state), and drop
    /// every allocation of the type before it.
    ///
    /// Errors: `EBUSY` if the type is already defined (or being changed), and kmalloc43's
    /// `EINVAL` (bad name), `EEXIST` (name taken), `ENOSPC` (type table full), `ENOMEM`.
    ///
    /// Context: may sleep.
    pub fn define(&'static self) -> Result<TypeRegistration> {
        self.state
            .cmpxchg(UNDEFINED, CHANGING, Acquire)
            .map_err(|_| EBUSY)?;
        // SAFETY: `raw` is a valid `struct kmalloc43_type` whose strings are `'static`; `state`
        // is `CHANGING`, so this thread is the only one defining or using it.
        let ret = to_result(unsafe { ffi::kmalloc43_type_define(self.raw.get()) });
        self.state
            .store(if ret.is_ok() { DEFINED } else { UNDEFINED }, Release);
        ret.map(|()| TypeRegistration { ty: self })
    }

    /// The type's statistics (the row of `/sys/kernel/debug/kmalloc43/types`), exact when read.
    /// `EINVAL` unless the type is defined.
    ///
    /// Context: any. A caller that may sleep (task context, preemptible, outside
    /// `rcu_read_lock()`) always gets an answer: it waits for the slot locks' slow mode (at most
    /// an RCU grace period) and for every CPU's slot lock. Any other caller (softirq, hardirq,
    /// preemption or interrupts off, a spinlock held; every caller on a kernel without
    /// `CONFIG_PREEMPT_COUNT`) never waits and gets `EBUSY` if the slot locks were in fast mode
    /// (the call then kicks a work item that enters slow mode for about a second, so that a
    /// retry a moment later answers) or if a CPU's slot was held at that moment (retry later,
    /// or read from a context that may sleep).
    pub fn stats(&self) -> Result<TypeStats> {
        let raw = self.raw_defined()?;
        let mut out = ffi::kmalloc43_type_stats::default();
        // SAFETY: `raw` is a defined type and `out` a valid, writable struct.
        to_result(unsafe { ffi::kmalloc43_type_stats(raw, &mut out) })?;
        Ok(out)
    }

    /// The C view of the type, for kmalloc43's allocation calls. `EINVAL` unless defined.
    pub(crate) fn raw_defined(&self) -> Result<*mut RawType> {
        if self.is_defined() {
            Ok(self.raw.get())
        } else {
            Err(EINVAL)
        }
    }

    /// The C view of the type, for freeing memory allocated while it was defined.
    pub(crate) fn raw(&self) -> *mut RawType {
        self.raw.get()
    }

    /// Undefines the type. On `EBUSY` (live allocations) it stays defined.
    fn undefine(&'static self) -> Result {
        self.state
            .cmpxchg(DEFINED, CHANGING, Acquire)
            .map_err(|_| ENOENT)?;
        // SAFETY: `raw` was defined by `define` (state was `DEFINED`) and is valid; `state` is
        // `CHANGING`, so no other define or undefine runs.
        let ret = to_result(unsafe { ffi::kmalloc43_type_undefine(self.raw.get()) });
        self.state
            .store(if ret.is_ok() { UNDEFINED } else { DEFINED }, Relaxed);
        ret
    }
}

/// Proof that a [`MallocType`] is defined with kmalloc43; undefines it when dropped.
///
/// If allocations of the type are still live at that point, kmalloc43 refuses (`EBUSY`), the
/// error is logged with `pr_err!` and the type stays defined (and its memory charged): a leak
/// that `/sys/kernel/debug/kmalloc43/types` shows. Drop allocations first; in a module's state
/// struct, declare the allocations before the registrations (fields drop in declaration order).
pub struct TypeRegistration {
    ty: &'static MallocType,
}

impl TypeRegistration {
    /// The registered type.
    pub fn malloc_type(&self) -> &'static MallocType {
        self.ty
    }

    /// Undefines the type now, returning kmalloc43's answer instead of logging it. On error
    /// (`EBUSY`: live allocations) the registration is handed back unchanged.
    pub fn undefine(self) -> core::result::Result<(), (Self, Error)> {
        let ty = self.ty;
        core::mem::forget(self);
        ty.undefine().map_err(|e| (TypeRegistration { ty }, e))
    }
}

impl Drop for TypeRegistration {
    fn drop(&mut self) {
        if let Err(e) = self.ty.undefine() {
            pr_err!(
                "kmalloc43: cannot undefine malloc type {:?}: {:?} (live allocations?)\n",
                self.ty.name,
                e
            );
        }
    }
}

/// Defines a `static` [`MallocType`], like FreeBSD's `MALLOC_DEFINE(M_FOO, "foo", "...")`.
///
/// The wrapper must be mounted at the crate root as `kmalloc43` (see the crate docs).
///
/// ```ignore
/// kmalloc43::define_type!(
///     /// Pathname buffers.
///     M_NAMEI, c"namei", c"pathname buffers", 64 * 1024
/// );
/// // in Module::init:
/// let reg = M_NAMEI.define()?;
/// ```
///
/// Beside the static it declares an uninhabited type of the same name (types and values live in
/// different namespaces), the [`TypeMarker`](crate::kmalloc43::TypeMarker) of the kernel's
/// allocator for the type: `KBox<T, Typed<M_NAMEI>>`, `KVec<u8, Typed<M_NAMEI>>`.
#[macro_export]
macro_rules! kmalloc43_define_type {
    ($(#[$attr:meta])* $vis:vis $var:ident, $name:expr, $desc:expr, $limit:expr) => {
        $(#[$attr])*
        $vis static $var: $crate::kmalloc43::MallocType =
            $crate::kmalloc43::MallocType::new($name, $desc, $limit);

        $(#[$attr])*
        ///
        /// (The type that names this malloc type's allocator, `Typed<...>`.)
        #[allow(
            non_camel_case_types,
            dead_code,
            reason = "named after the malloc type's static; unused by clients without Typed<...>"
        )]
        $vis enum $var {}

        impl $crate::kmalloc43::TypeMarker for $var {
            fn malloc_type() -> &'static $crate::kmalloc43::MallocType {
                &$var
            }
        }
    };
}
pub use kmalloc43_define_type as define_type;
