#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Test the test harness: the guest part of make check (make check-boots) must pass on the normal
# build and must fail, for the expected reason, on each negative control
# (tools/negative/kmalloc43_negative.rs), on the test kernel and, for the controls the bench
# kernel can show, on the bench kernel too.  Run by make check-harness.
set -uo pipefail
. "$(dirname "$0")/lib/common.sh"

# kernel:control:reason:evidence -- make check must give that reason (see tools/check-guest.sh)
# on that kernel's boot, and its verdict line must show the evidence, so a control rejected only
# for some unrelated failure does not count. The bench kernel has no lockdep and no kmemleak, so
# those two controls cannot fail there; hang's verdict (the host's timeout) does not depend on
# the kernel and would cost another timeout.
controls=(
	"test:fail-test:not-ok:fails_on_purpose"
	"test:no-suite:missing-suite:kmalloc43_negative"
	"test:oops:splat:address: 0000000000000010"
	"test:warn:splat:kmalloc43_negative"
	"test:lockdep:splat:circular locking dependency"
	"test:hang:timeout:did not power off"
	"test:leak:leak:(LEAK)"
	"test:kmemleak:kmemleak:kmalloc43_negative"
	"bench:fail-test:not-ok:fails_on_purpose"
	"bench:no-suite:missing-suite:kmalloc43_negative"
	"bench:oops:splat:address: 0000000000000010"
	"bench:warn:splat:kmalloc43_negative"
	"bench:leak:leak:(LEAK)"
)
out=$K43_ROOT/out/harness
mkdir -p "$out"
bad=0

run_check() { make --no-print-directory -C "$K43_ROOT" check-boots "$@"; }

step "positive control: the normal build passes on every kernel of make check (log: $out/positive.log)"
if run_check >"$out/positive.log" 2>&1; then
	info "ok: passed"
else
	info "FAILED: the normal build does not pass; see $out/positive.log"
	bad=1
fi
# The hang control waits for the timeout: a few times a normal boot of the test kernel.
normal=$(cat "$K43_ROOT/out/check/guest-seconds" 2>/dev/null || echo 30)
hang_timeout=$((normal * 3 > 45 ? normal * 3 : 45))

# rejected REASON EVIDENCE VERDICT-FILE LOG: the run was rejected for REASON, showing EVIDENCE.
rejected() {
	if grep "^$1: " "$3" 2>/dev/null | grep -qF "$2"; then
		info "ok: rejected ($(grep "^$1: " "$3" | head -n1 | cut -c1-100))"
	else
		info "FAILED: rejected, but not for '$1' showing '$2'; see $4"
		bad=1
	fi
}

for c in "${controls[@]}"; do
	IFS=: read -r kernel control want evidence <<<"$c"
	suffix=; [ "$kernel" = test ] || suffix=-$kernel
	log=$out/$control$suffix.log
	timeout_arg=()
	[ "$control" = hang ] && timeout_arg=(GUEST_TIMEOUT=$hang_timeout)
	step "NEGATIVE=$control on the $kernel kernel must fail with '$want' (log: $log)"
	if run_check CHECK_KERNELS="$kernel" NEGATIVE="$control" "${timeout_arg[@]}" >"$log" 2>&1; then
		info "FAILED: make check accepted NEGATIVE=$control on the $kernel kernel"
		bad=1
	else
		rejected "$want" "$evidence" "$K43_ROOT/out/negative-$control$suffix/verdict" "$log"
	fi
done

# The bench boot must run the inline fast path: the test boot's logs (the C slot-lock helpers),
# judged as the bench kernel's, must be rejected. No boot: the positive control's logs again.
judged=$out/fast-path
step "the test boot's logs judged as the bench kernel's must fail with 'fast-path' (log: $judged.log)"
rm -rf "$judged" && mkdir -p "$judged" && cp "$K43_ROOT/out/check/console.log" "$K43_ROOT/out/check/data.log" "$judged/"
if K43_KERNEL=bench "$K43_ROOT/tools/check-guest.sh" "$("$K43_ROOT/tools/kernel.sh" path test)" "$judged" >"$judged.log" 2>&1; then
	info "FAILED: the bench kernel's check accepted a module with the C slot-lock helpers"
	bad=1
else
	rejected fast-path "slot lock: C helpers" "$judged/verdict" "$judged.log"
fi

if [ $bad = 0 ]; then
	echo "check-harness: PASS (every negative control rejected for its reason)"
else
	echo "check-harness: FAIL"
fi
exit $bad
