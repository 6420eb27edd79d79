// SPDX-License-Identifier: GPL-2.0

//! Page codes: a run's [`PageHint`] as each of its pages carries it for `free`'s fast path,
//! pre-decoded, so that the fast path checks a piece's owner with a byte compare and takes its
//! magazine class with a shift, then checks that the address starts an object with the class's
//! entry of the class table ([`ClassTable::starts_object`]), with no decoding.
//!
//! A code is a `u32`:
//!
//! * bits 0-7: the owner code (0: none, else the owning type's slot + 1), compared as a byte;
//! * bit 15: set in every code ([`PageCode::NONE`], 0, is the only code without it);
//! * bits 25-31: the magazine class (`pieces.rs`), [`NCLASSES`] for a run too big for a
//!   magazine (its object-start test says no object starts there; it still names its owner).
//!
//! Every page of a bucket cluster has the cluster's code; a page run's first page has one and
//! its later pages have none (an interior pointer: the slow path answers it).

use super::classes::{ClassTable, MAX_CLASSES};
use super::params::MAX_TYPES;
use super::pieces::{MAG_LARGE_PAGES, NCLASSES};
use super::starts::START_TESTS;
use super::usage::PageHint;

/// The owner byte.
const OWNER: u32 = 0xff;
/// Set in every code but [`PageCode::NONE`].
const SOME: u32 = 1 << 15;
/// Where the magazine class sits (bits 25-31).
const CLASS_SHIFT: u32 = 25;

// The owner code fits the byte, the class field holds every class and the "none" value (and
// every value of it has a start test), and the fields do not overlap.
const _: () = assert!(MAX_TYPES < 256 && NCLASSES < 1 << (32 - CLASS_SHIFT));
const _: () = assert!(1 << (32 - CLASS_SHIFT) <= START_TESTS);
const _: () = assert!(OWNER & SOME == 0 && (OWNER | SOME) >> CLASS_SHIFT == 0);

/// What one page of a run carries for `free`'s fast path (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageCode(u32);

impl PageCode {
    /// No code: a page with no object start (a later page of a run), or not ours.
    pub const NONE: PageCode = PageCode(0);

    /// The code of page `page` (0 for the first) of a run whose first page's hint is `hint`:
    /// every page of a bucket cluster has the same; a page run's later pages have none.
    pub fn of(hint: PageHint, page: usize) -> PageCode {
        let (class, owner) = match hint {
            PageHint::Bucket { class, owner } => (class, owner),
            PageHint::Large { .. } if page > 0 => return PageCode::NONE,
            PageHint::Large { npages, owner } => {
                let class = if (1..=MAG_LARGE_PAGES).contains(&npages) {
                    MAX_CLASSES + npages - 1
                } else {
                    NCLASSES
                };
                (class, owner)
            }
        };
        PageCode(u32::from(owner) | SOME | (class as u32) << CLASS_SHIFT)
    }

    /// The code a page carries, as [`PageCode::raw`] gave it (any value: a code that is not one
    /// of ours decodes to something, and every reader checks what it uses).
    #[inline(always)]
    pub const fn from_raw(raw: u32) -> PageCode {
        PageCode(raw)
    }

    /// The code as a `u32` (non-zero but for [`PageCode::NONE`]).
    #[inline(always)]
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// Whether this is a code at all (not [`PageCode::NONE`]).
    #[inline]
    pub const fn is_some(self) -> bool {
        self.0 & SOME != 0
    }

    /// The magazine class of the page's objects (`None`: no code, or a run too big to cache).
    #[inline]
    pub fn class(self) -> Option<usize> {
        let c = (self.0 >> CLASS_SHIFT) as usize;
        (self.is_some() && c < NCLASSES).then_some(c)
    }

    /// The owning type's slot ([`MallocType::index`](super::MallocType::index)), if a type owns
    /// the cluster or run.
    #[inline]
    pub fn owner_slot(self) -> Option<usize> {
        ((self.0 & OWNER) as usize).checked_sub(1)
    }

    /// Whether the code allows type slot `slot` as the owner: it names `slot`, or no owner (a
    /// shared cluster, or segregation off), which leaves the check to the type's counters.
    #[inline]
    pub fn may_be_owned_by(self, slot: usize) -> bool {
        let owner = self.0 & OWNER;
        owner == 0 || owner as usize == slot + 1
    }

    /// Whether `addr`, an address in the page this code is of, starts an object of the page's
    /// class (`false` with no class).
    #[inline(always)]
    pub fn starts_object(self, classes: &ClassTable, addr: usize) -> bool {
        classes.starts_object((self.0 >> CLASS_SHIFT) as usize, addr)
    }

    /// `free`'s fast path: the magazine class of the object at `addr` (an address in the page
    /// this code is of), if the code names type slot `slot` as the owner and `addr` starts an
    /// object: one byte compare and the object-start test, no decoding (a code with an owner is
    /// never [`PageCode::NONE`], and a run too big to cache has no object start by its test).
    #[inline(always)]
    pub fn object_of(self, classes: &ClassTable, slot: usize, addr: usize) -> Option<usize> {
        // A slot is below `MAX_TYPES` (128), so `slot + 1` fits the byte.
        if self.0 as u8 != (slot as u8).wrapping_add(1) || !self.starts_object(classes, addr) {
            return None;
        }
        Some((self.0 >> CLASS_SHIFT) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::malloc::{SizeClasses, MAX_LARGE_PAGES, PAGE_SHIFT, PAGE_SIZE};

    fn hints(owner: u8) -> impl Iterator<Item = PageHint> {
        (0..MAX_CLASSES)
            .map(move |class| PageHint::Bucket { class, owner })
            .chain(
                [1, 2, 16, 17, MAX_LARGE_PAGES]
                    .into_iter()
                    .map(move |npages| PageHint::Large { npages, owner }),
            )
    }

    #[test]
    fn codes_carry_class_and_owner() {
        for owner in 0..=128u8 {
            for h in hints(owner) {
                let code = PageCode::of(h, 0);
                assert!(code.is_some() && code.raw() != 0);
                assert_eq!(code.owner_slot(), h.owner_slot());
                let want = match h {
                    PageHint::Bucket { class, .. } => Some(class),
                    PageHint::Large { npages, .. } if npages <= MAG_LARGE_PAGES => {
                        Some(MAX_CLASSES + npages - 1)
                    }
                    PageHint::Large { .. } => None,
                };
                assert_eq!(code.class(), want, "{h:?}");
                for slot in 0..MAX_TYPES {
                    let named = h.owner_slot() == Some(slot);
                    assert_eq!(code.may_be_owned_by(slot), named || owner == 0);
                }
                // A run's later pages have no code.
                if let PageHint::Large { npages, .. } = h {
                    for p in 1..npages.min(20) {
                        assert_eq!(PageCode::of(h, p), PageCode::NONE);
                    }
                }
            }
        }
        assert!(!PageCode::NONE.is_some());
        assert_eq!(PageCode::NONE.class(), None);
        assert_eq!(PageCode::NONE.owner_slot(), None);
    }

    /// The fast path's verdict, for every offset of every page of a cluster of every class of
    /// both tables, and of a run: a class only for the owner, at an object start.
    #[test]
    fn the_fast_path_finds_exactly_the_owners_object_starts() {
        let base = 0x4000_0000usize;
        for mode in [SizeClasses::Pow2, SizeClasses::Fine] {
            let t = mode.table();
            for class in 0..t.count() {
                let (size, pages) = (t.size(class), t.cluster_pages(class));
                let h = PageHint::Bucket { class, owner: 3 };
                for page in 0..pages {
                    let code = PageCode::of(h, page);
                    for off in (0..PAGE_SIZE).step_by(8) {
                        let addr = base + (page << PAGE_SHIFT) + off;
                        let x = addr - base;
                        let start = x.is_multiple_of(size) && x / size < t.pieces(class);
                        assert_eq!(code.starts_object(t, addr), start, "{mode:?} {class} {x}");
                        assert_eq!(t.is_piece_start(class, addr), start);
                        for slot in [0, 1, 2, 3, 127] {
                            let want = (slot == 2 && start).then_some(class);
                            assert_eq!(code.object_of(t, slot, addr), want);
                        }
                    }
                }
            }
            for npages in [1, 2, 16, 17, 300] {
                let h = PageHint::Large { npages, owner: 128 };
                let code = PageCode::of(h, 0);
                for off in (0..PAGE_SIZE).step_by(8) {
                    let start = off == 0 && npages <= MAG_LARGE_PAGES;
                    assert_eq!(code.starts_object(t, base + off), start);
                    let want = start.then_some(MAX_CLASSES + npages - 1);
                    assert_eq!(code.object_of(t, 127, base + off), want);
                    assert_eq!(code.object_of(t, 126, base + off), None);
                }
                for p in 1..npages.min(20) {
                    let none = PageCode::of(h, p);
                    for slot in 0..MAX_TYPES {
                        assert_eq!(none.object_of(t, slot, base + (p << PAGE_SHIFT)), None);
                    }
                }
            }
        }
    }
}
