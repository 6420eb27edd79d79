// SPDX-License-Identifier: GPL-2.0

//! The only place that touches memory through raw addresses: pieces, free-list links and
//! metadata pages are all plain integers elsewhere.

use core::ptr;

/// Reads the word at `addr`.
///
/// # Safety
///
/// `addr` must be word-aligned and valid for reads of a word.
pub(super) unsafe fn read_word(addr: usize) -> usize {
    // SAFETY: the caller guarantees `addr` is aligned and readable.
    unsafe { ptr::read(addr as *const usize) }
}

/// Writes the word at `addr`.
///
/// # Safety
///
/// `addr` must be word-aligned and valid for writes of a word.
pub(super) unsafe fn write_word(addr: usize, value: usize) {
    // SAFETY: the caller guarantees `addr` is aligned and writable.
    unsafe { ptr::write(addr as *mut usize, value) }
}

/// Reads the `u32` at `addr`.
///
/// # Safety
///
/// `addr` must be 4-byte aligned and valid for reads of 4 bytes.
pub(super) unsafe fn read_u32(addr: usize) -> u32 {
    // SAFETY: the caller guarantees `addr` is aligned and readable.
    unsafe { ptr::read(addr as *const u32) }
}

/// Writes the `u32` at `addr`.
///
/// # Safety
///
/// `addr` must be 4-byte aligned and valid for writes of 4 bytes.
pub(super) unsafe fn write_u32(addr: usize, value: u32) {
    // SAFETY: the caller guarantees `addr` is aligned and writable.
    unsafe { ptr::write(addr as *mut u32, value) }
}

/// Reads the `u16` at `addr`.
///
/// # Safety
///
/// `addr` must be 2-byte aligned and valid for reads of 2 bytes.
pub(super) unsafe fn read_u16(addr: usize) -> u16 {
    // SAFETY: the caller guarantees `addr` is aligned and readable.
    unsafe { ptr::read(addr as *const u16) }
}

/// Writes the `u16` at `addr`.
///
/// # Safety
///
/// `addr` must be 2-byte aligned and valid for writes of 2 bytes.
pub(super) unsafe fn write_u16(addr: usize, value: u16) {
    // SAFETY: the caller guarantees `addr` is aligned and writable.
    unsafe { ptr::write(addr as *mut u16, value) }
}

/// Sets `len` bytes at `addr` to `byte`.
///
/// # Safety
///
/// `addr..addr + len` must be valid for writes.
pub(super) unsafe fn fill(addr: usize, len: usize, byte: u8) {
    // SAFETY: the caller guarantees the range is writable.
    unsafe { ptr::write_bytes(addr as *mut u8, byte, len) }
}

/// Offset of the first byte in `addr..addr + len` that is not `byte`.
///
/// # Safety
///
/// `addr..addr + len` must be valid for reads.
pub(super) unsafe fn first_mismatch(addr: usize, len: usize, byte: u8) -> Option<usize> {
    // SAFETY: the caller guarantees the range is readable and nothing writes it meanwhile.
    let bytes = unsafe { core::slice::from_raw_parts(addr as *const u8, len) };
    bytes.iter().position(|&b| b != byte)
}

/// Copies `len` bytes from `src` to `dst`.
///
/// # Safety
///
/// Both ranges must be valid (reads at `src`, writes at `dst`) and must not overlap.
pub(super) unsafe fn copy(src: usize, dst: usize, len: usize) {
    // SAFETY: the caller guarantees valid, disjoint ranges.
    unsafe { ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, len) }
}
