// SPDX-License-Identifier: GPL-2.0

//! Bonwick & Adams' magazine layer (USENIX 2001, sections 3-4), as a `no_std` core.
//!
//! * [`Magazine`] / [`MagBox`]: a stack of rounds (free objects of one size class) in memory the
//!   caller supplies.
//! * [`CpuMagazines`]: a CPU's loaded and previous magazine with the paper's allocation and free
//!   algorithm.
//! * [`ClassMagazines`]: one CPU's [`CpuMagazines`] and request counters of one malloc type for
//!   every magazine class (the kernel keeps magazines per (type, class)).
//! * [`Depot`]: full and empty magazines of one class shared by the CPUs, with a magazine size
//!   that grows under lock contention and working-set trimming.
//! * [`AgeClock`], [`class_budget`], [`fill_rounds`]: what a CPU's magazines may keep of a class
//!   over all types, and the aging that gives idle magazines' rounds back (module `trim`).
//! * [`marker`]: the mark on every round, so that a double free of a piece sitting in a magazine
//!   is caught in O(1).
//! * [`slot_sync`]: the slot lock's fast mode (a local acquire without a `lock`-prefixed
//!   instruction while no other CPU takes slot locks) and slow mode, and the protocol between them.
//! * [`ledger`]: exact per-type limits, statistics and high water with per-CPU counters and
//!   credits (the argument is in that module's documentation).
//!
//! Locks, per-CPU storage and magazine memory are the caller's (`rust/glue/` in the kernel); the
//! design is described in `Documentation/magazines.rst`.

mod cpu;
mod depot;
pub mod ledger;
mod mag;
pub mod marker;
mod row;
pub mod slot_sync;
mod trim;

pub use cpu::{CpuMagazines, Unloaded};
pub use depot::{start_magsize, Depot, DepotStats, CONTENTION_LIMIT, INTERVAL_OPS, MAG_START};
pub use ledger::{LocalLedger, Reserve};
pub use mag::{MagBox, Magazine, MAG_ROUNDS};
pub use row::{ActiveClasses, ClassMagazines, Idle};
pub use trim::{
    class_budget, depot_budget, fill_rounds, over_budget, AgeClock, AGE_ROUNDS, FILL_BYTES,
};
