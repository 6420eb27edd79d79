# SPDX-License-Identifier: GPL-2.0
# Shared helpers for the kmalloc43 pipeline scripts (sourced, not executed).

# Root of the clone.
K43_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# Where the modules were built for the kernel at hand (the Makefile exports it:
# out/build/<kernel>, see tools/build-tree.sh).
K43_BUILD=${K43_BUILD:-$K43_ROOT/out/build/${K43_KERNEL:-test}}
# Everything built for kmalloc43 outside the clone: kernel sources and builds.
K43_CACHE=${KMALLOC43_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kmalloc43}
# LLVM suffix used for every kernel and module build (make LLVM=-19).
K43_LLVM=${LLVM:--19}
# The Debian source package that provides the kernel tree.
K43_SRC_PKG=linux-source-7.3
K43_SRC_SUITE=trixie-backports

# Step banner, on stderr so that stdout stays usable for results.
step() { printf '==> %s\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# fmt_secs N: "3m07s".
fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
