// SPDX-License-Identifier: GPL-2.0

//! Buckets: one free list of equal pieces per size class (module `classes`: powers of two or the
//! fine table), with the paper's `kmembuckets` statistics.
//!
//! A free piece holds its own list link, so free memory costs no bookkeeping. The link is doubly
//! linked (`next` in the first word, `prev` in the second; every piece is at least 16 bytes) so
//! that a cluster that became wholly free can be unlinked piece by piece in O(pieces per cluster)
//! and handed back to kmem.
//!
//! Links are stored encoded: XORed with their own address and [`LINK_KEY`]. Nothing decodes them
//! but this file. The encoding is what lets `free` tell a free piece from a live one in O(1)
//! without DIAGNOSTIC (module `listed`): client data that merely looks like a list (a live node of
//! the client's own doubly linked list, whose first two words point at neighbouring nodes of the
//! same size that point back) stores raw pointers, and a raw piece-aligned pointer never decodes
//! to a piece-aligned address because the key's low four bits are neither 0 nor 8 (every piece,
//! in both class modes, is at least 16-byte aligned).

use super::classes::ClassTable;
use super::raw::{read_word, write_word};

const W: usize = core::mem::size_of::<usize>();

/// Key mixed into every stored link (the 64-bit golden ratio; truncated on 32-bit targets). Its
/// low nibble, 5, makes a stored link at a piece (offset 0, low nibble 0) or at its second word
/// (offset 8, low nibble 8) decode a 16-byte-aligned raw pointer to an address with low nibble 5
/// or 0xd: never a piece. Mixing in the link's own address makes a link copied elsewhere decode
/// to something else. Not a secret: it is a format, not a defence against a malicious client.
const LINK_KEY: usize = 0x9e37_79b9_7f4a_7c15_u64 as usize;

/// Reads the link word at `at` (a piece's first or second word) and decodes it.
///
/// # Safety
///
/// `at` must be word-aligned and readable.
unsafe fn read_link(at: usize) -> usize {
    // SAFETY: the caller guarantees `at` is aligned and readable.
    unsafe { read_word(at) ^ at ^ LINK_KEY }
}

/// Whether a piece at `piece` whose first word is `word0` could be on a list of this module (free
/// or parked): the word decodes to 0 or to a 16-byte-aligned address, as every listed piece's
/// `next` does (pieces of every class are 16-byte aligned). A `false` is certain (the piece is
/// not listed), a `true` must be checked exactly. Zeroed memory and 16-byte-aligned raw pointers
/// decode to addresses with low nibble 5 or 0xd: never suspicious.
pub(super) fn may_be_listed(piece: usize, word0: usize) -> bool {
    (word0 ^ piece ^ LINK_KEY) & 15 == 0
}

/// Encodes `value` and writes it as the link word at `at`.
///
/// # Safety
///
/// `at` must be word-aligned and writable.
unsafe fn write_link(at: usize, value: usize) {
    // SAFETY: the caller guarantees `at` is aligned and writable.
    unsafe { write_word(at, value ^ at ^ LINK_KEY) }
}

/// Pushes `x` at the head of the encoded doubly linked list starting at `*head` (and ending at
/// `*tail`, for a list that keeps its tail). Links are `next` in the first word, `prev` in the
/// second.
///
/// # Safety
///
/// `x` and every element of the list must be pieces of ours, at least two words long; `x` must
/// not be on the list.
unsafe fn link_front(head: &mut usize, tail: Option<&mut usize>, x: usize) {
    // SAFETY: `x` and the current head are pieces of ours (the caller's guarantee).
    unsafe {
        write_link(x, *head);
        write_link(x + W, 0);
        if *head != 0 {
            write_link(*head + W, x);
        } else if let Some(t) = tail {
            *t = x;
        }
    }
    *head = x;
}

/// Unlinks `x` from the encoded doubly linked list starting at `*head` (and ending at `*tail`).
///
/// # Safety
///
/// `x` must be on the list and the list well linked.
unsafe fn unlink_from(head: &mut usize, tail: Option<&mut usize>, x: usize) {
    // SAFETY: `x` is on the list; its neighbours are elements of ours.
    unsafe {
        let next = read_link(x);
        let prev = read_link(x + W);
        if prev == 0 {
            *head = next;
        } else {
            write_link(prev, next);
        }
        if next != 0 {
            write_link(next + W, prev);
        } else if let Some(t) = tail {
            *t = prev;
        }
    }
}

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

/// Statistics of one size class ([`Malloc::bucket_stats`]): its bucket's, summed over every
/// bucket of the class when the class is type-segregated (module `segregate`).
///
/// [`Malloc::bucket_stats`]: super::Malloc::bucket_stats
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
    /// Free pieces the class's shared bucket keeps before wholly free clusters go back to kmem:
    /// 5 clusters as in 4.3BSD, but at least [`HIGHWAT_BYTES`] worth, so the big buckets do not
    /// thrash kmem (a type's own bucket of a segregated class keeps one cluster).
    pub highwat: usize,
    /// Clusters given back to kmem (the paper only counted these as `couldfree`).
    pub freed: u64,
    /// Free-list links found corrupt (a client wrote over a freed piece) and cut off.
    pub bad_links: u64,
    /// Free pieces cut off the list with a corrupt link: counted free in their clusters, never
    /// handed out again; the bucket gives no cluster back while there are any.
    pub lost: usize,
}

/// The high water of class `i`'s shared bucket ([`BucketStats::highwat`]): 5 clusters as in
/// 4.3BSD, at least [`HIGHWAT_BYTES`] worth of pieces (at least one cluster, as every high
/// water: module `giveback` relies on it).
pub(super) fn shared_highwat(classes: &ClassTable, i: usize) -> usize {
    max(5 * classes.pieces(i), classes.pieces_in(i, HIGHWAT_BYTES))
}

/// The high water of a type's own bucket of class `i` (module `segregate`): one cluster, not the
/// shared buckets' 64 KiB. A type's bucket serves one type, and a high water per (type, class)
/// would keep that much idle per type: on the committed trace (fine classes, every class
/// segregated) 65 more pages at the peak than with one cluster, for the same give-back rate (the
/// budget is the class's).
pub(super) fn segregated_highwat(classes: &ClassTable, i: usize) -> usize {
    classes.pieces(i)
}

/// The counters of one size class that no algorithm needs per bucket, kept once per class over
/// all its buckets (the shared one and every type's): what [`BucketStats`] reports for the class,
/// exact, and what the give-back budget (module `giveback`) reads. Kept per (type, class) bucket
/// they would cost every type's bucket three more words, read only as sums.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ClassCounters {
    /// Allocations served (by the buckets, and by magazines once their counters are folded).
    pub(super) calls: u64,
    /// Clusters given back to kmem.
    pub(super) freed: u64,
    /// Corrupt free-list links found and cut.
    pub(super) bad_links: u64,
    /// Parked clusters an idle window would have given back but the budget kept.
    pub(super) deferred: u64,
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

/// One bucket: the head of its free list, its piece counts and its parked clusters; 64 bytes
/// (a type's bucket is a block of a metadata slab, module `segregate`). What is the same for
/// every bucket of a class (piece size, pieces per cluster) is read from the class table, and
/// the counters only read as sums are the class's ([`ClassCounters`]).
///
/// # Invariants
///
/// The list holds exactly `totalfree - parked.len() * pieces` pieces (`pieces` per cluster of
/// the bucket's class), each a free piece of this bucket inside a cluster owned by the
/// allocator; `prev` of the head is 0 and links are mutually consistent. `total` is the pieces
/// of the bucket's clusters, `totalfree + lost <= total`. `parked` holds wholly free clusters of
/// this bucket, none of whose pieces is on the list (module `giveback`).
pub(super) struct Bucket {
    pub(super) head: usize,
    /// Pieces held (free and allocated).
    pub(super) total: usize,
    /// Free pieces held, listed or parked (not the lost ones).
    pub(super) totalfree: usize,
    /// Free pieces cut off the list with a corrupt link (module `listed`).
    pub(super) lost: usize,
    pub(super) parked: Parked,
}

/// Wholly free clusters taken off a bucket's free list, waiting to be reused or given back: a
/// doubly linked list through the first piece of each cluster (its first two words, encoded as
/// the free list's links), newest at the head. See module `giveback`.
///
/// The counts are 32-bit (so that a bucket is 64 bytes): a bucket parks at most `u32::MAX`
/// clusters (16 TiB of them); a cluster that empties while that many are parked stays on the
/// free list ([`Parked::has_room`]).
///
/// # Invariants
///
/// `len` clusters are linked from `head` to `tail`, each the first piece of a wholly free
/// cluster of the bucket; `min` is at most `len`.
pub(super) struct Parked {
    pub(super) head: usize,
    pub(super) tail: usize,
    /// Operation count (the allocator's) when the window started.
    pub(super) window_start: u64,
    len: u32,
    /// Smallest `len` since the current window started: clusters nobody needed all window.
    min: u32,
}

impl Parked {
    pub(super) const fn new() -> Self {
        Self {
            head: 0,
            tail: 0,
            window_start: 0,
            len: 0,
            min: 0,
        }
    }

    /// Clusters parked.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len as usize
    }

    /// Clusters that stayed parked since the current window started (the smallest length the
    /// list had).
    pub(super) fn idle(&self) -> usize {
        self.min as usize
    }

    /// Whether one more cluster can be parked.
    pub(super) fn has_room(&self) -> bool {
        self.len < u32::MAX
    }

    /// Starts a new window at operation count `ops`.
    pub(super) fn restart_window(&mut self, ops: u64) {
        self.window_start = ops;
        self.min = self.len;
    }

    /// Forgets the current window's idle clusters (they were all given back).
    pub(super) fn forget_idle(&mut self) {
        self.min = 0;
    }

    /// Parks the cluster whose first piece is `first` at the head.
    ///
    /// # Safety
    ///
    /// `first` must be the first piece of a wholly free cluster owned by the allocator, none of
    /// whose pieces is on any list, and the list must have room ([`Parked::has_room`]).
    pub(super) unsafe fn push(&mut self, first: usize) {
        // SAFETY: the caller's guarantee; parked clusters' first pieces are pieces of ours.
        unsafe { link_front(&mut self.head, Some(&mut self.tail), first) };
        self.len += 1;
    }

    /// Unlinks a parked cluster (by its first piece).
    ///
    /// # Safety
    ///
    /// `first` must be parked on this list.
    pub(super) unsafe fn unlink(&mut self, first: usize) {
        // SAFETY: the caller's guarantee.
        unsafe { unlink_from(&mut self.head, Some(&mut self.tail), first) };
        self.len -= 1;
        self.min = self.min.min(self.len);
    }

    /// The parked cluster after `first` (towards the tail, older), 0 at the end.
    ///
    /// # Safety
    ///
    /// `first` must be parked on this list.
    pub(super) unsafe fn next(first: usize) -> usize {
        // SAFETY: the caller's guarantee.
        unsafe { read_link(first) }
    }

    /// The parked cluster before `first` (towards the head, newer), 0 at the head.
    ///
    /// # Safety
    ///
    /// `first` must be parked on this list.
    pub(super) unsafe fn prev(first: usize) -> usize {
        // SAFETY: the caller's guarantee.
        unsafe { read_link(first + W) }
    }
}

impl Bucket {
    /// An empty bucket.
    pub(super) const fn new() -> Self {
        Self {
            head: 0,
            total: 0,
            totalfree: 0,
            lost: 0,
            parked: Parked::new(),
        }
    }

    /// Free pieces on the list (`pieces` per cluster of the bucket's class).
    #[inline]
    pub(super) fn listed(&self, pieces: usize) -> usize {
        self.totalfree - self.parked.len() * pieces
    }

    /// Pushes a free piece at the head.
    ///
    /// # Safety
    ///
    /// `piece` must be a piece of this bucket owned by the allocator, not on the list.
    pub(super) unsafe fn push(&mut self, piece: usize) {
        // SAFETY: the caller's guarantee.
        unsafe { Self::link_at_head(&mut self.head, piece) };
    }

    /// Pushes a free piece at the head of a free list whose head is `*head` (a list being
    /// rebuilt apart from its bucket).
    ///
    /// # Safety
    ///
    /// `piece` and every piece of the list must be pieces of one bucket owned by the allocator;
    /// `piece` must not be on the list.
    pub(super) unsafe fn link_at_head(head: &mut usize, piece: usize) {
        // SAFETY: the caller's guarantee; the list holds pieces of ours.
        unsafe { link_front(head, None, piece) };
    }

    /// The head piece's decoded links `(next, prev)` (for DIAGNOSTIC validation).
    ///
    /// # Safety
    ///
    /// The list must be non-empty.
    pub(super) unsafe fn head_links(&self) -> (usize, usize) {
        // SAFETY: the head is a free piece of ours.
        unsafe { (read_link(self.head), read_link(self.head + W)) }
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
            let next = read_link(piece);
            if next != 0 {
                write_link(next + W, 0);
            }
            self.head = next;
        }
        piece
    }

    /// Makes the head the last piece of the list (its `next` link 0), cutting off whatever its
    /// corrupt link pointed at.
    ///
    /// # Safety
    ///
    /// The list must be non-empty.
    pub(super) unsafe fn cut_after_head(&mut self) {
        // SAFETY: the head is a free piece of ours, at least two words long.
        unsafe { Self::cut_after(self.head) };
    }

    /// Makes `piece` the last of its list (its `next` link 0).
    ///
    /// # Safety
    ///
    /// `piece` must be a free piece of ours, on the list.
    pub(super) unsafe fn cut_after(piece: usize) {
        // SAFETY: the caller's guarantee.
        unsafe { write_link(piece, 0) };
    }

    /// Unlinks a piece anywhere on the list.
    ///
    /// # Safety
    ///
    /// `piece` must be on this list and the list well linked.
    pub(super) unsafe fn unlink(&mut self, piece: usize) {
        // SAFETY: the caller's guarantee.
        unsafe { unlink_from(&mut self.head, None, piece) };
    }

    /// Successor of a listed piece; for a piece not on the list, whatever its first word decodes
    /// to.
    ///
    /// # Safety
    ///
    /// `piece` must be a piece of a cluster owned by the allocator (listed or not).
    pub(super) unsafe fn next(piece: usize) -> usize {
        // SAFETY: `piece` is a piece of ours, at least two words long.
        unsafe { read_link(piece) }
    }

    /// Predecessor of a listed piece (0 for the head); for a piece not on the list, whatever its
    /// second word decodes to.
    ///
    /// # Safety
    ///
    /// `piece` must be a piece of a cluster owned by the allocator (listed or not).
    pub(super) unsafe fn prev(piece: usize) -> usize {
        // SAFETY: `piece` is a piece of ours, at least two words long.
        unsafe { read_link(piece + W) }
    }
}
