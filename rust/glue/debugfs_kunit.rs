// SPDX-License-Identifier: GPL-2.0

//! KUnit suites of the debugfs write paths (`debugfs.rs`, `types.rs`) (`CONFIG_KMALLOC43_KUNIT_TEST`; shared helpers in `kunit_support.rs`).

use crate::kunit_support::*;

#[kunit_tests(kmalloc43_debugfs)]
mod debugfs {
    use super::*;
    use crate::debugfs::store_diagnostic_bytes;
    use crate::types::store_limit_bytes;

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
