#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Host test of tools/kmtrace/kmtrace.py (run by make host-check).

ftrace text -> CSV on a hand-made event list whose expected CSV is written out below (NULL
dropped, free_unknown, free rows carrying the alloc's sizes, the inferred free before an
address is reused), the strict CSV reader, stats, pack (decoded back field by field), and
the bad traces.  Prints 'kmtrace-test: PASS (N cases)' or FAIL lines.
"""

import io
import os
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TOOL = os.path.join(HERE, "..", "kmtrace", "kmtrace.py")
sys.path.insert(0, os.path.dirname(TOOL))
import kmtrace  # noqa: E402  pylint: disable=wrong-import-position

FTRACE = """# tracer: nop
#
kmalloc: call_site=a+0x1/0x2 ptr=ff11000000001000 bytes_req=100 bytes_alloc=128 gfp_flags=GFP_KERNEL node=-1 accounted=false
kmem_cache_alloc: call_site=b+0x1/0x2 ptr=ff11000000002000 name=dentry bytes_req=192 bytes_alloc=192 gfp_flags=GFP_KERNEL node=-1 accounted=false
kfree: call_site=c+0x1/0x2 ptr=0000000000000000
kfree: call_site=c+0x1/0x2 ptr=0000000000000010
kfree: call_site=c+0x1/0x2 ptr=ff11000000001000
kmem_cache_free: call_site=d+0x1/0x2 ptr=ff11000000009000 name=filp
kmalloc: call_site=a+0x1/0x2 ptr=ff11000000002000 bytes_req=64 bytes_alloc=64 gfp_flags=GFP_KERNEL node=-1 accounted=false
kmalloc: call_site=a+0x1/0x2 ptr=ff11000000003000 bytes_req=5000 bytes_alloc=8192 gfp_flags=GFP_KERNEL node=-1 accounted=false
"""

CSV = """seq,op,ptr,bytes_req,bytes_alloc,cache
0,alloc,ff11000000001000,100,128,kmalloc
1,alloc,ff11000000002000,192,192,dentry
2,free,ff11000000001000,100,128,kmalloc
3,free_unknown,ff11000000009000,,,filp
4,free,ff11000000002000,192,192,dentry
5,alloc,ff11000000002000,64,64,kmalloc
6,alloc,ff11000000003000,5000,8192,kmalloc
"""

cases = []
fails = 0


def case(f):
    cases.append(f)
    return f


def run(*args, ok=True):
    p = subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, check=False)
    if (p.returncode == 0) != ok:
        raise AssertionError(f"kmtrace.py {' '.join(args)}: exit {p.returncode}: {p.stderr}")
    return p


@case
def csv_from_ftrace(tmp):
    src = os.path.join(tmp, "t.txt")
    out = os.path.join(tmp, "t.csv")
    with open(src, "w") as f:
        f.write(FTRACE)
    err = run("csv", src, out).stderr
    got = open(out).read()
    assert got == CSV, f"CSV differs:\n{got}"
    assert "2 NULL dropped, 1 free_unknown, 1 inferred frees" in err, err


@case
def csv_through_xz(tmp):
    src = os.path.join(tmp, "t.txt")
    with open(src, "w") as f:
        f.write(FTRACE)
    run("csv", src, os.path.join(tmp, "t.csv.xz"))
    rows = list(kmtrace.read_rows(os.path.join(tmp, "t.csv.xz")))
    assert len(rows) == 7 and rows[3][1] == "free_unknown", rows


@case
def stats_numbers(tmp):
    path = os.path.join(tmp, "t.csv")
    with open(path, "w") as f:
        f.write(CSV)
    s = kmtrace.trace_stats(path)
    assert s["rows"] == 7 and s["alloc"] == 4 and s["free"] == 2 and s["free_unknown"] == 1
    # live requested bytes: 100, 292, 192, 192(free_unknown), 0, 64, 5064
    assert s["peak_req"] == 5064 and s["peak_seq"] == 6, s
    assert s["le_1k"] == 3 and s["pow2"] == 1, s
    out = run("stats", path).stdout
    assert "requests <= 1 KiB:        75.0 %" in out and "exact powers of two:      25.0 %" in out, out


@case
def strict_reader(tmp):
    bad = {
        "header": CSV.replace("bytes_req", "size"),
        "seq-gap": CSV.replace("\n4,free", "\n5,free"),
        "short-ptr": CSV.replace("ff11000000003000", "3000"),
        "op": CSV.replace("6,alloc", "6,realloc"),
        "unknown-sizes": CSV.replace("3,free_unknown,ff11000000009000,,", "3,free_unknown,ff11000000009000,1,"),
    }
    for name, text in bad.items():
        path = os.path.join(tmp, f"bad-{name}.csv")
        with open(path, "w") as f:
            f.write(text)
        run("stats", path, ok=False)
        run("pack", path, os.path.join(tmp, "x.bin"), ok=False)


@case
def repairs_are_counted(tmp):
    """Pairing faults of foreign traces are repaired, counted and reported, not fatal."""
    text = (CSV.replace("2,free,ff11000000001000,100", "2,free,ff11000000001000,99")
            .replace("4,free,ff11000000002000", "4,free,ff11000000007000"))
    path = os.path.join(tmp, "t.csv")
    with open(path, "w") as f:
        f.write(text)
    err = run("pack", path, os.path.join(tmp, "t.bin")).stderr
    assert "repaired 1 free_mismatch, 1 free_not_live, 1 implicit_free" in err, err
    # dentry at ...2000 was never freed: the kmalloc alloc there frees it implicitly.
    s = kmtrace.trace_stats(path)
    assert s["free_unknown"] == 2 and s["free"] == 2 and s["alloc"] == 4, s


@case
def long_names_cut_unique(tmp):
    a = kmtrace.short_name("x" * 50, 3)
    b = kmtrace.short_name("x" * 50, 4)
    assert len(a) == 39 and a != b and a.endswith(b"~3"), (a, b)
    assert kmtrace.short_name("dentry", 1) == b"dentry"


@case
def pack_decodes_back(tmp):
    path = os.path.join(tmp, "t.csv")
    with open(path, "w") as f:
        f.write(CSV)
    out = os.path.join(tmp, "t.bin")
    run("pack", path, out)
    data = open(out, "rb").read()
    h = kmtrace.HEADER.unpack_from(data, 0)
    magic, ver, hb, ncaches, nslots, nrec, total, peak_rec, peak_req, csum, res = h
    assert (magic, ver, hb, res) == (b"KM43TRC1", 1, 64, 0), h
    assert (ncaches, nslots, nrec, total) == (2, 2, 6, 64 + 2 * 48 + 6 * 12), h
    assert (peak_rec, peak_req) == (5, 5064), h
    assert csum == kmtrace.fnv1a_body(data[64:]), h
    names = [kmtrace.CACHE.unpack_from(data, 64 + 48 * i) for i in range(2)]
    assert names[0] == (b"kmalloc".ljust(40, b"\0"), 0, 0) and names[1][1] == 192, names
    recs = [kmtrace.RECORD.unpack_from(data, 160 + 12 * i) for i in range(6)]
    # slots are reused LIFO: slot 0 freed first, then slot 1; the next alloc takes slot 1
    assert recs == [(0, 100, 0, 1, 0), (1, 192, 1, 1, 0), (0, 0, 0, 2, 0), (1, 0, 1, 2, 0),
                    (1, 64, 0, 1, 0), (0, 5000, 0, 1, 0)], recs


@case
def bad_traces_are_bad(tmp):
    run("badtraces", tmp)
    names = sorted(os.listdir(tmp))
    assert "good-small.bin" in names and len(names) >= 12, names
    good = open(os.path.join(tmp, "good-small.bin"), "rb").read()
    assert kmtrace.fnv1a_body(good[64:]) == struct.unpack_from("<I", good, 56)[0]
    trunc = open(os.path.join(tmp, "bad-truncated.bin"), "rb").read()
    assert len(trunc) < struct.unpack_from("<Q", trunc, 32)[0]


def main():
    global fails
    for c in cases:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                c(tmp)
                print(f"kmtrace-test: {c.__name__} ok")
            except AssertionError as e:
                fails += 1
                print(f"kmtrace-test: FAIL: {c.__name__}: {e}")
    if fails:
        print(f"kmtrace-test: FAIL: {fails} of {len(cases)} cases")
        sys.exit(1)
    print(f"kmtrace-test: PASS ({len(cases)} cases)")


if __name__ == "__main__":
    main()
