#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# check-summary.sh LOG RC: the closing line of make check,
#   check: N passed, M failed, S skipped (host: ...; test kernel: ...; bench kernel: ...)
# counted from what the runners themselves printed in LOG: cargo test's 'test result:' lines and
# the host tools' PASS/FAIL lines (host), and each guest boot's verdict line (tools/check-guest.sh:
# 'PASS [test kernel]: 13 KUnit suites, 51 cases ok, 0 not ok, 0 skipped; ...'), per boot.
# Skipped: cargo's ignored tests and KUnit's '# SKIP' cases, never counted as passed. A runner
# that printed nothing counts nothing; a boot that failed with no failed case (a splat, a leak,
# a timeout) counts as one failure, and so does a failed run (RC != 0) whose runners reported
# no failure (a build or lint error), so the line never reads as a pass.
set -eu
log=$1
rc=${2:-0}
awk -v rc="$rc" '
function num(re) { return match($0, re) ? substr($0, RSTART, RLENGTH) + 0 : 0 }
/^test result: / {
	for (i = 1; i <= NF; i++) {
		if ($(i + 1) ~ /^passed;?$/) hp += $i
		if ($(i + 1) ~ /^failed;?$/) hf += $i
		if ($(i + 1) ~ /^ignored;?$/) hs += $i
	}
}
/^(kmstat|kmtrace|kmreplay)-test: PASS/ { hp += 1 }
/^kmstat-test: FAIL/ || /^kmtrace-test: FAIL: [a-z_]+:/ || /^kmreplay-test: FAIL/ { hf += 1 }
/^(PASS|FAIL) \[[^]]+\]: [0-9]+ KUnit suites, / {
	boot = substr($0, index($0, "[") + 1); boot = substr(boot, 1, index(boot, "]") - 1)
	ok = num("[0-9]+ cases ok"); bad = num("[0-9]+ not ok"); sk = num("[0-9]+ skipped")
	verdict = /^PASS/ ? "" : bad ? " (FAIL)" : " (FAIL: counted as 1 failed)"
	gp += ok; gf += bad ? bad : /^FAIL/; gs += sk
	boots = boots sprintf("; %s: %d suites, %d cases ok, %d not ok, %d skipped%s", boot,
		num("[0-9]+ KUnit suites"), ok, bad, sk, verdict)
}
END {
	passed = hp + gp; failed = hf + gf; skipped = hs + gs
	if (rc != 0 && failed == 0) failed = 1
	printf "check: %d passed, %d failed, %d skipped (host: %d passed, %d failed, %d skipped%s)\n",
		passed, failed, skipped, hp, hf, hs, boots
}
' "$log"
