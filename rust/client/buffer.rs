// SPDX-License-Identifier: GPL-2.0

//! [`Buffer`]: a resizable byte buffer from kmalloc43, charged to a malloc type.

use core::{ptr::NonNull, slice};

use kernel::prelude::*;

use super::{ffi, typed_box::free_piece, Flags, MallocType};

/// `len` bytes of memory from kmalloc43, charged to a [`MallocType`], freed on drop.
///
/// The bytes are always initialized: [`Buffer::new`] zeroes them, [`Buffer::from_slice`] copies
/// them and [`Buffer::realloc`] zeroes any growth, so the buffer can be used as a `[u8]`.
///
/// ```ignore
/// let mut path = Buffer::new(&M_NAMEI, 1024, Flags::WAITOK)?;
/// path[..5].copy_from_slice(b"/etc\0");
/// path.realloc(2048, Flags::WAITOK)?;
/// ```
///
/// # Invariants
///
/// `ptr` is the start of a live kmalloc43 allocation of at least `len > 0` initialized bytes,
/// made for `ty` and owned by this buffer.
pub struct Buffer {
    ptr: NonNull<u8>,
    len: usize,
    ty: &'static MallocType,
}

// SAFETY: A `Buffer` owns its bytes, and kmalloc43's calls may be made from any thread.
unsafe impl Send for Buffer {}
// SAFETY: Shared access to a `Buffer` only reads its bytes.
unsafe impl Sync for Buffer {}

impl Buffer {
    /// `len` zeroed bytes charged to `ty`.
    ///
    /// Errors: `EINVAL` if `len` is 0 or `ty` is not defined; `ENOMEM` if kmalloc43 returns no
    /// memory (too large, out of memory, or the type's limit with [`Flags::NOWAIT`]).
    ///
    /// Context: with `NOWAIT` any; with `WAITOK` process context, may sleep.
    pub fn new(ty: &'static MallocType, len: usize, flags: Flags) -> Result<Self> {
        Self::alloc(ty, len, flags | Flags::ZERO)
    }

    /// A copy of `data` charged to `ty`. Errors and context as for [`Buffer::new`].
    pub fn from_slice(ty: &'static MallocType, data: &[u8], flags: Flags) -> Result<Self> {
        let mut buf = Self::alloc(ty, data.len(), flags.without(Flags::ZERO))?;
        // SAFETY: `buf.ptr` is valid for writing `data.len()` bytes and cannot overlap `data`,
        // which the caller still borrows; afterwards all `len` bytes are initialized.
        unsafe {
            buf.ptr
                .as_ptr()
                .copy_from_nonoverlapping(data.as_ptr(), data.len())
        };
        buf.len = data.len();
        Ok(buf)
    }

    /// Allocates; the bytes are initialized only if `flags` has `ZERO` (callers ensure it).
    fn alloc(ty: &'static MallocType, len: usize, flags: Flags) -> Result<Self> {
        if len == 0 {
            return Err(EINVAL);
        }
        let raw_ty = ty.raw_defined()?;
        // SAFETY: `raw_ty` is a defined type; kmalloc43 validates size and flags.
        let p = unsafe { ffi::kmalloc43_malloc(len, raw_ty, flags.bits()) };
        let ptr = NonNull::new(p.cast::<u8>()).ok_or(ENOMEM)?;
        // INVARIANT: `len` bytes were allocated for `ty`; the callers initialize them.
        Ok(Self { ptr, len, ty })
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: a buffer has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The type the buffer is charged to.
    pub fn malloc_type(&self) -> &'static MallocType {
        self.ty
    }

    /// Bytes kmalloc43 set aside (the bucket size, or whole pages): at least [`Buffer::len`].
    pub fn usable_size(&self) -> usize {
        // SAFETY: `self.ptr` is a live kmalloc43 allocation (type invariant).
        unsafe { ffi::kmalloc43_usable_size(self.ptr.as_ptr().cast()) }
    }

    /// Resizes to `new_len` bytes, keeping the first `min(len, new_len)` and zeroing the rest.
    /// The memory may move (a new bucket), or stay when the new size fits the old piece.
    ///
    /// On error the buffer is unchanged: `EINVAL` for `new_len` 0, `ENOMEM` as for
    /// [`Buffer::new`].
    pub fn realloc(&mut self, new_len: usize, flags: Flags) -> Result {
        if new_len == 0 {
            return Err(EINVAL);
        }
        let raw_ty = self.ty.raw_defined()?;
        // SAFETY: `self.ptr` is a live allocation of `self.ty`; on failure kmalloc43 returns
        // NULL and leaves it valid, on success it has moved or kept the first `min` bytes.
        let p = unsafe {
            ffi::kmalloc43_realloc(
                self.ptr.as_ptr().cast(),
                new_len,
                raw_ty,
                flags.without(Flags::ZERO).bits(),
            )
        };
        let ptr = NonNull::new(p.cast::<u8>()).ok_or(ENOMEM)?;
        if new_len > self.len {
            // SAFETY: the new piece is valid for `new_len` bytes; `[len, new_len)` is in it.
            unsafe {
                ptr.as_ptr()
                    .add(self.len)
                    .write_bytes(0, new_len - self.len)
            };
        }
        // INVARIANT: the piece holds `new_len` initialized bytes and is owned by `self`.
        self.ptr = ptr;
        self.len = new_len;
        Ok(())
    }
}

impl core::ops::Deref for Buffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `len` initialized bytes owned by `self` (type invariant).
        unsafe { slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl core::ops::DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` guarantees exclusive access.
        unsafe { slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: the piece was allocated for `self.ty` and is not used again.
        unsafe { free_piece(self.ptr.as_ptr().cast(), self.ty) };
    }
}
