// SPDX-License-Identifier: GPL-2.0

use super::*;

/// A `fmt::Write` into a fixed buffer, as the tests need no allocation.
struct Buf {
    bytes: [u8; 512],
    len: usize,
}

impl Buf {
    fn new() -> Self {
        Self {
            bytes: [0; 512],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap()
    }
}

impl Write for Buf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        self.bytes
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[test]
fn parse_accepts_decimal_with_optional_newline() {
    assert_eq!(parse_usize(b"0"), Ok(0));
    assert_eq!(parse_usize(b"4096\n"), Ok(4096));
    assert_eq!(
        parse_usize(b"18446744073709551615"),
        Ok(usize::MAX),
        "usize::MAX itself fits"
    );
}

#[test]
fn parse_rejects_garbage_negative_and_overflow() {
    assert_eq!(parse_usize(b""), Err(ParseError::Empty));
    assert_eq!(parse_usize(b"\n"), Err(ParseError::Empty));
    assert_eq!(parse_usize(b"-1"), Err(ParseError::NotANumber));
    assert_eq!(parse_usize(b"+1"), Err(ParseError::NotANumber));
    assert_eq!(parse_usize(b" 1"), Err(ParseError::NotANumber));
    assert_eq!(parse_usize(b"1 "), Err(ParseError::NotANumber));
    assert_eq!(parse_usize(b"12abc"), Err(ParseError::NotANumber));
    assert_eq!(parse_usize(b"0x10"), Err(ParseError::NotANumber));
    assert_eq!(parse_usize(b"1\n\n"), Err(ParseError::NotANumber));
    assert_eq!(
        parse_usize(b"18446744073709551616"),
        Err(ParseError::Overflow)
    );
    assert_eq!(
        parse_usize(b"99999999999999999999999"),
        Err(ParseError::Overflow)
    );
}

#[test]
fn limit_zero_means_none_and_round_trips() {
    assert_eq!(parse_limit(b"0\n"), Ok(usize::MAX));
    assert_eq!(limit_value(usize::MAX), 0);
    for v in [1usize, 4096, 1 << 40] {
        let mut b = Buf::new();
        writeln!(b, "{}", limit_value(v)).unwrap();
        assert_eq!(parse_limit(b.as_str().as_bytes()), Ok(v));
    }
}

#[test]
fn switch_is_zero_or_one() {
    assert_eq!(parse_switch(b"1\n"), Ok(true));
    assert_eq!(parse_switch(b"0"), Ok(false));
    assert_eq!(parse_switch(b"2"), Err(ParseError::NotANumber));
    assert_eq!(parse_switch(b"on"), Err(ParseError::NotANumber));
}

fn stats(name: &'static str) -> TypeStats {
    TypeStats {
        name,
        description: "test",
        limit: usize::MAX,
        inuse: 3,
        calls: 10,
        memuse: 1072,
        maxused: 2048,
        limblocks: 1,
        mapblocks: 0,
        sizemask: 0,
    }
}

#[test]
fn type_row_has_one_field_per_header_column() {
    let mut st = stats("pathname");
    st.sizemask = (1 << 0) | (1 << 6) | (1 << LARGE_SIZE_BIT);
    let pow2 = SizeClasses::Pow2.table();
    let mut b = Buf::new();
    write_type_row(&mut b, &st, pow2).unwrap();
    assert_eq!(b.as_str(), "pathname 3 1072 2048 - 10 1 0 16,1024,large\n");
    // The same bits name the fine table's classes.
    let mut b = Buf::new();
    write_type_row(&mut b, &st, SizeClasses::Fine.table()).unwrap();
    assert_eq!(b.as_str(), "pathname 3 1072 2048 - 10 1 0 16,112,large\n");
    let columns = TYPES_HEADER.split(' ').count();
    assert_eq!(b.as_str().split_whitespace().count(), columns);

    st.limit = 8192;
    st.sizemask = 0;
    let mut b = Buf::new();
    write_type_row(&mut b, &st, pow2).unwrap();
    assert_eq!(b.as_str(), "pathname 3 1072 2048 8192 10 1 0 -\n");
}

#[test]
fn bucket_and_large_rows_match_the_header() {
    let bs = BucketStats {
        size: 64,
        calls: 100,
        total: 128,
        totalfree: 120,
        elmpercl: 64,
        highwat: 320,
        freed: 2,
        bad_links: 0,
        lost: 0,
    };
    let mut b = Buf::new();
    write_bucket_row(&mut b, &bs, SizeClasses::Pow2.table(), 2).unwrap();
    write_large_row(
        &mut b,
        &LargeStats {
            calls: 5,
            inuse: 1,
            pages: 3,
        },
        SizeClasses::Pow2,
    )
    .unwrap();
    assert_eq!(
        b.as_str(),
        "64 8 120 100 320 2 64 1 pow2\nlarge 1 - 5 - - - - pow2\n"
    );
    // A fine class of two-page clusters.
    let fine = SizeClasses::Fine.table();
    let i = fine.index(1536).unwrap();
    let mut b = Buf::new();
    write_bucket_row(&mut b, &BucketStats { size: 1536, ..bs }, fine, i).unwrap();
    assert_eq!(b.as_str(), "1536 8 120 100 320 2 5 2 fine\n");
    let columns = BUCKETS_HEADER.split(' ').count();
    for line in b.as_str().lines() {
        assert_eq!(line.split(' ').count(), columns);
    }
}

#[test]
fn arena_row_matches_the_header() {
    let s = Stats {
        mem_inuse: 8192,
        mem_import: 65536,
        mem_total: 65536,
        alloc: 4,
        free: 2,
        import: 1,
        ..Stats::default()
    };
    let mut b = Buf::new();
    write_arena_row(&mut b, "kmem", 4096, &s, 1).unwrap();
    assert_eq!(b.as_str(), "kmem 4096 8192 65536 65536 4 2 1 0 0 0 1\n");
    assert_eq!(
        b.as_str().split(' ').count(),
        ARENAS_HEADER.split(' ').count()
    );
}

#[test]
fn totals_report_bookkeeping_per_mib() {
    let t = Totals {
        pages_taken: 40,
        pages_given: 8,
        chunk_order: 4,
        data_pages: 256,
        bookkeeping_pages: 1,
        diag_pages: 0,
        tag_pages: 2,
        arena_bytes: 1 << 20,
        errors: 0,
        bad_links: 1,
        lost_pieces: 5,
        shrinker_counts: 7,
        shrinker_scans: 3,
        shrinker_pages_freed: 96,
        disowned_spans: 2,
    };
    // One 4 KiB page of records for 1 MiB of data.
    assert_eq!(t.bookkeeping_per_mib(4096), Some(4096));
    let t2 = Totals { data_pages: 0, ..t };
    assert_eq!(t2.bookkeeping_per_mib(4096), None);
    let mut b = Buf::new();
    write_totals(&mut b, &t, 4096).unwrap();
    let s = b.as_str();
    assert!(s.starts_with("Name Value\npages_taken 40\npages_given 8\npages_held 32\n"));
    assert!(s.ends_with(
        "bad_links 1\nlost_pieces 5\ndisowned_spans 2\nbookkeeping_bytes_per_mib 4096\n"
    ));
    assert!(s.contains("\nshrinker_counts 7\nshrinker_scans 3\nshrinker_pages_freed 96\n"));
    for line in s.lines() {
        assert_eq!(line.split(' ').count(), 2, "{line}");
    }
}

#[test]
fn names_are_short_printable_and_slash_free() {
    assert!(valid_name(b"pathname"));
    assert!(valid_name(b"a"));
    assert!(valid_name(&[b'x'; NAME_MAX]));
    assert!(!valid_name(&[b'x'; NAME_MAX + 1]));
    assert!(!valid_name(b""));
    assert!(!valid_name(b"two words"));
    assert!(!valid_name(b"a/b"));
    assert!(!valid_name(b"tab\there"));
    assert!(!valid_name("caf\u{e9}".as_bytes()));
    // Not debugfs file names: they would name the directory itself and its parent.
    assert!(!valid_name(b"."));
    assert!(!valid_name(b".."));
    assert!(valid_name(b"..."));
    assert!(valid_name(b".hidden"));
    assert!(valid_description(b"path name buffers"));
    assert!(valid_description(b""));
    assert!(!valid_description(b"new\nline"));
    assert!(!valid_description(&[b'd'; DESCRIPTION_MAX + 1]));
}
