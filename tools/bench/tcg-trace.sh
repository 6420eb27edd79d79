#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The guest instructions of a hot kmalloc43 pair and of a kmalloc pair, as they execute: boots
# the bench kernel with the bench module's profile loops (sections=32) and QEMU's gdb stub,
# and while each loop runs, single-steps two of its pairs with gdb
# (tools/bench/tcg_trace_gdb.py), recording every instruction and the guest addresses of its
# memory operands; tools/bench/tcg_trace_count.py then counts what costs under TCG (calls,
# rets, indirect jumps, locked operations, memory operations, the data pages touched,
# translation blocks and cross-page transfers).
#
#   tools/bench/tcg-trace.sh OUTDIR
#
# Run it holding the guest lock, with the bench modules built (make KERNEL=bench BENCH=1
# modules; K43_BUILD_DIR=<dir> boots another build). Needs gdb. A diagnostic of
# Documentation/performance.rst, "Where emulated time goes".
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"

[ $# = 1 ] || die "usage: $0 OUTDIR"
out=$(mkdir -p "$1" && cd "$1" && pwd)
command -v gdb >/dev/null || die "no gdb"
port=${TCG_TRACE_PORT:-12346}
rm -rf "$out/make" "$out/trace.json"
build=${K43_BUILD_DIR:-$K43_ROOT/out/build/bench+bench}
# Long loops: gdb attaches while each runs.
GUEST_CMDLINE="kmalloc43_bench.sections=32 kmalloc43_bench.profile_pairs=40000000 ${GUEST_CMDLINE:-}" \
	GUEST_QEMU_ARGS="-gdb tcp:127.0.0.1:$port ${GUEST_QEMU_ARGS:-}" \
	make -C "$K43_ROOT" --no-print-directory KERNEL=bench bench-guest K43_BUILD="$build" \
	OUT="$out/make" >"$out/guest.log" 2>&1 &
guest_job=$!
console=$out/make/bench/console.log

# wait_mark TEXT: until the console shows "KMALLOC43-PROFILE TEXT".
wait_mark() {
	for _ in $(seq 1 3000); do
		grep -aq "KMALLOC43-PROFILE $1" "$console" 2>/dev/null && return 0
		kill -0 "$guest_job" 2>/dev/null || die "the guest ended before '$1' ($out/guest.log)"
		sleep 0.1
	done
	die "no '$1' on the console"
}

# trace ADDR...: one gdb session stepping through a call of each ADDR in turn.
trace() {
	gdb -batch -nx -ex "set architecture i386:x86-64" -ex "target remote 127.0.0.1:$port" \
		-x "$K43_ROOT/tools/bench/tcg_trace_gdb.py" -ex "k43-trace $out/trace.json $*" \
		-ex "detach" >>"$out/gdb.log" 2>&1
}

wait_mark "k43 begin"
addr() { sed -n "s/.*KMALLOC43-PROFILE addresses.* $1=\(0x[0-9a-f]*\).*/\1/p" "$console" | tr -d '\r' | head -n1; }
m=$(addr kmalloc43_malloc) f=$(addr kmalloc43_free) km=$(addr kmalloc) kf=$(addr kfree)
step "tracing kmalloc43_malloc ($m) and kmalloc43_free ($f)"
trace "$m" "$f" "$m" "$f"
wait_mark "kmalloc begin"
step "tracing __kmalloc_noprof ($km) and kfree ($kf), called directly"
trace "$km" "$kf" "$km" "$kf"
wait "$guest_job" || info "the guest run failed: $out/guest.log"
step "counts"
/usr/bin/python3 "$K43_ROOT/tools/bench/tcg_trace_count.py" "$out/trace.json" "$m,$f" "$km,$kf" | tee "$out/counts.txt"
