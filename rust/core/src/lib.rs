// SPDX-License-Identifier: GPL-2.0

//! The algorithmic cores of kmalloc43, in plain `no_std` Rust.
//!
//! Nothing here imports `kernel::`, `alloc` or `std` (outside `#[cfg(test)]`): the kernel module
//! includes these very files through `#[path]` modules and wraps them with locks, page import and
//! debugfs, while this crate builds them for the host so that unit tests, property tests, fuzzing,
//! Miri and benchmarks run without a kernel.
//!
//! The files refer to each other only through `crate::vmem` and `crate::malloc`, so the kernel
//! module must mount them at its crate root under the same names.

#![cfg_attr(not(test), no_std)]

pub mod malloc;
pub mod vmem;
