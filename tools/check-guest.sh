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
#   leak           kmalloc43's unload verdict says pages were lost ("(LEAK)")
#   live-at-unload kmalloc43 unloaded with allocations still live
#   type-at-unload a client's malloc type was still defined when kmalloc43 unloaded
#   arena-at-unload a client's vmem arena still existed when kmalloc43 unloaded
#   unload-verdict any other kmalloc43 line saying something was left "at unload" or
#                  "at teardown", or "leaked"
#   kmemleak       a kmemleak scan after the run reported an unreferenced object
#                  allocated through kmalloc43
#   client-leftover kmalloc43's module notifier reported what a module left at its unload
#                  (a type, an arena, disowned import/release), and tools/expected-leftovers
#                  does not expect that module there
#   fast-path      kmalloc43 did not report, at load, the fast path tools/expected-fast-path
#                  expects on this kernel (K43_KERNEL: make's KERNEL; none with KDIR=)
#
# KUnit cases that report "# SKIP" are counted and shown as skipped, not passed. The closing
# line, PASS or FAIL, names the kernel booted and counts its suites and cases
# (tools/check-summary.sh reads it); on the bench kernel there is no lockdep and no kmemleak, and
# the line says so.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

[ $# = 2 ] || die "usage: $0 KDIR OUTDIR"
# Absolute: kunit.py changes directory before opening its input.
kdir=$1 outdir=$(realpath "$2")
kernel=${K43_KERNEL:-}
boot=${kernel:+$kernel kernel}
boot=${boot:-$(basename "$kdir")}
console=$outdir/console.log data=$outdir/data.log verdict=$outdir/verdict
ksrc=$kdir; [ -d "$kdir/source" ] && ksrc=$(realpath "$kdir/source")
kunit_py=$ksrc/tools/testing/kunit/kunit.py
[ -f "$kunit_py" ] || die "no $kunit_py in KDIR"
[ -f "$console" ] || die "no $console: run the guest first"
touch "$data"

: >"$verdict"
reason() { printf '%s: %s\n' "$1" "$2" >>"$verdict"; printf '%s [%s]: %s\n' "$1" "$boot" "$2" >&2; }

# Split the data channel.
rm -rf "$outdir/ktap" "$outdir/steps" "$outdir/kmemleak.txt"
mkdir -p "$outdir/ktap" "$outdir/steps"
awk -v dir="$outdir" '
	{ sub(/\r$/, "") }  # ttyS1 turns \n into \r\n (ONLCR)
	/^KMALLOC43-KTAP-BEGIN / { out = dir "/ktap/" $2 ".ktap"; next }
	/^KMALLOC43-KTAP-END /   { close(out); out = ""; next }
	/^KMALLOC43-STEP-BEGIN / { out = dir "/steps/" $2 ".log"; next }
	/^KMALLOC43-STEP-END /   { close(out); out = ""; next }
	/^KMALLOC43-KMEMLEAK-BEGIN/ { out = dir "/kmemleak.txt"; next }
	/^KMALLOC43-KMEMLEAK-END/   { close(out); out = ""; next }
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

# kmalloc43's own unload verdicts (lines the module prints, "kmalloc43: ..."), from the moment
# /init starts unloading (KUnit cases provoke some of these lines on purpose earlier): each kind
# of lost memory or leftover client has its own reason; any other "... at unload", "... at
# teardown" or "... leaked" verdict still fails (unload-verdict).
awk '/^KMALLOC43: unloading/ { on = 1 } on { sub(/\r$/, ""); print NR ":" $0 }' "$console" >"$outdir/unload.log"
k43='^[0-9]+:(\[ *[0-9.]+\] )?kmalloc43: '
unload_verdict() { # REASON PATTERN
	local hits
	hits=$(grep -E "$k43$2" "$outdir/unload.log" | head -n 3 | tr '\n' ';' | cut -c1-300) || true
	[ -z "$hits" ] || reason "$1" "$hits"
}
unload_verdict leak '.*\(LEAK\)'
unload_verdict live-at-unload '.*allocations still live at unload'
unload_verdict type-at-unload 'type .* still defined at unload'
unload_verdict arena-at-unload 'client arena still exists at unload'
others=$(grep -E "${k43}.*(at unload|at teardown|leaked)" "$outdir/unload.log" |
	grep -vE 'allocations still live at unload|type .* still defined at unload|client arena still exists at unload|\(LEAK\)' |
	head -n 3 | tr '\n' ';' | cut -c1-300) || true
[ -z "$others" ] || reason unload-verdict "$others"
if ! grep -q '^KMALLOC43: unloading' "$console" && grep -q 'reboot: Power down' "$console"; then
	reason guest "/init never started unloading the modules"
fi

# Leftovers kmalloc43's module notifier reported when a client unloaded: expected only for the
# modules of tools/expected-leftovers, and only between their scenario's markers if one is given.
leftovers=$(awk -v list="$K43_ROOT/tools/expected-leftovers" '
	BEGIN { while ((getline l < list) > 0) { if (l ~ /^[ \t]*(#|$)/) continue; split(l, f, " "); want[f[1]] = 1; marker[f[1]] = f[2] } }
	{ sub(/\r$/, "") }
	/kmalloc43-orphan-scenario: begin|: begin$/ { for (n in marker) if (marker[n] != "" && index($0, marker[n] ": begin")) inside[n] = 1 }
	/: end$/ { for (n in marker) if (marker[n] != "" && index($0, marker[n] ": end")) inside[n] = 0 }
	/kmalloc43: (module [^ ]+ unloaded with|arena .* import\/release of module [^ ]+ disowned)/ {
		s = $0; sub(/.*module /, "", s); sub(/ .*/, "", s)
		if (!(s in want) || (marker[s] != "" && !inside[s])) print NR ":" $0
	}' "$console" | head -n 3 | tr '\n' ';' | cut -c1-300)
[ -z "$leftovers" ] || reason client-leftover "$leftovers"

# kmemleak: /init triggers a scan after the run and dumps the report on the data channel
# (KMALLOC43-KMEMLEAK-BEGIN/END); every reported object whose allocation trace passes through kmalloc43 fails.
if [ -f "$outdir/kmemleak.txt" ] && grep -q 'kmalloc43' "$outdir/kmemleak.txt"; then
	# Each such object with the outermost module frame of its allocation (who allocated it).
	reason kmemleak "$(awk '
		function flush() { if (obj != "" && caller != "") print obj " allocated by " caller; obj = caller = "" }
		/^unreferenced object/ { flush(); obj = $0; next }
		/\[kmalloc43/ { caller = $0 }
		END { flush() }' "$outdir/kmemleak.txt" | head -n 3 | tr -s ' ' | tr '\n' ';' | cut -c1-400)"
fi

# The fast path Kbuild compiled in, as kmalloc43 reported it at load, against what this kernel
# must run.
fast_path=$(sed -n 's/\r$//; s/.*kmalloc43: loaded; .*; \(slot lock: .*\)$/\1/p' "$console" | head -n 1)
want_path=$(awk -v k="$kernel" '$1 == k { sub(/^[^\t ]+[\t ]+/, ""); print }' "$K43_ROOT/tools/expected-fast-path")
if [ -n "$want_path" ] && [ "$fast_path" != "$want_path" ]; then
	reason fast-path "the $boot must run '$want_path'; kmalloc43 reported '${fast_path:-nothing}' at load"
fi

# A clean power-off at the end.
if ! grep -q 'reboot: Power down' "$console"; then
	reason timeout "the guest did not power off (last line: $(tail -n 1 "$console" | tr -d '\r' | cut -c1-120))"
fi

cases=$(cat "$outdir"/ktap/*.ktap 2>/dev/null | grep -E '^    ok ' | grep -cv '# SKIP' || true)
not_ok=$(cat "$outdir"/ktap/*.ktap 2>/dev/null | grep -E '^    not ok ' | grep -cv '# SKIP' || true)
skipped=$(cat "$outdir"/ktap/*.ktap 2>/dev/null | grep -E '^    (not )?ok ' | grep -c '# SKIP' || true)
counts="$suites KUnit suites, $cases cases ok, $not_ok not ok, $skipped skipped"
if [ -s "$verdict" ]; then
	printf 'FAIL [%s]: %s; failed for: %s; see %s (KUnit: %s)\n' "$boot" "$counts" \
		"$(cut -d: -f1 "$verdict" | sort -u | paste -sd, - | sed 's/,/, /g')" "$console" "$outdir/kunit.txt" >&2
	exit 1
fi
if [ "$skipped" != 0 ]; then
	info "skipped KUnit cases (not counted as passed):"
	cat "$outdir"/ktap/*.ktap | grep -E '^    (not )?ok .*# SKIP' | sed 's/^ */  /' >&2
fi
# What only the test kernel checks.
if grep -q '^CONFIG_PROVE_LOCKING=y' "$kdir/.config" 2>/dev/null; then debug="lockdep on"; else debug="no lockdep"; fi
if grep -q '^KMALLOC43: kmemleak: scanned' "$console"; then debug="$debug, kmemleak clean"; else debug="$debug, no kmemleak"; fi
printf 'PASS [%s]: %s; no splat, no leak; %s; %s; guest powered off (log: %s)\n' \
	"$boot" "$counts" "$debug" "${fast_path:-fast path not reported}" "$console" >&2
