// SPDX-License-Identifier: GPL-2.0

//! DIAGNOSTIC mode: poison and an ownership side table.
//!
//! When enabled, every free piece is filled with [`POISON`] after its two link words, and the
//! poison and links are checked when the piece is handed out again ("modified after free"). A
//! side table keyed by the first page of each cluster or large allocation records, per piece, a
//! 16-bit tag: a live bit and the owning (or last owning) type's slot. That catches double frees
//! exactly, frees with the wrong type, and lets a bucket's free list be rebuilt from the tags when
//! a client scribbled over a link. All side-table storage comes from metadata pages and is given
//! back when the mode is switched off; when it is off the cost is one branch per call.

use super::classes::MAX_PIECES;
use super::kmem::KmemPages;
use super::meta::MetaSlab;
use super::raw::{fill, first_mismatch, read_u16, write_u16};
use super::table::HashTable;
use super::usage::NoMeta;

/// Byte written over free pieces (after the link words).
pub const POISON: u8 = 0x6b;

/// Tag bit: the piece is allocated.
pub(super) const LIVE: u16 = 0x8000;
/// Owner field of a piece never allocated since DIAGNOSTIC was enabled.
pub(super) const OWNER_NONE: u16 = 0x7fff;
/// Owner field of a piece allocated before DIAGNOSTIC was enabled (type unknown).
pub(super) const OWNER_UNKNOWN: u16 = 0x7ffe;

const W: usize = core::mem::size_of::<usize>();
/// Bytes of a cluster's tag array: one `u16` per piece of the fullest cluster.
const TAG_BLOCK: usize = 2 * MAX_PIECES;

/// DIAGNOSTIC state.
///
/// # Invariants
///
/// When `enabled`, `tags` has an entry for the first page of every cluster (value: a tag block
/// from `blocks`) and every large allocation (value: its tag); when disabled both are empty.
pub(super) struct Diag {
    pub(super) enabled: bool,
    tags: HashTable,
    blocks: MetaSlab,
}

impl Diag {
    pub(super) const fn new() -> Self {
        Self {
            enabled: false,
            tags: HashTable::new(),
            blocks: MetaSlab::new(TAG_BLOCK),
        }
    }

    /// Metadata pages held by the side table.
    pub(super) fn meta_pages(&self) -> usize {
        self.tags.pages() + self.blocks.pages()
    }

    /// Creates the tag array of a cluster of `n` pieces starting at page `head`, all `tag`.
    pub(super) fn add_cluster<K: KmemPages>(
        &mut self,
        kmem: &mut K,
        head: usize,
        n: usize,
        tag: u16,
    ) -> Result<(), NoMeta> {
        let block = self.blocks.alloc(kmem).ok_or(NoMeta)?;
        for i in 0..n {
            // SAFETY: `block` holds TAG_BLOCK / 2 >= n tags.
            unsafe { write_u16(block + 2 * i, tag) };
        }
        if self.tags.insert(kmem, head, block).is_err() {
            // SAFETY: `block` was just allocated from this slab and is referenced nowhere.
            unsafe { self.blocks.free(kmem, block) };
            return Err(NoMeta);
        }
        Ok(())
    }

    /// Drops the tag array of the cluster starting at page `head`.
    pub(super) fn remove_cluster<K: KmemPages>(&mut self, kmem: &mut K, head: usize) {
        if let Some(block) = self.tags.remove(head) {
            // SAFETY: the table held this block, allocated from our slab, now unreferenced.
            unsafe { self.blocks.free(kmem, block) };
        }
    }

    /// Tag of piece `i` of the cluster starting at page `head`.
    pub(super) fn piece_tag(&self, head: usize, i: usize) -> u16 {
        match self.tags.get(head) {
            // SAFETY: `block` is a tag block of ours and `i` is a piece index of its cluster.
            Some(block) => unsafe { read_u16(block + 2 * i) },
            None => LIVE | OWNER_UNKNOWN,
        }
    }

    /// Sets the tag of piece `i` of the cluster starting at page `head`.
    pub(super) fn set_piece_tag(&mut self, head: usize, i: usize, tag: u16) {
        if let Some(block) = self.tags.get(head) {
            // SAFETY: `block` is a tag block of ours and `i` is a piece index of its cluster.
            unsafe { write_u16(block + 2 * i, tag) };
        }
    }

    /// Records a large allocation starting at page `head`.
    pub(super) fn add_large<K: KmemPages>(
        &mut self,
        kmem: &mut K,
        head: usize,
        tag: u16,
    ) -> Result<(), NoMeta> {
        self.tags
            .insert(kmem, head, tag as usize)
            .map_err(|_| NoMeta)
    }

    /// Tag of the large allocation starting at page `head`.
    pub(super) fn large_tag(&self, head: usize) -> u16 {
        self.tags
            .get(head)
            .map_or(LIVE | OWNER_UNKNOWN, |t| t as u16)
    }

    /// Forgets the large allocation starting at page `head`.
    pub(super) fn remove_large(&mut self, head: usize) {
        self.tags.remove(head);
    }

    /// Drops every entry; `is_cluster(page)` tells tag blocks from large tags.
    pub(super) fn clear<K: KmemPages>(&mut self, kmem: &mut K, is_cluster: impl Fn(usize) -> bool) {
        // Removing slot `i` may shift a later entry into it, so only advance past empty slots.
        let mut i = 0;
        while i < self.tags.capacity() {
            let Some((head, value)) = self.tags.slot(i) else {
                i += 1;
                continue;
            };
            self.tags.remove(head);
            if is_cluster(head) {
                // SAFETY: cluster entries hold tag blocks of our slab, now unreferenced.
                unsafe { self.blocks.free(kmem, value) };
            }
        }
        self.tags.clear(kmem);
        self.enabled = false;
    }

    /// Entries in the side table (audit helper).
    pub(super) fn entries(&self) -> usize {
        self.tags.len()
    }
}

/// Poisons a free piece of `size` bytes (leaves the link words alone).
///
/// # Safety
///
/// `piece..piece + size` must be a free piece owned by the allocator.
pub(super) unsafe fn poison(piece: usize, size: usize) {
    // SAFETY: the caller guarantees the piece is ours; `size >= 2 * W`.
    unsafe { fill(piece + 2 * W, size - 2 * W, POISON) }
}

/// Offset of the first byte of a free piece whose poison was overwritten.
///
/// # Safety
///
/// `piece..piece + size` must be a free piece owned by the allocator.
pub(super) unsafe fn check_poison(piece: usize, size: usize) -> Option<usize> {
    // SAFETY: the caller guarantees the piece is ours; `size >= 2 * W`.
    unsafe { first_mismatch(piece + 2 * W, size - 2 * W, POISON) }.map(|o| o + 2 * W)
}
