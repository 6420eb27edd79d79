#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""How the fine size-class table (rust/core/src/malloc/classes.rs, FINE_SIZES) was chosen.

    tools/fine-classes.py TRACE.csv[.xz]

Starts from four classes per doubling (every multiple of 16 up to 128, then 2^k * (1 + j/4)), the
table that minimises the rounding loss for sizes spread evenly on a log scale, and adds, one at
a time, the class that most reduces the pages the trace's peak needs: every object live at the
peak (the row where the live requested bytes are largest) rounded up to its class, divided by
its class's cluster efficiency (pieces * size / cluster bytes, clusters as classes.rs makes
them). It stops when a class saves less than 0.05 % of the live bytes. Candidates keep the
table's rules: multiples of 16 (of 128 above 1 KiB, for the lookup table), at most 8 classes per
doubling, at most 47 classes, and alignment (a request whose size is a multiple of a power of
two A <= 4096 lands in a class that is a multiple of A, so its piece is aligned to A).
Prints the steps and the table.
"""
import lzma
import sys

PAGE = 4096
BASE = [16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768,
        896, 1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192]


def peak_histogram(path):
    """Requested sizes (<= 8 KiB) of the objects live at the peak of live requested bytes."""
    opener = lzma.open if path.endswith('.xz') else open
    live, cur = {}, 0
    rows = []
    with opener(path, 'rt') as f:
        if next(f).strip() != 'seq,op,ptr,bytes_req,bytes_alloc,cache':
            sys.exit('%s: not a kmtrace CSV' % path)
        for line in f:
            rows.append(line)
    best, best_seq = -1, 0
    for seq, line in enumerate(rows):  # first pass: where is the peak?
        _, op, ptr, req = line.split(',', 4)[:4]
        if op == 'alloc':
            if ptr in live:
                cur -= live[ptr]
            live[ptr] = int(req)
            cur += int(req)
        elif op == 'free' and ptr in live:
            cur -= live.pop(ptr)
        if cur > best:
            best, best_seq = cur, seq
    live = {}
    for line in rows[:best_seq + 1]:  # second pass: the live set there
        _, op, ptr, req = line.split(',', 4)[:4]
        if op == 'alloc':
            live[ptr] = int(req)
        elif op == 'free':
            live.pop(ptr, None)
    hist = {}
    for r in live.values():
        if 0 < r <= 8192:
            hist[r] = hist.get(r, 0) + 1
    return sorted(hist.items()), best_seq


def cluster_efficiency(s):
    """As classes.rs: the smallest power-of-two cluster of at most 8 pages with a tail <= 1/16."""
    pages = 1
    while pages * PAGE < s:
        pages *= 2
    best = None
    while pages <= 8:
        b = pages * PAGE
        w = b % s
        if w * 16 <= b:
            return (b - w) / b
        if best is None or w / b < best[0]:
            best = (w / b, (b - w) / b)
        pages *= 2
    return best[1]


def cost(hist, classes):
    cs = sorted(classes)
    return sum(n * next(c for c in cs if c >= r) / cluster_efficiency(next(c for c in cs if c >= r))
               for r, n in hist)


def valid(classes):
    cs = sorted(classes)
    if len(cs) > 47:
        return False
    if any(sum(1 for x in cs if s / 2 < x <= s) > 8 for s in cs):
        return False
    prev = 0
    for c in cs:
        a = 16
        while a <= PAGE:
            if (prev // a + 1) * a <= c and c % a:
                return False
            a *= 2
        prev = c
    return True


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    hist, seq = peak_histogram(sys.argv[1])
    live = sum(r * n for r, n in hist)
    print('peak at row %d: %d objects <= 8 KiB, %d bytes' % (seq, sum(n for _, n in hist), live))
    table = list(BASE)
    print('base (4 per doubling): pages needed / live = %.4f' % (cost(hist, table) / live))
    cands = list(range(16, 1025, 16)) + list(range(1152, 8193, 128))
    while True:
        now = cost(hist, table)
        best = max(((now - cost(hist, table + [c]), c) for c in cands
                    if c not in table and valid(table + [c])), default=None)
        if best is None or best[0] < 0.0005 * live:
            break
        table.append(best[1])
        print('add %5d: saves %8d bytes, now %.4f' % (best[1], best[0], cost(hist, table) / live))
    print('FINE_SIZES (%d): %s' % (len(table), ', '.join(map(str, sorted(table)))))


if __name__ == '__main__':
    main()
