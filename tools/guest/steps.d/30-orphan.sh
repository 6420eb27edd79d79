# SPDX-License-Identifier: GPL-2.0
# Client ownership (Documentation/linux.rst, "Client modules that unload without cleaning up"):
# kmalloc43_orphan_client unloads once cleanly, then once without cleaning up (leave=1: a type
# with live allocations, an arena with live segments and its own import/release), and is loaded
# again: kmalloc43's module notifier must have reported, orphaned and disowned what it left, and
# the reload must adopt the type and free everything (tools/tests/orphan/).  The notifier's
# lines are expected between the scenario's markers only (tools/expected-leftovers).
d=/sys/kernel/debug/kmalloc43
m=kmalloc43_orphan_client
bad=0
fail() { echo "FAIL: $*"; bad=1; }
mark() { echo "kmalloc43-orphan-scenario: $1" >/dev/kmsg; }
row() { awk -v t="$1" '$1 == t { print $2; f = 1 } END { exit !f }' "$d/types"; }

grep -q "^$m " /proc/modules || fail "$m is not loaded"
rmmod $m || fail "rmmod $m (clean unload)"
dmesg | grep -q "module $m unloaded with" && fail "a clean unload was reported as a leftover"
spans0=$(awk '$1 == "disowned_spans" { print $2 }' "$d/totals")

mark begin
insmod /lib/modules/$m.ko leave=1 || fail "insmod $m leave=1"
rmmod $m || fail "rmmod $m (leave=1)"
mark end
dmesg | grep "kmalloc43" | grep -E "module $m |of module $m " >/tmp/notes
cat /tmp/notes
grep -q "module $m unloaded with 3 live allocations (.* bytes) of type orphtest: orphaned" /tmp/notes ||
	fail "no report of the orphaned type"
grep -q "module $m unloaded without destroying arena orphtest-ids (2 live segments, 32 bytes): orphaned" /tmp/notes ||
	fail "no report of the orphaned arena"
grep -q "arena orphtest-ids: import/release of module $m disowned" /tmp/notes ||
	fail "no report of the disowned import/release"
echo "== types with the orphan"; cat "$d/types"
[ "$(row 'orphtest(orphan)')" = 3 ] || fail "types: no orphtest(orphan) row with 3 live allocations"
row orphtest >/dev/null && fail "types: orphtest still listed under its own name"
echo "== arenas with the orphan"; cat "$d/arenas"
grep -q '^orphtest-ids(orphan) ' "$d/arenas" || fail "arenas: no orphtest-ids(orphan) row"
grep -q '^orphtest-ids ' "$d/arenas" && fail "arenas: orphtest-ids still listed under its own name"

insmod /lib/modules/$m.ko || fail "insmod $m (reload)"
dmesg | grep -q "module $m defined type orphtest again: adopted with the 3 live allocations" ||
	fail "the reload did not adopt the orphan"
dmesg | grep -q "$m: freed the previous load's 3 allocations and 2 segments, destroyed its arena: ok" ||
	fail "the reload could not free what the previous load left"
echo "== types after the reload"; cat "$d/types"
[ "$(row orphtest)" = 0 ] || fail "types: orphtest not back with 0 live allocations"
row 'orphtest(orphan)' >/dev/null && fail "types: the orphan is still listed"
grep -q '^orphtest-ids' "$d/arenas" && fail "arenas: orphtest-ids (or its orphan) left after the reload"
spans1=$(awk '$1 == "disowned_spans" { print $2 }' "$d/totals")
[ "$spans1" -gt "$spans0" ] || fail "totals: disowned_spans $spans0 -> $spans1: the kept spans are not counted"
exit $bad
