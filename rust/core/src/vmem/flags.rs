// SPDX-License-Identifier: GPL-2.0

//! Allocation flags: the fit policy and the sleep/no-sleep choice.

use core::ops::BitOr;

/// Flags of an allocation, combined with `|`.
///
/// Exactly one policy is used: [`Flags::BEST_FIT`] or [`Flags::NEXT_FIT`] if given, otherwise
/// instant-fit (the default, [`Flags::INSTANT_FIT`] is 0). [`Flags::SLEEP`] is ignored by the
/// core (which always reports [`super::VmemError::NoSpace`]) and honoured by sleeping wrappers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(u32);

/// The fit policy selected by a [`Flags`] value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Take the head of the smallest non-empty power-of-two freelist that is guaranteed to fit.
    InstantFit,
    /// Take the smallest free segment that fits.
    BestFit,
    /// Take the first free segment at or after the rotor (last allocation), wrapping around.
    NextFit,
}

impl Flags {
    /// Instant-fit (the default; constant time).
    pub const INSTANT_FIT: Flags = Flags(0);
    /// Best-fit: smallest fitting segment (least fragmentation).
    pub const BEST_FIT: Flags = Flags(1 << 0);
    /// Next-fit: cycle through the arena (identifiers not reused at once).
    pub const NEXT_FIT: Flags = Flags(1 << 1);
    /// Sleeping wrappers wait for space instead of failing (no effect on the core).
    pub const SLEEP: Flags = Flags(1 << 2);
    /// Explicit no-sleep (the default; documents intent at call sites).
    pub const NOSLEEP: Flags = Flags(0);
    /// Do not use the quantum caches for this allocation.
    pub const NO_QCACHE: Flags = Flags(1 << 3);

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The fit policy these flags select.
    pub const fn policy(self) -> Policy {
        if self.contains(Flags::BEST_FIT) {
            Policy::BestFit
        } else if self.contains(Flags::NEXT_FIT) {
            Policy::NextFit
        } else {
            Policy::InstantFit
        }
    }
}

impl BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}
