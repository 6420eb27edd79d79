// SPDX-License-Identifier: GPL-2.0

//! [`Typed<M>`]: the kernel's [`Allocator`] for a malloc type, so that the kernel's own containers
//! charge it: `Box<T, Typed<M_PCB>>` and `Vec<u8, Typed<M_NAMEI>>` (the kernel's generic `Box`
//! and `Vec`, of which `KBox<T>` and `KVec<T>` are the `Kmalloc` instances; [`MBox`] and
//! [`MVec`] name the `Typed` ones).
//!
//! [`define_type!`](crate::kmalloc43::define_type) declares, beside the `static` [`MallocType`],
//! an uninhabited type of the same name that implements [`TypeMarker`]: the type names the
//! allocator (`Typed<M_PCB>`), the static holds the type's state, and the two never meet in one
//! namespace. `Typed<M>` itself is zero-sized and never constructed: the kernel's `Allocator`
//! trait has no `self`, exactly as the type's identity is static.
//!
//! The kernel's allocation flags map to kmalloc43's: a request that allows full `GFP_KERNEL`
//! reclaim (direct reclaim, I/O and file system) may wait ([`Flags::WAITOK`]: sleep at the
//! type's limit, take pages with `GFP_KERNEL` when memory is short); anything less
//! (`GFP_NOWAIT`, `GFP_ATOMIC`, and also `GFP_NOIO`/`GFP_NOFS`, whose restrictions a `GFP_KERNEL`
//! page refill would break) is [`Flags::NOWAIT`]. `__GFP_ZERO` is [`Flags::ZERO`]. The NUMA node
//! is ignored: kmalloc43's pages come from any node.
//!
//! Alignment: every piece is at least [`MIN_ALIGN`] (16 bytes) aligned in both size-class modes,
//! pieces of a class whose size is a multiple of an alignment are aligned to it (pieces are carved
//! from page-aligned clusters), and page runs are page aligned. A request for a larger alignment
//! is rounded up to a multiple of it and the result checked: kmalloc43 never hands out a
//! misaligned piece through this allocator, it refuses with [`AllocError`] instead.

use core::{alloc::Layout, marker::PhantomData, ptr::NonNull};

use kernel::alloc::{flags, AllocError, Allocator, Flags as GfpFlags, NumaNode};

use super::{ffi, flags::Flags, mtype::MallocType, typed_box::free_piece};

/// The kernel's `Box` charged to the malloc type `M`, as `KBox<T>` is `Box<T, Kmalloc>`.
pub type MBox<T, M> = kernel::alloc::Box<T, Typed<M>>;
/// The kernel's `Vec` charged to the malloc type `M`, as `KVec<T>` is `Vec<T, Kmalloc>`.
pub type MVec<T, M> = kernel::alloc::Vec<T, Typed<M>>;

/// The alignment every kmalloc43 allocation has, whatever its size and the size-class mode.
pub const MIN_ALIGN: usize = 16;

/// A type that names a `static` [`MallocType`]; [`define_type!`](crate::kmalloc43::define_type)
/// implements it for the uninhabited type it declares beside each static.
pub trait TypeMarker: 'static {
    /// The malloc type allocations through [`Typed<Self>`] are charged to.
    fn malloc_type() -> &'static MallocType;
}

/// The kernel's [`Allocator`] for the malloc type `M`: `KBox<T, Typed<M>>`, `KVec<T, Typed<M>>`.
///
/// Allocating fails with [`AllocError`] when the type is not defined, at its limit with a flag
/// that may not wait, when memory is short, or when the layout's alignment cannot be met.
pub struct Typed<M: TypeMarker>(PhantomData<M>);

/// kmalloc43's flags for the kernel's allocation flags (see the module documentation).
fn malloc_flags(gfp: GfpFlags) -> Flags {
    // Direct reclaim with I/O and file system: what `GFP_KERNEL` has beyond `GFP_NOWAIT` and
    // `GFP_ATOMIC`.
    let may_wait = flags::GFP_KERNEL & !(flags::GFP_NOWAIT | flags::GFP_ATOMIC);
    let base = if gfp.contains(may_wait) {
        Flags::WAITOK
    } else {
        Flags::NOWAIT
    };
    if gfp.contains(flags::__GFP_ZERO) {
        base | Flags::ZERO
    } else {
        base
    }
}

/// The size to ask kmalloc43 for: `layout`'s size, rounded up to its alignment when that is
/// larger than [`MIN_ALIGN`] (so that a class or page run that fits is a multiple of it).
fn request_size(layout: Layout) -> Result<usize, AllocError> {
    if layout.align() <= MIN_ALIGN {
        Ok(layout.size())
    } else {
        layout
            .size()
            .checked_next_multiple_of(layout.align())
            .ok_or(AllocError)
    }
}

/// `ptr` as the slice of `len` bytes the `Allocator` interface returns, if it is aligned to
/// `align`.
fn aligned_slice(ptr: *mut u8, len: usize, align: usize) -> Option<NonNull<[u8]>> {
    let p = NonNull::new(ptr)?;
    (p.as_ptr().align_offset(align) == 0).then(|| NonNull::slice_from_raw_parts(p, len))
}

impl<M: TypeMarker> Typed<M> {
    /// A new allocation for `layout`, or `AllocError` (nothing allocated).
    fn alloc_new(layout: Layout, gfp: GfpFlags) -> Result<NonNull<[u8]>, AllocError> {
        let ty = M::malloc_type();
        let raw = ty.raw_defined().map_err(|_| AllocError)?;
        let size = request_size(layout)?;
        // SAFETY: `raw` is a defined type; kmalloc43 validates the size and the flags.
        let p = unsafe { ffi::kmalloc43_malloc(size, raw, malloc_flags(gfp).bits()) }.cast::<u8>();
        if p.is_null() {
            return Err(AllocError);
        }
        aligned_slice(p, layout.size(), layout.align()).ok_or_else(|| {
            // SAFETY: `p` was just allocated for `ty` and is not used afterwards.
            unsafe { free_piece(p.cast(), ty) };
            AllocError
        })
    }
}

// SAFETY: Every pointer this allocator returns comes from `kmalloc43_malloc`/`_realloc` for the
// one type `M::malloc_type()`, is freed only through `kmalloc43_free`/`_realloc` with that type,
// and is valid for `layout.size()` bytes and aligned to `layout.align()` (checked above; never
// below `MIN_ALIGN`, which kmalloc43 guarantees for every piece). `realloc` keeps the contents up
// to the smaller size (kmalloc43's realloc copies them, and so does the aligned path below) and
// leaves the old allocation valid when it fails.
unsafe impl<M: TypeMarker> Allocator for Typed<M> {
    const MIN_ALIGN: usize = MIN_ALIGN;

    unsafe fn realloc(
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        gfp: GfpFlags,
        _nid: NumaNode,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let ty = M::malloc_type();
        // An old allocation of zero size was never one of ours (the caller's dangling pointer).
        let old = ptr.filter(|_| old_layout.size() != 0);
        if layout.size() == 0 {
            if let Some(p) = old {
                // SAFETY: `p` is a live allocation of this allocator, hence of `ty` (the caller's
                // guarantee), and is not used afterwards.
                unsafe { free_piece(p.as_ptr().cast(), ty) };
            }
            return Ok(NonNull::slice_from_raw_parts(NonNull::dangling(), 0));
        }
        let Some(old) = old else {
            return Self::alloc_new(layout, gfp);
        };
        if layout.align() <= MIN_ALIGN {
            let size = request_size(layout)?;
            // SAFETY: `old` is a live allocation of `ty` (the caller's guarantee); on failure
            // kmalloc43 leaves it valid.
            let p = unsafe {
                ffi::kmalloc43_realloc(
                    old.as_ptr().cast(),
                    size,
                    ty.raw(),
                    malloc_flags(gfp).bits(),
                )
            };
            return aligned_slice(p.cast(), layout.size(), MIN_ALIGN).ok_or(AllocError);
        }
        // A larger alignment: a new aligned allocation, the contents copied, the old one freed.
        let new = Self::alloc_new(layout, gfp)?;
        let keep = layout.size().min(old_layout.size());
        // SAFETY: `old` is valid for `old_layout.size()` bytes and `new` for `layout.size()`;
        // they are distinct live allocations.
        unsafe { core::ptr::copy_nonoverlapping(old.as_ptr(), new.cast::<u8>().as_ptr(), keep) };
        // SAFETY: `old` is a live allocation of `ty`, not used afterwards.
        unsafe { free_piece(old.as_ptr().cast(), ty) };
        Ok(new)
    }
}
