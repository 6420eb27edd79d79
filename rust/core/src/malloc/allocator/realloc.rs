// SPDX-License-Identifier: GPL-2.0

//! `realloc` and `usable_size`.

use super::*;

impl<K: KmemPages> Malloc<K> {
    /// Bytes usable at `ptr`: the bucket size, or the whole pages of a large allocation.
    pub fn usable_size(&self, ptr: NonNull<u8>) -> Result<usize, MallocError> {
        let addr = ptr.as_ptr() as usize;
        let loc = self.locate(addr)?;
        let live = if self.diag.enabled {
            self.tag_of(&loc) & LIVE != 0
        } else {
            !matches!(loc.class, Class::Bucket(_) if self.is_listed(loc.bucket, addr, loc.head, loc.free))
        };
        if live {
            Ok(loc.class.charge(self.classes))
        } else {
            Err(MallocError::NotAllocated { addr })
        }
    }

    /// Resizes the allocation at `ptr` (type `ty`) to `new_size` bytes.
    ///
    /// If the new size falls in the same class (or the same page count) the allocation stays in
    /// place; otherwise a new one is made, the contents copied and the old one freed. With
    /// [`MallocFlags::ZERO`] the bytes past the old usable size are zeroed. On error the old
    /// allocation is untouched. `new_size == 0` is [`MallocError::ZeroSize`], not a free.
    pub fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        new_size: usize,
        ty: MallocType,
        flags: MallocFlags,
    ) -> Result<NonNull<u8>, MallocError> {
        self.realloc_in(ptr, new_size, ty, flags, &mut Own)
    }

    /// [`Malloc::realloc`] with the limit checked and the usage counted by `account` (module
    /// `account`).
    pub fn realloc_in<A: Account + ?Sized>(
        &mut self,
        ptr: NonNull<u8>,
        new_size: usize,
        ty: MallocType,
        flags: MallocFlags,
        account: &mut A,
    ) -> Result<NonNull<u8>, MallocError> {
        if !flags.is_valid() {
            return Err(MallocError::BadFlags { bits: flags.bits() });
        }
        let class = classify(self.classes, new_size)?;
        let addr = ptr.as_ptr() as usize;
        self.types.get(ty)?;
        let loc = self.locate(addr)?;
        self.check_live(addr, &loc, ty, false, account)?;
        if loc.class == class {
            return Ok(ptr);
        }
        let old = loc.class.charge(self.classes);
        let new_flags = MallocFlags::from_bits(flags.bits() & !MallocFlags::ZERO.bits());
        let new = self.malloc_in(new_size, ty, new_flags, account)?;
        let new_addr = new.as_ptr() as usize;
        let new_len = class.charge(self.classes);
        // SAFETY: both allocations are live, distinct and at least `min(old, new_len)` long.
        unsafe {
            copy(addr, new_addr, old.min(new_len));
            if flags.contains(MallocFlags::ZERO) && new_len > old {
                fill(new_addr + old, new_len - old, 0);
            }
        }
        if let Err(e) = self.free_in(ptr, ty, account) {
            // Cannot happen (checked above); undo rather than leak.
            let _ = self.free_in(new, ty, account);
            return Err(e);
        }
        Ok(new)
    }
}
