#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Build the initramfs, boot the guest and judge the run.
#
#   tools/guest-test.sh KDIR OUTDIR [--live] [MODULE.ko...]
#
# Without modules, the guest loads every module of the last kbuild run in
# K43_BUILD (its modules.order), kmalloc43.ko first.
#
# --live shows the guest console as it runs (make run); otherwise only the
# verdict is printed (make check).  Exit status: that of tools/check-guest.sh.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

kdir=$1 outdir=$2
shift 2
live=
[ "${1:-}" = --live ] && { live=--live; shift; }

if [ $# = 0 ]; then
	order=$K43_BUILD/modules.order
	[ -f "$order" ] || die "no $order: run make first"
	set -- "$K43_BUILD/kmalloc43.ko"
	while read -r o; do
		[ "$o" = kmalloc43.o ] || set -- "$@" "$K43_BUILD/${o%.o}.ko"
	done <"$order"
fi

mkdir -p "$outdir"
# Two runs into the same OUTDIR (two make checks in one clone) would clobber
# each other's logs: take turns.
exec 8>"$outdir/.lock"
flock -n 8 || { info "waiting for another guest run using $outdir"; flock 8; }
step "initramfs ($outdir/initramfs.cpio)"
"$K43_ROOT/tools/initramfs.sh" "$kdir" "$outdir/initramfs.cpio" "$@"
step "booting the guest (QEMU TCG; timeout ${GUEST_TIMEOUT:-300}s)"
rc=0
"$K43_ROOT/tools/run-guest.sh" "$kdir" "$outdir/initramfs.cpio" "$outdir" $live || rc=$?
# On a loaded host, TCG has been seen to stall the guest kernel's own early boot (before /init
# ran a single step) until the timeout. That is the emulator, not kmalloc43: boot once more,
# and say so. A guest that reached /init is never booted again: its run is the verdict.
if [ $rc = 124 ] && ! grep -q 'KMALLOC43: guest up' "$outdir/console.log"; then
	info "the guest kernel stalled before /init (emulator); booting it once more"
	cp "$outdir/console.log" "$outdir/console-stalled.log"
	"$K43_ROOT/tools/run-guest.sh" "$kdir" "$outdir/initramfs.cpio" "$outdir" $live || true
fi
step "checking the guest run"
"$K43_ROOT/tools/check-guest.sh" "$kdir" "$outdir"
