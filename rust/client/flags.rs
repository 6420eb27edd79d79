// SPDX-License-Identifier: GPL-2.0

//! Allocation flags of [`MallocType::alloc`](super::MallocType)-style calls, after FreeBSD's
//! `M_WAITOK`, `M_NOWAIT` and `M_ZERO`.

use core::ops::BitOr;

use super::ffi;

/// Flags of one allocation: exactly one of [`WAITOK`](Self::WAITOK) and [`NOWAIT`](Self::NOWAIT),
/// optionally with [`ZERO`](Self::ZERO). kmalloc43 rejects any other combination.
///
/// ```ignore
/// let flags = Flags::NOWAIT | Flags::ZERO;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flags(u32);

impl Flags {
    /// May sleep: at a type limit (or with memory short) the call waits until a free of that type
    /// (or a raised limit) lets it proceed. Process context only, no spinlocks held.
    pub const WAITOK: Self = Self(ffi::KM43_WAITOK);
    /// Never sleeps: any shortage, including the type's limit, fails at once with `ENOMEM`.
    /// Usable in atomic context.
    pub const NOWAIT: Self = Self(ffi::KM43_NOWAIT);
    /// Zero the memory handed out.
    pub const ZERO: Self = Self(ffi::KM43_ZERO);

    /// The `KM43_*` bits, as the C functions take them.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` without the bits of `other`.
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

impl BitOr for Flags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}
