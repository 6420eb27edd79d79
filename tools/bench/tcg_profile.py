#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Attributes the host time of QEMU's vCPU thread during the bench module's profile loops.

    tools/bench/tcg_profile.py OUTDIR

OUTDIR is what tools/bench/tcg-profile.sh wrote: perf.data (cpu-clock samples of the QEMU
process with DWARF call chains and CLOCK_MONOTONIC time stamps), marks (the host's
CLOCK_MONOTONIC when each "KMALLOC43-PROFILE <loop> begin|end" console line was seen) and
table.txt (the guest's own ns per iteration).

Debian's QEMU binary is stripped, but it keeps a dynamic symbol table (every global function)
and .eh_frame (every function's start), and TCG's helper table (all_helpers[]: the function,
then its name) is in .data.rel.ro with a relocation for each pointer: helpers are named from it
(helper_lookup_tb_ptr, the atomic helpers, ...), other functions by their dynamic symbol, the
rest "fn@<address>". A sample is attributed to what the generated code was doing: the generated
code itself (including the inline softmmu TLB hits), or the helper it called (the outermost
QEMU function in the chain that was called from generated code), or, with no generated code in
its chain, the execution loop around it (TB exits, cpu_exec, translation).
"""

import bisect
import collections
import re
import subprocess
import sys

QEMU = "/usr/bin/qemu-system-x86_64"
# Cut this much off each end of a loop's window: the console mark is seen up to a poll later.
TRIM = 0.15
LOOPS = ["k43", "kmalloc", "calls"]
# --detail: one row per function called from generated code instead of the groups.
DETAIL = "--detail" in sys.argv


def sections(path):
    """name -> (vaddr, offset, size) from readelf."""
    out = {}
    text = subprocess.run(["readelf", "-S", "-W", path], capture_output=True, text=True).stdout
    for line in text.splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)", line)
        if m:
            out[m.group(1)] = tuple(int(m.group(i), 16) for i in (2, 3, 4))
    return out


def function_starts(path, data, secs):
    """Every function's start address, from .eh_frame_hdr's sorted search table."""
    va, off, _ = secs[".eh_frame_hdr"]
    version, _ptr_enc, count_enc, table_enc = data[off : off + 4]
    if version != 1 or count_enc != 0x03 or table_enc != 0x3B:
        raise SystemExit("unexpected .eh_frame_hdr encoding in %s" % path)
    count = int.from_bytes(data[off + 8 : off + 12], "little")
    starts = []
    for i in range(count):
        p = off + 12 + 8 * i
        loc = int.from_bytes(data[p : p + 4], "little", signed=True)
        starts.append(va + loc)
    return sorted(set(starts))


def helper_table(path, data, secs):
    """TCG helper address -> "helper_<name>", from all_helpers[]'s relocated pointer pairs."""
    def to_off(va):
        for name, (a, o, s) in secs.items():
            if a and a <= va < a + s and name not in (".bss", ".tbss"):
                return o + va - a
        return None

    rel = {}
    text = subprocess.run(["readelf", "-r", "-W", path], capture_output=True, text=True).stdout
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 4 and f[2] == "R_X86_64_RELATIVE":
            rel[int(f[0], 16)] = int(f[3], 16)
    lo, _, size = secs[".text"]
    names = {}
    for slot, va in rel.items():
        if not lo <= va < lo + size or slot + 8 not in rel:
            continue
        o = to_off(rel[slot + 8])
        if o is None:
            continue
        s = data[o : data.find(b"\0", o)]
        if re.fullmatch(rb"[a-z][a-z0-9_]{2,}", s):
            names.setdefault(va, "helper_" + s.decode())
    return names


def dynamic_functions(path):
    out = {}
    text = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True, text=True).stdout
    for line in text.splitlines():
        f = line.split()
        if len(f) == 3 and f[1] in "TtWw":
            out.setdefault(int(f[0], 16), f[2])
    return out


class Qemu:
    """Names for addresses of the QEMU binary (file virtual addresses)."""

    def __init__(self, path=QEMU):
        data = open(path, "rb").read()
        secs = sections(path)
        self.starts = function_starts(path, data, secs)
        self.names = dynamic_functions(path)
        self.names.update(helper_table(path, data, secs))

    def function(self, va):
        i = bisect.bisect_right(self.starts, va) - 1
        if i < 0:
            return "?"
        start = self.starts[i]
        return self.names.get(start, "fn@%x" % start)


def marks(path):
    """loop -> (begin, end) host CLOCK_MONOTONIC seconds; and the iterations."""
    times, iterations = {}, None
    for line in open(path):
        t, _, text = line.strip().split(" ", 2)
        f = text.split()
        if f[0] == "addresses":
            iterations = int(f[-1].split("=")[1])
        elif len(f) == 2:
            times.setdefault(f[0], {})[f[1]] = float(t)
    return {k: (v["begin"], v["end"]) for k, v in times.items() if len(v) == 2}, iterations


def samples(perf_data):
    """Yields (tid, time, period_ns, [(addr, dso, offset-or-None)] leaf first)."""
    cmd = ["perf", "script", "-i", perf_data, "-F", "tid,time,period,ip,dso", "--show-mmap-events"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    maps = []  # (start, end, pgoff, path)
    head, chain = None, []
    mmap_re = re.compile(r"PERF_RECORD_MMAP2? .*\[(0x[0-9a-f]+)\((0x[0-9a-f]+)\) @ (0x[0-9a-f]+|0) .*\]: [-r][-w]x\S* (\S+)")

    def frame(addr, dso):
        if dso == QEMU:
            # perf prints a DSO's addresses relative to the file (its virtual addresses here);
            # a raw address is mapped back through the mmap events.
            for s, e, pg, p in maps:
                if p == QEMU and s <= addr < e:
                    return (addr, dso, addr - s + pg)
            return (addr, dso, addr)
        return (addr, dso, None)

    for line in proc.stdout:
        if "PERF_RECORD_MMAP" in line:
            m = mmap_re.search(line)
            if m:
                s, ln, pg = (int(m.group(i), 16) for i in (1, 2, 3))
                maps.append((s, s + ln, pg, m.group(4)))
            continue
        if not line.strip():
            if head:
                yield head + ([frame(a, d) for a, d in chain],)
            head, chain = None, []
            continue
        m = re.match(r"\s*(\d+)\s+(\d+\.\d+):\s+(\d+)", line)
        if m:
            # "tid time: period"
            head = (int(m.group(1)), float(m.group(2)), int(m.group(3)))
            continue
        m = re.match(r"\s+([0-9a-f]+)\s+\((.*)\)\s*$", line)
        if m:
            chain.append((int(m.group(1), 16), m.group(2)))
    if head:
        yield head + ([frame(a, d) for a, d in chain],)


def classify(chain, qemu):
    """The category of one sample (its call chain, leaf first)."""
    if not chain:
        return "no call chain"
    named = []
    for addr, dso, off in chain:
        if off is not None:
            named.append(("qemu", qemu.function(off)))
        elif (dso in ("[unknown]", "") or dso.startswith("//anon") or dso.startswith("[anon")
              or re.fullmatch(r"/tmp/perf-\d+\.map", dso)):
            named.append(("jit", None))
        elif dso.startswith("[kernel") or dso.startswith("[guest"):
            named.append(("kernel", dso))
        else:
            named.append(("lib", dso.rsplit("/", 1)[-1]))
    kind, name = named[0]
    if kind == "jit":
        return "generated code"
    # The QEMU function that generated code called: the frame right before the first JIT frame.
    for i, (k, _) in enumerate(named):
        if k == "jit":
            caller = [n for kk, n in named[:i] if kk == "qemu"]
            if caller:
                return helper_category(caller[-1], kind)
            return "called from generated code: %s" % (name if kind != "kernel" else "host kernel")
    fns = [n for k, n in named if k == "qemu"]
    for f in fns:
        if f in ("tb_gen_code", "gen_intermediate_code", "tcg_gen_code", "translator_loop"):
            return "translation"
    if "cpu_exec" in fns:
        return "execution loop (cpu_exec, TB exits)" + ("" if kind == "qemu" else " [%s]" % kind)
    if kind == "kernel":
        return "host kernel (outside cpu_exec)"
    return "other: %s" % (fns[0] if fns else name)


def helper_category(fn, leaf_kind):
    if DETAIL:
        return "called: %s" % fn
    if fn == "helper_lookup_tb_ptr":
        return "helper_lookup_tb_ptr (indirect jumps, ret)"
    if fn.startswith("helper_atomic") or fn.startswith("cpu_atomic"):
        return "atomic helpers (lock-prefixed, xchg)"
    if re.match(r"helper_(le|be|ret)_(ld|st)", fn) or re.match(r"cpu_(ld|st)", fn):
        return "softmmu slow path (helper_*_mmu)"
    return "helper: %s" % fn


def events(out, windows, iterations):
    """--events: per loop, how many of each probe event fired per iteration, and the most
    frequent argument lists (e.g. the guest address of a softmmu slow-path access)."""
    cmd = ["perf", "script", "-i", out + "/perf.data"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    cut = {k: (b + TRIM, e - TRIM) for k, (b, e) in windows.items()}
    count = {k: collections.Counter() for k in windows}
    args = {k: collections.Counter() for k in windows}
    for line in proc.stdout:
        m = re.match(r"\s*.*?\s(\d+)\s+\[\d+\]\s+(\d+\.\d+):\s+(\S+):\s+\(\w+\)\s*(.*)$", line)
        if not m:
            continue
        t, ev, rest = float(m.group(2)), m.group(3), m.group(4)
        for k, (b, e) in cut.items():
            if b <= t < e:
                count[k][ev] += 1
                args[k][ev + " " + rest] += 1
    for k in LOOPS:
        if k not in windows:
            continue
        b, e = windows[k]
        scale = iterations * (cut[k][1] - cut[k][0]) / (e - b)
        print("%-8s window %.3f s" % (k, e - b))
        for ev, n in count[k].most_common():
            print("    %-30s %8.3f per iteration" % (ev, n / scale))
        for a, n in args[k].most_common(8):
            print("        %8.3f  %s" % (n / scale, a))


def main():
    out = [a for a in sys.argv[1:] if not a.startswith("--")][0]
    windows, iterations = marks(out + "/marks")
    if not iterations or not windows:
        raise SystemExit("no profile marks in %s/marks" % out)
    if "--events" in sys.argv:
        events(out, windows, iterations)
        return
    qemu = Qemu()
    # loop -> tid -> category -> ns; loop -> tid -> total ns
    per = {k: collections.defaultdict(collections.Counter) for k in windows}
    cut = {k: (b + TRIM, e - TRIM) for k, (b, e) in windows.items()}
    for tid, t, period, chain in samples(out + "/perf.data"):
        for k, (b, e) in cut.items():
            if b <= t < e:
                per[k][tid][classify(chain, qemu)] += period
    rows = collections.OrderedDict()
    print("host CPU time of the vCPU thread that ran each loop, ns per iteration")
    print("(perf cpu-clock, %d iterations per loop, %.2f s trimmed off each end)" % (iterations, TRIM))
    totals = {}
    for k in LOOPS:
        if k not in per or not per[k]:
            continue
        b, e = windows[k]
        scale = iterations * (cut[k][1] - cut[k][0]) / (e - b)
        tid, cats = max(per[k].items(), key=lambda kv: sum(kv[1].values()))
        others = sum(sum(c.values()) for t, c in per[k].items() if t != tid)
        totals[k] = sum(cats.values()) / scale
        print("%-8s window %.3f s, vCPU thread %d: %.1f host ns per iteration (other threads: %.1f)"
              % (k, e - b, tid, totals[k], others / scale))
        for c, ns in cats.items():
            rows.setdefault(c, {})[k] = ns / scale
    print()
    order = sorted(rows, key=lambda c: -max(rows[c].values()))
    print("%-52s %9s %9s %9s %9s" % ("category", "k43", "kmalloc", "calls", "k43-kmal"))
    for c in order:
        r = rows[c]
        a, b, cl = r.get("k43", 0.0), r.get("kmalloc", 0.0), r.get("calls", 0.0)
        if max(a, b, cl) < 0.5:
            continue
        print("%-52s %9.1f %9.1f %9.1f %9.1f" % (c[:52], a, b, cl, a - b))
    a, b, cl = totals.get("k43", 0), totals.get("kmalloc", 0), totals.get("calls", 0)
    print("%-52s %9.1f %9.1f %9.1f %9.1f" % ("total", a, b, cl, a - b))


if __name__ == "__main__":
    main()
