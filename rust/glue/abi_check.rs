// SPDX-License-Identifier: GPL-2.0

//! Compile-time proof that the Rust side of the C ABI is the header's.
//!
//! `include/kmalloc43.h` is the one source of truth of the C ABI. bindgen turns it into
//! `crate::kmalloc43_abi` at build time; the glue uses those structs directly
//! ([`crate::types::Kmalloc43Type`], [`crate::abi::Kmalloc43Totals`]) and this file checks the
//! rest:
//!
//! * every `kmalloc43_rust_*` function, which the exported C wrapper of the same name calls with
//!   its arguments unchanged, has exactly the signature the header declares for that wrapper, and
//!   `kmalloc43_malloc`/`kmalloc43_free`, which the C file exports with no wrapper, have the
//!   header's own;
//! * the core's flag values are the header's (`KM43_WAITOK`, … and the vmem flags);
//! * the cores' page size is the kernel's.
//!
//! Editing a prototype, a struct or a flag value in the header alone therefore fails the build of
//! the module (and bindgen regenerates the Rust clients' view, `rust/client/ffi.rs`, from the same
//! header). Nothing here runs: the checks are type-checking and `const` evaluation.

use crate::abi;
use crate::arenas::{VM_BESTFIT, VM_NEXTFIT, VM_NOSLEEP, VM_SLEEP};
use crate::kmalloc43_abi as h;
use crate::malloc::MallocFlags;

/// Compiles only if `a` and `b` have the same type: used with two function pointers, the
/// header's prototype and the Rust implementation, coerced to one `unsafe extern "C" fn` type.
const fn same_signature<F: Copy>(_a: F, _b: F) {}

/// Asserts at compile time that the Rust implementation `$rust` has the signature of the header's
/// `$c` (an `unsafe extern "C" fn` with `$n` arguments).
macro_rules! same_signature {
    ($c:path, $rust:path, ($($arg:tt),*)) => {
        const _: () = same_signature::<unsafe extern "C" fn($($arg),*) -> _>($c, $rust);
    };
}

same_signature!(
    h::kmalloc43_type_define,
    abi::kmalloc43_rust_type_define,
    (_)
);
same_signature!(
    h::kmalloc43_type_undefine,
    abi::kmalloc43_rust_type_undefine,
    (_)
);
same_signature!(h::kmalloc43_malloc, abi::kmalloc43_malloc, (_, _, _));
same_signature!(h::kmalloc43_free, abi::kmalloc43_free, (_, _));
same_signature!(
    h::kmalloc43_realloc,
    abi::kmalloc43_rust_realloc,
    (_, _, _, _)
);
same_signature!(
    h::kmalloc43_usable_size,
    abi::kmalloc43_rust_usable_size,
    (_)
);
same_signature!(h::kmalloc43_totals, abi::kmalloc43_rust_totals, (_));
same_signature!(h::kmalloc43_age, abi::kmalloc43_rust_age, (_));
same_signature!(
    h::kmalloc43_type_stats,
    abi::kmalloc43_rust_type_stats,
    (_, _)
);
same_signature!(
    h::kmalloc43_vmem_import_from_arena,
    abi::kmalloc43_rust_vmem_import_from_arena,
    (_, _, _, _)
);
same_signature!(
    h::kmalloc43_vmem_release_to_arena,
    abi::kmalloc43_rust_vmem_release_to_arena,
    (_, _, _)
);
same_signature!(
    h::kmalloc43_vmem_destroy,
    abi::kmalloc43_rust_vmem_destroy,
    (_)
);
same_signature!(
    h::kmalloc43_vmem_add,
    abi::kmalloc43_rust_vmem_add,
    (_, _, _, _)
);
same_signature!(
    h::kmalloc43_vmem_alloc,
    abi::kmalloc43_rust_vmem_alloc,
    (_, _, _, _)
);
same_signature!(
    h::kmalloc43_vmem_free,
    abi::kmalloc43_rust_vmem_free,
    (_, _, _)
);
same_signature!(
    h::kmalloc43_vmem_xalloc,
    abi::kmalloc43_rust_vmem_xalloc,
    (_, _, _, _, _, _, _, _, _)
);
same_signature!(
    h::kmalloc43_vmem_xfree,
    abi::kmalloc43_rust_vmem_xfree,
    (_, _, _)
);
same_signature!(
    h::kmalloc43_vmem_walk,
    abi::kmalloc43_rust_vmem_walk,
    (_, _, _, _)
);
same_signature!(
    h::kmalloc43_vmem_size,
    abi::kmalloc43_rust_vmem_size,
    (_, _)
);

// `kmalloc43_vmem_create_owned()` returns an `ERR_PTR`, which the C wrapper builds from the Rust
// side's errno and out-parameter: its Rust side has its own signature, declared in the C file.

// The malloc flags: the core's bits are the header's.
const _: () = assert!(MallocFlags::WAITOK.bits() == h::KM43_WAITOK);
const _: () = assert!(MallocFlags::NOWAIT.bits() == h::KM43_NOWAIT);
const _: () = assert!(MallocFlags::ZERO.bits() == h::KM43_ZERO);

// The vmem flags the glue decodes (`arenas::vm_flags`) are the header's, and mean what the core's
// flags of the same name mean.
const _: () = assert!(VM_SLEEP == h::KM43_VM_SLEEP && VM_NOSLEEP == h::KM43_VM_NOSLEEP);
const _: () = assert!(VM_BESTFIT == h::KM43_VM_BESTFIT && VM_NEXTFIT == h::KM43_VM_NEXTFIT);
const _: () = assert!(h::KM43_VM_INSTANTFIT == 0);
const _: () = assert!(h::KM43_VMEM_ALLOC & h::KM43_VMEM_FREE == 0);

// The layouts and flag values themselves: an ABI break must be made on purpose, here and in the
// `static_assert`s of `kmalloc43_exports.c` (the C side of the same assertions).
const W: usize = core::mem::size_of::<usize>();
const _: () = assert!(core::mem::size_of::<h::kmalloc43_type>() == 5 * W);
const _: () = assert!(core::mem::offset_of!(h::kmalloc43_type, owner) == 3 * W);
const _: () = assert!(core::mem::offset_of!(h::kmalloc43_type, handle) == 4 * W);
const _: () = assert!(core::mem::size_of::<h::kmalloc43_totals>() == 13 * 8);
const _: () = assert!(core::mem::offset_of!(h::kmalloc43_totals, shrinker_pages_freed) == 12 * 8);
const _: () = assert!(core::mem::size_of::<h::kmalloc43_type_stats>() == 6 * 8);
const _: () = assert!(core::mem::size_of::<h::kmalloc43_aged>() == 3 * 8);
const _: () = assert!(core::mem::offset_of!(h::kmalloc43_totals, chunk_order) == 9 * 8);
const _: () = assert!(h::KM43_WAITOK == 0x1 && h::KM43_NOWAIT == 0x2 && h::KM43_ZERO == 0x4);
const _: () = assert!(h::KM43_VM_BESTFIT == 0x10 && h::KM43_VM_NEXTFIT == 0x20);
const _: () = assert!(h::KM43_VMEM_ALLOC == 0x1 && h::KM43_VMEM_FREE == 0x2);

// The cores' page size is the kernel's (the module's Kconfig accepts 4 KiB pages only).
const _: () = assert!(crate::vmem::PAGE_SIZE == kernel::page::PAGE_SIZE);
const _: () = assert!(crate::malloc::PAGE_SIZE == kernel::page::PAGE_SIZE);
