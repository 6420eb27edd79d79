// SPDX-License-Identifier: GPL-2.0

//! [`Constraints`] of [`Arena::xalloc`](super::Arena::xalloc).

/// Where a constrained allocation may lie, built from [`Constraints::new`] (no constraint)
/// by chaining setters:
///
/// ```ignore
/// // 8 KiB, 4 KiB aligned, not crossing a 64 KiB boundary, below 16 MiB.
/// let c = Constraints::new().align(4096).nocross(65536).max_addr(16 << 20);
/// let addr = arena.xalloc(8192, &c, VmFlags::NOSLEEP)?;
/// ```
///
/// kmalloc43 checks consistency (powers of two, phase below alignment, a size that fits the
/// boundary, `min_addr < max_addr`) and answers `EINVAL` otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Constraints {
    pub(crate) align: usize,
    pub(crate) phase: usize,
    pub(crate) nocross: usize,
    pub(crate) min_addr: usize,
    pub(crate) max_addr: usize,
}

impl Constraints {
    /// No constraint at all.
    pub const fn new() -> Self {
        Self {
            align: 0,
            phase: 0,
            nocross: 0,
            min_addr: 0,
            max_addr: 0,
        }
    }

    /// The start must be a multiple of `align` (a power of two; 0 = the quantum) plus the phase.
    pub const fn align(mut self, align: usize) -> Self {
        self.align = align;
        self
    }

    /// The offset from an `align` boundary at which the segment must start.
    pub const fn phase(mut self, phase: usize) -> Self {
        self.phase = phase;
        self
    }

    /// The segment must not cross a multiple of `nocross` (a power of two; 0 = no limit).
    pub const fn nocross(mut self, nocross: usize) -> Self {
        self.nocross = nocross;
        self
    }

    /// The segment must start at or above `min`.
    pub const fn min_addr(mut self, min: usize) -> Self {
        self.min_addr = min;
        self
    }

    /// The segment must end at or below `max` (exclusive bound; 0 = no upper bound).
    pub const fn max_addr(mut self, max: usize) -> Self {
        self.max_addr = max;
        self
    }
}
