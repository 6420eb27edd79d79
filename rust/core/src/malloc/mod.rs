// SPDX-License-Identifier: GPL-2.0

//! The 4.3BSD kernel malloc of McKusick & Karels (USENIX 1988), as a `no_std` state machine.
//!
//! * Requests up to [`MAXALLOCSAVE`] (8 KiB with 4 KiB pages) come from power-of-two buckets of
//!   16 bytes and up; a bucket refills by taking a naturally aligned cluster (one page, two for the
//!   8 KiB bucket) from the kmem arena and carving it into equal pieces, each aligned to its size.
//! * Larger requests take whole pages from the kmem arena (a vmem arena, which coalesces them on
//!   free).
//! * `free` takes no size: the size lives in a per-page usage record found from the address in
//!   O(1) through a sparse page map ([`usage`](self) module docs), so pieces carry no header.
//! * Every allocation is charged to a client-defined [`MallocType`] with statistics and a limit.
//! * Beyond 1988: wholly free clusters above a bucket's high water go back to kmem, and a
//!   DIAGNOSTIC mode poisons free pieces and tracks ownership.
//!
//! Zero-byte requests are an error ([`MallocError::ZeroSize`]). FreeBSD hands out a 16-byte
//! piece and Linux a `ZERO_SIZE_PTR` sentinel, but in a Rust API a zero-sized request is almost
//! always a bug (Rust's own allocator interfaces never pass size 0 down), a sentinel would need
//! special cases in every free, and a silent minimum piece hides the bug while charging memory.
//! The C glue may map the error to `NULL`.
//!
//! See `Documentation/malloc.rst` for the full design.

mod account;
mod allocator;
mod audit;
mod bucket;
mod chunks;
mod classes;
mod diag;
mod error;
mod flags;
mod giveback;
mod kmem;
mod listed;
mod meta;
mod owner;
mod page_code;
mod params;
mod pieces;
mod pressure;
mod raw;
mod registry;
mod segregate;
mod starts;
mod table;
mod types;
mod usage;
mod vmem_kmem;

pub use account::{Account, Own, Verdict};
pub use allocator::{Malloc, MemoryStats};
pub use audit::AuditError;
pub use bucket::{BucketStats, LargeStats, HIGHWAT_BYTES};
pub use chunks::{CHUNK_ORDER, CHUNK_PAGES};
pub use classes::{ClassTable, SizeClasses, FINE_SIZES, MAX_CLASSES, MAX_PIECES};
pub use diag::POISON;
pub use error::{BlockReason, MallocError};
pub use flags::MallocFlags;
pub use giveback::{ALLOCS_PER_GIVEBACK, WINDOW_OPS};
pub use kmem::KmemPages;
pub use owner::{
    arena_fate, ArenaFate, ArenaNote, ModuleName, Owner, ShownName, MODULE_NAME_MAX, ORPHAN_SUFFIX,
};
pub use page_code::PageCode;
pub use params::{
    MAXALLOCSAVE, MAX_ALLOC_SIZE, MAX_BUCKET_SHIFT, MAX_LARGE_PAGES, MAX_TYPES, MIN_BUCKET_SHIFT,
    PAGE_SHIFT, PAGE_SIZE,
};
pub use pieces::{
    class_charge, class_sizebit, classes_sizemask, is_bucket_class, magazine_rounds, may_be_free,
    size_class, size_class_charge, MAG_BIG_PIECE, MAG_BYTES_BIG_PIECES, MAG_BYTES_PIECES,
    MAG_BYTES_RUNS, MAG_LARGE_PAGES, NCLASSES,
};
pub use pressure::Reclaimable;
pub use registry::{
    ClientTable, Defined, Level, Note, RecordBox, Registry, RegistryError, TypeHost, TypeRecord,
};
pub use segregate::{SegregationBusy, SEGREGATE_ALL};
pub use starts::{StartTests, START_TESTS};
pub use types::{MallocType, TypeStats, LARGE_SIZE_BIT};
pub use usage::PageHint;
pub use vmem_kmem::VmemKmem;
