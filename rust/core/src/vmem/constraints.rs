// SPDX-License-Identifier: GPL-2.0

//! `xalloc` constraints and the placement arithmetic that honours them.

use super::error::{ConstraintError, VmemError};

/// Placement constraints of an `xalloc`, with the illumos meanings.
///
/// The allocated range `[addr, addr + size)` satisfies:
/// - `addr % align == phase` (`align == 0` means the arena quantum);
/// - it does not cross a multiple of `nocross` (`0` means no restriction);
/// - `min <= addr` and, if `max` is `Some(m)`, `addr + size <= m` (`max` is exclusive).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Constraints {
    /// Alignment, 0 or a power of two (0 = quantum; values below the quantum act as the quantum).
    pub align: usize,
    /// Offset from the alignment: `addr % align == phase`; a multiple of the quantum.
    pub phase: usize,
    /// Power-of-two boundary the range must not cross, or 0.
    pub nocross: usize,
    /// Lowest acceptable address (0 = no limit).
    pub min: usize,
    /// Exclusive upper limit of the range end (`None` = no limit).
    pub max: Option<usize>,
}

/// Constraints checked against an arena quantum and a rounded size, ready for placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Placement {
    pub(super) size: usize,
    pub(super) align: usize,
    pub(super) phase: usize,
    pub(super) nocross: usize,
    pub(super) min: usize,
    pub(super) max: Option<usize>,
    /// Only if any quantum-aligned address of a large enough segment fits (no constraint at
    /// all); `false` is always safe (it only disables the constant-time head pick).
    pub(super) trivial: bool,
}

/// Rounds `size` up to a multiple of `quantum` (a power of two); `None` on 0 or overflow.
#[inline]
pub(super) fn round_size(size: usize, quantum: usize) -> Option<usize> {
    if size == 0 {
        return None;
    }
    size.checked_add(quantum - 1).map(|s| s & !(quantum - 1))
}

impl Constraints {
    /// Whether these constraints are the trivial ones (any quantum-aligned address fits).
    pub fn is_unconstrained(&self, quantum: usize) -> bool {
        self.align <= quantum
            && self.phase == 0
            && self.nocross == 0
            && self.min == 0
            && self.max.is_none()
    }

    /// Whether these are the default constraints (none at all): a few ORs and one compare.
    #[inline]
    pub(super) fn is_default(&self) -> bool {
        (self.align | self.phase | self.nocross | self.min) == 0 && self.max.is_none()
    }

    /// Validates against `quantum` and rounds `size`; returns the placement parameters.
    #[inline]
    pub(super) fn check(&self, size: usize, quantum: usize) -> Result<Placement, VmemError> {
        let size = round_size(size, quantum).ok_or(VmemError::BadSize)?;
        if self.is_default() {
            // No constraint to validate: the common case, checked in a few compares.
            return Ok(Placement::trivial(size, quantum));
        }
        self.check_constrained(size, quantum)
    }

    /// `check` for a rounded `size` and constraints that are not all defaults.
    fn check_constrained(&self, size: usize, quantum: usize) -> Result<Placement, VmemError> {
        let bad = |e| Err(VmemError::BadConstraint(e));
        if self.align != 0 && !self.align.is_power_of_two() {
            return bad(ConstraintError::AlignNotPowerOfTwo);
        }
        let align = self.align.max(quantum);
        if self.phase >= align {
            return bad(ConstraintError::PhaseNotBelowAlign);
        }
        if self.phase & (quantum - 1) != 0 {
            return bad(ConstraintError::PhaseNotQuantum);
        }
        if self.nocross != 0 {
            if !self.nocross.is_power_of_two() {
                return bad(ConstraintError::NocrossNotPowerOfTwo);
            }
            if self.nocross < size {
                return bad(ConstraintError::NocrossBelowSize);
            }
            // Every candidate sits at `phase` modulo min(align, nocross) inside a nocross block.
            let offset = self.phase & (self.nocross - 1);
            if offset
                .checked_add(size)
                .is_none_or(|end| end > self.nocross)
            {
                return bad(ConstraintError::PhaseCrossesNocross);
            }
        }
        if let Some(max) = self.max {
            if self.min >= max {
                return bad(ConstraintError::EmptyRange);
            }
        }
        Ok(Placement {
            size,
            align,
            phase: self.phase,
            nocross: self.nocross,
            min: self.min,
            max: self.max,
            trivial: align == quantum
                && self.phase == 0
                && self.nocross == 0
                && self.min == 0
                && self.max.is_none(),
        })
    }
}

/// Smallest `a >= x` with `a % align == phase` (`align` a power of two, `phase < align`).
fn phase_up(x: usize, align: usize, phase: usize) -> Option<usize> {
    match x.checked_sub(phase) {
        None => Some(phase),
        Some(d) => d
            .checked_add(align - 1)
            .map(|v| v & !(align - 1))
            .and_then(|v| v.checked_add(phase)),
    }
}

impl Placement {
    /// The placement of an unconstrained request of (rounded) `size`.
    #[inline]
    pub(super) const fn trivial(size: usize, quantum: usize) -> Self {
        Placement {
            size,
            align: quantum,
            phase: 0,
            nocross: 0,
            min: 0,
            max: None,
            trivial: true,
        }
    }

    /// Whether any quantum-aligned address in a large enough segment satisfies these constraints.
    #[inline]
    pub(super) fn is_trivial(&self) -> bool {
        self.trivial
    }

    /// The lowest address in the free segment `[start, start + len)` where the request fits.
    pub(super) fn place(&self, start: usize, len: usize) -> Option<usize> {
        let end = start.checked_add(len)?;
        let lo = start.max(self.min);
        let hi = match self.max {
            Some(m) => end.min(m),
            None => end,
        };
        let mut addr = phase_up(lo, self.align, self.phase)?;
        if self.nocross != 0 && self.crosses(addr)? {
            let boundary = (addr | (self.nocross - 1)).checked_add(1)?;
            addr = phase_up(boundary, self.align, self.phase)?;
            if self.crosses(addr)? {
                return None;
            }
        }
        let last = addr.checked_add(self.size)?;
        (last <= hi).then_some(addr)
    }

    /// Whether `[addr, addr + size)` crosses a `nocross` boundary; `None` on overflow.
    fn crosses(&self, addr: usize) -> Option<bool> {
        let last = addr.checked_add(self.size - 1)?;
        Some((addr ^ last) & !(self.nocross - 1) != 0)
    }
}
