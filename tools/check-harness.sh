#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Test the test harness: make guest-check must pass on the normal build and
# must fail, for the expected reason, on each negative control
# (tools/negative/kmalloc43_negative.rs).  Run by make check-harness.
set -uo pipefail
. "$(dirname "$0")/lib/common.sh"

# control:reason:evidence -- make check must give that reason (see
# tools/check-guest.sh), and its verdict line must show the evidence, so a
# control rejected only for some unrelated failure does not count.
controls=(
	"fail-test:not-ok:fails_on_purpose"
	"no-suite:missing-suite:kmalloc43_negative"
	"oops:splat:address: 0000000000000010"
	"warn:splat:kmalloc43_negative"
	"lockdep:splat:circular locking dependency"
	"hang:timeout:did not power off"
	"leak:leak:(LEAK)"
	"kmemleak:kmemleak:kmalloc43_negative"
)
out=$K43_ROOT/out/harness
mkdir -p "$out"
bad=0

run_check() { make --no-print-directory -C "$K43_ROOT" guest-check "$@"; }

step "positive control: the normal build passes (log: $out/positive.log)"
start=$(date +%s)
if run_check >"$out/positive.log" 2>&1; then
	info "ok: passed"
else
	info "FAILED: the normal build does not pass; see $out/positive.log"
	bad=1
fi
# The hang control waits for the timeout: a few times a normal run.
normal=$(($(date +%s) - start))
hang_timeout=$((normal * 3 > 45 ? normal * 3 : 45))

for c in "${controls[@]}"; do
	control=${c%%:*} rest=${c#*:}
	want=${rest%%:*} evidence=${rest#*:}
	log=$out/$control.log
	timeout_arg=()
	[ "$control" = hang ] && timeout_arg=(GUEST_TIMEOUT=$hang_timeout)
	step "NEGATIVE=$control must fail with '$want' (log: $log)"
	if run_check NEGATIVE="$control" "${timeout_arg[@]}" >"$log" 2>&1; then
		info "FAILED: make check accepted NEGATIVE=$control"
		bad=1
	elif grep "^$want: " "$K43_ROOT/out/negative-$control/verdict" 2>/dev/null | grep -qF "$evidence"; then
		info "ok: rejected ($(grep "^$want: " "$K43_ROOT/out/negative-$control/verdict" | head -n1 | cut -c1-100))"
	else
		info "FAILED: rejected, but not for '$want' showing '$evidence'; see $log"
		bad=1
	fi
done

if [ $bad = 0 ]; then
	echo "check-harness: PASS (every negative control rejected for its reason)"
else
	echo "check-harness: FAIL"
fi
exit $bad
