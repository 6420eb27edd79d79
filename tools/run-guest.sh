#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Boot the test guest under QEMU (TCG) and wait for it to power off.
#
#   tools/run-guest.sh KDIR INITRAMFS OUTDIR [--live]
#
# Writes OUTDIR/console.log (ttyS0: kernel log and /init's progress) and
# OUTDIR/data.log (ttyS1: KTAP documents and step output).  --live also
# copies the console to the terminal.  Exits 0 when the guest powered off,
# 124 when it did not within GUEST_TIMEOUT seconds (default 300).  GUEST_MEM
# (MiB, default 512) and GUEST_CMDLINE (appended) size and steer the guest;
# GUEST_ACCEL (default "tcg") is QEMU's -accel (make bench: tcg,thread=multi).
# OUTDIR/qemu-threads gets the names of QEMU's vCPU threads as the host sees
# them: "CPU 0/TCG,CPU 1/TCG" is multi-threaded TCG (one host thread per
# vCPU), "ALL CPUs/TCG" is one thread for all vCPUs.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

[ $# -ge 3 ] || die "usage: $0 KDIR INITRAMFS OUTDIR [--live]"
kdir=$1 initramfs=$2 outdir=$3 live=${4:-}
timeout=${GUEST_TIMEOUT:-300}
kernel=$kdir/arch/x86/boot/bzImage
[ -f "$kernel" ] || die "no $kernel: is $kdir a built x86_64 kernel tree?"
mkdir -p "$outdir"
console=$outdir/console.log
rm -f "$console" "$outdir/data.log" "$outdir/qemu.pid" "$outdir/qemu-threads"

qemu=(qemu-system-x86_64 -accel "${GUEST_ACCEL:-tcg}" -cpu max -m "${GUEST_MEM:-512}" -smp 2
	-name kmalloc43,debug-threads=on -pidfile "$outdir/qemu.pid"
	-nographic -no-reboot -monitor none
	-kernel "$kernel" -initrd "$initramfs"
	-serial stdio -serial "file:$outdir/data.log"
	-append "console=ttyS0 panic=-1 loglevel=7 ${GUEST_CMDLINE:-}")
# More QEMU options (e.g. -icount for instruction-counted time), split on spaces.
# shellcheck disable=SC2206
qemu+=(${GUEST_QEMU_ARGS:-})

# Record QEMU's vCPU threads once they exist (a few polls; gives up when QEMU is gone).
record_threads() {
	local pid names i
	for i in $(seq 1 300); do
		if [ -s "$outdir/qemu.pid" ]; then
			pid=$(cat "$outdir/qemu.pid")
			[ -d "/proc/$pid" ] || return 0
			names=$(cat /proc/"$pid"/task/*/comm 2>/dev/null | grep '/TCG$' | sort | paste -sd, -) || true
			if [ -n "$names" ]; then
				echo "$names" >"$outdir/qemu-threads"
				return 0
			fi
		fi
		sleep 0.1
	done
}
record_threads &
watcher=$!

start=$(date +%s)
rc=0
if [ "$live" = --live ]; then
	timeout --foreground -k 5 "$timeout" "${qemu[@]}" </dev/null 2>&1 | tee "$console" || rc=${PIPESTATUS[0]}
else
	timeout -k 5 "$timeout" "${qemu[@]}" </dev/null >"$console" 2>&1 || rc=$?
fi
secs=$(($(date +%s) - start))
wait "$watcher" || true
echo "$secs" >"$outdir/guest-seconds"
if [ $rc = 124 ] || [ $rc = 137 ]; then
	info "guest did not power off within ${timeout}s (GUEST_TIMEOUT); console log: $console"
	exit 124
fi
[ $rc = 0 ] || die "qemu failed (exit $rc); console log: $console"
info "guest powered off after ${secs}s; console log: $console"
