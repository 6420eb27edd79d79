// SPDX-License-Identifier: GPL-2.0

//! KUnit suites of the debugfs write paths (`debugfs.rs`, `types.rs`) (`CONFIG_KMALLOC43_KUNIT_TEST`; shared helpers in `kunit_support.rs`).

use crate::kunit_support::*;

#[kunit_tests(kmalloc43_debugfs)]
mod debugfs {
    use super::*;
    use crate::debugfs::store_diagnostic_bytes;
    use crate::types::{store_limit_at, store_limit_bytes, LIMIT_WRITE_MAX};

    #[test]
    fn limit_writes_round_trip_and_bad_ones_change_nothing() {
        let h = heap(false);
        let t = ty(&h, "dbg", 4096);
        for input in [
            &b""[..],
            b"\n",
            b"-1",
            b"abc",
            b" 5",
            b"5 ",
            b"0x10",
            b"99999999999999999999999",
        ] {
            assert_eq!(store_limit_bytes(&h, t, input), Err(EINVAL));
            assert_eq!(h.type_stats(t).map(|s| s.limit), Ok(4096)); // unchanged
        }
        store_limit_bytes(&h, t, b"12345\n").expect("good");
        let limit = h.type_stats(t).map(|s| s.limit).expect("stats");
        assert_eq!(limit, 12345);
        assert_eq!(crate::report::limit_value(limit), 12345); // shown as written
        store_limit_bytes(&h, t, b"0").expect("none");
        assert_eq!(h.type_stats(t).map(|s| s.limit), Ok(usize::MAX));
        h.undefine_type(t).expect("undefine");
        assert_eq!(store_limit_bytes(&h, t, b"1"), Err(ENOENT)); // undefined type
        audit(&h);
    }

    /// As sysfs: one whole value, at offset 0, in one write. Byte-at-a-time, non-zero offsets,
    /// long inputs (4 KiB and more) and embedded NULs change nothing.
    #[test]
    fn limit_writes_take_a_whole_value_at_offset_0_in_one_write() {
        let h = heap(false);
        let t = ty(&h, "whole", 4096);
        let limit = |h: &Heap| h.type_stats(t).map(|s| s.limit);
        // "77\n" one byte at a time on one open file: the first byte is a whole value ("7") at
        // offset 0, the rest arrive at offsets 1 and 2 and are refused.
        let mut off = 0;
        for (i, b) in b"77\n".iter().enumerate() {
            let r = store_limit_at(&h, t, off, core::slice::from_ref(b));
            if i == 0 {
                off += r.expect("first byte at offset 0") as i64;
            } else {
                assert_eq!(r, Err(EINVAL));
            }
        }
        assert_eq!(limit(&h), Ok(7));
        assert_eq!(store_limit_at(&h, t, 3000, b"1234\n"), Err(EINVAL));
        assert_eq!(store_limit_at(&h, t, -1, b"1234\n"), Err(EINVAL));
        assert_eq!(limit(&h), Ok(7));
        let mut long = KVec::new();
        for n in [LIMIT_WRITE_MAX + 1, 4096, 4097, 8192] {
            long.clear();
            long.resize(n, b'1', GFP_KERNEL).expect("buffer");
            assert_eq!(store_limit_at(&h, t, 0, &long), Err(EINVAL));
        }
        for input in [&b"12\x003"[..], b"\x00", b"12\x00", b"\x0012", b"12\n\x00"] {
            assert_eq!(store_limit_at(&h, t, 0, input), Err(EINVAL));
        }
        assert_eq!(limit(&h), Ok(7));
        assert_eq!(store_limit_at(&h, t, 0, b"77\n"), Ok(3));
        assert_eq!(limit(&h), Ok(77));
        h.undefine_type(t).expect("undefine");
        audit(&h);
    }

    #[test]
    fn diagnostic_switch_accepts_only_0_and_1() {
        let h = heap(false);
        let t = ty(&h, "sw", 0);
        let p = h.malloc(32, t, WAITOK).expect("malloc");
        for input in [&b"2"[..], b"on", b"", b"-0"] {
            assert_eq!(store_diagnostic_bytes(&h, input), Err(EINVAL));
        }
        store_diagnostic_bytes(&h, b"1\n").expect("on");
        assert!(h.with(|s| s.malloc.diagnostic()));
        audit(&h);
        h.free(p, t).expect("free after switching on");
        store_diagnostic_bytes(&h, b"0").expect("off");
        audit(&h);
    }
}
