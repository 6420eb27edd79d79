#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Replay a kmalloc trace in one boot of the bench kernel (make replay).
#
#   tools/kmtrace/replay.sh KDIR TRACE.csv[.xz] OUTDIR
#
# Packs the CSV into the binary form (kmtrace.py pack) and writes the bad
# traces the replay must refuse (kmtrace.py badtraces), boots kmalloc43.ko and
# kmtrace_replay.ko (built by make replay) with tools/kmtrace/guest/replay-init,
# judges the run (no Oops/BUG/WARNING, no KMTRACE-FAIL, results present) and
# writes OUTDIR/results.txt (the module's lines), OUTDIR/series.csv, the table
# OUTDIR/table.txt and the plot OUTDIR/pages.svg (kmtrace.py report).
# KMTRACE_ICOUNT=0: time with the ordinary TCG clock instead of counted instructions.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"

[ $# = 3 ] || die "usage: $0 KDIR TRACE.csv[.xz] OUTDIR"
kdir=$1 trace=$2 outdir=$3
here=$K43_ROOT/tools/kmtrace
py=${KMTRACE_PYTHON:-/usr/bin/python3}
ko=$K43_BUILD/tools/kmtrace/replay/kmtrace_replay.ko
[ -f "$trace" ] || die "no trace $trace"
[ -f "$ko" ] || die "no $ko (run make replay)"
mkdir -p "$outdir"

step "packing $trace ($outdir/trace.bin)"
"$py" "$here/kmtrace.py" pack "$trace" "$outdir/trace.bin"
rm -rf "$outdir/bad"
"$py" "$here/kmtrace.py" badtraces "$outdir/bad"
extra="/usr/share/kmalloc43/trace.bin=$outdir/trace.bin"
for f in "$outdir"/bad/*.bin; do
	extra="$extra /usr/share/kmalloc43/${f##*/}=$f"
done

step "initramfs ($outdir/initramfs.cpio)"
K43_INIT=$here/guest/replay-init K43_STEPS=/dev/null K43_EXTRA=$extra \
	"$K43_ROOT/tools/initramfs.sh" "$kdir" "$outdir/initramfs.cpio" "$K43_BUILD/kmalloc43.ko" "$ko"

# Time: by default QEMU counts instructions (-icount shift=0: the guest clock advances 1 ns per
# instruction), so pass times do not depend on the load of the host; KMTRACE_ICOUNT=0 keeps
# the ordinary TCG clock (wall time, noisy on a shared host).
clock=wall qemu_args=
if [ "${KMTRACE_ICOUNT:-1}" != 0 ]; then
	clock=icount qemu_args="-icount shift=0,sleep=off"
fi
# Guest memory: the trace twice (initramfs and the module's copy), and room for three times its
# peak of live bytes (kmalloc43 keeps parked clusters until it is unloaded), at least 1 GiB.
mem=$("$py" -c 'import struct, sys
total, _, peak = struct.unpack_from("<QQQ", open(sys.argv[1], "rb").read(64), 32)
print(max(1024, 512 + (2 * total + 3 * peak) // 1048576))' "$outdir/trace.bin")
step "booting the bench kernel: SLUB and kmalloc43 replay the trace (QEMU TCG, clock: $clock, ${GUEST_MEM:-$mem} MiB)"
GUEST_MEM=${GUEST_MEM:-$mem} GUEST_TIMEOUT=${GUEST_TIMEOUT:-900} GUEST_CMDLINE="loglevel=6" \
	GUEST_QEMU_ARGS=$qemu_args \
	"$K43_ROOT/tools/run-guest.sh" "$kdir" "$outdir/initramfs.cpio" "$outdir" || true

console=$outdir/console.log data=$outdir/data.log
grep -a 'KMTRACE' "$console" | tr -d '\r' | sed 's/^/    /' >&2 || true
rc=0
if grep -aEq 'Oops|BUG:|WARNING:|Kernel panic|Call Trace' "$console"; then
	info "FAIL: a splat on the console ($console)"; rc=1
fi
if grep -aq 'KMTRACE-FAIL' "$console"; then
	info "FAIL: the replay guest reported a failure (above)"; rc=1
fi
if ! grep -aq 'KMTRACE: done' "$console"; then
	info "FAIL: the guest did not finish ($console)"; rc=1
fi
tr -d '\r' <"$data" | sed -n '/^KMTRACE-RESULTS-BEGIN/,/^KMTRACE-RESULTS-END/p' | sed '1d;$d' >"$outdir/results.txt"
tr -d '\r' <"$data" | sed -n '/^KMTRACE-SERIES-BEGIN/,/^KMTRACE-SERIES-END/p' | sed '1d;$d' >"$outdir/series.csv"
if [ ! -s "$outdir/results.txt" ]; then
	die "no results in $data"
fi
step "results ($outdir/table.txt)"
"$py" "$here/kmtrace.py" report "$outdir/results.txt" "$outdir/series.csv" "$outdir" \
	--trace "$(basename "$trace")" --csv "$trace" --clock $clock || rc=1
cat "$outdir/table.txt"
exit $rc
