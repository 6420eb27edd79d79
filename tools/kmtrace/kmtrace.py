#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""kmtrace: host side of the kmalloc trace recorder and the in-guest replay.

Subcommands (Documentation/kmtrace.rst describes the formats):

  unframe DATA.LOG OUT.gz     cut the gzipped ftrace text out of the recording
                              guest's second serial port (length and sha256 checked)
  csv FTRACE.txt[.gz] OUT.csv[.xz]
                              ftrace kmem events -> seq,op,ptr,bytes_req,bytes_alloc,cache
  stats TRACE.csv[.xz]        rows, peak live bytes, share <= 1 KiB, share of powers of two
  pack TRACE.csv[.xz] OUT.bin the compact binary form the replay module reads
  report RESULTS OUTDIR       the replay module's results -> table.txt, series.csv, pages.svg
"""

import argparse
import csv
import gzip
import hashlib
import io
import lzma
import os
import re
import struct
import sys

CSV_HEADER = ["seq", "op", "ptr", "bytes_req", "bytes_alloc", "cache"]

# ---- files -------------------------------------------------------------------------------------


def open_text(path, mode="r"):
    """Opens a text file, transparently (de)compressing .gz and .xz."""
    if path == "-":
        return sys.stdin if "r" in mode else sys.stdout
    if path.endswith(".xz"):
        return lzma.open(path, mode + "t", encoding="ascii", newline="")
    if path.endswith(".gz"):
        return gzip.open(path, mode + "t", encoding="ascii", newline="")
    return open(path, mode, encoding="ascii", newline="")


def die(msg):
    print(f"kmtrace: error: {msg}", file=sys.stderr)
    sys.exit(1)


# ---- unframe -----------------------------------------------------------------------------------


def cmd_unframe(args):
    data = open(args.data, "rb").read()
    m = re.search(rb"KMTRACE-BEGIN (\d+) ([0-9a-f]{64})\n", data)
    if not m:
        die(f"{args.data}: no KMTRACE-BEGIN line (did the guest send the trace?)")
    n, want = int(m.group(1)), m.group(2).decode()
    body = data[m.end():m.end() + n]
    if len(body) != n:
        die(f"{args.data}: truncated trace: {len(body)} of {n} bytes")
    got = hashlib.sha256(body).hexdigest()
    if got != want:
        die(f"{args.data}: sha256 mismatch (serial line corrupted the trace?)")
    if not data[m.end() + n:].lstrip(b"\r\n").startswith(b"KMTRACE-END"):
        die(f"{args.data}: no KMTRACE-END after the trace")
    with open(args.out, "wb") as f:
        f.write(body)
    print(f"kmtrace: {n} bytes, sha256 ok -> {args.out}", file=sys.stderr)


# ---- csv -----------------------------------------------------------------------------------------

EVENT = re.compile(r"\b(kmalloc|kfree|kmem_cache_alloc|kmem_cache_free): (.*)$")
FIELD = re.compile(r"(\w+)=(\S+)")


class Converter:
    """ftrace kmem events -> CSV rows, tracking live objects by address.

    * NULL (and ZERO_SIZE_PTR, 0x10) pointers are dropped.
    * A free of an address with no live traced alloc is `free_unknown` (allocated before tracing
      started, or freed twice through untraced paths).
    * An alloc at an address that is still live means that its previous object was freed by a
      path that fires no event (kfree_rcu through sheaves, kmem_cache_free_bulk, kfree_bulk):
      a `free` row for the old object is emitted just before the new alloc, and counted as
      inferred.
    """

    def __init__(self, out):
        self.out = out
        self.seq = 0
        self.live = {}  # ptr -> (bytes_req, bytes_alloc, cache)
        self.counts = {"events": 0, "dropped_null": 0, "inferred_free": 0,
                       "free_unknown": 0, "other_lines": 0}

    def row(self, op, ptr, req, alloc, cache):
        self.out.write(f"{self.seq},{op},{ptr:016x},{req},{alloc},{cache}\n")
        self.seq += 1

    def event(self, name, fields):
        self.counts["events"] += 1
        ptr = int(fields["ptr"], 16)
        if ptr <= 0x10:
            self.counts["dropped_null"] += 1
            return
        if name in ("kmalloc", "kmem_cache_alloc"):
            cache = fields["name"] if name == "kmem_cache_alloc" else "kmalloc"
            if "," in cache or not cache:
                die(f"cache name {cache!r} cannot go into the CSV")
            req, alloc = int(fields["bytes_req"]), int(fields["bytes_alloc"])
            old = self.live.pop(ptr, None)
            if old is not None:
                self.counts["inferred_free"] += 1
                self.row("free", ptr, *old)
            self.live[ptr] = (req, alloc, cache)
            self.row("alloc", ptr, req, alloc, cache)
        else:
            old = self.live.pop(ptr, None)
            if old is None:
                self.counts["free_unknown"] += 1
                cache = fields.get("name", "kmalloc")
                self.out.write(f"{self.seq},free_unknown,{ptr:016x},,,{cache}\n")
                self.seq += 1
            else:
                self.row("free", ptr, *old)


def cmd_csv(args):
    with open_text(args.ftrace) as src, open_text(args.out, "w") as out:
        out.write(",".join(CSV_HEADER) + "\n")
        conv = Converter(out)
        for line in src:
            m = EVENT.search(line)
            if not m:
                if not line.startswith("#") and line.strip():
                    conv.counts["other_lines"] += 1
                continue
            conv.event(m.group(1), dict(FIELD.findall(m.group(2))))
    c = conv.counts
    print(f"kmtrace: {c['events']} events -> {conv.seq} rows; {c['dropped_null']} NULL dropped, "
          f"{c['free_unknown']} free_unknown, {c['inferred_free']} inferred frees (address "
          f"reused without a traced free), {len(conv.live)} still live at the end, "
          f"{c['other_lines']} other lines", file=sys.stderr)


# ---- reading a CSV -----------------------------------------------------------------------------


def read_rows(path):
    """Yields (seq, op, ptr, bytes_req, bytes_alloc, cache), checking the format strictly."""
    with open_text(path) as f:
        r = csv.reader(f)
        header = next(r, None)
        if header != CSV_HEADER:
            die(f"{path}: header {header!r}, expected {','.join(CSV_HEADER)}")
        for n, rec in enumerate(r):
            line = n + 2
            if len(rec) != 6:
                die(f"{path}:{line}: {len(rec)} columns, expected 6")
            seq, op, ptr, req, alloc, cache = rec
            try:
                seq_v, ptr_v = int(seq), int(ptr, 16)
            except ValueError:
                die(f"{path}:{line}: bad seq or ptr")
            if seq_v != n:
                die(f"{path}:{line}: seq {seq}, expected {n}")
            if len(ptr) != 16 or ptr_v == 0:
                die(f"{path}:{line}: ptr must be 16 hex digits, not NULL")
            if not cache:
                die(f"{path}:{line}: empty cache")
            if op in ("alloc", "free"):
                try:
                    req_v, alloc_v = int(req), int(alloc)
                except ValueError:
                    die(f"{path}:{line}: bad bytes_req/bytes_alloc")
                if req_v <= 0 or alloc_v < req_v:
                    die(f"{path}:{line}: bytes_req {req_v}, bytes_alloc {alloc_v}")
            elif op == "free_unknown":
                if req or alloc:
                    die(f"{path}:{line}: free_unknown rows have empty sizes")
                req_v = alloc_v = 0
            else:
                die(f"{path}:{line}: op {op!r}")
            yield seq_v, op, ptr_v, req_v, alloc_v, cache


# ---- pairing -----------------------------------------------------------------------------------


def paired(path, notes):
    """Yields (seq, op, ptr, bytes_req, bytes_alloc, cache) with every free paired with one
    earlier live alloc and carrying its values; free_unknown rows pass through.

    A trace from another recorder may not be that clean; what is repaired is counted in notes
    (and reported by the callers): an alloc at a live address gets a free of the old object
    first (implicit_free, as kmtrace.py csv does), a free of an address that is not live
    becomes free_unknown (free_not_live), a free whose sizes or cache differ from its alloc's
    takes the alloc's (free_mismatch)."""
    live = {}
    for seq, op, ptr, req, alloc, cache in read_rows(path):
        if op == "alloc":
            old = live.pop(ptr, None)
            if old is not None:
                notes["implicit_free"] = notes.get("implicit_free", 0) + 1
                yield (seq, "free", ptr, *old)
            live[ptr] = (req, alloc, cache)
        elif op == "free":
            old = live.pop(ptr, None)
            if old is None:
                notes["free_not_live"] = notes.get("free_not_live", 0) + 1
                op, req, alloc = "free_unknown", 0, 0
            elif old != (req, alloc, cache):
                notes["free_mismatch"] = notes.get("free_mismatch", 0) + 1
                req, alloc, cache = old
        yield seq, op, ptr, req, alloc, cache


def report_notes(path, notes):
    """Says on stderr what paired() had to repair."""
    if notes:
        what = ", ".join(f"{v} {k}" for k, v in sorted(notes.items()))
        print(f"kmtrace: warning: {path}: repaired {what} (see kmtrace.py paired())",
              file=sys.stderr)


# ---- stats -------------------------------------------------------------------------------------


def pow2_size(req):
    """What the paper's buckets set aside for req bytes: a power of two from 16 B to 8 KiB,
    whole 4 KiB pages above."""
    if req > 8192:
        return (req + 4095) & ~4095
    return max(16, 1 << (req - 1).bit_length())


def trace_stats(path):
    """One pass over a CSV: counts, peaks and the request size mix."""
    live = 0
    s = {"rows": 0, "alloc": 0, "free": 0, "free_unknown": 0, "kmalloc_allocs": 0,
         "le_1k": 0, "pow2": 0, "live_req": 0, "live_alloc": 0, "peak_req": 0,
         "peak_alloc": 0, "peak_seq": 0, "caches": set(), "bytes_req": 0,
         "bytes_alloc": 0, "max_live_objects": 0, "live_pow2": 0, "peak_at_alloc": 0,
         "peak_at_pow2": 0}
    notes = {}
    for seq, op, _, req, alloc, cache in paired(path, notes):
        s["rows"] += 1
        s[op] += 1
        if op == "alloc":
            live += 1
            s["caches"].add(cache)
            s["kmalloc_allocs"] += cache == "kmalloc"
            s["le_1k"] += req <= 1024
            s["pow2"] += req & (req - 1) == 0
            s["bytes_req"] += req
            s["bytes_alloc"] += alloc
            s["live_req"] += req
            s["live_alloc"] += alloc
            s["live_pow2"] += pow2_size(req)
            s["max_live_objects"] = max(s["max_live_objects"], live)
            if s["live_req"] > s["peak_req"]:
                s["peak_req"], s["peak_seq"] = s["live_req"], seq
                s["peak_at_alloc"], s["peak_at_pow2"] = s["live_alloc"], s["live_pow2"]
            s["peak_alloc"] = max(s["peak_alloc"], s["live_alloc"])
        elif op == "free":
            live -= 1
            s["live_req"] -= req
            s["live_alloc"] -= alloc
            s["live_pow2"] -= pow2_size(req)
    report_notes(path, notes)
    s["live_at_end"] = live
    s["live_req_at_end"] = s["live_req"]
    return s


def pct(a, b):
    return f"{100.0 * a / b:.1f} %" if b else "-"


def cmd_stats(args):
    s = trace_stats(args.trace)
    a = s["alloc"]
    print(f"trace:                    {os.path.basename(args.trace)}")
    print(f"rows:                     {s['rows']}")
    print(f"  alloc:                  {a} ({s['kmalloc_allocs']} kmalloc, "
          f"{a - s['kmalloc_allocs']} kmem_cache_alloc)")
    print(f"  free:                   {s['free']}")
    print(f"  free_unknown:           {s['free_unknown']}")
    print(f"caches (incl. kmalloc):   {len(s['caches'])}")
    print(f"peak live bytes:          {s['peak_req']} requested "
          f"({s['peak_req'] / 1048576:.2f} MiB, at seq {s['peak_seq']}); "
          f"peak of SLUB's sizes {s['peak_alloc']} ({s['peak_alloc'] / 1048576:.2f} MiB)")
    mib = 1048576
    print(f"at that peak, rounded:    SLUB's sizes {s['peak_at_alloc'] / mib:.2f} MiB "
          f"({s['peak_at_alloc'] / s['peak_req']:.3f}x); powers of two 16 B..8 KiB, pages "
          f"above: {s['peak_at_pow2'] / mib:.2f} MiB ({s['peak_at_pow2'] / s['peak_req']:.3f}x)")
    print(f"max live objects:         {s['max_live_objects']}")
    print(f"requests <= 1 KiB:        {pct(s['le_1k'], a)}")
    print(f"exact powers of two:      {pct(s['pow2'], a)}")
    print(f"SLUB size / requested:    {s['bytes_alloc'] / max(1, s['bytes_req']):.3f} "
          f"(all allocs)")
    print(f"live at the end:          {s['live_at_end']} objects, {s['live_req_at_end']} bytes")


# ---- pack --------------------------------------------------------------------------------------
#
# The binary form read by the replay module (tools/kmtrace/replay/kmtrace_format.h is the
# authority; keep the two in step).  Little-endian.
#
#   header (64 bytes): magic "KM43TRC1", u32 version 1, u32 header bytes 64, u32 ncaches,
#       u32 nslots, u64 nrecords, u64 total bytes, u64 peak record index, u64 peak live
#       requested bytes, u32 FNV-1a of every byte after the header, u32 0
#   ncaches x 48 bytes: char name[40] (NUL-padded), u32 object size (0 for "kmalloc",
#       always cache 0), u32 0
#   nrecords x 12 bytes: u32 slot, u32 bytes (alloc: bytes_req; free: 0), u16 cache,
#       u8 op (1 alloc, 2 free), u8 0

MAGIC = b"KM43TRC1"
HEADER = struct.Struct("<8sIIIIQQQQII")
CACHE = struct.Struct("<40sII")
RECORD = struct.Struct("<IIHBB")
NAME_LEN = 40
OP_ALLOC, OP_FREE = 1, 2
assert HEADER.size == 64 and CACHE.size == 48 and RECORD.size == 12


def short_name(name, index):
    """The cache's name for the binary table: at most NAME_LEN - 1 bytes, printable; a longer
    name is cut and made unique with its index."""
    raw = "".join(c if c.isascii() and c.isprintable() and c != " " else "_" for c in name)
    if len(raw) < NAME_LEN:
        return raw.encode()
    tail = f"~{index}"
    return (raw[:NAME_LEN - 1 - len(tail)] + tail).encode()


def cmd_pack(args):
    caches = {"kmalloc": 0}
    sizes = {"kmalloc": 0}
    live = {}  # ptr -> (slot, cache index)
    free_slots = []
    nslots = 0
    recs = bytearray()
    nrec = 0
    live_req = peak_req = peak_rec = 0
    skipped = 0
    notes = {}
    for seq, op, ptr, req, alloc, cache in paired(args.trace, notes):
        if op == "free_unknown":
            skipped += 1
            continue
        if op == "alloc":
            if cache not in caches:
                caches[cache] = len(caches)
                sizes[cache] = req
            ci = caches[cache]
            if ci and req != sizes[cache]:
                # Two caches with one name and different sizes: use the larger object.
                sizes[cache] = max(sizes[cache], req)
            slot = free_slots.pop() if free_slots else nslots
            nslots = max(nslots, slot + 1)
            live[ptr] = (slot, ci, req)
            recs += RECORD.pack(slot, req, ci, OP_ALLOC, 0)
            live_req += req
            if live_req > peak_req:
                peak_req, peak_rec = live_req, nrec
        else:
            slot, ci, r = live.pop(ptr)
            free_slots.append(slot)
            recs += RECORD.pack(slot, 0, ci, OP_FREE, 0)
            live_req -= r
        nrec += 1
    if len(caches) > 0xFFFF:
        die(f"{len(caches)} caches: at most 65535")
    # kmem_cache rows use the cache's object size, as SLUB does.
    report_notes(args.trace, notes)
    table = bytearray()
    for name, ci in sorted(caches.items(), key=lambda kv: kv[1]):
        table += CACHE.pack(short_name(name, ci), sizes[name], 0)
    # Re-encode kmem_cache allocs at their cache's object size (largest of its rows).
    objsize = [0] * len(caches)
    for name, ci in caches.items():
        objsize[ci] = sizes[name]
    for i in range(0, len(recs), RECORD.size):
        slot, size, ci, op, _ = RECORD.unpack_from(recs, i)
        if op == OP_ALLOC and ci and size != objsize[ci]:
            RECORD.pack_into(recs, i, slot, objsize[ci], ci, op, 0)
    total = encode(args.out, table, recs, len(caches), nslots, nrec, peak_rec, peak_req)
    print(f"kmtrace: {nrec} records ({skipped} free_unknown rows skipped), {len(caches)} caches, "
          f"{nslots} slots, peak {peak_req} live bytes at record {peak_rec}; {total} bytes "
          f"-> {args.out}", file=sys.stderr)


def fnv1a_body(body):
    """FNV-1a (32-bit) of the body, as the replay module checks it."""
    h = 0x811C9DC5
    for b in body:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def encode(path, table, recs, ncaches, nslots, nrec, peak_rec, peak_req):
    """Writes header + cache table + records to path; returns the size."""
    body = bytes(table) + bytes(recs)
    total = HEADER.size + len(body)
    header = HEADER.pack(MAGIC, 1, HEADER.size, ncaches, nslots, nrec, total, peak_rec,
                         peak_req, fnv1a_body(body), 0)
    with open(path, "wb") as f:
        f.write(header + body)
    return total


def cmd_badtraces(args):
    """Invalid binary traces, each with one fault, for the replay's bad-input check."""
    os.makedirs(args.outdir, exist_ok=True)
    kmalloc = CACHE.pack(b"kmalloc", 0, 0)
    dentry = CACHE.pack(b"dentry", 192, 0)
    good = [(0, 100, 0, OP_ALLOC), (1, 192, 1, OP_ALLOC), (0, 0, 0, OP_FREE),
            (1, 0, 1, OP_FREE)]

    def recs(rows):
        return b"".join(RECORD.pack(slot, size, c, op, 0) for slot, size, c, op in rows)

    def write(name, table, rows, nslots=2, ncaches=2):
        path = os.path.join(args.outdir, f"bad-{name}.bin")
        encode(path, table, recs(rows), ncaches, nslots, len(rows), 0, 100)
        return path

    write("free-empty-slot", kmalloc + dentry, good[:2] + [(0, 0, 0, OP_FREE)] * 2)
    write("alloc-live-slot", kmalloc + dentry, [good[0], (0, 64, 0, OP_ALLOC)])
    write("slot-out-of-range", kmalloc + dentry, good[:1] + [(7, 192, 1, OP_ALLOC)])
    write("cache-size-mismatch", kmalloc + dentry, [(0, 100, 1, OP_ALLOC)])
    write("free-wrong-cache", kmalloc + dentry, [good[1], (1, 0, 0, OP_FREE)])
    write("op", kmalloc + dentry, [(0, 100, 0, 3)])
    write("no-kmalloc-cache", dentry + kmalloc, good)
    write("unterminated-name", kmalloc + CACHE.pack(b"x" * 40, 192, 0), good)
    p = write("checksum", kmalloc + dentry, good)
    data = bytearray(open(p, "rb").read())
    data[-5] ^= 1
    open(p, "wb").write(data)
    p = write("truncated", kmalloc + dentry, good)
    data = open(p, "rb").read()
    open(p, "wb").write(data[:len(data) - 7])
    p = write("magic", kmalloc + dentry, good)
    data = bytearray(open(p, "rb").read())
    data[0:8] = b"NOTATRCE"
    open(p, "wb").write(data)
    # The control: the same records, well formed, must replay.
    encode(os.path.join(args.outdir, "good-small.bin"), kmalloc + dentry, recs(good), 2, 2,
           len(good), 1, 292)


# ---- report ------------------------------------------------------------------------------------

PAGE = 4096
REFERENCE = "slub-caches"


def read_results(path):
    """The replay module's results lines (key=value ...), keyed by label."""
    runs = {}
    with open(path) as f:
        for line in f:
            kv = dict(w.split("=", 1) for w in line.split() if "=" in w)
            if "label" not in kv:
                continue
            for k, v in kv.items():
                if k not in ("label", "ns", "ref_ns"):
                    kv[k] = int(v)
            runs[kv["label"]] = kv
    return runs


CLOCKS = {
    "icount": "QEMU -icount shift=0: the guest clock advances 1 ns per instruction, so ns/op is "
              "instructions per operation, independent of the host's load",
    "wall": "QEMU TCG's ordinary clock (host wall time): noisy on a shared host",
}


def table(runs, trace, clock="icount"):
    """The side-by-side table (text)."""
    any_run = next(iter(runs.values()))
    n = any_run["records"]
    live = any_run["peak_live_bytes"]
    ref = runs.get(REFERENCE)
    out = [f"kmtrace replay of {trace}: {n} records, {any_run['caches']} caches, "
           f"peak {live} live requested bytes ({live / 1048576:.2f} MiB) at record "
           f"{any_run['peak_record']}",
           "pages: kmalloc43 = kmalloc43_totals().pages_held; SLUB = NR_SLAB_UNRECLAIMABLE_B + "
           "NR_SLAB_RECLAIMABLE_B (node counters + per-CPU deltas); all minus the value before "
           "the first record; time: best of 5 passes, each followed by a pass of slub-caches (the "
           "ratio's reference, timed in turn in the same module load); clock: "
           + CLOCKS.get(clock, clock),
           "",
           f"{'allocator':<20} {'peak pages':>10} {'vs slub':>8} {'pages@peak':>10} "
           f"{'util@peak':>9} {'left':>6} {'idle':>6} {'ns/op':>7} {'time vs slub':>12}"]
    for label, r in runs.items():
        util = live / (r["pages_at_peak"] * PAGE) if r["pages_at_peak"] > 0 else float("nan")
        nsop = r["ns_best"] / n if n else 0
        vs = f"{r['peak_pages'] / ref['peak_pages']:.3f}x" if ref and ref["peak_pages"] else "-"
        tvs = f"{r['ns_best'] / r['ref_ns_best']:.3f}x" if r["ref_ns_best"] else "-"
        idle = r["pages_idle"] if "pages_idle" in r else "-"
        out.append(f"{label:<20} {r['peak_pages']:>10} {vs:>8} {r['pages_at_peak']:>10} "
                   f"{100 * util:>8.1f}% {r['pages_left']:>6} {idle:>6} {nsop:>7.0f} {tvs:>12}")
    out.append("'left': pages held once the trace's live objects are freed; 'idle': then after "
               "kmalloc43's timed aging passes (kmalloc43_age() until two in a row give nothing "
               "back; '-': no such pass)")
    out.append("")
    for label, r in runs.items():
        if "data_pages" in r:
            meta = r["map_pages"] + r.get("diag_pages", 0) + r["tag_pages"]
            per_mb = meta * PAGE / (r["data_pages"] * PAGE / 1048576) if r["data_pages"] else 0
            out.append(f"{label}: at the trace's peak {r['data_pages']} data pages, "
                       f"{r['map_pages']} page-map pages, {r.get('diag_pages', 0)} DIAGNOSTIC "
                       f"pages, {r['tag_pages']} vmem tag pages: {per_mb:.0f} bytes of metadata "
                       f"per MiB of data")
            if "inuse_bytes" in r:
                used = r["inuse_bytes"] / PAGE
                out.append(f"{label}: live objects take {used:.0f} of the data pages (their "
                           f"size classes), {r['data_pages'] - used:.0f} are free (free pieces, "
                           f"magazines and depots, cluster tails)")
    fine = runs.get("kmalloc43-fine")
    nomag = runs.get("kmalloc43-fine_nomag")
    if fine and nomag and "data_pages" in fine and "data_pages" in nomag:
        out.append(f"magazines and depots at the trace's peak (kmalloc43-fine minus "
                   f"kmalloc43-fine_nomag, DIAGNOSTIC mode, magazines off): "
                   f"{fine['data_pages'] - nomag['data_pages']:+d} data pages, "
                   f"{fine['peak_pages'] - nomag['peak_pages']:+d} peak pages "
                   f"(fine_nomag's time includes DIAGNOSTIC's checks: not a speed line)")
    if ref:
        out.append("")
        if fine:
            ok = fine["peak_pages"] <= ref["peak_pages"]
            out.append(f"P5 memory: kmalloc43-fine peak {fine['peak_pages']} pages "
                       f"{'<=' if ok else '>'} slub-caches {ref['peak_pages']}: "
                       f"{'MET' if ok else 'MISSED'}")
            ratio = fine["ns_best"] / fine["ref_ns_best"]
            out.append(f"P5 speed: kmalloc43-fine time {ratio:.3f}x slub-caches (target <= "
                       f"1.0x): {'MET' if ratio <= 1.0 else 'MISSED'}")
        else:
            out.append("P5: no kmalloc43-fine run (kmalloc43 without classes=fine): "
                       "targets not judged")
    return "\n".join(out) + "\n"


def live_curve(csv_path, records):
    """Live requested bytes after each of the given record numbers (1-based counts of the
    packed records, i.e. CSV rows without free_unknown)."""
    want = sorted(set(records))
    out, live, n, k = {}, 0, 0, 0
    for _, op, _, req, _, _ in read_rows(csv_path):
        if op == "free_unknown":
            continue
        live += req if op == "alloc" else -req
        n += 1
        while k < len(want) and want[k] == n:
            out[n] = live
            k += 1
    return out


def plot(series_path, svg, trace, csv_path=None):
    """Pages held over the trace, one line per allocator (matplotlib, SVG)."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("svg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    matplotlib.rcParams["svg.hashsalt"] = "kmtrace"  # reproducible ids
    lines = {}
    with open(series_path) as f:
        for rec in csv.DictReader(f):
            lines.setdefault(rec["label"], ([], []))
            lines[rec["label"]][0].append(int(rec["record"]))
            lines[rec["label"]][1].append(int(rec["pages"]) * PAGE / 1048576)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    style = {"slub-caches": "-", "slub-kmalloc": ":", "kmalloc43-pow2": "-",
             "kmalloc43-fine": "--", "kmalloc43-fine_nomag": ":"}
    for label, (x, y) in lines.items():
        ax.plot(x, y, style.get(label, "-"), label=label, linewidth=1.2)
    if csv_path and lines:
        x = next(iter(lines.values()))[0]
        live = live_curve(csv_path, x)
        ax.plot(x, [live.get(r, 0) / 1048576 for r in x], "-", color="0.6",
                label="live requested bytes", linewidth=1.0)
    ax.set_xlabel("trace record")
    ax.set_ylabel("MiB (pages held x 4 KiB, minus the start)")
    ax.set_title(f"Pages held while replaying {trace}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(svg, metadata={"Date": None})
    plt.close(fig)


def cmd_report(args):
    runs = read_results(args.results)
    if not runs:
        die(f"{args.results}: no results")
    text = table(runs, args.trace, args.clock)
    with open(os.path.join(args.outdir, "table.txt"), "w") as f:
        f.write(text)
    svg = os.path.join(args.outdir, "pages.svg")
    try:
        plot(args.series, svg, os.path.basename(args.csv or args.trace), args.csv)
        print(f"kmtrace: plot -> {svg}", file=sys.stderr)
    except ImportError:
        print("kmtrace: no matplotlib (tools/setup-deps.sh plot): no plot", file=sys.stderr)


# subcommand: (function, positional arguments)
COMMANDS = {
    "unframe": (cmd_unframe, ["data", "out"]),
    "csv": (cmd_csv, ["ftrace", "out"]),
    "stats": (cmd_stats, ["trace"]),
    "pack": (cmd_pack, ["trace", "out"]),
    "badtraces": (cmd_badtraces, ["outdir"]),
    "report": (cmd_report, ["results", "series", "outdir"]),
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, (_, positional) in COMMANDS.items():
        s = sub.add_parser(name)
        for a in positional:
            s.add_argument(a)
        if name == "report":
            s.add_argument("--trace", default="the trace")
            s.add_argument("--csv", help="the trace CSV: adds its live requested bytes to the plot")
            s.add_argument("--clock", default="icount", choices=sorted(CLOCKS))
    args = p.parse_args()
    COMMANDS[args.cmd][0](args)


if __name__ == "__main__":
    main()
