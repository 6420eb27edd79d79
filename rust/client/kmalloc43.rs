// SPDX-License-Identifier: GPL-2.0

//! The safe Rust API of kmalloc43 for other kernel modules.
//!
//! kmalloc43.ko exports a C ABI (`rust/include/kmalloc43.h`) with `EXPORT_SYMBOL_GPL`; the kernel
//! has no way to export Rust items between modules, so a Rust client compiles this wrapper into
//! itself, mounted at its crate root under the name `kmalloc43`:
//!
//! ```ignore
//! #[path = "../rust/client/kmalloc43.rs"] // relative to the client's crate root file
//! pub mod kmalloc43;
//! #[path = "kmalloc43_abi_generated.rs"] // made by rust/include/kmalloc43_bindgen.mk
//! pub mod kmalloc43_abi;
//! ```
//!
//! The client's Kbuild includes `rust/include/kmalloc43_bindgen.mk` so that bindgen generates
//! `kmalloc43_abi_generated.rs` from `kmalloc43.h` beside the crate root at build time
//! (`samples/Kbuild` shows how). Then, for instance (this is compiled and run in the sample
//! client, `samples/kmalloc43_client/doc_examples.rs`):
//!
//! ```ignore
//! use kmalloc43::MVec;
//!
//! kmalloc43::define_type!(
//!     /// Pathname buffers.
//!     M_NAMEI, c"namei", c"pathname buffers", 64 * 1024
//! );
//!
//! // Module::init: define the type, keep the registration in the module state.
//! let namei = M_NAMEI.define()?;
//! let mut path = MVec::<u8, M_NAMEI>::new(); // kernel::alloc::Vec<u8, Typed<M_NAMEI>>
//! path.extend_from_slice(b"/usr/share/dict/words\0", GFP_KERNEL)?; // charged to namei
//! drop(path); // freed, uncharged
//! drop(namei); // undefined (refused with EBUSY while allocations are live)
//! ```
//!
//! It must be `pub` (the kernel's `unreachable_pub` lint) and named `kmalloc43` (the
//! [`define_type!`] macro refers to `$crate::kmalloc43`), in a crate with a `module!` (types and
//! arenas are owned by its `THIS_MODULE`: see `kmalloc43.h` for what happens when the module
//! unloads without cleaning up). The client's Kbuild must let modpost
//! see kmalloc43's symbols (build it in the same `M=` tree, or `KBUILD_EXTRA_SYMBOLS`).
//!
//! Contents:
//! - [`MallocType`] and [`define_type!`]: malloc types with statistics and limits;
//!   [`TypeRegistration`] undefines a type on drop.
//! - [`Typed<M>`]: the kernel's `Allocator` for the malloc type `M`, so that the kernel's `Box`
//!   and `Vec` ([`MBox<T, M>`], [`MVec<T, M>`]) and other containers generic over an allocator
//!   charge it (the first choice).
//! - [`TypedBox<T>`]: one value charged to a type chosen at run time (a `&'static MallocType`,
//!   which `KBox` cannot take); [`Buffer`]: bytes that also show their `usable_size` (the room
//!   the size class really set aside, which a `KVec` hides); [`Flags`]: `WAITOK`, `NOWAIT`,
//!   `ZERO`.
//! - [`Arena`], built by [`ArenaBuilder`]: vmem arenas with `alloc`/`free`,
//!   `xalloc`/`xfree` under [`Constraints`], `walk` and `size`; [`Segment`] frees on drop.
//! - [`age`]: one timed aging pass of kmalloc43's heap now, returning what it gave back
//!   ([`Aged`]).
//!
//! Errors are kernel [`Error`](kernel::error::Error)s: `ENOMEM` (no memory, or a type's limit
//! with `NOWAIT`), `EINVAL` (bad arguments), `EBUSY` (undefine with live allocations).
//!
//! Contexts: `NOWAIT`/`NOSLEEP` calls and frees may be made from any context, `WAITOK`/`SLEEP`
//! calls, type definition, arena creation and [`age`] only from process context without
//! spinlocks.

#[path = "aging.rs"]
mod aging;
#[path = "arena.rs"]
mod arena;
#[path = "buffer.rs"]
mod buffer;
#[path = "constraints.rs"]
mod constraints;
#[path = "ffi.rs"]
pub mod ffi;
#[path = "flags.rs"]
mod flags;
#[path = "mtype.rs"]
mod mtype;
#[path = "typed_alloc.rs"]
mod typed_alloc;
#[path = "typed_box.rs"]
mod typed_box;

pub use aging::{age, Aged};
pub use arena::{Arena, ArenaBuilder, SegKinds, Segment, VmFlags};
pub use buffer::Buffer;
pub use constraints::Constraints;
pub use flags::Flags;
pub use mtype::{define_type, MallocType, TypeRegistration, TypeStats};
pub use typed_alloc::{MBox, MVec, TypeMarker, Typed, MIN_ALIGN};
pub use typed_box::TypedBox;

/// The client module's `struct module` (`THIS_MODULE`), the owner of its types and arenas: the
/// wrapper is compiled into the client, whose `module!` declares `crate::LocalModule`.
const fn this_module() -> *mut ffi::module {
    <crate::LocalModule as kernel::ModuleMetadata>::THIS_MODULE
        .as_ptr()
        .cast::<ffi::module>()
}
