#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Host test of the Makefile's build directories: make check's builds (no bench or replay module)
# and make bench's and make replay's (BENCH=1, REPLAY=1) are kbuilds in different directories,
# and bench-guest and replay-guest boot the latter whatever the command line's BENCH and REPLAY
# (K43_BUILD= given wins), so make check followed by make KERNEL=bench bench-guest boots what
# make bench built. Nothing is built or booted: make runs with TOOLS= pointing at stand-in
# scripts that print what they were given. Run by make host-check.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "build-dirs-test: FAIL: $*" >&2; fails=$((fails + 1)); }

# The stand-ins: the kernel's path, and the guest scripts print K43_BUILD.
mkdir -p "$tmp/tools/kmtrace"
printf '#!/bin/sh\necho /nonexistent-kdir\n' >"$tmp/tools/kernel.sh"
printf '#!/bin/sh\necho "K43_BUILD=$K43_BUILD"\n' >"$tmp/tools/bench-guest.sh"
cp "$tmp/tools/bench-guest.sh" "$tmp/tools/kmtrace/replay.sh"
chmod +x "$tmp/tools/kernel.sh" "$tmp/tools/bench-guest.sh" "$tmp/tools/kmtrace/replay.sh"

# run ARGS...: the build directories (M=) and K43_BUILD values that make ARGS would use.
run() {
	make --no-print-directory -s -C "$root" TOOLS="$tmp/tools" OUT="$tmp/out" "$@" 2>&1 |
		grep -o 'M=[^ ]*build[^ ]*\|K43_BUILD=[^ ]*' | sort -u | tr '\n' ' '
}
# expect WANT ARGS...
expect() {
	want=$1; shift
	got=$(run "$@")
	[ "$got" = "$want" ] || fail "make $*: got '$got', want '$want'"
}
b=$tmp/out/build
# make -n prints the kbuild line (M=); bench-guest and replay-guest run their stand-ins.
expect "M=$b/bench " -n KERNEL=bench modules
expect "M=$b/test " -n modules
expect "M=$b/bench+bench " -n KERNEL=bench BENCH=1 modules
expect "M=$b/bench+replay " -n KERNEL=bench REPLAY=1 modules
expect "K43_BUILD=$b/bench+bench " KERNEL=bench bench-guest
expect "K43_BUILD=$b/bench+bench " KERNEL=bench BENCH=1 bench-guest
expect "K43_BUILD=/some/where " KERNEL=bench bench-guest K43_BUILD=/some/where
expect "K43_BUILD=$b/bench+replay " KERNEL=bench replay-guest
expect "K43_BUILD=$b/bench+replay " KERNEL=bench REPLAY=1 replay-guest
# The icount recipe of Documentation/performance.rst builds and boots in one make: the build
# above, the boot here.
expect "M=$b/bench+bench " -n KERNEL=bench BENCH=1 modules bench-guest

if [ $fails != 0 ]; then
	echo "build-dirs-test: $fails failure(s)" >&2
	exit 1
fi
echo "build-dirs-test: ok"
