// SPDX-License-Identifier: GPL-2.0

//! vmem: Bonwick & Adams' general-purpose resource allocator, as a `no_std` state machine.
//!
//! An [`Arena`] manages a set of integers (addresses, identifiers…; 0 is a valid one) as
//! segments on an address-ordered list of external boundary tags, with power-of-two freelists
//! for constant-time instant-fit, best-fit and next-fit, a growing/shrinking hash of allocated
//! segments, import from a source and release of wholly free imported spans, and quantum caches.
//! `Documentation/vmem.rst` teaches the design.
//!
//! # API summary
//!
//! - [`Arena::new`]`(&`[`ArenaConfig`]`{ name, quantum, qcache_max, import_quantum, span }, pages)`;
//!   the arena owns `pages: impl` [`TagPageSource`] (whole [`PAGE_SIZE`] pages for tags, hash
//!   buckets and cache depots), given back on [`Arena::destroy`] or drop.
//! - [`Arena::add`] / [`Arena::add_imported`] spans; [`Arena::alloc`]`(size, `[`Flags`]`)` /
//!   [`Arena::free`]`(addr, size)` (quantum caches first); [`Arena::xalloc`]`(size,
//!   &`[`Constraints`]`{ align, phase, nocross, min, max }, flags)` / [`Arena::xfree`].
//! - Every failure is a [`VmemError`]; `NoSpace` is what a sleeping wrapper waits on.
//! - Lock seam: with a source, allocation fails with [`VmemError::ImportNeeded`]`(`
//!   [`ImportRequest`]`)`: import outside the lock, `add_imported`, retry. `free`/`xfree` return
//!   `Some(`[`SpanRelease`]`)` when an imported span became wholly free: give it to the source.
//!   [`Arena::alloc_importing`], [`Arena::xalloc_importing`], [`Arena::free_releasing`],
//!   [`Arena::xfree_releasing`] do that dance with a [`SpanSource`] (which `Arena` implements).
//! - [`Arena::walk`], [`Arena::size`] with [`SegKindSet`], [`Arena::stats`] ([`Stats`]),
//!   [`Arena::reap`], [`Arena::audit`] ([`AuditFailure`]).
//! - Magazine front (used by the client arenas of `rust/glue/arenas.rs`): [`QcFront`] runs the shared
//!   magazine core's [`crate::magazine::CpuMagazines`] / [`crate::magazine::Depot`] over slabs
//!   whose [`SlabTable`] keeps a "handed out" bit per integer, so `free` stays exact (double
//!   free, wrong size) without the arena lock.

mod arena;
mod audit;
mod constraints;
mod error;
mod flags;
mod freelist;
mod hash;
mod qcache;
mod qfront;
mod qslab;
mod seg;
mod source;
mod stats;
mod tags;

pub use arena::{Arena, ArenaConfig, NAME_MAX};
pub use audit::AuditFailure;
pub use constraints::Constraints;
pub use error::{ConstraintError, VmemError};
pub use flags::{Flags, Policy};
pub use qcache::MAX_QCACHES;
pub use qfront::{FastFree, QcFront};
pub use qslab::{slab_align, SlabTable, MAX_SLABS, SLAB_OBJS};
pub use source::{ImportRequest, SpanRelease, SpanSource};
pub use stats::{SegKindSet, Stats};
pub use tags::{TagPageSource, PAGE_SHIFT, PAGE_SIZE};
