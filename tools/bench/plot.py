#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Draw the SVG plots of make bench from the CSV that the bench module printed.

    tools/bench/plot.py RESULTS.csv OUTDIR [SUBTITLE]

RESULTS.csv has the columns section,case,metric,value,target,verdict (tools/bench-guest.sh
extracts it from the guest console).  Writes OUTDIR/bench-pairs.svg (kmalloc43/kmalloc pair
ratios per size, with the P1 targets), OUTDIR/bench-scaling.svg (2-vCPU over 1-vCPU throughput,
with the P3 target) and OUTDIR/bench-vmem.svg (vmem/genalloc per fragment count).  Only ratios
are plotted: the guest's times are emulated.
"""

import csv
import os
import sys
import textwrap


def load(path):
    """Rows of the CSV as dicts; a clear error for a missing or malformed file."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"section", "case", "metric", "value", "target", "verdict"}
    if not rows or not need <= set(rows[0]):
        raise SystemExit(f"{path}: not a kmalloc43 bench CSV (columns {sorted(need)})")
    return rows


def number(text):
    """A ratio cell as a float, None for '-' (not measured)."""
    try:
        return float(text)
    except ValueError:
        return None


def p1_limit(size):
    """The P1 target for a request size (issue 8)."""
    return 1.0 if size <= 2048 else 1.2 if size <= 8192 else 1.5


def size_label(size):
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


def plot_pairs(plt, rows, out, subtitle):
    metrics = ["hot_nowait", "hot_waitok", "batch_nowait", "batch_waitok"]
    labels = ["hot NOWAIT", "hot WAITOK", "batch NOWAIT", "batch WAITOK"]
    data = {}
    for r in rows:
        if r["section"] == "pairs":
            data.setdefault(int(r["case"]), {})[r["metric"]] = number(r["value"])
    sizes = sorted(data)
    if not sizes:
        raise SystemExit("no pairs rows in the CSV")
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.2
    for i, (m, label) in enumerate(zip(metrics, labels)):
        xs = [j + (i - 1.5) * width for j in range(len(sizes))]
        ys = [data[s].get(m) or 0 for s in sizes]
        ax.bar(xs, ys, width, label=label)
    for j, s in enumerate(sizes):
        lim = p1_limit(s)
        ax.hlines(lim, j - 0.45, j + 0.45, colors="black", linestyles="dashed", linewidth=1)
    ax.axhline(1.0, color="grey", linewidth=0.6)
    ax.set_xticks(range(len(sizes)), [size_label(s) for s in sizes])
    ax.set_ylabel("kmalloc43 pair / kmalloc pair (lower is better)")
    ax.set_xlabel("request size")
    ax.set_title("malloc+free pair: kmalloc43 / kmalloc, same boot (dashed: P1 target)")
    if subtitle:
        fig.text(0.01, 0.01, subtitle, fontsize=7)
    ax.legend()
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(os.path.join(out, "bench-pairs.svg"), metadata={"Date": None})
    plt.close(fig)


def plot_scaling(plt, rows, out, subtitle):
    # Per row: the median speed-up over the repetitions and its lowest and highest (the CSV
    # has other metrics per row too, e.g. two_core_runs: select by metric, not by row alone).
    data = {}
    for r in rows:
        if r["section"] == "scaling":
            data.setdefault(r["case"], {})[r["metric"]] = number(r["value"])
    fig, ax = plt.subplots(figsize=(6, 4.5))
    names = [n for n in ("kmalloc43", "kmalloc", "irq rounds", "control")
             if data.get(n, {}).get("speedup_2v1") is not None]
    ys = [data[n]["speedup_2v1"] for n in names]
    lows = [data[n].get("speedup_2v1_lowest", y) or y for n, y in zip(names, ys)]
    highs = [data[n].get("speedup_2v1_highest", y) or y for n, y in zip(names, ys)]
    ax.bar(names, ys, 0.5, color=["tab:blue", "tab:orange", "tab:grey", "tab:green"][: len(names)],
           yerr=[[y - lo for y, lo in zip(ys, lows)], [hi - y for y, hi in zip(ys, highs)]],
           capsize=4, label="median of the repetitions (bar: lowest-highest)")
    ax.axhline(2.0, color="grey", linewidth=0.6, label="perfect (2.00)")
    ax.axhline(1.9, color="black", linestyle="dashed", linewidth=1, label="P3 target (1.90)")
    for x, (y, hi) in enumerate(zip(ys, highs)):
        ax.text(x, hi + 0.03, f"{y:.2f}", ha="center")
    if not names:
        ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
    ax.set_ylim(0, 2.3)
    ax.set_ylabel("throughput on 2 vCPUs / on 1 vCPU")
    ax.set_title("scaling: one kthread per vCPU doing 64 B pairs\n"
                 "(irq rounds: interrupt save/restore only; control: as long as kmalloc43's run,\n"
                 "sharing nothing: what the host allowed)", fontsize=9)
    ax.legend(loc="lower right")
    if subtitle:
        fig.text(0.01, 0.01, subtitle, fontsize=4)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(os.path.join(out, "bench-scaling.svg"), metadata={"Date": None})
    plt.close(fig)


def plot_vmem(plt, rows, out, subtitle):
    cases = [("xalloc_1u", "xalloc 1 unit (a hole fits)"),
             ("xalloc_2u", "xalloc 2 units (only the tail fits)"),
             ("qcache_1u", "vmem_alloc 1 unit, quantum cache")]
    data = {}
    for r in rows:
        if r["section"] == "vmem":
            data.setdefault(int(r["case"]), {})[r["metric"]] = number(r["value"])
    frags = sorted(data)
    if not frags:
        raise SystemExit("no vmem rows in the CSV")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.27
    for i, (c, label) in enumerate(cases):
        xs = [j + (i - 1) * width for j in range(len(frags))]
        ys = [data[f].get(f"{c}_vmem_over_genalloc") or 0 for f in frags]
        ax.bar(xs, ys, width, label=label)
    ax.set_yscale("log")
    ax.set_ylim(1e-6, 3)
    ax.axhline(1.0, color="black", linestyle="dashed", linewidth=1, label="genalloc (1.0)")
    ax.axhline(0.05, color="grey", linestyle="dotted", linewidth=1, label="20x faster (0.05)")
    ax.set_xticks(range(len(frags)), [f"{f:,} fragments" for f in frags])
    ax.set_ylabel("vmem / genalloc time per pair (log; lower is better)")
    ax.set_title("vmem against genalloc on a fragmented arena, same boot")
    ax.legend(fontsize=8)
    if subtitle:
        fig.text(0.01, 0.01, subtitle, fontsize=4)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(os.path.join(out, "bench-vmem.svg"), metadata={"Date": None})
    plt.close(fig)


def main(argv):
    if len(argv) not in (3, 4):
        raise SystemExit(__doc__)
    rows = load(argv[1])
    out = argv[2]
    # The run's header (kernel, QEMU), wrapped to the narrowest plot.
    subtitle = textwrap.fill(argv[3].strip(), 150) if len(argv) == 4 else ""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("matplotlib is missing: run tools/setup-deps.sh plot")
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "kmalloc43"
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    plot_pairs(plt, rows, out, subtitle)
    plot_scaling(plt, rows, out, subtitle)
    plot_vmem(plt, rows, out, subtitle)
    for name in ("bench-pairs.svg", "bench-scaling.svg", "bench-vmem.svg"):
        print(f"    {os.path.join(out, name)}")


if __name__ == "__main__":
    main(sys.argv)
