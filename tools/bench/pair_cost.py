#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Instructions per malloc+free pair, layer by layer (make bench-cost).

    tools/bench/pair_cost.py [SIZE ...]

Builds rust/core's examples pair_cost (the malloc core's own path: what every call took
before the magazine layer, and what a call takes now when magazines cannot serve it) and
mag_pair_cost (the magazine layer's core calls, in the order the kernel glue makes them),
release with line tables, runs each under valgrind --tool=callgrind collecting only inside
its counted loop, and groups the instruction counts of callgrind_annotate's file:function
lines into the layers of Documentation/performance.rst.  Hot and batch pairs for each SIZE
(default 64 1024 8192 65536).  Instruction counts are exact and repeatable: they do not
depend on the machine's load.
"""

import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORE = os.path.join(ROOT, "rust", "core")
PAIRS = 10_000

# (layer, test on (file, function)); the first match wins: function rules before file rules.
COMMON = [
    ("probe loop (not kmalloc43)", lambda f, fn: "counted_pairs" in fn),
    ("host page source (libc, std HashMap: not in the kernel)",
     lambda f, fn: re.search(r"libc|glibc|sysdeps|malloc\.c|hosted/", f) is not None
     or re.search(r"hashbrown|BuildHasher|HostPages|^_?_?(mem|posix|_int|unlink|systrim)", fn)
     is not None),
]
# The malloc core's own path (examples/pair_cost.rs).
CORE_LAYERS = COMMON + [
    ("page map (kmemusage) lookup + update",
     lambda f, fn: re.search(r"PageMap|RecordSlot|HashTable|MetaSlab|::locate$", fn) is not None),
    ("bucket pop/push (free lists)",
     lambda f, fn: fn.endswith("::free_piece") or f.endswith(("bucket.rs", "listed.rs"))),
    ("cluster give-back aging (tick/age)",
     lambda f, fn: f.endswith("giveback.rs") or "giveback" in fn),
    ("classify (size -> bucket)",
     lambda f, fn: f.endswith(("params.rs", "classes.rs")) or fn.endswith("::classify")),
    ("type: limit check + statistics", lambda f, fn: f.endswith("types.rs")),
    ("page map (kmemusage) lookup + update",
     lambda f, fn: f.endswith(("usage.rs", "table.rs"))),
    ("dispatch: malloc/free bodies, checks, results", lambda f, fn: True),
]
# The magazine layer's path (examples/mag_pair_cost.rs).
MAG_LAYERS = COMMON + [
    ("piece layer: magazine fills and returns",
     lambda f, fn: re.search(r"take_for_magazine|return_from_magazine", fn) is not None),
    ("depot exchange (both magazines empty/full)",
     lambda f, fn: re.search(r"depot|Front::reload|Front::unload|boxed_magazine", fn) is not None
     or f.endswith("depot.rs")),
    ("magazine pop/push (loaded, previous)",
     lambda f, fn: f.endswith(("magazine/cpu.rs", "magazine/mag.rs"))),
    ("round mark + free-list link test (double free)",
     lambda f, fn: f.endswith(("marker.rs", "bucket.rs"))),
    ("type ledger: credit charge/uncharge + stats", lambda f, fn: f.endswith("ledger.rs")),
    ("classify, hint class, object-start check",
     lambda f, fn: f.endswith(("params.rs", "classes.rs", "pieces.rs"))),
    ("dispatch: the glue's sequence (mirrored)", lambda f, fn: True),
]
PROBES = [
    ("pair_cost", "the malloc core's path (every call before magazines; misses after)",
     CORE_LAYERS),
    ("mag_pair_cost", "the magazine layer's path (core calls of the per-CPU fast path)",
     MAG_LAYERS),
]


def build(example):
    env = dict(os.environ, CARGO_PROFILE_RELEASE_DEBUG="line-tables-only")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", example],
                   cwd=CORE, env=env, check=True)
    return os.path.join(CORE, "target", "release", "examples", example)


def measure(binary, layers_of, size, mode):
    """{layer: instructions per pair} for one size and mode."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        "--toggle-collect=*counted_pairs*", binary, str(size), str(PAIRS), mode],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        text = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100",
                               "--auto=no", out], check=True, capture_output=True,
                              text=True).stdout
    layers = {name: 0 for name, _ in layers_of}
    line = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.+?):(\S.*?)(?: \[.*\])?$")
    started = False
    for row in text.splitlines():
        if "file:function" in row:
            started = True
            continue
        m = line.match(row) if started else None
        if not m:
            continue
        count, f, fn = int(m.group(1).replace(",", "")), m.group(2), m.group(3)
        for name, test in layers_of:
            if test(f, fn):
                layers[name] += count
                break
    return {k: v / PAIRS for k, v in layers.items()}


def main(argv):
    sizes = [int(s) for s in argv[1:]] or [64, 1024, 8192, 65536]
    cols = [(s, m) for s in sizes for m in ("hot", "batch")]
    head = "".join(f"{f'{s} B {m}':>14}" for s, m in cols)
    for example, title, layers_of in PROBES:
        binary = build(example)
        order = list(dict.fromkeys(name for name, _ in layers_of))
        results = {c: measure(binary, layers_of, *c) for c in cols}
        print(f"{example}: instructions per malloc+free pair, {title} (callgrind, {PAIRS} pairs)")
        print(f"{'layer':<46}{head}")
        for name in order:
            print(f"{name[:45]:<46}" + "".join(f"{results[c][name]:>14.1f}" for c in cols))
        total = {c: sum(v for k, v in results[c].items() if not k.startswith(("probe", "host")))
                 for c in cols}
        print(f"{'kmalloc43 total (no probe loop, no host pages)':<46}"
              + "".join(f"{total[c]:>14.1f}" for c in cols))
        print()


if __name__ == "__main__":
    main(sys.argv)
