// SPDX-License-Identifier: GPL-2.0

//! What memory pressure can take back now: the count behind the kernel shrinker.
//!
//! A shrinker's `count_objects` must be cheap and may be approximate; its `scan_objects` then
//! gives the memory back. kmalloc43 counts in pages what a reclaim pass ([`Malloc::reclaim`]
//! after a magazine drain) can return:
//!
//! * the *parked* clusters of every bucket: wholly free clusters beyond the bucket's high water,
//!   which the give-back policy (`giveback`) would return once idle for a window. The wholly free
//!   clusters still on a free list are within the high water, what the bucket's working set
//!   (and the magazines refilled from it) needs: they are not counted;
//! * the kmem backend's cached pages ([`KmemPages::reclaimable_pages`]: the spare chunk);
//! * the pieces held in magazines and depots (`cached[c]` rounds of magazine class `c`), as the
//!   pages they fill: a drain returns them to their buckets, where wholly free clusters over the
//!   high water are parked and then given back.
//!
//! [`Malloc::shrink`] gives back exactly the first two (the glue drains the magazines first): the
//! clusters within the high water stay, as the fast paths need them; [`Malloc::reclaim`], for an
//! exhausted kmem, gives those back too.
//!
//! The count is an estimate of what reaches the page allocator, not a bound either way: a cluster
//! or a drained piece frees a page of the page allocator only when its whole chunk becomes free
//! (less may go), and a chunk that becomes free goes whole, with the free pages inside it that
//! nothing here counts (more may go). O(buckets): the classes' shared buckets and the
//! type-segregated ones that exist.

use super::allocator::Malloc;
use super::classes::MAX_CLASSES;
use super::kmem::KmemPages;
use super::params::PAGE_SIZE;
use super::pieces::NCLASSES;

/// Pages a reclaim pass can give back now, by where they are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reclaimable {
    /// Pages of parked clusters (free clusters over the buckets' high water).
    pub parked_pages: usize,
    /// Pages the kmem backend caches (its spare chunk).
    pub kmem_pages: usize,
    /// Pages filled by the pieces and page runs in magazines and depots.
    pub magazine_pages: usize,
}

impl Reclaimable {
    /// All of them.
    pub fn total(&self) -> usize {
        self.parked_pages + self.kmem_pages + self.magazine_pages
    }
}

impl<K: KmemPages> Malloc<K> {
    /// What a reclaim pass can give back now (see the module documentation). `cached[c]` is the
    /// number of rounds (free pieces, or free page runs of `c - MAX_CLASSES + 1` pages) held in
    /// magazines and depots for magazine class `c`; classes past `cached.len()` hold none.
    pub fn reclaimable(&self, cached: &[usize]) -> Reclaimable {
        let classes = self.classes();
        let mut parked_pages = 0;
        let mut b = Some(self.first_bucket());
        while let Some(id) = b {
            parked_pages += self.bucket(id).parked.len() * classes.cluster_pages(id.class);
            b = self.next_bucket(id);
        }
        let mut magazine_pages = 0;
        for (c, &rounds) in cached.iter().enumerate().take(NCLASSES) {
            magazine_pages += if c >= MAX_CLASSES {
                rounds * (c - MAX_CLASSES + 1)
            } else if c < classes.count() {
                (rounds * classes.size(c)).div_ceil(PAGE_SIZE)
            } else {
                0
            };
        }
        Reclaimable {
            parked_pages,
            kmem_pages: self.kmem().reclaimable_pages(),
            magazine_pages,
        }
    }

    /// Gives back what memory pressure may take (see the module documentation): every parked
    /// cluster, then the kmem backend's cache. Returns the data pages given back to kmem.
    pub fn shrink(&mut self) -> usize {
        let before = self.data_pages;
        self.release_parked();
        self.kmem.trim();
        before - self.data_pages
    }
}
