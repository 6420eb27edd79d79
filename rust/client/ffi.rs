// SPDX-License-Identifier: GPL-2.0

//! The C functions kmalloc43.ko exports (`rust/include/kmalloc43.h`), as Rust sees them.
//!
//! Rust modules cannot import Rust symbols from each other, so a Rust client links against the
//! same `EXPORT_SYMBOL_GPL` C functions a C client uses. Their declarations are not written here
//! by hand: bindgen generates them from the header at build time
//! (`rust/include/kmalloc43_bindgen.mk`), into a file the client's crate root mounts as
//! `kmalloc43_abi` beside this wrapper, so the header is the one source of truth and a change to
//! it reaches every client at its next build. modpost resolves the symbols from kmalloc43's
//! `Module.symvers`; loading the client before kmalloc43 fails with "Unknown symbol".
//!
//! Everything here is `unsafe` to call; the safe API is in the sibling modules. The names below
//! are the wrapper's short names for the header's types.

pub use crate::kmalloc43_abi::*;

/// `struct kmalloc43_type`: a malloc type as kmalloc43 sees it.
pub type RawType = kmalloc43_type;
/// `struct kmalloc43_vmem`: an arena, opaque to clients.
pub type RawVmem = kmalloc43_vmem;
/// `kmalloc43_vmem_import_t` (`None` is a NULL function pointer).
pub type ImportFn = kmalloc43_vmem_import_t;
/// `kmalloc43_vmem_release_t` (`None` is a NULL function pointer).
pub type ReleaseFn = kmalloc43_vmem_release_t;
