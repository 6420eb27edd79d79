#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Build the test guest's initramfs with the kernel tree's own usr/gen_init_cpio.
#
#   tools/initramfs.sh KDIR OUT.cpio MODULE.ko...
#
# Contents: a static busybox, tools/guest/init as /init, the given modules in
# /lib/modules/ (loaded by /init in the order given), the drop-in steps of
# tools/guest/steps.d/ in /etc/kmalloc43/steps.d/ and the files of
# tools/guest/files/ in /usr/share/kmalloc43/.  /etc/kmalloc43/modules lists
# "NAME DEPENDS" per module, in load order.
#
# Other guests (tools/kmtrace) reuse it with K43_INIT=FILE (another /init),
# K43_STEPS=DIR (another steps directory, or /dev/null for none) and
# K43_EXTRA="DEST=SRC ..." (more files, e.g. a trace, anywhere in the guest).
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

[ $# -ge 2 ] || die "usage: $0 KDIR OUT.cpio MODULE.ko..."
kdir=$1 out=$2
shift 2

busybox=${BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || die "no $busybox: install busybox-static (tools/setup-deps.sh)"
if readelf -l "$busybox" 2>/dev/null | grep -q 'Requesting program interpreter'; then
	die "$busybox is dynamically linked; the guest needs busybox-static"
fi

# The tree's gen_init_cpio: built with the kernel when CONFIG_BLK_DEV_INITRD=y;
# otherwise compile it from the tree's source (one C file).
mkdir -p "$(dirname "$out")"
gen=$kdir/usr/gen_init_cpio
if [ ! -x "$gen" ]; then
	ksrc=$kdir; [ -d "$kdir/source" ] && ksrc=$kdir/source
	gen=$(dirname "$out")/gen_init_cpio
	[ -x "$gen" ] || cc -O2 -o "$gen" "$ksrc/usr/gen_init_cpio.c" ||
		die "cannot build gen_init_cpio from $ksrc/usr/gen_init_cpio.c"
fi

spec=$out.list
modlist=$out.modules
: >"$modlist"
{
	for d in /bin /dev /etc /etc/kmalloc43 /etc/kmalloc43/steps.d /lib /lib/modules \
		/proc /sys /tmp /usr /usr/share /usr/share/kmalloc43; do
		echo "dir $d 0755 0 0"
	done
	echo "nod /dev/console 0600 0 0 c 5 1"
	echo "file /bin/busybox $busybox 0755 0 0"
	echo "file /init ${K43_INIT:-$K43_ROOT/tools/guest/init} 0755 0 0"
	for ko in "$@"; do
		[ -f "$ko" ] || die "no module $ko (run make first)"
		echo "file /lib/modules/${ko##*/} $(realpath "$ko") 0644 0 0"
		# "name depends" (the modules it imports symbols from, from .modinfo).
		m=${ko##*/}
		deps=$(tr '\0' '\n' <"$ko" | sed -n 's/^depends=//p' | head -n1)
		echo "${m%.ko} $deps" >>"$modlist"
	done
	echo "file /etc/kmalloc43/modules $modlist 0644 0 0"
	for f in "${K43_STEPS:-$K43_ROOT/tools/guest/steps.d}"/*.sh; do
		[ -e "$f" ] && echo "file /etc/kmalloc43/steps.d/${f##*/} $f 0755 0 0"
	done
	if [ -d "$K43_ROOT/tools/guest/files" ]; then
		for f in "$K43_ROOT"/tools/guest/files/*; do
			[ -f "$f" ] && echo "file /usr/share/kmalloc43/${f##*/} $f 0755 0 0"
		done
	fi
	for e in ${K43_EXTRA:-}; do
		[ -f "${e#*=}" ] || die "no ${e#*=} (K43_EXTRA)"
		echo "file ${e%%=*} $(realpath "${e#*=}") 0644 0 0"
	done
} >"$spec"
"$gen" "$spec" >"$out"
