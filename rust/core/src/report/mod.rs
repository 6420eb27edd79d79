// SPDX-License-Identifier: GPL-2.0

//! Text reports of the allocators (the kernel module's debugfs files) and the parsing of values
//! written to them.
//!
//! Every report is a header line followed by one row per item, columns separated by single
//! spaces, so that `tools/kmstat` and `awk` can read them. The columns are a stable interface,
//! documented in `Documentation/linux.rst`; add columns only at the end of a row. Values are
//! decimal integers, or `-` when there is none (no limit, no size classes). Addresses are never
//! printed: the reports only contain counters.
//!
//! Parsing is strict: a value written to a debugfs file is a decimal integer, optionally followed
//! by one newline (what `echo` writes). Anything else — an empty string, a sign, spaces, other
//! characters, a value that does not fit a `usize` — is a [`ParseError`], and the caller changes
//! nothing.

use core::fmt::{self, Write};

use crate::malloc::{BucketStats, ClassTable, LargeStats, SizeClasses, TypeStats, LARGE_SIZE_BIT};
use crate::vmem::Stats;

/// Header of the `types` report (the columns of 4.4BSD `vmstat -m`).
pub const TYPES_HEADER: &str = "Type InUse MemUse HighUse Limit Requests TypeLimit KernLimit Sizes";

/// Header of the `buckets` report: one row per size class. `Pieces` and `ClusterPages` describe
/// the class's clusters, `Classes` names the size-class mode (`pow2` or `fine`, the same on
/// every row).
pub const BUCKETS_HEADER: &str =
    "Size InUse Free Requests HighWater Freed Pieces ClusterPages Classes";

/// Header of the `arenas` report.
pub const ARENAS_HEADER: &str =
    "Arena Quantum InUse Imported Total Allocs Frees Imports Releases Waits Fails TagPages";

/// Header of the `totals` report.
pub const TOTALS_HEADER: &str = "Name Value";

/// Why a written value was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing but (at most) a newline.
    Empty,
    /// A character other than a decimal digit (this includes a sign and spaces).
    NotANumber,
    /// The value does not fit.
    Overflow,
}

/// Longest type or arena name (bytes): a debugfs file name and a report column.
pub const NAME_MAX: usize = 31;

/// Longest type description (bytes).
pub const DESCRIPTION_MAX: usize = 63;

/// Whether `name` can name a type or an arena: 1..=[`NAME_MAX`] printable ASCII characters other
/// than space and `/`, and not `.` or `..` (it becomes a debugfs file name, which those two
/// would make a directory, and one whitespace-free report column).
pub fn valid_name(name: &[u8]) -> bool {
    (1..=NAME_MAX).contains(&name.len())
        && name.iter().all(|&c| c.is_ascii_graphic() && c != b'/')
        && name != b"."
        && name != b".."
}

/// Whether `desc` can describe a type: at most [`DESCRIPTION_MAX`] printable ASCII characters
/// (spaces allowed).
pub fn valid_description(desc: &[u8]) -> bool {
    desc.len() <= DESCRIPTION_MAX && desc.iter().all(|&c| c == b' ' || c.is_ascii_graphic())
}

/// Strips one trailing newline.
fn trim_newline(input: &[u8]) -> &[u8] {
    match input {
        [rest @ .., b'\n'] => rest,
        _ => input,
    }
}

/// Parses a decimal `usize` written to a debugfs file (see the module documentation).
pub fn parse_usize(input: &[u8]) -> Result<usize, ParseError> {
    let digits = trim_newline(input);
    if digits.is_empty() {
        return Err(ParseError::Empty);
    }
    let mut value: usize = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return Err(ParseError::NotANumber);
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(usize::from(c - b'0')))
            .ok_or(ParseError::Overflow)?;
    }
    Ok(value)
}

/// Parses a type limit in bytes: a decimal integer, 0 meaning "no limit" (as in the C ABI's
/// `struct kmalloc43_type`). Returns the limit the malloc core expects (`usize::MAX`: none).
pub fn parse_limit(input: &[u8]) -> Result<usize, ParseError> {
    match parse_usize(input)? {
        0 => Ok(usize::MAX),
        n => Ok(n),
    }
}

/// The value a limit file shows for a core limit: the inverse of [`parse_limit`].
pub fn limit_value(limit: usize) -> usize {
    if limit == usize::MAX {
        0
    } else {
        limit
    }
}

/// Parses an on/off switch: `0` or `1`.
pub fn parse_switch(input: &[u8]) -> Result<bool, ParseError> {
    match parse_usize(input)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(ParseError::NotANumber),
    }
}

/// Writes `value`, or `-` for `None`.
fn opt(w: &mut impl Write, value: Option<usize>) -> fmt::Result {
    match value {
        Some(v) => write!(w, "{v}"),
        None => w.write_str("-"),
    }
}

/// Writes the `Sizes` column: the class sizes (of `classes`) a type used, comma-separated, then
/// `large` if it made page-run allocations; `-` if none.
pub fn write_sizes(w: &mut impl Write, sizemask: u64, classes: &ClassTable) -> fmt::Result {
    let mut first = true;
    for bit in 0..u64::BITS {
        if sizemask & (1 << bit) == 0 {
            continue;
        }
        if !first {
            w.write_char(',')?;
        }
        first = false;
        if bit == LARGE_SIZE_BIT {
            w.write_str("large")?;
        } else if (bit as usize) < classes.count() {
            write!(w, "{}", classes.size(bit as usize))?;
        } else {
            w.write_char('?')?;
        }
    }
    if first {
        w.write_str("-")?;
    }
    Ok(())
}

/// Writes one row of the `types` report (sizes from `classes`).
pub fn write_type_row(w: &mut impl Write, st: &TypeStats, classes: &ClassTable) -> fmt::Result {
    let limit = (st.limit != usize::MAX).then_some(st.limit);
    write!(w, "{} {} {} {} ", st.name, st.inuse, st.memuse, st.maxused)?;
    opt(w, limit)?;
    write!(w, " {} {} {} ", st.calls, st.limblocks, st.mapblocks)?;
    write_sizes(w, st.sizemask, classes)?;
    w.write_char('\n')
}

/// Writes the row of class `index` of `classes` to the `buckets` report.
pub fn write_bucket_row(
    w: &mut impl Write,
    b: &BucketStats,
    classes: &ClassTable,
    index: usize,
) -> fmt::Result {
    writeln!(
        w,
        "{} {} {} {} {} {} {} {} {}",
        b.size,
        b.total - b.totalfree.min(b.total),
        b.totalfree,
        b.calls,
        b.highwat,
        b.freed,
        classes.pieces(index),
        classes.cluster_pages(index),
        classes.mode().name()
    )
}

/// Writes the `large` row of the `buckets` report (page runs: InUse counts runs, Free and
/// HighWater do not apply, Freed is not tracked, the cluster columns do not apply).
pub fn write_large_row(w: &mut impl Write, l: &LargeStats, mode: SizeClasses) -> fmt::Result {
    writeln!(w, "large {} - {} - - - - {}", l.inuse, l.calls, mode.name())
}

/// Writes one row of the `arenas` report.
pub fn write_arena_row(
    w: &mut impl Write,
    name: &str,
    quantum: usize,
    s: &Stats,
    tag_pages: usize,
) -> fmt::Result {
    writeln!(
        w,
        "{} {} {} {} {} {} {} {} {} {} {} {}",
        name,
        quantum,
        s.mem_inuse,
        s.mem_import,
        s.mem_total,
        s.alloc,
        s.free,
        s.import,
        s.release,
        s.wait,
        s.fail,
        tag_pages
    )
}

/// Whole-module totals for the `totals` report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Pages taken from the kernel's page allocator since load.
    pub pages_taken: usize,
    /// Pages given back to it.
    pub pages_given: usize,
    /// log2 of the pages of one import chunk.
    pub chunk_order: u32,
    /// Pages malloc holds for data (bucket clusters and large runs): the memory it manages.
    pub data_pages: usize,
    /// Pages of malloc's page map (the per-page usage records).
    pub bookkeeping_pages: usize,
    /// Pages of malloc's DIAGNOSTIC side table.
    pub diag_pages: usize,
    /// Pages of vmem boundary tags and hash tables of the module's own arenas.
    pub tag_pages: usize,
    /// Bytes in the page-level arena's spans (pages imported from the page allocator).
    pub arena_bytes: usize,
    /// Calls rejected with an error (bad pointers, double frees, bad arguments).
    pub errors: usize,
    /// Free-list links found overwritten (a client's use after free) and cut, all buckets.
    pub bad_links: u64,
    /// Free pieces cut off their lists with those links (never handed out again).
    pub lost_pieces: usize,
    /// The shrinker's `count_objects` calls (memory pressure asked what could be given back).
    pub shrinker_counts: usize,
    /// The shrinker's `scan_objects` calls.
    pub shrinker_scans: usize,
    /// Pages the shrinker gave back to the page allocator.
    pub shrinker_pages_freed: usize,
    /// Spans that client arenas disowned at their owner's unload gave up without a release
    /// function to give them to (the dead module's resources, kept).
    pub disowned_spans: usize,
}

impl Totals {
    /// Bookkeeping bytes (page map) per MiB of managed data, rounded up; `None` when malloc
    /// manages nothing.
    pub fn bookkeeping_per_mib(&self, page_size: usize) -> Option<usize> {
        if self.data_pages == 0 {
            return None;
        }
        let bytes = self.bookkeeping_pages.checked_mul(page_size)?;
        let managed = self.data_pages.checked_mul(page_size)?;
        bytes
            .checked_mul(1 << 20)?
            .checked_add(managed - 1)
            .map(|v| v / managed)
    }
}

/// Writes the `totals` report (header and rows).
pub fn write_totals(w: &mut impl Write, t: &Totals, page_size: usize) -> fmt::Result {
    writeln!(w, "{TOTALS_HEADER}")?;
    writeln!(w, "pages_taken {}", t.pages_taken)?;
    writeln!(w, "pages_given {}", t.pages_given)?;
    writeln!(
        w,
        "pages_held {}",
        t.pages_taken.saturating_sub(t.pages_given)
    )?;
    writeln!(w, "chunk_order {}", t.chunk_order)?;
    writeln!(w, "arena_bytes {}", t.arena_bytes)?;
    writeln!(w, "data_pages {}", t.data_pages)?;
    writeln!(w, "bookkeeping_pages {}", t.bookkeeping_pages)?;
    writeln!(w, "diag_pages {}", t.diag_pages)?;
    writeln!(w, "tag_pages {}", t.tag_pages)?;
    writeln!(w, "errors {}", t.errors)?;
    writeln!(w, "shrinker_counts {}", t.shrinker_counts)?;
    writeln!(w, "shrinker_scans {}", t.shrinker_scans)?;
    writeln!(w, "shrinker_pages_freed {}", t.shrinker_pages_freed)?;
    writeln!(w, "bad_links {}", t.bad_links)?;
    writeln!(w, "lost_pieces {}", t.lost_pieces)?;
    writeln!(w, "disowned_spans {}", t.disowned_spans)?;
    w.write_str("bookkeeping_bytes_per_mib ")?;
    opt(w, t.bookkeeping_per_mib(page_size))?;
    w.write_char('\n')
}

#[cfg(test)]
mod tests;
