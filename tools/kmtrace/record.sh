#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Record a kmalloc trace on the bench kernel (make trace).
#
#   tools/kmtrace/record.sh KDIR OUTDIR
#
# Boots KDIR (the bench kernel: normal SLUB, ftrace with the kmem events)
# with slab_nomerge and the kmalloc/kfree/kmem_cache_alloc/kmem_cache_free
# events on from early boot, runs the busybox workload of
# tools/kmtrace/guest/workload.sh, and receives the ftrace text, gzipped, on
# the second serial port (OUTDIR/data.log).  Then converts it to
# OUTDIR/trace.csv.xz (kmtrace.py csv) and writes its statistics to
# OUTDIR/trace.stats (kmtrace.py stats).
#
# KMTRACE_BUF (per-CPU ring buffer, default 160M) and GUEST_MEM (MiB,
# default 2048) size the guest; the run fails if the ring buffer lost events.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"

[ $# = 2 ] || die "usage: $0 KDIR OUTDIR"
kdir=$1 outdir=$2
here=$K43_ROOT/tools/kmtrace
py=${KMTRACE_PYTHON:-/usr/bin/python3}
mkdir -p "$outdir"

step "initramfs ($outdir/initramfs.cpio)"
K43_INIT=$here/guest/record-init K43_STEPS=/dev/null \
	K43_EXTRA="/etc/kmalloc43/workload.sh=$here/guest/workload.sh" \
	"$K43_ROOT/tools/initramfs.sh" "$kdir" "$outdir/initramfs.cpio"

events=kmem:kmalloc,kmem:kfree,kmem:kmem_cache_alloc,kmem:kmem_cache_free
step "booting the bench kernel with the kmem events on (QEMU TCG)"
cmdline="slab_nomerge trace_event=$events trace_buf_size=${KMTRACE_BUF:-160M} loglevel=4"
GUEST_MEM=${GUEST_MEM:-2048} GUEST_TIMEOUT=${GUEST_TIMEOUT:-900} GUEST_CMDLINE=$cmdline \
	"$K43_ROOT/tools/run-guest.sh" "$kdir" "$outdir/initramfs.cpio" "$outdir"

console=$outdir/console.log
grep -a 'KMTRACE' "$console" | tr -d '\r' | sed 's/^/    /' >&2
if grep -aq 'KMTRACE-FAIL' "$console"; then
	die "the recording guest reported a failure (above; console log: $console)"
fi
grep -aEq '(Oops|BUG:|WARNING:|Kernel panic)' "$console" && die "splat on the console: $console"

step "extracting the trace from $outdir/data.log"
"$py" "$here/kmtrace.py" unframe "$outdir/data.log" "$outdir/ftrace.txt.gz"
step "converting to CSV ($outdir/trace.csv.xz)"
"$py" "$here/kmtrace.py" csv "$outdir/ftrace.txt.gz" "$outdir/trace.csv.xz" 2>"$outdir/convert.log"
cat "$outdir/convert.log" >&2
{
	echo "# Recorded $(date -u '+%Y-%m-%d %H:%M UTC') by tools/kmtrace/record.sh (make trace) on"
	echo "# $(basename "$kdir") (tools/configs/bench.config), command line:"
	echo "#   $cmdline"
	echo "# Guest: $(grep -ao 'guest up: [^;]*' "$console" | head -n1); workload tools/kmtrace/guest/workload.sh:"
	grep -a 'KMTRACE: \(part\|workload\|cpu\)' "$console" | tr -d '\r' | sed 's/^KMTRACE: /#   /'
	sed 's/^kmtrace: /# conversion: /' "$outdir/convert.log"
	"$py" "$here/kmtrace.py" stats "$outdir/trace.csv.xz"
} >"$outdir/trace.stats"
cat "$outdir/trace.stats"
