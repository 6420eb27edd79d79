// SPDX-License-Identifier: GPL-2.0

//! Errors returned by the vmem core.
//!
//! Every misuse and every shortage is reported as a [`VmemError`]; the core never panics on
//! caller-supplied values and never signals failure by returning address 0 (0 is a valid integer
//! in an identifier arena).

use super::source::ImportRequest;

/// Why an `xalloc` constraint set was rejected (see [`super::Constraints`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConstraintError {
    /// `align` is neither 0 nor a power of two.
    AlignNotPowerOfTwo,
    /// `phase` is not smaller than the (effective) alignment.
    PhaseNotBelowAlign,
    /// `phase` is not a multiple of the quantum.
    PhaseNotQuantum,
    /// `nocross` is neither 0 nor a power of two.
    NocrossNotPowerOfTwo,
    /// `nocross` is smaller than the (rounded) size, so nothing could ever fit.
    NocrossBelowSize,
    /// `phase` (modulo `nocross`) plus the size crosses a `nocross` boundary at every
    /// candidate address, so nothing could ever fit.
    PhaseCrossesNocross,
    /// `minaddr` is not below `maxaddr`.
    EmptyRange,
}

/// The error type of every fallible vmem operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmemError {
    /// No free segment satisfies the request and the arena has no source to import from
    /// (or the source is exhausted). A sleeping caller may wait for a free or an add.
    NoSpace,
    /// No free segment satisfies the request, but the arena has a source: importing a span
    /// described by the request would help. The caller imports (outside this arena's lock),
    /// hands the span in with [`super::Arena::add_imported`] and retries.
    ImportNeeded(ImportRequest),
    /// A size of 0, or a size that overflows when rounded up to the quantum.
    BadSize,
    /// The constraints of an `xalloc` are inconsistent.
    BadConstraint(ConstraintError),
    /// `free`/`xfree` of an integer that was never allocated from this arena.
    BadFree {
        /// The address passed to free.
        addr: usize,
        /// The size passed to free.
        size: usize,
    },
    /// `free`/`xfree` with a size different from the allocated size.
    WrongSize {
        /// The address passed to free.
        addr: usize,
        /// The size passed to free (rounded to the quantum).
        size: usize,
        /// The size that was allocated at `addr`.
        allocated: usize,
    },
    /// `free`/`xfree` of an integer that is already free (or sits in a quantum cache).
    DoubleFree {
        /// The address passed to free.
        addr: usize,
    },
    /// `add` of a span that overlaps an existing span, is not quantum-aligned, or wraps around.
    Overlap {
        /// Base of the rejected span.
        base: usize,
        /// Size of the rejected span.
        size: usize,
    },
    /// A span that is not aligned to the quantum, empty, or reaches past `usize::MAX`.
    BadSpan {
        /// Base of the rejected span.
        base: usize,
        /// Size of the rejected span.
        size: usize,
    },
    /// The tag page source could not supply a page for boundary tags or the hash table.
    NoTags,
    /// The arena configuration is invalid (quantum not a power of two, `qcache_max` too big…).
    BadConfig,
    /// `destroy` found integers still allocated; nothing was torn down.
    LiveSegments {
        /// Number of allocated segments.
        count: usize,
        /// Total size of allocated segments.
        bytes: usize,
    },
}
