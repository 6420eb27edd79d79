# SPDX-License-Identifier: GPL-2.0
# The debugfs reports of kmalloc43 through the real files: each starts with its
# documented header and every row has as many columns as the header; no file
# shows a raw kernel address; the writable files (diagnostic, limits/<type>)
# reject garbage, negative and overflowing values and keep their value, and
# accept a good value that then reads back (aging_interval too, whose work must then run); limit files take only a whole value at offset 0
# in one write. See Documentation/linux.rst.
d=/sys/kernel/debug/kmalloc43
bad=0
fail() { echo "FAIL: $*"; bad=1; }

check_report() { # file header
	first=$(head -n 1 "$d/$1")
	[ "$first" = "$2" ] || fail "$1: header '$first', expected '$2'"
	awk -v f="$1" 'NR == 1 { n = NF; next }
		NF != n { printf "FAIL: %s line %d has %d columns, header %d: %s\n", f, NR, NF, n, $0; bad = 1 }
		END { exit bad }' "$d/$1" || bad=1
	echo "== $1"; cat "$d/$1"
}

check_report types 'Type InUse MemUse HighUse Limit Requests TypeLimit KernLimit Sizes'
check_report buckets 'Size InUse Free Requests HighWater Freed Pieces ClusterPages Classes'
check_report arenas 'Arena Quantum InUse Imported Total Allocs Frees Imports Releases Waits Fails TagPages'
check_report totals 'Name Value'
grep -q '^kmalloc43_pages ' "$d/arenas" || fail "arenas: no kmalloc43_pages row"
grep -q '^kmalloc43_kmem ' "$d/arenas" || fail "arenas: no kmalloc43_kmem row"
taken=$(awk '$1 == "pages_taken" { print $2 }' "$d/totals")
given=$(awk '$1 == "pages_given" { print $2 }' "$d/totals")
[ "$taken" -gt 0 ] && [ "$taken" -ge "$given" ] || fail "totals: taken '$taken' given '$given'"
# The shrinker's counters are shown (the pressure test is the KUnit suite kmalloc43_shrinker).
for row in shrinker_counts shrinker_scans shrinker_pages_freed; do
	grep -q "^$row [0-9][0-9]*\$" "$d/totals" || fail "totals: no $row row"
done

if grep -qiE 'ffff[0-9a-f]{12}' "$d"/types "$d"/buckets "$d"/arenas "$d"/totals; then
	fail "a report shows a kernel address"
fi

# rejected FILE VALUE: writing VALUE must fail and leave FILE unchanged.
rejected() {
	before=$(cat "$1")
	if printf '%s\n' "$2" >"$1" 2>/dev/null; then fail "$1 accepted '$2'"; fi
	[ "$(cat "$1")" = "$before" ] || fail "$1 changed by rejected '$2'"
}

for v in 2 -1 on '' 0x1 ' 1' 99999999999999999999999; do rejected "$d/diagnostic" "$v"; done
was=$(cat "$d/diagnostic")
echo 0 >"$d/diagnostic" && [ "$(cat "$d/diagnostic")" = 0 ] || fail "diagnostic 0"
echo 1 >"$d/diagnostic" && [ "$(cat "$d/diagnostic")" = 1 ] || fail "diagnostic 1"
echo "$was" >"$d/diagnostic"

n=0
for f in "$d"/limits/*; do
	[ -e "$f" ] || continue
	n=$((n + 1))
	for v in -1 abc '' 12x 0x10 99999999999999999999999 18446744073709551616; do rejected "$f" "$v"; done
	old=$(cat "$f")
	# Only a whole value at offset 0 in one write (as sysfs): a value after 3000 bytes, 4 KiB
	# and more, embedded NULs are refused and change nothing; written one byte at a time, the
	# first byte is a whole value and the rest is refused, so the writer sees the error.
	if printf '55\n' | dd of="$f" bs=3000 seek=1 conv=notrunc 2>/dev/null; then fail "$f: write at offset 3000 accepted"; fi
	[ "$(cat "$f")" = "$old" ] || fail "$f changed by a write at offset 3000"
	for len in 4096 5000; do
		if head -c "$len" /dev/zero | tr '\0' 1 | dd of="$f" bs="$len" 2>/dev/null; then fail "$f: $len-byte write accepted"; fi
	done
	if printf '1\0002\n' >"$f" 2>/dev/null; then fail "$f: embedded NUL accepted"; fi
	[ "$(cat "$f")" = "$old" ] || fail "$f changed by a long write or an embedded NUL"
	if printf '77\n' | dd of="$f" bs=1 2>/dev/null; then fail "$f: 77 written byte by byte accepted"; fi
	[ "$(cat "$f")" = 7 ] || fail "$f: after 77 byte by byte: $(cat "$f"), expected the first byte's 7"
	echo 123456 >"$f" && [ "$(cat "$f")" = 123456 ] || fail "$f: 123456 did not read back"
	echo "$old" >"$f" && [ "$(cat "$f")" = "$old" ] || fail "$f: could not restore $old"
done
echo "limits files checked: $n"

# The timed aging pass (Documentation/magazines.rst, "Timed aging"): aging_interval is 15 at load,
# refuses bad values and keeps its value; at 1 second the work's pass counter (the drain file's
# last line) must advance by two: waited for on the counter, the bound (30 s) only fails it.
a=$d/aging_interval
[ "$(cat "$a")" = 15 ] || fail "aging_interval: '$(cat "$a")' at load, expected 15"
for v in -1 abc '' 0x1 ' 1' 86401 99999999999999999999999; do rejected "$a" "$v"; done
passes() { sed -n 's/^Timed aging: passes \([0-9]*\),.*/\1/p' "$d/drain"; }
p0=$(passes)
[ -n "$p0" ] || fail "drain: no 'Timed aging' line"
echo 1 >"$a" && [ "$(cat "$a")" = 1 ] || fail "aging_interval: 1 did not read back"
i=0
while [ "$(passes)" -lt $((${p0:-0} + 2)) ] && [ $i -lt 30 ]; do sleep 1; i=$((i + 1)); done
[ "$(passes)" -ge $((${p0:-0} + 2)) ] || fail "aging: $(passes) passes, expected $((${p0:-0} + 2)) within 30 s"
grep '^Timed aging' "$d/drain"
echo 0 >"$a" && [ "$(cat "$a")" = 0 ] || fail "aging_interval: 0 did not read back"
echo 15 >"$a" && [ "$(cat "$a")" = 15 ] || fail "aging_interval: could not restore 15"
exit $bad
