// SPDX-License-Identifier: GPL-2.0

//! The hash table of allocated segments, keyed by address, that grows and shrinks.
//!
//! `free(addr, size)` must find the tag of `addr` in constant time. Allocated tags are chained
//! (through `knext`) in buckets chosen by a multiplicative hash of the address. The bucket array
//! is made of whole pages from the [`super::TagPageSource`] (no heap): a directory page points to
//! up to `PAGE_SIZE / size_of::<usize>()` bucket pages. The table doubles when there are more
//! than two segments per bucket and halves when there are fewer than one per eight buckets, so
//! chains stay short; a resize that cannot get pages is skipped (chains just get longer).

use core::mem::size_of;
use core::ptr::NonNull;

use super::seg::{Link, Seg};
use super::tags::{TagPageSource, PAGE_SIZE};

/// Pointers per page (buckets per bucket page, bucket pages per directory).
const PER_PAGE: usize = PAGE_SIZE / size_of::<usize>();

/// Fibonacci hashing multiplier.
const GOLDEN: usize = 0x9E37_79B9_7F4A_7C15_u64 as usize;

type BucketPage = [Link; PER_PAGE];
type Directory = [Option<NonNull<BucketPage>>; PER_PAGE];

/// log2 of [`PER_PAGE`].
const PER_PAGE_SHIFT: u32 = PER_PAGE.trailing_zeros();

/// Allocated-segment hash table.
///
/// # Invariants
///
/// If `dir` is `Some`, its first `npages` entries (a power of two) are bucket pages, and
/// `hash_shift == usize::BITS - log2(npages * PER_PAGE)`; every allocated tag of the arena is on
/// exactly one chain, the one of its `start`; `count` is the number of chained tags. The table
/// is due for a resize exactly when `count` is outside `shrink_at..=shrink_at + band` (it
/// grows above the band and shrinks below it).
pub(super) struct AllocHash {
    dir: Option<NonNull<Directory>>,
    npages: usize,
    mult: usize,
    hash_shift: u32,
    shrink_at: usize,
    band: usize,
    pub(super) count: usize,
}

impl AllocHash {
    /// A table with no pages yet.
    pub(super) const fn new(quantum_shift: u32) -> Self {
        AllocHash {
            dir: None,
            npages: 0,
            // `(x << q) * (GOLDEN >> q)` is `x * (GOLDEN >> q)` in the top `BITS - q` bits: Fibonacci
            // hashing of the quantum number `x` in a `(BITS - q)`-bit word, with no shift of
            // the address first.
            mult: GOLDEN >> quantum_shift,
            hash_shift: usize::BITS - 1,
            shrink_at: 0,
            band: usize::MAX,
            count: 0,
        }
    }

    /// Sets the size to `npages` bucket pages and recomputes the derived fields.
    fn set_npages(&mut self, npages: usize) {
        self.npages = npages;
        if npages == 0 {
            self.hash_shift = usize::BITS - 1;
            self.shrink_at = 0;
            self.band = usize::MAX;
            return;
        }
        let nb = self.nbuckets();
        self.hash_shift = usize::BITS - nb.trailing_zeros();
        // Double above two tags per bucket (while the directory has room), halve below one per
        // eight buckets (down to one page).
        let grow_at = if npages < PER_PAGE {
            nb.saturating_mul(2)
        } else {
            usize::MAX
        };
        self.shrink_at = if npages > 1 { nb >> 3 } else { 0 };
        self.band = grow_at - self.shrink_at;
    }

    /// Whether the table is due to grow (above the band of good loads).
    fn wants_grow(&self) -> bool {
        self.count >= self.shrink_at && self.count - self.shrink_at > self.band
    }

    /// Whether the load calls for a resize: one subtraction and one compare (a count below
    /// `shrink_at` wraps around to above the band).
    #[inline]
    pub(super) fn wants_rescale(&self) -> bool {
        self.count.wrapping_sub(self.shrink_at) > self.band
    }

    /// Whether the table has its pages (`ensure` succeeded).
    #[inline]
    pub(super) fn is_ready(&self) -> bool {
        self.dir.is_some()
    }

    /// Number of buckets.
    pub(super) fn nbuckets(&self) -> usize {
        self.npages * PER_PAGE
    }

    /// Pages held (directory included).
    pub(super) fn pages(&self) -> usize {
        if self.dir.is_some() {
            self.npages + 1
        } else {
            0
        }
    }

    /// Makes sure the table has its directory and first bucket page.
    pub(super) fn ensure<P: TagPageSource>(&mut self, src: &mut P) -> bool {
        if self.dir.is_some() {
            return true;
        }
        let Some(d) = src.alloc_page() else {
            return false;
        };
        let Some(b) = src.alloc_page() else {
            // SAFETY: `d` was just allocated from `src` and is unused.
            unsafe { src.free_page(d) };
            return false;
        };
        let dir = d.cast::<Directory>();
        let bucket = b.cast::<BucketPage>();
        // SAFETY: fresh pages of PAGE_SIZE bytes, usize-aligned, exclusively ours; both arrays
        // are exactly PAGE_SIZE bytes.
        unsafe {
            dir.as_ptr().write([None; PER_PAGE]);
            bucket.as_ptr().write([None; PER_PAGE]);
            (*dir.as_ptr())[0] = Some(bucket);
        }
        self.dir = Some(dir);
        self.set_npages(1);
        true
    }

    /// Bucket index of `addr` (Fibonacci hashing of its quantum number: the top bits of a
    /// multiplicative hash, see `mult`).
    #[inline]
    fn bucket_of(&self, addr: usize) -> usize {
        let h = addr.wrapping_mul(self.mult);
        // With pages `hash_shift` is in 1..BITS; without, the index is never used.
        h >> (self.hash_shift & (usize::BITS - 1))
    }

    /// Pointer to the head link of bucket `b`.
    #[inline]
    fn head(&self, b: usize) -> *mut Link {
        let dir = self.dir.map_or(core::ptr::null_mut(), |d| d.as_ptr());
        // SAFETY: callers only ask for `b < nbuckets()` with the directory present; the
        // directory's first `npages` entries are bucket pages (type invariant).
        unsafe {
            // `b < nbuckets() <= PER_PAGE * PER_PAGE`: the mask only spares a bounds check.
            let page = (*dir)[(b >> PER_PAGE_SHIFT) & (PER_PAGE - 1)]
                .map_or(core::ptr::null_mut(), |p| p.as_ptr());
            (&raw mut (*page)[b & (PER_PAGE - 1)])
        }
    }

    /// Chains allocated tag `seg` (through `knext`; `kprev` is not used on hash chains and is
    /// left as it is).
    ///
    /// # Safety
    ///
    /// The table has pages (`ensure` succeeded) and `seg` is a valid tag on no kind list.
    #[inline]
    pub(super) unsafe fn insert(&mut self, seg: NonNull<Seg>) {
        // SAFETY: see the function contract.
        unsafe {
            let head = self.head(self.bucket_of((*seg.as_ptr()).start));
            (*seg.as_ptr()).knext = *head;
            *head = Some(seg);
        }
        self.count += 1;
    }

    /// Finds the tag starting at `addr`; returns it with the link that points to it (the bucket
    /// head or the previous tag's `knext`, for [`Self::unchain`]) and the chain steps taken, or
    /// `Err(steps)` if it is not there.
    #[inline]
    pub(super) fn find_link(
        &self,
        addr: usize,
    ) -> Result<(NonNull<Link>, NonNull<Seg>, usize), usize> {
        if self.dir.is_none() {
            return Err(0);
        }
        let mut steps = 0;
        // SAFETY: the directory exists; chain tags are valid (type invariant); `link` points
        // to a bucket head or a tag's `knext`, never null.
        unsafe {
            let mut link = self.head(self.bucket_of(addr));
            while let Some(cur) = *link {
                steps += 1;
                if (*cur.as_ptr()).start == addr {
                    return Ok((NonNull::new_unchecked(link), cur, steps));
                }
                link = &raw mut (*cur.as_ptr()).knext;
            }
        }
        Err(steps)
    }

    /// Unchains `seg`, which `link` points to (its own `knext` is left stale).
    ///
    /// # Safety
    ///
    /// `(link, seg)` came from [`Self::find_link`] and the table has not changed since.
    #[inline]
    pub(super) unsafe fn unchain(&mut self, link: NonNull<Link>, seg: NonNull<Seg>) {
        // SAFETY: `link` is a live link holding `seg`, a chained tag (contract).
        unsafe { *link.as_ptr() = (*seg.as_ptr()).knext };
        self.count -= 1;
    }

    /// Finds the tag starting at `addr`; returns it and the chain steps taken.
    #[inline]
    pub(super) fn find(&self, addr: usize) -> (Link, usize) {
        if self.dir.is_none() {
            return (None, 0);
        }
        let mut steps = 0;
        // SAFETY: the directory exists; chain tags are valid (type invariant).
        unsafe {
            let mut cur = *self.head(self.bucket_of(addr));
            while let Some(t) = cur {
                steps += 1;
                if (*t.as_ptr()).start == addr {
                    return (Some(t), steps);
                }
                cur = (*t.as_ptr()).knext;
            }
        }
        (None, steps)
    }

    /// Calls `f` on every chained tag.
    pub(super) fn for_each(&self, mut f: impl FnMut(NonNull<Seg>, usize)) {
        for b in 0..self.nbuckets() {
            // SAFETY: `b < nbuckets()`; chain tags are valid.
            unsafe {
                let mut cur = *self.head(b);
                while let Some(t) = cur {
                    f(t, b);
                    cur = (*t.as_ptr()).knext;
                }
            }
        }
    }

    /// Whether `seg` belongs in bucket `b`.
    pub(super) fn in_right_bucket(&self, start: usize, b: usize) -> bool {
        self.bucket_of(start) == b
    }

    /// Unchains everything into one list (through `knext`).
    fn drain_all(&mut self) -> Link {
        let mut all: Link = None;
        for b in 0..self.nbuckets() {
            // SAFETY: `b < nbuckets()`; chain tags are valid.
            unsafe {
                let head = self.head(b);
                let mut cur = (*head).take();
                while let Some(t) = cur {
                    cur = (*t.as_ptr()).knext;
                    (*t.as_ptr()).knext = all;
                    all = Some(t);
                }
            }
        }
        all
    }

    /// Re-chains a list built by `drain_all`.
    fn refill(&mut self, mut list: Link) {
        while let Some(t) = list {
            // SAFETY: valid tags from `drain_all`; the table has pages.
            unsafe {
                list = (*t.as_ptr()).knext;
                let head = self.head(self.bucket_of((*t.as_ptr()).start));
                (*t.as_ptr()).knext = *head;
                *head = Some(t);
            }
        }
    }

    /// Grows or shrinks the table if the load calls for it (see [`Self::wants_rescale`]);
    /// returns whether it resized.
    #[cold]
    pub(super) fn rescale<P: TagPageSource>(&mut self, src: &mut P) -> bool {
        let Some(dir) = self.dir else {
            return false;
        };
        if self.wants_grow() {
            let want = self.npages * 2;
            let have = self.npages;
            let mut got = have;
            while got < want {
                let Some(p) = src.alloc_page() else { break };
                let page = p.cast::<BucketPage>();
                // SAFETY: a fresh page, exclusively ours, sized and aligned for a BucketPage;
                // `got < PER_PAGE` indexes the directory.
                unsafe {
                    page.as_ptr().write([None; PER_PAGE]);
                    (*dir.as_ptr())[got] = Some(page);
                }
                got += 1;
            }
            if got < want {
                // Could not double: give the extra pages back and keep the old size.
                for i in have..got {
                    // SAFETY: pages just installed above and holding no chains.
                    unsafe {
                        if let Some(p) = (*dir.as_ptr())[i].take() {
                            src.free_page(p.cast());
                        }
                    }
                }
                return false;
            }
            let all = self.drain_all();
            self.set_npages(want);
            self.refill(all);
            true
        } else if self.count < self.shrink_at {
            let all = self.drain_all();
            let half = self.npages >> 1;
            for i in half..self.npages {
                // SAFETY: bucket pages past the new size, emptied by `drain_all`.
                unsafe {
                    if let Some(p) = (*dir.as_ptr())[i].take() {
                        src.free_page(p.cast());
                    }
                }
            }
            self.set_npages(half);
            self.refill(all);
            true
        } else {
            false
        }
    }

    /// Frees every page (the chains must be abandoned by the caller).
    pub(super) fn release_all<P: TagPageSource>(&mut self, src: &mut P) {
        if let Some(dir) = self.dir.take() {
            for i in 0..self.npages {
                // SAFETY: the directory's first `npages` entries are our bucket pages.
                unsafe {
                    if let Some(p) = (*dir.as_ptr())[i].take() {
                        src.free_page(p.cast());
                    }
                }
            }
            // SAFETY: the directory page is ours and no longer referenced.
            unsafe { src.free_page(dir.cast()) };
        }
        self.set_npages(0);
        self.count = 0;
    }
}
