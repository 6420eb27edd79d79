#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Host test of tools/kmstat against the saved debugfs files in
# tools/tests/kmstat-fixture/ (the format of /sys/kernel/debug/kmalloc43/),
# under every POSIX shell + awk available here (busybox sh/awk as in the
# guest, dash, bash --posix).  Run by make host-check.
set -u
here=$(cd "$(dirname "$0")" && pwd)
kmstat=$here/../kmstat
fx=$here/kmstat-fixture
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "kmstat-test: FAIL: $*" >&2; fails=$((fails + 1)); }

# check SHELL_CMD...: runs every case with that shell (and its awk on PATH).
check() {
	name=$1; shift
	out=$tmp/$name
	before=$fails
	"$@" "$kmstat" -d "$fx" >"$out.txt" 2>"$out.err" || fail "$name: exit $? ($(cat "$out.err"))"
	# Every section, every type and bucket row, aligned columns.
	for want in 'Memory statistics by bucket size (classes: fine)' 'Memory statistics by type' \
		'vmem arenas' 'Totals'; do
		grep -q "^$want\$" "$out.txt" || fail "$name: no section '$want'"
	done
	awk '$1 == "namei" && $2 == 8 && $3 == 11264 && $5 == 262144 && $NF == "1024,4096" { ok = 1 } END { exit !ok }' \
		"$out.txt" || fail "$name: namei row wrong"
	awk '$1 == "iobuf" && $5 == "-" && $NF == "large" { ok = 1 } END { exit !ok }' "$out.txt" ||
		fail "$name: iobuf row wrong"
	awk '$1 == 64 && $2 == 20 && $6 == 2 && $NF == "fine" { a = 1 } $1 == "large" && $3 == "-" { b = 1 }
	     $1 == 1536 && $7 == 5 && $8 == 2 { c = 1 } END { exit !(a && b && c) }' \
		"$out.txt" || fail "$name: bucket rows wrong"
	awk '$1 == "pages_held" && $2 == 256 { ok = 1 } END { exit !ok }' "$out.txt" ||
		fail "$name: totals wrong"
	awk '$1 == "shrinker_scans" && $2 == 3 { a = 1 } $1 == "shrinker_pages_freed" && $2 == 80 { b = 1 }
	     END { exit !(a && b) }' "$out.txt" || fail "$name: shrinker totals wrong"
	# Columns line up: the header's InUse ends where each type row's InUse ends.
	awk '/^Type / { h = index($0, "InUse") + 4; next }
	     h && /^(namei|inpcb) / { split($0, a, ""); if (substr($0, h, 1) !~ /[0-9]/ || substr($0, h + 1, 1) != " ") bad = 1 }
	     END { exit bad || !h }' "$out.txt" || fail "$name: columns not aligned"

	# --json: valid JSON, numbers as numbers, strings as strings.
	"$@" "$kmstat" -d "$fx" --json >"$out.json" || fail "$name: --json exit $?"
	python3 - "$out.json" <<-'PY' || fail "$name: JSON content"
		import json, sys
		d = json.load(open(sys.argv[1]))
		t = {r["type"]: r for r in d["types"]}
		assert t["namei"]["memuse"] == 11264 and t["namei"]["sizes"] == "1024,4096", t
		assert t["inpcb"]["sizes"] == "64", t  # Sizes is always a string
		assert t["iobuf"]["limit"] is None and t["unused"]["sizes"] is None, t
		assert t["mbuf"]["typelimit"] == 1, t
		b = {r["size"]: r for r in d["buckets"]}
		assert b[64]["freed"] == 2 and b[16]["highwater"] == 1280, b
		assert b[1536]["pieces"] == 5 and b[1536]["clusterpages"] == 2, b
		assert all(r["classes"] == "fine" for r in d["buckets"]), b
		assert b["large"]["inuse"] == 1 and b["large"]["free"] is None, b
		a = {r["arena"]: r for r in d["arenas"]}
		assert a["kmalloc43-kmem"]["imported"] == 1048576 and a["client-ports"]["quantum"] == 1, a
		assert d["totals"]["pages_held"] == 256, d["totals"]
		assert d["totals"]["bookkeeping_bytes_per_mib"] is None, d["totals"]
		assert d["totals"]["shrinker_counts"] == 12 and d["totals"]["shrinker_scans"] == 3, d["totals"]
		assert d["totals"]["shrinker_pages_freed"] == 80, d["totals"]
		assert len(d["totals"]) == 14, d["totals"]
	PY

	# One section only.
	"$@" "$kmstat" -d "$fx" types >"$out.one" || fail "$name: 'types' exit $?"
	grep -q 'bucket size' "$out.one" && fail "$name: 'types' printed buckets"
	grep -q '^namei ' "$out.one" || fail "$name: 'types' lacks namei"

	# A missing directory, a missing file, a bad argument: non-zero exit.
	"$@" "$kmstat" -d "$tmp/nonexistent" >/dev/null 2>&1 && fail "$name: missing dir exited 0"
	mkdir -p "$tmp/partial"; cp "$fx/types" "$tmp/partial/"
	"$@" "$kmstat" -d "$tmp/partial" >"$out.partial" 2>&1 && fail "$name: missing files exited 0"
	grep -q '^namei ' "$out.partial" || fail "$name: partial dir lost the types"
	"$@" "$kmstat" --bogus >/dev/null 2>&1 && fail "$name: bad option exited 0"
	[ $fails = "$before" ] && echo "kmstat-test: $name ok"
}

ran=0
if command -v busybox >/dev/null 2>&1; then
	# busybox sh with busybox applets (awk, cat) first on PATH, as in the guest.
	mkdir -p "$tmp/bb"
	for a in awk cat sh; do ln -s "$(command -v busybox)" "$tmp/bb/$a"; done
	check busybox env PATH="$tmp/bb:$PATH" busybox sh; ran=$((ran + 1))
fi
if command -v dash >/dev/null 2>&1; then check dash dash; ran=$((ran + 1)); fi
check bash-posix bash --posix; ran=$((ran + 1))

[ $fails = 0 ] || { echo "kmstat-test: $fails failure(s)" >&2; exit 1; }
echo "kmstat-test: PASS ($ran shells)"
