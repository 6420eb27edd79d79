#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# check-summary.sh LOG RC: the closing line of make check, 'check: N passed, M failed, S skipped',
# counted from what the runners themselves printed in LOG: cargo test's 'test result:' lines (host) and
# the guest verdict's KUnit case count (skipped: cargo's ignored tests and KUnit's '# SKIP'
# cases, never counted as passed). A runner that printed nothing counts nothing; a failed
# run (RC != 0) whose runners reported no failed test (a splat, a timeout, a build or lint error)
# counts as one failure, so the line never reads as a pass.
set -eu
log=$1
rc=${2:-0}
awk -v rc="$rc" '
/^test result: / {
	for (i = 1; i <= NF; i++) {
		if ($(i + 1) ~ /^passed;?$/) passed += $i
		if ($(i + 1) ~ /^failed;?$/) failed += $i
		if ($(i + 1) ~ /^ignored;?$/) skipped += $i
	}
}
/^PASS: [0-9]+ KUnit suites, [0-9]+ cases ok/ {
	passed += $5
	if (match($0, /, [0-9]+ skipped/)) skipped += substr($0, RSTART + 2, RLENGTH - 10)
}
/^kmstat-test: PASS/ { passed += 1 }
/^kmstat-test: FAIL/ { failed += 1 }
/^kmtrace-test: PASS/ { passed += 1 }
/^kmtrace-test: FAIL: [a-z_]+:/ { failed += 1 }
/^kmreplay-test: PASS/ { passed += 1 }
/^kmreplay-test: FAIL/ { failed += 1 }
END {
	if (rc != 0 && failed == 0) failed = 1
	printf "check: %d passed, %d failed, %d skipped\n", passed, failed, skipped
}
' "$log"
