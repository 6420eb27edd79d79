// SPDX-License-Identifier: GPL-2.0

//! Buckets: one free list of equal, naturally aligned pieces per power-of-two size, with the
//! paper's `kmembuckets` statistics.
//!
//! A free piece holds its own list link, so free memory costs no bookkeeping. The link is doubly
//! linked (`next` in the first word, `prev` in the second; every piece is at least 16 bytes) so
//! that a cluster that became wholly free can be unlinked piece by piece in O(pieces per cluster)
//! and handed back to kmem.

use super::params::{bucket_size, pieces_per_cluster};
use super::raw::{read_word, write_word};

const W: usize = core::mem::size_of::<usize>();

/// Minimum bytes of free pieces a bucket keeps cached before it gives clusters back (64 KiB: at
/// most 640 KiB over all buckets, against refilling from kmem on every burst of big pieces).
pub const HIGHWAT_BYTES: usize = 64 * 1024;

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// Statistics of one bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketStats {
    /// Piece size in bytes.
    pub size: usize,
    /// Allocations served.
    pub calls: u64,
    /// Pieces held (free and allocated).
    pub total: usize,
    /// Free pieces held.
    pub totalfree: usize,
    /// Pieces per cluster (one page, or one piece for buckets bigger than a page).
    pub elmpercl: usize,
    /// Free pieces kept before wholly free clusters go back to kmem: 5 clusters as in 4.3BSD, but
    /// at least [`HIGHWAT_BYTES`] worth, so the big buckets do not thrash kmem.
    pub highwat: usize,
    /// Clusters given back to kmem (the paper only counted these as `couldfree`).
    pub freed: u64,
}

/// Statistics of large (whole-page) allocations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LargeStats {
    /// Allocations served.
    pub calls: u64,
    /// Live allocations.
    pub inuse: usize,
    /// Pages in live allocations.
    pub pages: usize,
}

/// One bucket: the head of its free list and its statistics.
///
/// # Invariants
///
/// The list holds exactly `stats.totalfree` pieces, each a free piece of this bucket inside a
/// cluster owned by the allocator; `prev` of the head is 0 and links are mutually consistent.
pub(super) struct Bucket {
    pub(super) head: usize,
    pub(super) stats: BucketStats,
}

impl Bucket {
    pub(super) const fn new(index: usize) -> Self {
        let elmpercl = pieces_per_cluster(index);
        Self {
            head: 0,
            stats: BucketStats {
                size: bucket_size(index),
                calls: 0,
                total: 0,
                totalfree: 0,
                elmpercl,
                highwat: max(5 * elmpercl, HIGHWAT_BYTES / bucket_size(index)),
                freed: 0,
            },
        }
    }

    /// Pushes a free piece at the head.
    ///
    /// # Safety
    ///
    /// `piece` must be a piece of this bucket owned by the allocator, not on the list.
    pub(super) unsafe fn push(&mut self, piece: usize) {
        // SAFETY: `piece` and the current head are pieces of ours, at least two words long.
        unsafe {
            write_word(piece, self.head);
            write_word(piece + W, 0);
            if self.head != 0 {
                write_word(self.head + W, piece);
            }
        }
        self.head = piece;
    }

    /// The first free piece's successor, as stored in its link (for DIAGNOSTIC validation).
    ///
    /// # Safety
    ///
    /// The list must be non-empty.
    pub(super) unsafe fn head_links(&self) -> (usize, usize) {
        // SAFETY: the head is a free piece of ours.
        unsafe { (read_word(self.head), read_word(self.head + W)) }
    }

    /// Pops the head piece (the list must be non-empty and well linked).
    ///
    /// # Safety
    ///
    /// The list must be non-empty and its head's `next` link valid.
    pub(super) unsafe fn pop(&mut self) -> usize {
        let piece = self.head;
        // SAFETY: the head is a free piece of ours, its `next` is 0 or a free piece of ours.
        unsafe {
            let next = read_word(piece);
            if next != 0 {
                write_word(next + W, 0);
            }
            self.head = next;
        }
        piece
    }

    /// Unlinks a piece anywhere on the list.
    ///
    /// # Safety
    ///
    /// `piece` must be on this list and the list well linked.
    pub(super) unsafe fn unlink(&mut self, piece: usize) {
        // SAFETY: `piece` is on the list; its neighbours are free pieces of ours.
        unsafe {
            let next = read_word(piece);
            let prev = read_word(piece + W);
            if prev == 0 {
                self.head = next;
            } else {
                write_word(prev, next);
            }
            if next != 0 {
                write_word(next + W, prev);
            }
        }
    }

    /// Successor of a listed piece.
    ///
    /// # Safety
    ///
    /// `piece` must be on this list.
    pub(super) unsafe fn next(piece: usize) -> usize {
        // SAFETY: `piece` is a free piece of ours.
        unsafe { read_word(piece) }
    }

    /// Predecessor of a listed piece.
    ///
    /// # Safety
    ///
    /// `piece` must be on this list.
    pub(super) unsafe fn prev(piece: usize) -> usize {
        // SAFETY: `piece` is a free piece of ours.
        unsafe { read_word(piece + W) }
    }
}
