// SPDX-License-Identifier: GPL-2.0

//! Quantum caches: per-size stacks of free integers in front of the arena.
//!
//! Most requests to an address arena are for one, two, … a few quanta. For each size
//! `k * quantum <= qcache_max` the arena keeps a bounded stack (the *depot*) of integers that are
//! allocated in the arena (their tags say [`super::seg::SegKind::Cached`]) but free for callers.
//! `alloc` of such a size pops the depot (a hash lookup, no fit search, no split); `free` pushes
//! it back (no coalescing). Depots are flushed back into the arena by `reap` and `destroy`.
//!
//! Per-CPU magazines (Bonwick & Adams §3) in front of the quantum caches are
//! [`super::QcFront`]'s, built on the shared magazine core (`crate::magazine`).

use core::mem::size_of;
use core::ptr::NonNull;

use super::tags::{TagPageSource, PAGE_SIZE};

/// Most quantum caches an arena can have (`qcache_max <= MAX_QCACHES * quantum`).
pub const MAX_QCACHES: usize = 16;

/// Depot slots a page provides.
const SLOTS: usize = PAGE_SIZE / size_of::<usize>();

/// Most depot entries per cache size.
const MAX_DEPTH: usize = 128;

/// The depots of one arena: `ncaches` bounded stacks stored in one page.
///
/// # Invariants
///
/// If `ncaches > 0`, `page` holds `ncaches * depth` slots; stack `i` uses slots
/// `[i * depth, i * depth + len[i])`, each an integer whose tag is `Cached` with size
/// `(i + 1) * quantum`.
pub(super) struct Depots {
    page: Option<NonNull<usize>>,
    pub(super) ncaches: usize,
    pub(super) depth: usize,
    pub(super) len: [usize; MAX_QCACHES],
}

impl Depots {
    /// No depots.
    pub(super) const fn new() -> Self {
        Depots {
            page: None,
            ncaches: 0,
            depth: 0,
            len: [0; MAX_QCACHES],
        }
    }

    /// Sets up `ncaches` depots (`1..=MAX_QCACHES`) in a page from `src`.
    pub(super) fn init<P: TagPageSource>(&mut self, ncaches: usize, src: &mut P) -> bool {
        let Some(p) = src.alloc_page() else {
            return false;
        };
        self.page = Some(p.cast());
        self.ncaches = ncaches;
        // The page's slots shared by a power of two of depots (a shift, not a division by a
        // runtime value): `ncaches <= MAX_QCACHES` rounds up to at most 16, so depth >= 32.
        let shares = ncaches.clamp(1, MAX_QCACHES).next_power_of_two();
        self.depth = (SLOTS >> shares.trailing_zeros()).min(MAX_DEPTH);
        self.len = [0; MAX_QCACHES];
        true
    }

    /// Whether depots are set up.
    pub(super) fn is_active(&self) -> bool {
        self.page.is_some()
    }

    /// Pointer to slot `j` of depot `i`.
    fn slot(&self, i: usize, j: usize) -> Option<*mut usize> {
        let page = self.page?;
        // SAFETY: `i < ncaches`, `j < depth` (callers), so the slot is inside the page.
        Some(unsafe { page.as_ptr().add(i * self.depth + j) })
    }

    /// Pops an integer from depot `i`.
    pub(super) fn pop(&mut self, i: usize) -> Option<usize> {
        let j = self.len[i].checked_sub(1)?;
        let slot = self.slot(i, j)?;
        self.len[i] = j;
        // SAFETY: slot `j < len[i]` was written by `push`.
        Some(unsafe { slot.read() })
    }

    /// Pushes onto depot `i`; `false` when full.
    pub(super) fn push(&mut self, i: usize, addr: usize) -> bool {
        let j = self.len[i];
        if j >= self.depth {
            return false;
        }
        let Some(slot) = self.slot(i, j) else {
            return false;
        };
        // SAFETY: `j < depth`, inside our page.
        unsafe { slot.write(addr) };
        self.len[i] = j + 1;
        true
    }

    /// Reads entry `j` of depot `i` (audits).
    pub(super) fn get(&self, i: usize, j: usize) -> Option<usize> {
        if j >= self.len[i] {
            return None;
        }
        // SAFETY: `j < len[i]`, an initialised slot.
        self.slot(i, j).map(|s| unsafe { s.read() })
    }

    /// Frees the page (depots must be empty).
    pub(super) fn release<P: TagPageSource>(&mut self, src: &mut P) {
        if let Some(p) = self.page.take() {
            // SAFETY: our page, no longer used.
            unsafe { src.free_page(p.cast()) };
        }
        *self = Depots::new();
    }
}
