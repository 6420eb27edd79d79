// SPDX-License-Identifier: GPL-2.0

//! The algorithmic cores of kmalloc43, in plain `no_std` Rust.
//!
//! Nothing here imports `kernel::`, `alloc` or `std` (outside `#[cfg(test)]`): the kernel module
//! includes these very files through `#[path]` modules and wraps them with locks, page import and
//! debugfs, while this crate builds them for the host so that unit tests, property tests, fuzzing,
//! Miri and benchmarks run without a kernel.
//!
//! The files refer to each other only through `crate::vmem`, `crate::malloc`, `crate::magazine` and `crate::wait`, so the kernel
//! module must mount them at its crate root under the same names.

//!
//! Code that needs `std` (the host's sleeping wrappers built on `Mutex` and `Condvar`) lives in
//! [`hosted`], behind the default `std` feature; the kernel never includes it. Build with
//! `--no-default-features` to prove the cores themselves are `no_std`.

#![cfg_attr(not(any(test, feature = "std")), no_std)]

#[cfg(feature = "std")]
pub mod hosted;
pub mod magazine;
pub mod malloc;
pub mod report;
pub mod vmem;
pub mod wait;
