// SPDX-License-Identifier: GPL-2.0

//! An open-addressing hash table from `usize` keys to `usize` values, stored in metadata pages.
//!
//! Linear probing with Fibonacci hashing, load factor at most 3/4, so a lookup is O(1) expected.
//! The slots live in table pages listed in a directory page; when the table would pass half full
//! it doubles and rehashes (amortised O(1)), and deletion shifts followers back so no tombstones
//! accumulate. No heap: every page comes from [`KmemPages::alloc_meta_page`].

use super::kmem::KmemPages;
use super::raw::{fill, read_word, write_word};
use super::PAGE_SIZE;

const W: usize = core::mem::size_of::<usize>();
const SLOT: usize = 2 * W;
const SLOTS_PER_PAGE: usize = PAGE_SIZE / SLOT;
const DIR_CAP: usize = PAGE_SIZE / W;

/// Hash table in metadata pages.
///
/// # Invariants
///
/// If `dir != 0`, it is a metadata page whose first `npages` words are table pages owned by this
/// table; `npages` is a power of two; `len <= capacity * 3 / 4`. A slot holds `key + 1` (0 = empty)
/// and the value, and is reachable from its home slot without crossing an empty slot.
pub(super) struct HashTable {
    dir: usize,
    npages: usize,
    len: usize,
}

/// The table cannot grow: the metadata page supply is exhausted or the table is at its maximum.
#[derive(Debug)]
pub(super) struct TableFull;

fn hash(key: usize, mask: usize) -> usize {
    // Fibonacci hashing: multiply by 2^64/phi and keep the high bits, folded to `mask`.
    let h = (key as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((h >> 32) as usize ^ (h as usize)) & mask
}

impl HashTable {
    /// An empty table holding no pages.
    pub(super) const fn new() -> Self {
        Self {
            dir: 0,
            npages: 0,
            len: 0,
        }
    }

    /// Number of entries.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Number of slots.
    pub(super) fn capacity(&self) -> usize {
        self.npages * SLOTS_PER_PAGE
    }

    /// Metadata pages held (directory included).
    pub(super) fn pages(&self) -> usize {
        if self.dir == 0 {
            0
        } else {
            self.npages + 1
        }
    }

    fn slot_addr(&self, i: usize) -> usize {
        // SAFETY: `i < capacity` (callers mask with capacity - 1), so `i / SLOTS_PER_PAGE <
        // npages` indexes a valid directory word.
        let page = unsafe { read_word(self.dir + (i / SLOTS_PER_PAGE) * W) };
        page + (i % SLOTS_PER_PAGE) * SLOT
    }

    /// The entry of slot `i` (`i < capacity`), as `(key, value)`, if occupied.
    pub(super) fn slot(&self, i: usize) -> Option<(usize, usize)> {
        let a = self.slot_addr(i);
        // SAFETY: `a` is a slot in one of our table pages.
        let (k, v) = unsafe { (read_word(a), read_word(a + W)) };
        if k == 0 {
            None
        } else {
            Some((k - 1, v))
        }
    }

    fn find(&self, key: usize) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.capacity() - 1;
        let mut i = hash(key, mask);
        loop {
            let a = self.slot_addr(i);
            // SAFETY: `a` is a slot in one of our table pages.
            let k = unsafe { read_word(a) };
            if k == 0 {
                return None;
            }
            if k == key + 1 {
                return Some(a);
            }
            i = (i + 1) & mask;
        }
    }

    /// The value stored for `key`.
    pub(super) fn get(&self, key: usize) -> Option<usize> {
        // SAFETY: `find` returns an occupied slot of ours.
        self.find(key).map(|a| unsafe { read_word(a + W) })
    }

    /// Replaces the value of a present `key` (never allocates). False if `key` is absent.
    pub(super) fn set(&mut self, key: usize, value: usize) -> bool {
        match self.find(key) {
            Some(a) => {
                // SAFETY: `find` returns an occupied slot of ours.
                unsafe { write_word(a + W, value) };
                true
            }
            None => false,
        }
    }

    /// Stores `key -> value`; `key` must not be present and must be below `usize::MAX`.
    pub(super) fn insert<K: KmemPages>(
        &mut self,
        kmem: &mut K,
        key: usize,
        value: usize,
    ) -> Result<(), TableFull> {
        if (self.len + 1) * 4 > self.capacity() * 3 {
            self.grow(kmem)?;
        }
        self.place(key, value);
        self.len += 1;
        Ok(())
    }

    fn place(&mut self, key: usize, value: usize) {
        let mask = self.capacity() - 1;
        let mut i = hash(key, mask);
        loop {
            let a = self.slot_addr(i);
            // SAFETY: `a` is a slot in one of our table pages; the load factor guarantees an
            // empty slot exists, so the loop ends.
            unsafe {
                if read_word(a) == 0 {
                    write_word(a, key + 1);
                    write_word(a + W, value);
                    return;
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Removes `key`, returning its value.
    pub(super) fn remove(&mut self, key: usize) -> Option<usize> {
        let a = self.find(key)?;
        // SAFETY: `a` is an occupied slot of ours.
        let value = unsafe { read_word(a + W) };
        let mask = self.capacity() - 1;
        // Index of `a`: recompute by probing from the home slot.
        let mut hole = hash(key, mask);
        while self.slot_addr(hole) != a {
            hole = (hole + 1) & mask;
        }
        // Backward-shift deletion: move later members of the cluster into the hole when their
        // home slot does not lie (cyclically) between the hole and their position.
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let Some((k, v)) = self.slot(j) else { break };
            let home = hash(k, mask);
            let between = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !between {
                let h = self.slot_addr(hole);
                // SAFETY: `h` is a slot of ours.
                unsafe {
                    write_word(h, k + 1);
                    write_word(h + W, v);
                }
                hole = j;
            }
        }
        let h = self.slot_addr(hole);
        // SAFETY: `h` is a slot of ours.
        unsafe {
            write_word(h, 0);
            write_word(h + W, 0);
        }
        self.len -= 1;
        Some(value)
    }

    fn grow<K: KmemPages>(&mut self, kmem: &mut K) -> Result<(), TableFull> {
        let new_npages = if self.npages == 0 { 1 } else { self.npages * 2 };
        if new_npages > DIR_CAP {
            return Err(TableFull);
        }
        let new_dir = kmem.alloc_meta_page().ok_or(TableFull)?;
        for p in 0..new_npages {
            let Some(page) = kmem.alloc_meta_page() else {
                // SAFETY: the first `p` directory words hold pages allocated below, and `new_dir`
                // was allocated above; none of them is referenced anywhere else.
                unsafe {
                    for q in 0..p {
                        kmem.free_meta_page(read_word(new_dir + q * W));
                    }
                    kmem.free_meta_page(new_dir);
                }
                return Err(TableFull);
            };
            // SAFETY: fresh metadata pages are ours and writable.
            unsafe {
                fill(page, PAGE_SIZE, 0);
                write_word(new_dir + p * W, page);
            }
        }
        let old = Self {
            dir: self.dir,
            npages: self.npages,
            len: self.len,
        };
        self.dir = new_dir;
        self.npages = new_npages;
        for i in 0..old.capacity() {
            if let Some((k, v)) = old.slot(i) {
                self.place(k, v);
            }
        }
        old.release(kmem);
        Ok(())
    }

    fn release<K: KmemPages>(self, kmem: &mut K) {
        if self.dir == 0 {
            return;
        }
        // SAFETY: the first `npages` directory words are our table pages and `dir` is ours; the
        // table is consumed, so nothing refers to them afterwards.
        unsafe {
            for p in 0..self.npages {
                kmem.free_meta_page(read_word(self.dir + p * W));
            }
            kmem.free_meta_page(self.dir);
        }
    }

    /// Gives every page back; the table must be empty.
    pub(super) fn clear<K: KmemPages>(&mut self, kmem: &mut K) {
        let t = core::mem::replace(self, Self::new());
        t.release(kmem);
    }

    /// Whether every entry is found by a lookup from its home slot (audit helper).
    pub(super) fn check(&self) -> bool {
        let mut n = 0;
        for i in 0..self.capacity() {
            if let Some((k, _)) = self.slot(i) {
                n += 1;
                if self.find(k) != Some(self.slot_addr(i)) {
                    return false;
                }
            }
        }
        n == self.len
    }
}
