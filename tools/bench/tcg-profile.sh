#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Where QEMU's host time goes for a kmalloc43 pair and a kmalloc pair: boots the bench
# kernel with the bench module's profile loops (sections=32: long hot 64 B pairs of
# kmalloc43, of kmalloc, and empty calls) on multi-threaded TCG, records the QEMU process
# with perf (cpu-clock, DWARF call chains, CLOCK_MONOTONIC time stamps), notes the moment
# each loop's console mark appears, and attributes each loop's samples of the vCPU thread
# that ran it (tools/bench/tcg_profile.py): generated code, TB lookups, atomic helpers,
# softmmu slow paths, the execution loop, the host kernel.
#
#   tools/bench/tcg-profile.sh OUTDIR [ITERATIONS]
#
# Run it holding the guest lock (flock /work/.guest.lock ...), with the bench modules built
# (make KERNEL=bench BENCH=1 modules; K43_BUILD_DIR=<dir> boots another build). Needs perf (Debian's linux-perf), installed by hand:
# no Makefile target runs this. A diagnostic of Documentation/performance.rst, "Where
# emulated time goes".
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"

[ $# -ge 1 ] || die "usage: $0 OUTDIR [ITERATIONS]"
out=$(mkdir -p "$1" && cd "$1" && pwd)
iterations=${2:-20000000}
command -v perf >/dev/null || die "no perf (Debian's linux-perf)"

rm -rf "$out/make" "$out/marks" "$out/perf.data"

export GUEST_CMDLINE="kmalloc43_bench.sections=32 kmalloc43_bench.profile_pairs=$iterations ${GUEST_CMDLINE:-}"
# The modules of make KERNEL=bench BENCH=1 modules unless K43_BUILD_DIR says otherwise.
build=${K43_BUILD_DIR:-$K43_ROOT/out/build/bench+bench}
make -C "$K43_ROOT" --no-print-directory KERNEL=bench bench-guest K43_BUILD="$build" OUT="$out/make" \
	>"$out/guest.log" 2>&1 &
guest_job=$!

# The QEMU process of this run: its pid file appears in the bench-guest OUTDIR.
pidfile=$out/make/bench/qemu.pid
for _ in $(seq 1 600); do
	[ -s "$pidfile" ] && [ -d "/proc/$(cat "$pidfile")" ] && break
	kill -0 "$guest_job" 2>/dev/null || break
	sleep 0.1
done
[ -s "$pidfile" ] || die "QEMU did not start (see $out/guest.log)"
pid=$(cat "$pidfile")
step "perf record of QEMU pid $pid ($out/perf.data)"
# TCG_PROFILE_EVENTS replaces the sampling (e.g. "-e probe_qemu:ldq", a uprobe on a softmmu
# helper with its address argument: perf probe -x QEMU 'ldq=helper_le_ldq_mmu addr=%si:x64').
# shellcheck disable=SC2086
perf record -q -k CLOCK_MONOTONIC ${TCG_PROFILE_EVENTS:--e cpu-clock -F 1999 --call-graph dwarf,8192} \
	-p "$pid" -o "$out/perf.data" >"$out/perf-record.log" 2>&1 &
perf_job=$!

# The console marks, with the host's CLOCK_MONOTONIC when each was seen (polled every 10 ms).
/usr/bin/python3 - "$out/make/bench/console.log" "$out/marks" "$pid" <<'EOF'
import os, sys, time
console, marks, pid = sys.argv[1], sys.argv[2], sys.argv[3]
seen = 0
with open(marks, "w") as m:
    while True:
        alive = os.path.exists("/proc/" + pid)
        try:
            with open(console, "rb") as f:
                f.seek(seen)
                data = f.read()
        except FileNotFoundError:
            data = b""
        cut = data.rfind(b"\n") + 1
        now = time.clock_gettime(time.CLOCK_MONOTONIC)
        for line in data[:cut].decode(errors="replace").splitlines():
            i = line.find("KMALLOC43-PROFILE ")
            if i >= 0:
                m.write("%.6f %s\n" % (now, line[i:].strip()))
                m.flush()
        seen += cut
        if not alive:
            break
        time.sleep(0.01)
EOF
rc=0
wait "$guest_job" || rc=$?
wait "$perf_job" || true
[ $rc = 0 ] || info "the guest run failed (exit $rc): $out/guest.log"
cp "$out/make/bench/table.txt" "$out/table.txt" 2>/dev/null || true
if [ -n "${TCG_PROFILE_EVENTS:-}" ]; then
	step "events per loop"
	/usr/bin/python3 "$K43_ROOT/tools/bench/tcg_profile.py" --events "$out" | tee "$out/events.txt"
else
	step "attribution"
	/usr/bin/python3 "$K43_ROOT/tools/bench/tcg_profile.py" "$out" | tee "$out/attribution.txt"
fi
exit $rc
