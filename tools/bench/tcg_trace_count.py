#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Counts, in the executed guest instructions of a pair, what costs under QEMU's TCG.

    tools/bench/tcg_trace_count.py TRACE.json MALLOC,FREE [ALLOC,FREE...]

TRACE.json is what tools/bench/tcg_trace_gdb.py wrote (tools/bench/tcg-trace.sh); each
MALLOC,FREE names a pair by the entry addresses of its two calls; the last traced call of each
entry is counted. Per pair and per call:

- instructions; memory operations (instructions reading or writing memory, explicit operands
  or the stack of push/pop/call/ret), each an inline softmmu TLB lookup in generated code;
- calls, rets, indirect jumps and calls, conditional branches;
- locked operations (a lock prefix, or xchg with memory: always atomic): under multi-threaded
  TCG each is a call of an atomic helper;
- translation blocks, modelled on QEMU 7.2's x86 translator: a block ends after every jump,
  call or ret, and before an instruction that may reach the next page; a direct transfer to the
  page where the block started is chained (goto_tb), any other (ret, indirect, another page)
  calls helper_lookup_tb_ptr;
- the distinct 4 KiB data pages touched, and which of them share an entry of QEMU's
  direct-mapped softmmu TLB (index = page number modulo its size, 256 to 4096 entries here):
  two such pages touched alternately miss the inline lookup on every pair (the victim TLB).
"""

import collections
import json
import sys

PAGE = 4096
TRANSFER = ("j", "call", "ret", "loop")
STACK = ("push", "pop", "call", "ret", "leave")


def calls_by_entry(path):
    """entry -> list of traces (each a list of records), in trace order."""
    out = collections.defaultdict(list)
    last = None
    for line in open(path):
        r = json.loads(line)
        if last is None or r["entry"] != last or r["pc"] == r["entry"] and cur and cur[-1]["asm"].startswith("ret"):
            cur = []
            out[r["entry"]].append(cur)
            last = r["entry"]
        cur.append(r)
    return out


def mnemonic(asm):
    words = asm.replace("notrack ", "").replace("bnd ", "").replace("cs ", "").split()
    if words and words[0] in ("lock", "rep", "repz", "repnz"):
        return words[0] + " " + (words[1] if len(words) > 1 else "")
    return words[0] if words else ""


def deduplicated(trace):
    """The trace without a record that the next one repeats (same pc and stack pointer): QEMU's
    stub sometimes reports a step that executed nothing."""
    return [r for i, r in enumerate(trace)
            if i + 1 == len(trace) or (trace[i + 1]["pc"], trace[i + 1]["rsp"]) != (r["pc"], r["rsp"])
            or r["asm"].startswith("rep")]


def count(trace):
    trace = deduplicated(trace)
    c = collections.Counter()
    pages = collections.OrderedDict()
    tb_start = None
    for i, r in enumerate(trace):
        asm, pc = r["asm"], r["pc"]
        mn = mnemonic(asm)
        base = mn.split()[-1]
        if tb_start is None:
            tb_start = pc
            c["translation blocks"] += 1
        c["instructions"] += 1
        mem = list(r["mem"])
        if base.startswith(STACK) or base in ("pushf", "popf", "pushfq", "popfq"):
            mem.append(r["rsp"] - 8 if base.startswith(("push", "call")) else r["rsp"])
        if mem:
            c["memory operations"] += 1
        for a in mem:
            pages.setdefault(a // PAGE, 0)
            pages[a // PAGE] += 1
        locked = mn.startswith("lock") or (base.startswith("xchg") and r["mem"])
        if locked:
            c["locked (atomic helper)"] += 1
        if base.startswith(("pushf", "popf", "cli", "sti")):
            c["interrupt-flag ops (helpers)"] += 1
        nxt = trace[i + 1]["pc"] if i + 1 < len(trace) else None
        ends = False
        indirect = "*" in asm
        if base.startswith("call"):
            c["calls"] += 1
            ends = True
        elif base.startswith("ret"):
            c["rets"] += 1
            ends = True
            indirect = True
        elif base.startswith("jmp"):
            c["jumps"] += 1
            ends = True
        elif base.startswith("j"):
            c["conditional branches"] += 1
            if nxt is not None and nxt != pc + r["len"]:
                c["taken branches"] += 1
            ends = True
        if indirect and not base.startswith("ret"):
            c["indirect jumps/calls"] += 1
        if not ends and nxt is not None and nxt != pc + r["len"]:
            ends = True  # an exception or interrupt: not expected in a hot pair
            c["unexpected transfers"] += 1
        if not ends and (pc + r["len"] + 15) // PAGE != tb_start // PAGE:
            ends = True  # the next instruction may cross onto another page
            c["blocks cut at a page end"] += 1
        if ends:
            if nxt is not None or base.startswith("ret"):
                target = nxt
                if indirect or target is None or target // PAGE != tb_start // PAGE:
                    c["helper_lookup_tb_ptr"] += 1
                    if not indirect:
                        c["cross-page transfers"] += 1
                else:
                    c["chained (goto_tb)"] += 1
            tb_start = None
    return c, pages


ORDER = [
    "instructions", "memory operations", "locked (atomic helper)", "calls", "rets",
    "indirect jumps/calls", "jumps", "conditional branches", "taken branches",
    "translation blocks", "chained (goto_tb)", "helper_lookup_tb_ptr", "cross-page transfers",
    "blocks cut at a page end", "interrupt-flag ops (helpers)", "unexpected transfers",
]


def collisions(pages, bits):
    """Groups of pages that share a TLB index with 2**bits entries."""
    by = collections.defaultdict(list)
    for p in pages:
        by[p % (1 << bits)].append(p)
    return [v for v in by.values() if len(v) > 1]


def main():
    traces = calls_by_entry(sys.argv[1])
    pairs = [tuple(int(a, 0) for a in arg.split(",")) for arg in sys.argv[2:]]
    cols, allpages = [], []
    for pair in pairs:
        counts, pages = [], collections.OrderedDict()
        for entry in pair:
            if not traces.get(entry):
                raise SystemExit("no trace of %#x" % entry)
            c, p = count(traces[entry][-1])
            counts.append(c)
            for k, v in p.items():
                pages[k] = pages.get(k, 0) + v
        cols.append(counts)
        allpages.append(pages)
    head = "%-30s" % "per call / pair"
    for pair in pairs:
        head += " %7s %7s %7s" % ("alloc", "free", "pair")
    print(head)
    for k in ORDER:
        vals = [[c[0][k], c[1][k], c[0][k] + c[1][k]] for c in cols]
        if not any(v[2] for v in vals):
            continue
        print("%-30s" % k + "".join(" %7d %7d %7d" % tuple(v) for v in vals))
    print("%-30s" % "distinct data pages" + "".join(" %23d" % len(p) for p in allpages))
    for pair, pages in zip(pairs, allpages):
        print()
        print("pair %s: data pages touched (accesses)" % ",".join("%#x" % a for a in pair))
        for p, n in pages.items():
            print("    %#018x %3d" % (p * PAGE, n))
        for bits in range(8, 13):
            groups = collisions(pages, bits)
            print("    TLB of %4d entries: %s" % (1 << bits, "; ".join(
                " & ".join("%#x" % (p * PAGE) for p in g) for g in groups) or "no shared index"))


if __name__ == "__main__":
    main()
