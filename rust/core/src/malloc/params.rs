// SPDX-License-Identifier: GPL-2.0

//! Compile-time geometry of the allocator: page size, bucket range and the sparse page map.
//!
//! Everything that depends on the page size is derived from [`PAGE_SHIFT`], which is vmem's (the
//! one definition of the page size in the cores).

pub use crate::vmem::{PAGE_SHIFT, PAGE_SIZE};

/// log2 of the smallest bucket: 16 bytes, enough for the two words of a free-list link.
pub const MIN_BUCKET_SHIFT: u32 = 4;

/// log2 of the largest bucket (the paper's `MAXALLOCSAVE`).
///
/// Power-of-two rounding and page rounding waste the same memory up to two pages: a request of
/// 4097..8192 bytes takes 8 KiB either way. Above that, page rounding wins (9 KiB takes 3 pages
/// rather than a 16 KiB bucket), so buckets stop at two pages: 8 KiB for 4 KiB pages.
pub const MAX_BUCKET_SHIFT: u32 = PAGE_SHIFT + 1;

/// Largest request served from a bucket (8 KiB); larger requests take whole pages.
pub const MAXALLOCSAVE: usize = 1 << MAX_BUCKET_SHIFT;

/// Largest large allocation, in pages (2^22 pages = 16 GiB): the page count must fit the usage
/// record beside the run's owner (module `usage`) and a bigger kernel request is a bug.
pub const MAX_LARGE_PAGES: usize = 1 << 22;

/// Largest request `malloc` accepts, in bytes.
pub const MAX_ALLOC_SIZE: usize = MAX_LARGE_PAGES << PAGE_SHIFT;

/// Number of client types the allocator can hold at once.
pub const MAX_TYPES: usize = 128;

/// log2 of the pages covered by one leaf of the sparse page map (32 pages = 128 KiB).
pub(super) const REGION_SHIFT: u32 = 5;

/// Pages covered by one leaf of the sparse page map.
pub(super) const REGION_PAGES: usize = 1 << REGION_SHIFT;
