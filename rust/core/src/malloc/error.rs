// SPDX-License-Identifier: GPL-2.0

//! Errors of the malloc core. Every bad input is an error, never a panic: the allocator is left
//! consistent and [`Malloc::audit`](super::Malloc::audit) still passes afterwards.

use super::MallocType;

/// Why a `WAITOK` allocation cannot proceed now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockReason {
    /// The type is at its limit: sleep until memory of this type is freed or the limit is raised.
    Limit,
    /// The kmem arena (or the metadata page supply) is exhausted: sleep until memory is freed or
    /// the arena grows.
    Arena,
}

/// An error of the malloc core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MallocError {
    /// The flags are not exactly one of WAITOK/NOWAIT, or carry unknown bits.
    BadFlags {
        /// The raw flag bits.
        bits: u32,
    },
    /// A request of zero bytes (see the module documentation for why this is an error).
    ZeroSize,
    /// A request larger than [`MAX_ALLOC_SIZE`](super::MAX_ALLOC_SIZE).
    TooLarge {
        /// The requested size.
        size: usize,
    },
    /// The type handle is not (or no longer) defined.
    UnknownType,
    /// All [`MAX_TYPES`](super::MAX_TYPES) type slots are in use.
    TypeTableFull,
    /// The type still has live allocations and cannot be undefined.
    TypeInUse {
        /// The type.
        ty: MallocType,
        /// Its live allocations.
        inuse: usize,
    },
    /// A `NOWAIT` allocation would take the type over its limit, or the request alone is bigger
    /// than the limit (waiting could never help).
    Limit {
        /// The type.
        ty: MallocType,
        /// Bytes the request would charge.
        charge: usize,
    },
    /// A `WAITOK` allocation must wait; the caller sleeps and retries.
    WouldBlock {
        /// The type.
        ty: MallocType,
        /// What to wait for.
        reason: BlockReason,
    },
    /// A `NOWAIT` allocation found the kmem arena or the metadata page supply exhausted.
    NoMemory {
        /// The type.
        ty: MallocType,
        /// The requested size.
        size: usize,
    },
    /// The address does not lie in memory this allocator handed out.
    ForeignPointer {
        /// The address.
        addr: usize,
    },
    /// The address lies inside an allocation but is not its start.
    InteriorPointer {
        /// The address.
        addr: usize,
        /// The start of the piece or page run it lies in.
        start: usize,
    },
    /// The piece is already free.
    DoubleFree {
        /// The address.
        addr: usize,
        /// The type that freed it last, when DIAGNOSTIC knows it.
        ty: Option<MallocType>,
    },
    /// The allocation belongs to another type than the one given.
    WrongType {
        /// The address.
        addr: usize,
        /// The type given by the caller.
        given: MallocType,
        /// The owning type, when DIAGNOSTIC knows it.
        owner: Option<MallocType>,
    },
    /// The piece is free (usable_size or realloc of memory that is not allocated).
    NotAllocated {
        /// The address.
        addr: usize,
    },
    /// Switching DIAGNOSTIC on needs metadata pages that the supply could not give.
    NoMetadata,
    /// DIAGNOSTIC: a free piece was written to after it was freed. The piece was repaired and
    /// stays free; retrying the allocation succeeds.
    ModifiedAfterFree {
        /// The piece.
        addr: usize,
        /// Offset of the first modified byte.
        offset: usize,
        /// The type that freed it, if known.
        ty: Option<MallocType>,
    },
}

impl MallocError {
    /// The answer to a charge of `charge` bytes of `ty` that its limit `limit` refuses (the
    /// paper's `limblocks` case): [`MallocError::Limit`] for a `NOWAIT` call or a charge above
    /// the limit itself (waiting could never help), else `WouldBlock { Limit }` (a `WAITOK` call
    /// sleeps until a free or a limit change).
    pub fn at_limit(
        ty: MallocType,
        charge: usize,
        limit: usize,
        flags: super::MallocFlags,
    ) -> Self {
        if charge > limit || flags.contains(super::MallocFlags::NOWAIT) {
            MallocError::Limit { ty, charge }
        } else {
            MallocError::WouldBlock {
                ty,
                reason: BlockReason::Limit,
            }
        }
    }

    /// This error as the answer to a request of `size` bytes: a [`MallocError::NoMemory`] from
    /// a layer that knew only the class or charge (the magazine and piece layers' fills) names
    /// the requested size, as the core's own answer does; every other error is unchanged.
    pub fn for_request(self, size: usize) -> Self {
        match self {
            MallocError::NoMemory { ty, .. } => MallocError::NoMemory { ty, size },
            e => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_request_names_the_requested_size_in_no_memory_only() {
        let ty = MallocType::from_raw(3);
        assert_eq!(
            MallocError::NoMemory { ty, size: 128 }.for_request(100),
            MallocError::NoMemory { ty, size: 100 }
        );
        let limit = MallocError::Limit { ty, charge: 128 };
        assert_eq!(limit.for_request(100), limit);
        let wait = MallocError::WouldBlock {
            ty,
            reason: BlockReason::Arena,
        };
        assert_eq!(wait.for_request(100), wait);
    }
}
