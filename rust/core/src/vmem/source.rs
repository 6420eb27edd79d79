// SPDX-License-Identifier: GPL-2.0

//! Importing spans from a source arena and releasing them back.
//!
//! The core never calls its source by itself while it could hold a lock: `alloc` reports
//! [`super::VmemError::ImportNeeded`], the caller imports with its own locking and hands the span
//! in through [`super::Arena::add_imported`]; `free` returns a [`SpanRelease`] when an imported
//! span became wholly free and was removed. [`SpanSource`] packages the same dance for callers
//! that may call the source directly (host tests, arenas nested under one lock).

use super::constraints::Constraints;
use super::error::VmemError;
use super::flags::Flags;

/// What an arena needs from its source: a span of `size` integers whose base satisfies
/// `constraints` (then the pending request fits at the base of the span).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportRequest {
    /// Size of the span to import (rounded up to the import quantum when the constraints allow).
    pub size: usize,
    /// Smallest span that would still do (without rounding to the import quantum): a caller
    /// whose source cannot supply `size` may retry with this.
    pub min_size: usize,
    /// Constraints on the span's base (align, phase, nocross, min, max of the original request).
    pub constraints: Constraints,
    /// Flags of the original request (policy; sleep).
    pub flags: Flags,
}

/// An imported span that became wholly free and was removed from the arena; give it back to the
/// source it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a released span must be given back to the source"]
pub struct SpanRelease {
    /// Base of the span.
    pub base: usize,
    /// Size of the span.
    pub size: usize,
}

/// Something an arena can import spans from and release them to (usually another arena).
pub trait SpanSource {
    /// Provides a span of `req.size` integers whose base satisfies `req.constraints`.
    fn import(&mut self, req: &ImportRequest) -> Result<usize, VmemError>;
    /// Takes back a span obtained from [`SpanSource::import`].
    fn release(&mut self, span: SpanRelease);
}
