# SPDX-License-Identifier: GPL-2.0
# The module's debugfs directory exists and page_cycles counts the page
# round-trips done so far (module init, KUnit cases, the client): at least one.
set -e
d=/sys/kernel/debug/kmalloc43
n=$(cat "$d/page_cycles")
echo "page_cycles: $n"
[ "$n" -ge 1 ]
