// SPDX-License-Identifier: GPL-2.0

//! Allocation flags, after FreeBSD's `M_WAITOK`, `M_NOWAIT` and `M_ZERO`.

use core::ops::BitOr;

/// Flags of one `malloc`/`realloc` call: exactly one of [`WAITOK`](Self::WAITOK) and
/// [`NOWAIT`](Self::NOWAIT), optionally with [`ZERO`](Self::ZERO).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MallocFlags(u32);

impl MallocFlags {
    /// The caller may sleep: at a type limit or with kmem exhausted the core answers
    /// [`MallocError::WouldBlock`](super::MallocError::WouldBlock) and the caller's wrapper sleeps
    /// and retries.
    pub const WAITOK: Self = Self(1);
    /// The caller cannot sleep: any shortage fails at once.
    pub const NOWAIT: Self = Self(2);
    /// Zero the memory handed out.
    pub const ZERO: Self = Self(4);

    const ALL: u32 = 7;

    /// The raw bits (for a C ABI).
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Flags from raw bits; unknown bits are kept so that validation can reject them.
    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the flags are valid: no unknown bit and exactly one of WAITOK and NOWAIT.
    pub const fn is_valid(self) -> bool {
        self.0 & !Self::ALL == 0 && (self.contains(Self::WAITOK) != self.contains(Self::NOWAIT))
    }
}

impl BitOr for MallocFlags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}
