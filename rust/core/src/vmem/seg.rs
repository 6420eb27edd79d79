// SPDX-License-Identifier: GPL-2.0

//! Boundary tags: the external segment descriptors of an arena.
//!
//! Every span and every segment of a span (free or allocated) is described by one [`Seg`]. Tags
//! live in tag pages, never inside the managed resource (which may not even be memory), and are
//! linked by raw pointers on two lists at once:
//! - the *address list* (`anext`/`aprev`): all spans and segments in address order, each span
//!   marker immediately followed by the segments that tile it;
//! - a *kind list* (`knext`/`kprev`): a free segment is on its power-of-two freelist, an
//!   allocated segment on its hash chain (`knext` only), a span marker on the sorted span list, an
//!   unused tag on the tag pool's free list.

use core::ptr::NonNull;

/// A link to another tag (or none).
pub(super) type Link = Option<NonNull<Seg>>;

/// What a tag describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SegKind {
    /// A free segment, on a freelist.
    Free,
    /// An allocated segment, on a hash chain.
    Alloc,
    /// An allocated segment held by the quantum-cache layer (depot or magazine), on a hash chain.
    Cached,
    /// Span marker of a span added with `add`.
    Span,
    /// Span marker of a span imported from the source.
    ImportedSpan,
    /// An unused tag in the tag pool.
    Unused,
}

impl SegKind {
    /// Whether this tag is a span marker.
    pub(super) fn is_span(self) -> bool {
        matches!(self, SegKind::Span | SegKind::ImportedSpan)
    }

    /// Whether this tag is an allocated segment (held by a caller or a cache).
    pub(super) fn is_alloc(self) -> bool {
        matches!(self, SegKind::Alloc | SegKind::Cached)
    }
}

/// A boundary tag.
///
/// # Invariants
///
/// `start + size` does not overflow; links point to tags of the same arena's tag pages.
#[repr(C)]
pub(super) struct Seg {
    /// First integer of the segment or span.
    pub(super) start: usize,
    /// Number of integers.
    pub(super) size: usize,
    /// What this tag describes.
    pub(super) kind: SegKind,
    /// Next tag in address order.
    pub(super) anext: Link,
    /// Previous tag in address order.
    pub(super) aprev: Link,
    /// Next tag on the kind list.
    pub(super) knext: Link,
    /// Previous tag on the kind list (unused on hash chains).
    pub(super) kprev: Link,
}

impl Seg {
    /// One past the last integer (never overflows, see the invariants).
    pub(super) fn end(&self) -> usize {
        self.start + self.size
    }
}
