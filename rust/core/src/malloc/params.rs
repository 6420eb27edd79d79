// SPDX-License-Identifier: GPL-2.0

//! Compile-time geometry of the allocator: page size, bucket range and the sparse page map.
//!
//! Everything that depends on the page size is derived from [`PAGE_SHIFT`], the one place to change
//! it.

/// log2 of the page size the allocator manages (4 KiB pages).
pub const PAGE_SHIFT: u32 = 12;

/// Size in bytes of one page.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;

/// log2 of the smallest bucket: 16 bytes, enough for the two words of a free-list link.
pub const MIN_BUCKET_SHIFT: u32 = 4;

/// log2 of the largest bucket (the paper's `MAXALLOCSAVE`).
///
/// Power-of-two rounding and page rounding waste the same memory up to two pages: a request of
/// 4097..8192 bytes takes 8 KiB either way. Above that, page rounding wins (5 KiB takes 5 pages
/// rather than 8), so buckets stop at two pages: 8 KiB for 4 KiB pages.
pub const MAX_BUCKET_SHIFT: u32 = PAGE_SHIFT + 1;

/// Largest request served from a bucket (8 KiB); larger requests take whole pages.
pub const MAXALLOCSAVE: usize = 1 << MAX_BUCKET_SHIFT;

/// Number of buckets: 16, 32, ..., 8192 bytes.
pub const NBUCKETS: usize = (MAX_BUCKET_SHIFT - MIN_BUCKET_SHIFT + 1) as usize;

/// Largest large allocation, in pages (2^24 pages = 64 GiB): the page count must fit the usage
/// record and a bigger kernel request is a bug.
pub const MAX_LARGE_PAGES: usize = 1 << 24;

/// Largest request `malloc` accepts, in bytes.
pub const MAX_ALLOC_SIZE: usize = MAX_LARGE_PAGES << PAGE_SHIFT;

/// Number of client types the allocator can hold at once.
pub const MAX_TYPES: usize = 128;

/// log2 of the pages covered by one leaf of the sparse page map (32 pages = 128 KiB).
pub(super) const REGION_SHIFT: u32 = 5;

/// Pages covered by one leaf of the sparse page map.
pub(super) const REGION_PAGES: usize = 1 << REGION_SHIFT;

/// Bucket index (0 for 16 bytes) serving a request of `size` bytes, or `None` above
/// [`MAXALLOCSAVE`]. `size` must be non-zero.
pub(super) const fn bucket_index(size: usize) -> Option<usize> {
    if size > MAXALLOCSAVE {
        return None;
    }
    if size <= 1 << MIN_BUCKET_SHIFT {
        return Some(0);
    }
    // ceil(log2(size)) for 2 <= size <= MAXALLOCSAVE; `size - 1` cannot underflow.
    let shift = usize::BITS - (size - 1).leading_zeros();
    Some((shift - MIN_BUCKET_SHIFT) as usize)
}

/// log2 of the piece size of bucket `index`.
pub(super) const fn bucket_shift(index: usize) -> u32 {
    MIN_BUCKET_SHIFT + index as u32
}

/// Piece size of bucket `index`.
pub(super) const fn bucket_size(index: usize) -> usize {
    1 << bucket_shift(index)
}

/// Pages of one bucket cluster (what a refill takes from kmem): one page, or as many pages as one
/// piece of a bucket bigger than a page.
pub(super) const fn cluster_pages(index: usize) -> usize {
    let size = bucket_size(index);
    if size > PAGE_SIZE {
        size >> PAGE_SHIFT
    } else {
        1
    }
}

/// Pieces per cluster (the paper's `kb_elmpercl`).
pub(super) const fn pieces_per_cluster(index: usize) -> usize {
    (cluster_pages(index) << PAGE_SHIFT) >> bucket_shift(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_index_rounds_up_to_powers_of_two() {
        assert_eq!(bucket_index(1), Some(0));
        assert_eq!(bucket_index(16), Some(0));
        assert_eq!(bucket_index(17), Some(1));
        assert_eq!(bucket_index(32), Some(1));
        assert_eq!(bucket_index(1024), Some(6));
        assert_eq!(bucket_index(4096), Some(8));
        assert_eq!(bucket_index(4097), Some(9));
        assert_eq!(bucket_index(8192), Some(9));
        assert_eq!(bucket_index(8193), None);
        assert_eq!(NBUCKETS, 10);
    }

    #[test]
    fn clusters_hold_whole_pieces() {
        assert_eq!(pieces_per_cluster(0), 256);
        assert_eq!(pieces_per_cluster(8), 1);
        assert_eq!(cluster_pages(9), 2);
        assert_eq!(pieces_per_cluster(9), 1);
    }
}
