#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Install what the kmalloc43 pipeline needs on a Debian 12 (bookworm) host:
# LLVM 19 (the kernel's LLVM=-19 build), QEMU, busybox for the guest, kernel
# build tools, the Rust standard library sources and bindgen.
#
# Idempotent: everything already present is skipped, so a warm run costs a
# few dpkg/rustup queries.
#
#   tools/setup-deps.sh        what make check / make run need
#   tools/setup-deps.sh plot   ... and python3-matplotlib, for the SVG plots of
#                              make replay and make bench (not needed by make check)
#   tools/setup-deps.sh cost   ... and valgrind, for make bench-cost (callgrind)
#
# Without root it installs nothing and prints the exact commands to run instead.
set -eu

apt_pkgs="clang-19 lld-19 llvm-19 libclang-19-dev qemu-system-x86 busybox-static \
bc flex bison libelf-dev libssl-dev cpio kmod make python3 gzip xz-utils"
[ "${1:-}" = plot ] && apt_pkgs="$apt_pkgs python3-matplotlib"
[ "${1:-}" = cost ] && apt_pkgs="$apt_pkgs valgrind"
bindgen_min=0.71.1

say() { printf '[setup] %s\n' "$*"; }

missing=""
for p in $apt_pkgs; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
		missing="$missing $p"
done

# version_ge A B: true when version A >= B (dotted numbers).
version_ge() {
	[ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]
}

need_bindgen=1
if command -v bindgen >/dev/null 2>&1; then
	v=$(bindgen --version 2>/dev/null | awk '{print $2}')
	version_ge "${v:-0}" "$bindgen_min" && need_bindgen=0
fi

need_rustsrc=1
if command -v rustc >/dev/null 2>&1; then
	[ -d "$(rustc --print sysroot)/lib/rustlib/src/rust/library/core" ] && need_rustsrc=0
fi

if ! command -v cargo >/dev/null 2>&1; then
	say "cargo/rustc not found: install Rust with rustup (https://rustup.rs), then re-run."
	exit 1
fi

if [ -z "$missing" ] && [ $need_bindgen = 0 ] && [ $need_rustsrc = 0 ]; then
	say "all dependencies present"
	exit 0
fi

if [ "$(id -u)" != 0 ] && [ -n "$missing" ]; then
	say "missing Debian packages:$missing"
	say "run as root:  apt-get install -y --no-install-recommends$missing"
	[ $need_rustsrc = 1 ] && say "then:         rustup component add rust-src"
	[ $need_bindgen = 1 ] && say "then:         cargo install --locked bindgen-cli   (>= $bindgen_min)"
	exit 1
fi

if [ -n "$missing" ]; then
	say "installing:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing
fi
if [ $need_rustsrc = 1 ]; then
	say "rustup component add rust-src"
	rustup component add rust-src
fi
if [ $need_bindgen = 1 ]; then
	say "cargo install --locked bindgen-cli (about 90 s)"
	nice cargo install --locked bindgen-cli
fi
say "done"
