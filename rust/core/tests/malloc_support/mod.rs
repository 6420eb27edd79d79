// SPDX-License-Identifier: GPL-2.0

//! Shared by the malloc unit test files: a core on host pages with one type, and raw access.

use std::ptr::NonNull;

use kmalloc43_core::hosted::malloc_host_pages::HostPages;
use kmalloc43_core::malloc::{Malloc, MallocFlags, MallocType, SizeClasses};

pub const NOWAIT: MallocFlags = MallocFlags::NOWAIT;
pub const WAITOK: MallocFlags = MallocFlags::WAITOK;

pub fn setup(mode: SizeClasses) -> (Malloc<HostPages>, MallocType) {
    let mut m = Malloc::with_classes(HostPages::new(), mode);
    let ty = m
        .define_type("test", "unit test memory", usize::MAX)
        .unwrap();
    (m, ty)
}

pub fn addr(p: NonNull<u8>) -> usize {
    p.as_ptr() as usize
}

pub fn write(p: NonNull<u8>, len: usize, byte: u8) {
    // SAFETY: tests only write within allocations they own.
    unsafe { std::ptr::write_bytes(p.as_ptr(), byte, len) }
}

pub fn read(p: NonNull<u8>, off: usize) -> u8 {
    // SAFETY: tests only read within allocations they own.
    unsafe { *p.as_ptr().add(off) }
}
