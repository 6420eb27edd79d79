#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Judge a guest run from its logs.
#
#   tools/check-guest.sh KDIR OUTDIR
#
# Reads OUTDIR/console.log and OUTDIR/data.log (tools/run-guest.sh), splits
# the KTAP documents into OUTDIR/ktap/SUITE.ktap and the step output into
# OUTDIR/steps/NAME.log, and parses each KTAP document with the kernel's own
# tools/testing/kunit/kunit.py parse (output in OUTDIR/kunit.txt).
#
# Fails (exit 1), naming each reason in OUTDIR/verdict, when:
#   not-ok         a KTAP document has a case that is not ok (or does not parse)
#   missing-suite  a suite of tools/expected-suites (+ $EXTRA_SUITES) did not run
#   splat          the console shows an Oops, BUG, WARNING, lockdep report, panic...
#   guest          /init reported a failure (insmod, rmmod, a drop-in step...)
#   timeout        the guest did not power off
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

[ $# = 2 ] || die "usage: $0 KDIR OUTDIR"
# Absolute: kunit.py changes directory before opening its input.
kdir=$1 outdir=$(realpath "$2")
console=$outdir/console.log data=$outdir/data.log verdict=$outdir/verdict
ksrc=$kdir; [ -d "$kdir/source" ] && ksrc=$(realpath "$kdir/source")
kunit_py=$ksrc/tools/testing/kunit/kunit.py
[ -f "$kunit_py" ] || die "no $kunit_py in KDIR"
[ -f "$console" ] || die "no $console: run the guest first"
touch "$data"

: >"$verdict"
reason() { printf '%s: %s\n' "$1" "$2" | tee -a "$verdict" >&2; }

# Split the data channel.
rm -rf "$outdir/ktap" "$outdir/steps"
mkdir -p "$outdir/ktap" "$outdir/steps"
awk -v dir="$outdir" '
	{ sub(/\r$/, "") }  # ttyS1 turns \n into \r\n (ONLCR)
	/^KMALLOC43-KTAP-BEGIN / { out = dir "/ktap/" $2 ".ktap"; next }
	/^KMALLOC43-KTAP-END /   { close(out); out = ""; next }
	/^KMALLOC43-STEP-BEGIN / { out = dir "/steps/" $2 ".log"; next }
	/^KMALLOC43-STEP-END /   { close(out); out = ""; next }
	out != "" { print > out }
' "$data"

# Parse each suite's KTAP document with the kernel's parser.
: >"$outdir/kunit.txt"
suites=0
for k in "$outdir"/ktap/*.ktap; do
	[ -e "$k" ] || continue
	s=$(basename "$k" .ktap)
	suites=$((suites + 1))
	if ! python3 "$kunit_py" parse "$k" >>"$outdir/kunit.txt" 2>&1; then
		reason not-ok "suite $s: $(grep -E '^ *not ok ' "$k" | sed 's/^ *//' | tr '\n' ';' | cut -c1-300)"
	fi
done

# Every expected suite ran.
expected=$(grep -vE '^\s*(#|$)' "$K43_ROOT/tools/expected-suites"; for s in ${EXTRA_SUITES:-}; do echo "$s"; done)
for s in $expected; do
	[ -f "$outdir/ktap/$s.ktap" ] || reason missing-suite "KUnit suite '$s' did not run"
done

# Kernel splats anywhere in the console log.
splats='Oops|BUG:|kernel BUG at|WARNING:|Kernel panic|general protection fault|UBSAN:|Call Trace:|panicked at|possible recursive locking|INFO: task .* blocked|list_(add|del) corruption|soft lockup|hard LOCKUP|rcu_.* self-detected stall'
if grep -qE "$splats" "$console"; then
	reason splat "$(grep -nE "$splats" "$console" | head -n 3 | tr '\n' ';' | tr -d '\r')"
fi

# Failures /init reported.
if grep -q '^KMALLOC43-FAIL:' "$console"; then
	reason guest "$(grep '^KMALLOC43-FAIL:' "$console" | head -n 5 | tr -d '\r' | tr '\n' ';')"
fi

# A clean power-off at the end.
if ! grep -q 'reboot: Power down' "$console"; then
	reason timeout "the guest did not power off (last line: $(tail -n 1 "$console" | tr -d '\r' | cut -c1-120))"
fi

cases=$(cat "$outdir"/ktap/*.ktap 2>/dev/null | grep -cE '^    (not )?ok ' || true)
if [ -s "$verdict" ]; then
	printf 'FAIL: see %s (KUnit: %s)\n' "$console" "$outdir/kunit.txt" >&2
	exit 1
fi
printf 'PASS: %d KUnit suites, %d cases ok; no splat; guest powered off (log: %s)\n' \
	"$suites" "$cases" "$console" >&2
