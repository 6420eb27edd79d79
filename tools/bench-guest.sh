#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Boot the modules of the bench module's build (K43_BUILD: make bench builds
# them, with tools/bench/, in out/build/bench+bench, which make check leaves
# alone) and extract the benchmark table.
#
#   tools/bench-guest.sh KDIR OUTDIR
#
# The guest runs on QEMU multi-threaded TCG (-accel tcg,thread=multi: one host
# thread per vCPU, so that the scaling benchmark can scale); the header says
# which vCPU threads QEMU really had.  The guest run is judged like make check
# (tools/guest-test.sh: KUnit, splats, power-off); the table printed by
# kmalloc43_bench between the KMALLOC43-BENCH-BEGIN/END console lines is saved
# as OUTDIR/table.txt and OUTDIR/table-<UTC time>.txt and printed, its CSV
# lines as OUTDIR/results.csv, and tools/bench/plot.py draws the SVG plots
# (OUTDIR/*.svg, copied to Documentation/).  Exit status: non-zero when the
# guest run failed, printed no table, or the plots could not be drawn.
# GUEST_CMDLINE=kmalloc43_bench.sections=MASK runs some sections only (a
# diagnostic, drawn by no plot); with GUEST_ACCEL=tcg and
# GUEST_QEMU_ARGS="-icount shift=0,sleep=off" every time is guest instructions.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

[ $# = 2 ] || die "usage: $0 KDIR OUTDIR"
kdir=$1 outdir=$2
grep -qx 'tools/bench/kmalloc43_bench.o' "$K43_BUILD/modules.order" 2>/dev/null ||
	die "$K43_BUILD has no bench module (tools/bench/): make bench, or make KERNEL=bench BENCH=1 modules, builds it there"

# The benchmarks run at insmod; under TCG they take a while.
export GUEST_TIMEOUT=${GUEST_TIMEOUT:-600}
export GUEST_ACCEL=${GUEST_ACCEL:-tcg,thread=multi}
rc=0
"$K43_ROOT/tools/guest-test.sh" "$kdir" "$outdir" || rc=$?

console=$outdir/console.log
table=$outdir/table.txt
# Console lines come as "[   12.345678] kmalloc43_bench: text\r"; /init's own
# console lines can cut into them (printk flushes the console asynchronously),
# so keep only what follows each "kmalloc43_bench: " prefix.
sed -n '/kmalloc43_bench: KMALLOC43-BENCH-BEGIN/,/kmalloc43_bench: KMALLOC43-BENCH-END/p' "$console" |
	sed -n -e 's/\r$//' -e 's/^.*\] kmalloc43_bench: \{0,1\}//p' |
	grep -v '^KMALLOC43-BENCH-' >"$table.all" || true
grep -v '^CSV,' "$table.all" >"$table" || true
sed -n 's/^CSV,//p' "$table.all" >"$outdir/results.csv" || true
rm -f "$table.all"
if [ ! -s "$table" ]; then
	info "no benchmark table in $console"
	exit 1
fi
threads=$(cat "$outdir/qemu-threads" 2>/dev/null || echo "unknown")
case $threads in
*"CPU 1/TCG"*) mttcg="multi-threaded TCG (vCPU threads: $threads)" ;;
*) mttcg="NOT multi-threaded TCG (vCPU threads: $threads)" ;;
esac
{
	echo "guest kernel: $(sed -n 's/.*KMALLOC43: guest up: //p' "$console" | tr -d '\r' | head -n1)" \
		"($(basename "$kdir")); host: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "qemu: $(qemu-system-x86_64 --version | head -n1), -accel $GUEST_ACCEL -smp 2: $mttcg"
	cat "$table"
} >"$table.new" && mv "$table.new" "$table"
cp "$table" "$outdir/table-$(date -u +%Y%m%dT%H%M%SZ).txt"
step "benchmark table ($table; CSV $outdir/results.csv)"
cat "$table"
case " ${GUEST_CMDLINE:-} " in
*" kmalloc43_bench.sections="*)
	# A diagnostic run of some sections only (Documentation/performance.rst): no plots, and
	# Documentation/ keeps the plots of the last full run.
	info "partial run (GUEST_CMDLINE=${GUEST_CMDLINE}): no plots"
	exit $rc
	;;
esac
step "plots"
# Debian's interpreter: python3-matplotlib (tools/setup-deps.sh plot) installs into it.
"${BENCH_PYTHON:-/usr/bin/python3}" "$K43_ROOT/tools/bench/plot.py" "$outdir/results.csv" "$outdir" "$(head -n2 "$table" | tr '\n' ' ')" || rc=1
for f in "$outdir"/bench-*.svg; do
	[ -f "$f" ] && cp "$f" "$K43_ROOT/Documentation/" && info "Documentation/$(basename "$f")"
done
exit $rc
