// SPDX-License-Identifier: GPL-2.0

//! [`TypedBox`]: a `KBox`-like owner of one value, allocated from kmalloc43 and charged to a
//! malloc type.

use core::{
    marker::PhantomData,
    mem::{align_of, size_of, ManuallyDrop},
    ops::{Deref, DerefMut},
    ptr::{self, NonNull},
};

use kernel::prelude::*;

use super::{ffi, Flags, MallocType};

/// A value of type `T` in memory from kmalloc43, charged to a [`MallocType`] until the box is
/// dropped (which drops the value and frees the memory).
///
/// ```ignore
/// struct Pcb { state: u32, snd_nxt: u32 }
/// let pcb = TypedBox::new(&M_PCB, Pcb { state: 1, snd_nxt: 0 }, Flags::NOWAIT)?;
/// ```
///
/// # Invariants
///
/// `ptr` points to an initialized `T`, at the start of a piece of at least
/// `max(size_of::<T>(), 1)` bytes that kmalloc43 allocated for `ty` and that this box owns.
pub struct TypedBox<T> {
    ptr: NonNull<T>,
    ty: &'static MallocType,
    _owns: PhantomData<T>,
}

// SAFETY: A `TypedBox<T>` owns its `T` like a `KBox<T>` does, and kmalloc43's free may be called
// from any context and thread.
unsafe impl<T: Send> Send for TypedBox<T> {}
// SAFETY: Shared access to a `TypedBox<T>` only gives shared access to the `T`.
unsafe impl<T: Sync> Sync for TypedBox<T> {}

impl<T> TypedBox<T> {
    /// Moves `value` into memory allocated from kmalloc43 and charged to `ty`.
    ///
    /// Errors: `EINVAL` if `ty` is not defined or kmalloc43 cannot align a `T` (an alignment
    /// above the page size); `ENOMEM` if kmalloc43 returns no memory: out of memory, or the
    /// type's limit reached with [`Flags::NOWAIT`] (with [`Flags::WAITOK`] the call waits
    /// for memory of the type to be freed instead).
    ///
    /// Context: with `NOWAIT` any; with `WAITOK` process context, may sleep.
    pub fn new(ty: &'static MallocType, value: T, flags: Flags) -> Result<Self> {
        let raw_ty = ty.raw_defined()?;
        let size = size_of::<T>().max(1);
        // SAFETY: `raw_ty` is a defined type; kmalloc43 validates size and flags.
        let p = unsafe { ffi::kmalloc43_malloc(size, raw_ty, flags.without(Flags::ZERO).bits()) };
        let ptr = NonNull::new(p.cast::<T>()).ok_or(ENOMEM)?;
        // kmalloc43 aligns a piece whose size is a multiple of a power of two up to a page to
        // that power in both size-class modes (kmalloc43.h), and `size_of::<T>()` is a multiple
        // of `align_of::<T>()`; large allocations are page-aligned. Check rather than assume.
        if ptr.as_ptr().align_offset(align_of::<T>()) != 0 {
            // SAFETY: `p` was just allocated for `ty` and is not used afterwards.
            unsafe { ffi::kmalloc43_free(p, ty.raw()) };
            return Err(EINVAL);
        }
        // SAFETY: `ptr` is valid for writing `size_of::<T>()` bytes and aligned for `T`.
        unsafe { ptr.as_ptr().write(value) };
        // INVARIANT: the piece is at least `size` bytes, owned by us and now initialized.
        Ok(Self {
            ptr,
            ty,
            _owns: PhantomData,
        })
    }

    /// The type the memory is charged to.
    pub fn malloc_type(this: &Self) -> &'static MallocType {
        this.ty
    }

    /// Bytes kmalloc43 really set aside for the value (its bucket size, or whole pages).
    pub fn usable_size(this: &Self) -> usize {
        // SAFETY: `this.ptr` is a live kmalloc43 allocation (type invariant).
        unsafe { ffi::kmalloc43_usable_size(this.ptr.as_ptr().cast()) }
    }

    /// Moves the value out and frees the memory.
    pub fn into_inner(this: Self) -> T {
        let this = ManuallyDrop::new(this);
        // SAFETY: the value is initialized (type invariant) and, as `this` is never dropped, it
        // is read exactly once.
        let value = unsafe { ptr::read(this.ptr.as_ptr()) };
        // SAFETY: the piece was allocated for `this.ty` and the value has been moved out.
        unsafe { free_piece(this.ptr.as_ptr().cast(), this.ty) };
        value
    }
}

impl<T> Deref for TypedBox<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: `ptr` points to an initialized `T` owned by `self` (type invariant).
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for TypedBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` guarantees exclusive access.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for TypedBox<T> {
    fn drop(&mut self) {
        // SAFETY: the value is initialized and dropped only here.
        unsafe { ptr::drop_in_place(self.ptr.as_ptr()) };
        // SAFETY: the piece was allocated for `self.ty` and is not used again.
        unsafe { free_piece(self.ptr.as_ptr().cast(), self.ty) };
    }
}

/// Frees a piece of memory, logging kmalloc43's refusal (which would mean a bug here or memory
/// corruption; kmalloc43 leaves its state intact in that case).
///
/// # Safety
///
/// `p` must have been allocated by kmalloc43 for `ty`, and must not be used afterwards.
pub(crate) unsafe fn free_piece(p: *mut kernel::ffi::c_void, ty: &'static MallocType) {
    // SAFETY: guaranteed by the caller.
    let ret = unsafe { ffi::kmalloc43_free(p, ty.raw()) };
    if ret != 0 {
        pr_err!(
            "kmalloc43: free of type {:?} refused: {:?}\n",
            ty.name(),
            Error::from_errno(ret)
        );
    }
}
