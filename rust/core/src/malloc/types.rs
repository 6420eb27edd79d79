// SPDX-License-Identifier: GPL-2.0

//! Client-defined malloc types (FreeBSD's `MALLOC_DEFINE`) with per-type statistics and limits.
//!
//! The core keeps the types in a fixed table of [`MAX_TYPES`] slots and hands out small `Copy`
//! handles (slot index + generation). A client module keeps the handle in its own static (the
//! kernel glue's define macro stores [`MallocType::to_raw`] in an atomic), so the core never
//! dereferences client memory, needs no heap and no unsafe for types, and a handle used after
//! its type was undefined is detected by the generation instead of touching freed statics.

use super::error::MallocError;
use super::params::MAX_TYPES;

/// Handle of a defined type: its slot index (low 16 bits) and the slot's generation (high 16
/// bits), kept packed as the client's raw handle, so that the fast paths convert for free.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MallocType(u32);

impl MallocType {
    const fn new(index: usize, generation: u16) -> Self {
        Self(((generation as u32) << 16) | index as u16 as u32)
    }

    /// Slot index of the type (stable while it is defined).
    #[inline(always)]
    pub const fn index(self) -> usize {
        (self.0 & 0xffff) as usize
    }

    const fn generation(self) -> u16 {
        (self.0 >> 16) as u16
    }

    /// The handle packed into 32 bits, for a client's static.
    #[inline(always)]
    pub const fn to_raw(self) -> u32 {
        self.0
    }

    /// A handle from [`to_raw`](Self::to_raw) bits. Any bits are accepted: a stale or forged handle
    /// is rejected by the allocator with [`MallocError::UnknownType`].
    #[inline(always)]
    pub const fn from_raw(raw: u32) -> Self {
        Self(raw)
    }
}

impl core::fmt::Debug for MallocType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MallocType")
            .field("index", &self.index())
            .field("generation", &self.generation())
            .finish()
    }
}

/// Statistics of one type (the paper's `kmemstats`, as `vmstat -m` shows them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeStats {
    /// Short name.
    pub name: &'static str,
    /// Description.
    pub description: &'static str,
    /// Limit on `memuse` in bytes.
    pub limit: usize,
    /// Live allocations.
    pub inuse: usize,
    /// Successful allocations ever.
    pub calls: u64,
    /// Bytes in use (bucket size or whole pages per allocation).
    pub memuse: usize,
    /// High water of `memuse`.
    pub maxused: usize,
    /// Allocations refused at the limit (WAITOK would-block and NOWAIT failures).
    pub limblocks: u64,
    /// Allocations that found the kmem arena or metadata supply exhausted.
    pub mapblocks: u64,
    /// Bit `i` set if class `i` was used; bit [`LARGE_SIZE_BIT`] for large allocations.
    pub sizemask: u64,
}

impl TypeStats {
    /// A newly defined type's statistics: `name`, `description` and `limit`, every counter 0.
    pub const fn new(name: &'static str, description: &'static str, limit: usize) -> Self {
        Self {
            name,
            description,
            limit,
            inuse: 0,
            calls: 0,
            memuse: 0,
            maxused: 0,
            limblocks: 0,
            mapblocks: 0,
            sizemask: 0,
        }
    }

    /// Takes back, in the base statistics, a charge of `charge` bytes whose allocation then
    /// failed, and restores the high water to `high`, what it was just before the charge: a
    /// charge that never became an allocation leaves no high water that no allocation reached.
    ///
    /// The one rule of every take-back in the base (the core's own accounts, the interrupt
    /// fall-back's). Sound only if the caller's lock was held from the charge to here: nothing
    /// else moved the high water meanwhile, and no credit was granted against the raised one
    /// (`magazine::ledger`: `C == 0 or R <= min(limit, HighUse)` holds with `high` as it did
    /// before the charge). A per-CPU charge taken back after the heap lock was dropped keeps
    /// its high water (`LocalLedger::undo_charge`).
    pub fn take_back(&mut self, charge: usize, high: usize) {
        debug_assert!(high <= self.maxused, "the high water before the charge");
        self.memuse -= charge;
        self.inuse -= 1;
        self.calls -= 1;
        self.maxused = high;
    }
}

/// Bit of [`TypeStats::sizemask`] recording large (page-run) allocations.
pub const LARGE_SIZE_BIT: u32 = 63;

const _: () = assert!(super::classes::MAX_CLASSES <= LARGE_SIZE_BIT as usize);

/// One slot of the type table.
#[derive(Clone, Copy)]
struct Slot {
    generation: u16,
    stats: Option<TypeStats>,
}

/// The fixed table of types.
pub(super) struct TypeTable {
    slots: [Slot; MAX_TYPES],
    defined: usize,
}

impl TypeTable {
    pub(super) const fn new() -> Self {
        Self {
            slots: [Slot {
                generation: 0,
                stats: None,
            }; MAX_TYPES],
            defined: 0,
        }
    }

    pub(super) fn define(
        &mut self,
        name: &'static str,
        description: &'static str,
        limit: usize,
    ) -> Result<MallocType, MallocError> {
        let index = self
            .slots
            .iter()
            .position(|s| s.stats.is_none())
            .ok_or(MallocError::TypeTableFull)?;
        let slot = &mut self.slots[index];
        slot.stats = Some(TypeStats::new(name, description, limit));
        self.defined += 1;
        Ok(MallocType::new(index, slot.generation))
    }

    pub(super) fn undefine(&mut self, ty: MallocType) -> Result<TypeStats, MallocError> {
        let stats = *self.get(ty)?;
        if stats.inuse != 0 {
            return Err(MallocError::TypeInUse {
                ty,
                inuse: stats.inuse,
            });
        }
        let slot = &mut self.slots[ty.index()];
        slot.stats = None;
        slot.generation = slot.generation.wrapping_add(1);
        self.defined -= 1;
        Ok(stats)
    }

    pub(super) fn get(&self, ty: MallocType) -> Result<&TypeStats, MallocError> {
        match self.slots.get(ty.index()) {
            Some(Slot {
                generation,
                stats: Some(s),
            }) if *generation == ty.generation() => Ok(s),
            _ => Err(MallocError::UnknownType),
        }
    }

    pub(super) fn get_mut(&mut self, ty: MallocType) -> Result<&mut TypeStats, MallocError> {
        match self.slots.get_mut(ty.index()) {
            Some(Slot {
                generation,
                stats: Some(s),
            }) if *generation == ty.generation() => Ok(s),
            _ => Err(MallocError::UnknownType),
        }
    }

    /// The current handle of slot `index`, if defined (to name the owner in DIAGNOSTIC errors).
    pub(super) fn handle(&self, index: usize) -> Option<MallocType> {
        let s = self.slots.get(index)?;
        s.stats.map(|_| MallocType::new(index, s.generation))
    }

    /// Every defined type with its handle.
    pub(super) fn iter(&self) -> impl Iterator<Item = (MallocType, &TypeStats)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.stats
                .as_ref()
                .map(|st| (MallocType::new(i, s.generation), st))
        })
    }
}
