#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Instructions per malloc+free pair in the malloc core, layer by layer (make bench-cost).

    tools/bench/pair_cost.py [SIZE ...]

Builds rust/core's example pair_cost (release, with line tables), runs it under
valgrind --tool=callgrind collecting only inside its counted loop, and groups the
instruction counts of callgrind_annotate's file:function lines into the layers of
Documentation/performance.rst (classify, type accounting, bucket free lists, page map,
give-back aging, dispatch, the probe's own loop), and 64 B pairs through the magazine
protocol (front-hot, front-batch: rust/core's host simulation of the module's fast path).
Hot and batch pairs for each SIZE (default 64 1024 8192 65536).
Instruction counts are exact and repeatable: they do not depend on the machine's load.
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
LAYERS = [
    ("probe loop (not kmalloc43)", lambda f, fn: re.search(r"counted_pairs|front_pairs", fn)
     is not None),
    ("magazines: per-CPU ledger charge (ledger.rs)", lambda f, fn: f.endswith("ledger.rs")),
    ("magazines: loaded magazine pop/push",
     lambda f, fn: "src/magazine/" in f or "::magazine::" in fn),
    ("magazines: the host simulation's bookkeeping (SimFront)",
     lambda f, fn: f.endswith("hosted/magazines.rs") or "SimFront" in fn),
    ("host page source (libc, std HashMap: not in the kernel)",
     lambda f, fn: re.search(r"libc|glibc|sysdeps|malloc\.c|hosted/", f) is not None
     or re.search(r"hashbrown|BuildHasher|HostPages|^_?_?(mem|posix|_int|unlink|systrim)", fn)
     is not None),
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
ORDER = list(dict.fromkeys(name for name, _ in LAYERS))


def build():
    env = dict(os.environ, CARGO_PROFILE_RELEASE_DEBUG="line-tables-only")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "pair_cost"],
                   cwd=CORE, env=env, check=True)
    return os.path.join(CORE, "target", "release", "examples", "pair_cost")


def measure(binary, size, mode):
    """{layer: instructions per pair} for one size and mode."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        "--toggle-collect=*counted_pairs*", binary, str(size), str(PAIRS), mode],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        text = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100",
                               "--auto=no", out], check=True, capture_output=True,
                              text=True).stdout
    layers = {name: 0 for name in ORDER}
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
        for name, test in LAYERS:
            if test(f, fn):
                layers[name] += count
                break
    return {k: v / PAIRS for k, v in layers.items()}


def main(argv):
    sizes = [int(s) for s in argv[1:]] or [64, 1024, 8192, 65536]
    binary = build()
    cols = [(s, m) for s in sizes for m in ("hot", "batch")]
    cols += [(64, "front-hot"), (64, "front-batch")]
    results = {c: measure(binary, *c) for c in cols}
    head = "".join(f"{f'{s} B {m}':>16}" for s, m in cols)
    print(f"instructions per malloc+free pair in the malloc core (callgrind, {PAIRS} pairs)")
    print(f"{'layer':<46}{head}")
    for name in ORDER:
        print(f"{name[:45]:<46}" + "".join(f"{results[c][name]:>16.1f}" for c in cols))
    total = {c: sum(v for k, v in results[c].items()
                    if not k.startswith(("probe", "host", "magazines: the host")))
             for c in cols}
    print(f"{'kmalloc43 total (no probe loop, no host pages)':<46}"
          + "".join(f"{total[c]:>16.1f}" for c in cols))


if __name__ == "__main__":
    main(sys.argv)
