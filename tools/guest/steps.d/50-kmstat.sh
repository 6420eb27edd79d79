# SPDX-License-Identifier: GPL-2.0
# The kmstat report (tools/kmstat) with kmalloc43 and the sample clients
# loaded, also on the console so that make run shows it; then checks that the
# clients' types are there with what they keep until unload.
set -e
kmstat=/usr/share/kmalloc43/kmstat
sh "$kmstat" >/tmp/kmstat.txt
sh "$kmstat" --json >/tmp/kmstat.json
cat /tmp/kmstat.txt
{ echo "KMALLOC43: kmstat report:"; cat /tmp/kmstat.txt; } >/dev/console

row() { awk -v t="$1" '$1 == t' /tmp/kmstat.txt; }
for t in namei inpcb iobuf mbuf cdemo; do
	[ -n "$(row $t)" ] || { echo "kmstat: no type $t"; exit 1; }
done
# Kept until unload: 8 pathname buffers, 20 PCBs, 1 large buffer, 1 C buffer.
row namei | awk '{ exit !($2 == 8) }' || { echo "namei InUse != 8"; exit 1; }
row inpcb | awk '{ exit !($2 == 20) }' || { echo "inpcb InUse != 20"; exit 1; }
row iobuf | awk '{ exit !($2 == 1 && $NF ~ /large/) }' || { echo "iobuf row wrong"; exit 1; }
row cdemo | awk '{ exit !($2 == 1) }' || { echo "cdemo InUse != 1"; exit 1; }
# The limit demo: nothing left, the limit reached and a WAITOK caller blocked.
row mbuf | awk '{ exit !($2 == 0 && $5 == 8192 && $7 >= 1) }' || { echo "mbuf row wrong"; exit 1; }
grep -q '"types": \[' /tmp/kmstat.json
grep -q '"totals": {' /tmp/kmstat.json
echo "kmstat: report and --json ok"
