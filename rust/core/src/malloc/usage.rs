// SPDX-License-Identifier: GPL-2.0

//! Per-page usage records (the paper's `kmemusage`) in a sparse page map.
//!
//! malloc's free takes no size: the size lives with the page. The paper indexed a flat array by
//! page number because the kmem map was one contiguous range. Here kmem imports naturally aligned
//! runs scattered over the kernel's direct map, so the map is sparse: pages are grouped into
//! aligned regions of [`REGION_PAGES`] pages, each region that holds any malloc page has a leaf of
//! 4-byte records, and leaves are found through an open-addressing hash of the region number.
//! Lookup is O(1) expected; a dense megabyte (256 pages, 8 leaves) costs 8 x 128 bytes of leaves
//! plus 8 table slots of 16 bytes at a load between 3/8 and 3/4: about 1.3 KB, a third of the
//! paper's 4 KB per MB.

use super::kmem::KmemPages;
use super::meta::MetaSlab;
use super::params::{MAX_TYPES, REGION_PAGES, REGION_SHIFT};
use super::raw::{read_u32, write_u32};
use super::table::HashTable;

/// What one page is used for.
///
/// `owner` is an owner code: 0 for none (a shared cluster, or a run handed out with segregation
/// off), else the owning type's slot + 1 (module `segregate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Usage {
    /// Not malloc's page.
    None,
    /// First page of a bucket cluster: bucket index, owner and free pieces in the cluster.
    Bucket {
        /// Bucket index.
        index: usize,
        /// Owner code of the cluster (0: a shared cluster).
        owner: u8,
        /// Free pieces in the cluster.
        free: usize,
    },
    /// First page of a large allocation of `npages` pages.
    Large {
        /// Pages in the allocation.
        npages: usize,
        /// Owner code of the run (0: none written).
        owner: u8,
    },
    /// A later page of a cluster or large allocation, `back` pages after its first page.
    Cont {
        /// Distance to the first page.
        back: usize,
    },
}

/// The part of a run's first-page record that never changes while the run lives: what the fast
/// path of `free` needs to know about a piece (its size class and its owner), published to the
/// page supply by [`KmemPages::note_run`] so that a kernel can keep it where the piece's page is
/// found in O(1) without a lock (`struct page`).
///
/// `owner` is an owner code: 0 when no type owns the cluster or run (a shared cluster, a run
/// handed out while segregation is off), else the owning type's slot ([`MallocType::index`])
/// plus one. A cluster's owner is fixed for its life; a run's is written when it is handed out.
///
/// Each page of the run carries it as a [`PageCode`](super::PageCode) (`PageCode::of`): the
/// magazine class, the owner and the page's place in its cluster, pre-decoded for `free`'s fast
/// path.
///
/// [`MallocType::index`]: super::MallocType::index
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageHint {
    /// A cluster of bucket `class`.
    Bucket {
        /// The size class.
        class: usize,
        /// Owner code (0: shared by every type).
        owner: u8,
    },
    /// A large allocation of `npages` pages.
    Large {
        /// Pages in the run.
        npages: usize,
        /// Owner code (0: none written).
        owner: u8,
    },
}

impl PageHint {
    fn of(head: Usage) -> Option<Self> {
        match head {
            Usage::Bucket { index, owner, .. } => Some(PageHint::Bucket {
                class: index,
                owner,
            }),
            Usage::Large { npages, owner } => Some(PageHint::Large { npages, owner }),
            _ => None,
        }
    }

    /// The owning type's slot ([`MallocType::index`](super::MallocType::index)), if a type owns
    /// the cluster or run.
    pub fn owner_slot(self) -> Option<usize> {
        let (PageHint::Bucket { owner, .. } | PageHint::Large { owner, .. }) = self;
        (owner as usize).checked_sub(1)
    }
}

const KIND_SHIFT: u32 = 30;
const PAYLOAD: u32 = (1 << KIND_SHIFT) - 1;
const BUCKET: u32 = 1;
const LARGE: u32 = 2;
const CONT: u32 = 3;
/// Bucket record: class in bits 24-29, owner code in bits 16-23, free count in bits 0-15.
const INDEX_SHIFT: u32 = 24;
const BUCKET_OWNER_SHIFT: u32 = 16;
/// Large record: owner code in bits 22-29, page count - 1 in bits 0-21.
const LARGE_OWNER_SHIFT: u32 = 22;
const LARGE_PAGES: u32 = (1 << LARGE_OWNER_SHIFT) - 1;

const _: () = assert!(super::classes::MAX_CLASSES <= 1 << (KIND_SHIFT - INDEX_SHIFT));
const _: () = assert!(super::classes::MAX_PIECES < 1 << BUCKET_OWNER_SHIFT);
const _: () = assert!(super::params::MAX_LARGE_PAGES <= LARGE_PAGES as usize + 1);
const _: () = assert!(MAX_TYPES < 0xff);

impl Usage {
    #[inline]
    fn encode(self) -> u32 {
        match self {
            Usage::None => 0,
            Usage::Bucket { index, owner, free } => {
                (BUCKET << KIND_SHIFT)
                    | ((index as u32) << INDEX_SHIFT)
                    | (u32::from(owner) << BUCKET_OWNER_SHIFT)
                    | (free as u32 & 0xffff)
            }
            Usage::Large { npages, owner } => {
                (LARGE << KIND_SHIFT)
                    | (u32::from(owner) << LARGE_OWNER_SHIFT)
                    | ((npages as u32).wrapping_sub(1) & LARGE_PAGES)
            }
            Usage::Cont { back } => (CONT << KIND_SHIFT) | (back as u32 & PAYLOAD),
        }
    }

    #[inline]
    fn decode(r: u32) -> Self {
        match r >> KIND_SHIFT {
            BUCKET => Usage::Bucket {
                index: ((r & PAYLOAD) >> INDEX_SHIFT) as usize,
                owner: (r >> BUCKET_OWNER_SHIFT) as u8,
                free: (r & 0xffff) as usize,
            },
            LARGE => Usage::Large {
                npages: (r & LARGE_PAGES) as usize + 1,
                owner: ((r & PAYLOAD) >> LARGE_OWNER_SHIFT) as u8,
            },
            CONT => Usage::Cont {
                back: (r & PAYLOAD) as usize,
            },
            _ => Usage::None,
        }
    }
}

/// The address of one record inside a leaf, valid until the map changes (it never moves while
/// the leaf lives).
#[derive(Clone, Copy)]
pub(super) struct RecordSlot(usize);

impl RecordSlot {
    /// The record.
    #[inline]
    pub(super) fn get(self) -> Usage {
        // SAFETY: a RecordSlot is only made from a record address inside a live leaf.
        Usage::decode(unsafe { read_u32(self.0) })
    }

    /// Overwrites the record.
    #[inline]
    pub(super) fn set(self, usage: Usage) {
        // SAFETY: a RecordSlot is only made from a record address inside a live leaf.
        unsafe { write_u32(self.0, usage.encode()) }
    }
}

/// Size of one leaf: a 4-byte record per page of the region.
const LEAF_BYTES: usize = REGION_PAGES * 4;

/// The sparse page map.
///
/// # Invariants
///
/// `table` maps region numbers to leaves allocated from `leaves`; every leaf holds at least one
/// non-`None` record (empty leaves are freed at once).
pub(super) struct PageMap {
    table: HashTable,
    leaves: MetaSlab,
}

/// The metadata page supply is exhausted.
#[derive(Debug)]
pub(super) struct NoMeta;

impl PageMap {
    /// An empty map.
    pub(super) const fn new() -> Self {
        Self {
            table: HashTable::new(),
            leaves: MetaSlab::new(LEAF_BYTES),
        }
    }

    /// Address of the record of `page`, to read and update it with one lookup.
    pub(super) fn slot(&self, page: usize) -> Option<RecordSlot> {
        self.record_addr(page).map(RecordSlot)
    }

    fn record_addr(&self, page: usize) -> Option<usize> {
        let leaf = self.table.get(page >> REGION_SHIFT)?;
        Some(leaf + (page & (REGION_PAGES - 1)) * 4)
    }

    /// The record of page number `page`.
    pub(super) fn get(&self, page: usize) -> Usage {
        match self.record_addr(page) {
            // SAFETY: `a` is a record inside one of our leaves.
            Some(a) => Usage::decode(unsafe { read_u32(a) }),
            None => Usage::None,
        }
    }

    /// Sets the record of `page` (not `None`), creating its leaf if needed.
    pub(super) fn set<K: KmemPages>(
        &mut self,
        kmem: &mut K,
        page: usize,
        usage: Usage,
    ) -> Result<(), NoMeta> {
        let a = match self.record_addr(page) {
            Some(a) => a,
            None => {
                let leaf = self.leaves.alloc(kmem).ok_or(NoMeta)?;
                if self.table.insert(kmem, page >> REGION_SHIFT, leaf).is_err() {
                    // SAFETY: `leaf` was just allocated from this slab.
                    unsafe { self.leaves.free(kmem, leaf) };
                    return Err(NoMeta);
                }
                leaf + (page & (REGION_PAGES - 1)) * 4
            }
        };
        // SAFETY: `a` is a record inside one of our leaves.
        unsafe { write_u32(a, usage.encode()) };
        Ok(())
    }

    /// Updates the record of a page that already has one (never allocates).
    pub(super) fn update(&mut self, page: usize, usage: Usage) {
        if let Some(a) = self.record_addr(page) {
            // SAFETY: `a` is a record inside one of our leaves.
            unsafe { write_u32(a, usage.encode()) };
        }
    }

    /// Clears the record of `page`, freeing its leaf when the leaf becomes empty.
    pub(super) fn clear<K: KmemPages>(&mut self, kmem: &mut K, page: usize) {
        let region = page >> REGION_SHIFT;
        let Some(leaf) = self.table.get(region) else {
            return;
        };
        // SAFETY: `leaf` is one of our leaves of REGION_PAGES records.
        unsafe {
            write_u32(leaf + (page & (REGION_PAGES - 1)) * 4, 0);
            if (0..REGION_PAGES).all(|i| read_u32(leaf + i * 4) == 0) {
                self.table.remove(region);
                self.leaves.free(kmem, leaf);
            }
        }
    }

    /// Registers a run of `npages` pages starting at page `first`: `head` for the first page and
    /// `Cont` for the others. On failure nothing stays registered.
    pub(super) fn register_run<K: KmemPages>(
        &mut self,
        kmem: &mut K,
        first: usize,
        npages: usize,
        head: Usage,
    ) -> Result<(), NoMeta> {
        for i in 0..npages {
            let usage = if i == 0 {
                head
            } else {
                Usage::Cont { back: i }
            };
            if self.set(kmem, first + i, usage).is_err() {
                self.clear_run(kmem, first, i);
                return Err(NoMeta);
            }
        }
        if let Some(hint) = PageHint::of(head) {
            kmem.note_run(first, npages, Some(hint));
        }
        Ok(())
    }

    /// Clears the records of `npages` pages starting at page `first`.
    pub(super) fn clear_run<K: KmemPages>(&mut self, kmem: &mut K, first: usize, npages: usize) {
        kmem.note_run(first, npages, None);
        for i in 0..npages {
            self.clear(kmem, first + i);
        }
    }

    /// Metadata bytes held (leaves and hash table).
    pub(super) fn meta_pages(&self) -> usize {
        self.leaves.pages() + self.table.pages()
    }

    /// Calls `f(page, usage)` for every page with a record (audit and DIAGNOSTIC helper).
    pub(super) fn for_each(&self, mut f: impl FnMut(usize, Usage)) {
        for i in 0..self.table.capacity() {
            if let Some((region, leaf)) = self.table.slot(i) {
                for j in 0..REGION_PAGES {
                    // SAFETY: `leaf` is one of our leaves of REGION_PAGES records.
                    let u = Usage::decode(unsafe { read_u32(leaf + j * 4) });
                    if u != Usage::None {
                        f((region << REGION_SHIFT) + j, u);
                    }
                }
            }
        }
    }

    /// Whether the hash table is well-formed and every leaf is non-empty and counted.
    pub(super) fn check(&self) -> bool {
        if !self.table.check() || self.table.len() != self.leaves.blocks() {
            return false;
        }
        (0..self.table.capacity()).all(|i| match self.table.slot(i) {
            // SAFETY: `leaf` is one of our leaves of REGION_PAGES records.
            Some((_, leaf)) => (0..REGION_PAGES).any(|j| unsafe { read_u32(leaf + j * 4) } != 0),
            None => true,
        })
    }

    /// Gives the (empty) table's pages back.
    pub(super) fn release<K: KmemPages>(&mut self, kmem: &mut K) {
        if self.table.len() == 0 {
            self.table.clear(kmem);
        }
    }
}
