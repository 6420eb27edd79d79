// SPDX-License-Identifier: GPL-2.0

//! Quantum-cache slabs: the exact "handed out" record behind per-CPU magazines of integers.
//!
//! A magazine of integers cannot mark its rounds (the arena may manage IDs, not memory), so the
//! arena's hash, read under the arena lock, was the only thing that told a double free or a
//! wrong size from a good free. With magazines in front, `free` must decide without that lock.
//!
//! The quantum cache of size `s` therefore imports *slabs* from its arena: one arena segment of
//! [`SLAB_OBJS`]` * s`, aligned to [`slab_align`]`(s)` (the next power of two), carved into
//! [`SLAB_OBJS`] integers. From an integer and the size given to `free`, the slab base is one
//! mask (`addr & !(slab_align(s) - 1)`), and a small open-addressed [`SlabTable`] keyed by base
//! finds the slab's record in O(1) expected probes. Each record holds two 64-bit words, one bit
//! per object:
//!
//! * `out`: handed out to a caller. Set by an allocation, cleared by a free, on the fast path.
//! * `home`: free and resting in the slab (in no magazine). Changed only under the arena lock.
//!
//! An object is in exactly one of three places: handed out (`out` set), in a magazine or a depot
//! magazine (neither bit), or at home (`home` set). A free is exact in O(1):
//!
//! * no slab at that base, or a slab of another size: not a quantum-cache integer of that size;
//!   the caller asks the arena (under its lock, which reports `WrongSize`/`BadFree` exactly, see
//!   [`SlabTable::classify`] for an integer that sits in a slab of another size);
//! * the offset is not a multiple of the size: `BadFree`;
//! * the `out` bit is clear: `DoubleFree` (the integer is in a magazine, at home, or never left).
//!
//! Every refusal changes nothing.
//!
//! # Why the `out` word is atomic
//!
//! A free may run on another CPU than the allocation, so two CPUs can flip bits of the same
//! word at once, each under its own CPU slot lock. A plain load and store would lose one of the
//! two updates (a lost clear is a later false `DoubleFree`, a lost set lets a double free
//! through), and two racing double frees of one integer must see exactly one winner. So the
//! test-and-flip is one `fetch_and` / `fetch_or`. It is a read-modify-write, but on the slab's
//! own cache line: a slab's objects are carved into one magazine at a time, so the line is
//! normally touched by one CPU only and the locked instruction hits a line held exclusive (no
//! transfer). It is shared only when objects of one slab are freed on several CPUs, which is
//! exactly the case where plain stores would be wrong. The records are 32 bytes, two to a
//! 64-byte line.

use core::num::NonZeroUsize;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::error::VmemError;

/// Objects in one slab (one bit each in a 64-bit word).
pub const SLAB_OBJS: usize = 64;

/// Slab records in one table (a power of two).
pub const MAX_SLABS: usize = 256;

/// Base of a never-used record (never a slab base: slab bases are aligned to at least 64).
const EMPTY: usize = usize::MAX;
/// Base of a removed record (probes continue past it).
const TOMB: usize = usize::MAX - 1;

/// Alignment (and address mask + 1) of the slabs of objects of `size`; `None` on overflow.
pub fn slab_align(size: usize) -> Option<usize> {
    size.checked_mul(SLAB_OBJS)?.checked_next_power_of_two()
}

/// One slab's record.
///
/// # Invariants
///
/// `base` is `EMPTY`, `TOMB` or a slab base aligned to `slab_align(size)`; `size` is written
/// before `base` is published (release) and not changed while `base` is live. `out & home == 0`.
#[repr(C, align(32))]
struct SlabRec {
    base: AtomicUsize,
    size: AtomicUsize,
    out: AtomicU64,
    home: AtomicU64,
}

impl SlabRec {
    const fn new() -> Self {
        Self {
            base: AtomicUsize::new(EMPTY),
            size: AtomicUsize::new(0),
            out: AtomicU64::new(0),
            home: AtomicU64::new(0),
        }
    }
}

/// A found slab: its record index and the object's bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabObj {
    rec: usize,
    bit: u64,
}

/// The slab records of one arena's quantum caches.
///
/// Lookups and the `out` bits are lock-free (`&self`, any CPU); inserting, removing and the
/// `home` bits are the slow path's, under the arena lock (also `&self`: the table is shared).
pub struct SlabTable {
    recs: [SlabRec; MAX_SLABS],
    quantum_shift: u32,
}

impl SlabTable {
    /// An empty table for an arena of `quantum` (a power of two).
    pub const fn new(quantum: usize) -> Self {
        Self {
            recs: [const { SlabRec::new() }; MAX_SLABS],
            quantum_shift: quantum.trailing_zeros(),
        }
    }

    /// Builds an empty table for an arena of `quantum` at `slot`, in place (a table is 8 KiB,
    /// too big to build on a kernel stack and move).
    ///
    /// # Safety
    ///
    /// `slot` is valid for writes of a `SlabTable` and aligned.
    pub unsafe fn init_in_place(slot: *mut Self, quantum: usize) {
        // SAFETY: `slot` is valid and aligned (contract), so are its fields; every record and
        // the shift are written, which initialises the whole table.
        unsafe {
            let recs = (&raw mut (*slot).recs).cast::<SlabRec>();
            for i in 0..MAX_SLABS {
                recs.add(i).write(SlabRec::new());
            }
            (&raw mut (*slot).quantum_shift).write(quantum.trailing_zeros());
        }
    }

    fn hash(&self, base: usize) -> usize {
        let k = (base >> self.quantum_shift) as u64;
        (k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize & (MAX_SLABS - 1)
    }

    /// The record of the slab at `base`, if any.
    fn find(&self, base: usize) -> Option<usize> {
        let h = self.hash(base);
        for i in 0..MAX_SLABS {
            let r = (h + i) & (MAX_SLABS - 1);
            match self.recs[r].base.load(Ordering::Acquire) {
                EMPTY => return None,
                b if b == base => return Some(r),
                _ => {}
            }
        }
        None
    }

    /// Where `addr` sits if it is an object of a slab of objects of `size`: `Ok(None)` if no
    /// such slab holds it (the padding after a slab is the arena's), `Err(BadFree)` if a slab of that size holds it but not at an object
    /// boundary.
    pub fn locate(&self, addr: usize, size: usize) -> Result<Option<SlabObj>, VmemError> {
        let Some(align) = slab_align(size) else {
            return Ok(None);
        };
        let base = addr & !(align - 1);
        let Some(rec) = self.find(base) else {
            return Ok(None);
        };
        if self.recs[rec].size.load(Ordering::Relaxed) != size {
            return Ok(None);
        }
        let off = addr - base;
        if off >= size * SLAB_OBJS {
            // Past the slab, in the alignment padding: another arena segment.
            return Ok(None);
        }
        // A division by a `NonZero` has no panic path (the kernel build keeps those out).
        let Some(nz) = NonZeroUsize::new(size) else {
            return Ok(None);
        };
        if off % nz != 0 {
            return Err(VmemError::BadFree { addr, size });
        }
        Ok(Some(SlabObj {
            rec,
            bit: 1 << (off / nz),
        }))
    }

    /// Fast-path free check: clears the object's `out` bit. `Ok(true)`: it was handed out, the
    /// caller now holds the integer as a free round. `Ok(false)`: not an object of a slab of
    /// `size` (ask the arena). `Err`: a double free or a bad address; nothing changed.
    #[inline]
    pub fn free_check(&self, addr: usize, size: usize) -> Result<bool, VmemError> {
        let Some(o) = self.locate(addr, size)? else {
            return Ok(false);
        };
        let prev = self.recs[o.rec].out.fetch_and(!o.bit, Ordering::AcqRel);
        if prev & o.bit == 0 {
            return Err(VmemError::DoubleFree { addr });
        }
        Ok(true)
    }

    /// Fast-path allocation: sets the `out` bit of a round taken from a magazine of `size`.
    /// Returns `false` (and changes nothing) if the round is not a free slab object, which the
    /// invariants rule out (a round is only ever an object whose bits are both clear).
    #[inline]
    pub fn mark_out(&self, addr: usize, size: usize) -> bool {
        let Ok(Some(o)) = self.locate(addr, size) else {
            return false;
        };
        let prev = self.recs[o.rec].out.fetch_or(o.bit, Ordering::AcqRel);
        if prev & o.bit != 0 {
            self.recs[o.rec].out.fetch_and(!o.bit, Ordering::AcqRel);
            debug_assert!(false, "round {addr:#x} was already handed out");
            return false;
        }
        true
    }

    /// For an integer that `free` did not find in a slab of the size given: if it is a handed
    /// out object of a slab of another quantum-cached size `(1..=ncaches) * quantum`, the error
    /// a plain arena reports (`WrongSize` with the allocated size). Error path only.
    pub fn classify(&self, addr: usize, size: usize, ncaches: usize) -> Option<VmemError> {
        (1..=ncaches).find_map(|k| {
            let s = k << self.quantum_shift;
            let o = self.locate(addr, s).ok()??;
            let out = self.recs[o.rec].out.load(Ordering::Acquire) & o.bit != 0;
            (s != size && out).then_some(VmemError::WrongSize {
                addr,
                size,
                allocated: s,
            })
        })
    }

    /// Slow path (arena lock): records a new slab at `base` of objects of `size`, all at home.
    /// `false` if the table is full.
    pub fn insert(&self, base: usize, size: usize) -> bool {
        debug_assert!(self.find(base).is_none());
        let h = self.hash(base);
        for i in 0..MAX_SLABS {
            let rec = &self.recs[(h + i) & (MAX_SLABS - 1)];
            let b = rec.base.load(Ordering::Relaxed);
            if b == EMPTY || b == TOMB {
                rec.size.store(size, Ordering::Relaxed);
                rec.out.store(0, Ordering::Relaxed);
                rec.home.store(u64::MAX, Ordering::Relaxed);
                rec.base.store(base, Ordering::Release);
                return true;
            }
        }
        false
    }

    /// Slow path (arena lock): takes up to `out.len()` objects of `size` from home into `out`
    /// (a magazine's spare room); returns how many.
    pub fn take_home(&self, size: usize, out: &mut [usize]) -> usize {
        let mut n = 0;
        for rec in &self.recs {
            if n == out.len() {
                break;
            }
            let base = rec.base.load(Ordering::Relaxed);
            if base >= TOMB || rec.size.load(Ordering::Relaxed) != size {
                continue;
            }
            let mut home = rec.home.load(Ordering::Relaxed);
            while home != 0 && n < out.len() {
                let i = home.trailing_zeros() as usize;
                home &= home - 1;
                out[n] = base + i * size;
                n += 1;
            }
            rec.home.store(home, Ordering::Relaxed);
        }
        n
    }

    /// Slow path (arena lock): puts a free round of `size` back home (flush, or a free that
    /// found no magazine room). `false` if it is not a free slab object (nothing changed).
    pub fn put_home(&self, addr: usize, size: usize) -> bool {
        let Ok(Some(o)) = self.locate(addr, size) else {
            return false;
        };
        let rec = &self.recs[o.rec];
        let (out, home) = (
            rec.out.load(Ordering::Acquire),
            rec.home.load(Ordering::Relaxed),
        );
        if (out | home) & o.bit != 0 {
            return false;
        }
        rec.home.store(home | o.bit, Ordering::Relaxed);
        true
    }

    /// Slow path (arena lock): removes every slab whose objects are all at home and gives its
    /// `(base, size * SLAB_OBJS)` to `f` (to free in the arena).
    pub fn remove_idle(&self, mut f: impl FnMut(usize, usize)) {
        for rec in &self.recs {
            let base = rec.base.load(Ordering::Relaxed);
            if base >= TOMB || rec.home.load(Ordering::Relaxed) != u64::MAX {
                continue;
            }
            rec.base.store(TOMB, Ordering::Release);
            f(base, rec.size.load(Ordering::Relaxed) * SLAB_OBJS);
        }
    }

    /// Objects handed out, and their bytes (the live count `destroy` decides on).
    pub fn live(&self) -> (usize, usize) {
        self.recs.iter().fold((0, 0), |(n, b), rec| {
            if rec.base.load(Ordering::Relaxed) >= TOMB {
                return (n, b);
            }
            let k = rec.out.load(Ordering::Acquire).count_ones() as usize;
            (n + k, b + k * rec.size.load(Ordering::Relaxed))
        })
    }

    /// Live slabs, and their bytes.
    pub fn slabs(&self) -> (usize, usize) {
        self.recs.iter().fold((0, 0), |(n, b), rec| {
            if rec.base.load(Ordering::Relaxed) >= TOMB {
                return (n, b);
            }
            (n + 1, b + rec.size.load(Ordering::Relaxed) * SLAB_OBJS)
        })
    }
}
