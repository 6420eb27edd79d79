#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Fetch, configure and build the Rust-enabled 7.3 kernel that kmalloc43 is
# tested on, in a cache outside the clone.
#
#   tools/kernel.sh build [test|bench]   build if needed, print the build dir
#   tools/kernel.sh path  [test|bench]   print the build dir (no building)
#   tools/kernel.sh source               fetch the source tree if needed, print it
#
# Layout of $K43_CACHE (default ~/.cache/kmalloc43):
#   src/<pkgver>/            the pristine Debian kernel tree (shared by flavours)
#   source-version           the package version in use (pinned on first fetch;
#                            KMALLOC43_REFRESH=1 asks the mirror again)
#   <pkgver>-<flavour>-<hash>/  an O= build directory; <hash> covers the config
#                            fragments, so editing one means a new build dir
#   apt/                     private apt lists and downloads
#
# The kernel tree is Debian's linux-source-7.3 from trixie-backports, fetched
# with apt through a private deb822 sources file whose mirror is read from
# this host's own apt configuration and whose signatures are checked against
# the Debian archive keyring, as apt always does.  Nothing is installed.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

action=${1:-build}
flavour=${2:-test}
[ -f "$K43_ROOT/tools/configs/$flavour.config" ] || die "unknown kernel flavour '$flavour'"

# --- source -----------------------------------------------------------------

# Print the URI of this host's main Debian mirror (not the security one).
host_mirror() {
	local f uri=
	f=/etc/apt/sources.list.d/debian.sources
	if [ -r "$f" ]; then
		uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f")
	fi
	if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
		uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' /etc/apt/sources.list)
	fi
	[ -n "$uri" ] || die "cannot find a Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
	printf '%s\n' "$uri"
}

apt_opts=()
setup_apt() {
	local a=$K43_CACHE/apt
	mkdir -p "$a/sources.list.d" "$a/lists/partial" "$a/cache/archives/partial" "$a/debs"
	cat >"$a/sources.list.d/kmalloc43.sources" <<-SRC
		Types: deb
		URIs: $(host_mirror)
		Suites: $K43_SRC_SUITE
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
	SRC
	apt_opts=(-o "Dir::Etc::SourceList=/dev/null"
		-o "Dir::Etc::SourceParts=$a/sources.list.d"
		-o "Dir::Etc::Preferences=/dev/null"
		-o "Dir::Etc::PreferencesParts=/dev/null"
		-o "Dir::State::Lists=$a/lists"
		-o "Dir::Cache=$a/cache"
		-o "Debug::NoLocking=1")
}

# Newest version of the source package the mirror offers.
newest_version() {
	apt-cache "${apt_opts[@]}" madison "$K43_SRC_PKG" | awk -F'|' '{ gsub(/ /, "", $2); print $2 }' |
		sort -V | tail -n1
}

# fetch_source VERSION: download, verify (apt) and unpack into src/VERSION.
fetch_source() {
	local ver=$1 dest=$K43_CACHE/src/$1 tmp log=$K43_CACHE/apt/fetch.log
	[ -f "$dest/.kmalloc43-unpacked" ] && return 0
	step "downloading $K43_SRC_PKG=$ver (log: $log)"
	rm -f "$K43_CACHE/apt/debs/"*.deb
	(cd "$K43_CACHE/apt/debs" && apt-get "${apt_opts[@]}" download "$K43_SRC_PKG=$ver") >>"$log" 2>&1 ||
		die "apt-get download failed; see $log"
	tmp=$(mktemp -d "$K43_CACHE/src/.unpack.XXXXXX")
	step "unpacking the kernel tree into $dest"
	dpkg-deb -x "$K43_CACHE/apt/debs/${K43_SRC_PKG}_"*.deb "$tmp/deb"
	tar -C "$tmp" -xaf "$tmp"/deb/usr/src/"$K43_SRC_PKG".tar.*
	rm -rf "$dest"
	mv "$tmp/$K43_SRC_PKG" "$dest"
	rm -rf "$tmp" "$K43_CACHE/apt/debs/"*.deb
	touch "$dest/.kmalloc43-unpacked"
}

# Print the source tree, fetching it on first use (or with KMALLOC43_REFRESH=1).
ensure_source() {
	local pin=$K43_CACHE/source-version ver log=$K43_CACHE/apt/fetch.log
	mkdir -p "$K43_CACHE/src"
	if [ -s "$pin" ] && [ -z "${KMALLOC43_REFRESH:-}" ]; then
		ver=$(cat "$pin")
	else
		setup_apt
		step "asking the mirror for $K43_SRC_PKG in $K43_SRC_SUITE (log: $log)"
		apt-get "${apt_opts[@]}" update >>"$log" 2>&1 || die "apt-get update failed; see $log"
		ver=$(newest_version)
		[ -n "$ver" ] || die "the mirror offers no $K43_SRC_PKG in $K43_SRC_SUITE; see $log"
		info "newest: $ver"
	fi
	if [ ! -f "$K43_CACHE/src/$ver/.kmalloc43-unpacked" ]; then
		[ ${#apt_opts[@]} -gt 0 ] || { setup_apt; apt-get "${apt_opts[@]}" update >>"$log" 2>&1 || die "apt-get update failed; see $log"; }
		fetch_source "$ver"
	fi
	printf '%s\n' "$ver" >"$pin"
	printf '%s\n' "$K43_CACHE/src/$ver"
}

# --- configuration and build --------------------------------------------------

fragments() { printf '%s\n' "$K43_ROOT/tools/configs/base.config" "$K43_ROOT/tools/configs/$flavour.config"; }

# Build directory for the pinned source version and the current fragments.
build_dir() {
	local ver hash
	ver=$(cat "$K43_CACHE/source-version" 2>/dev/null) || die "no kernel fetched yet: run 'make kernel'"
	# The hash covers the fragments and the LLVM version used to build.
	hash=$( (fragments | xargs cat; echo "LLVM=$K43_LLVM") | sha256sum | cut -c1-12)
	printf '%s\n' "$K43_CACHE/${ver//[~:]/_}-$flavour-$hash"
}

kmake() { nice make -C "$src" O="$out" LLVM="$K43_LLVM" "$@"; }

configure() {
	local log=$out/config.log frag opt
	step "configuring the $flavour kernel (tinyconfig + fragments; log: $log)"
	{
		kmake tinyconfig
		# shellcheck disable=SC2046
		"$src/scripts/kconfig/merge_config.sh" -m -O "$out" "$out/.config" $(fragments)
		kmake olddefconfig
	} >"$log" 2>&1 || die "configuration failed; see $log"
	# Every option a fragment asks for must have survived olddefconfig:
	# a dropped CONFIG_RUST (e.g. bindgen missing) must not go unnoticed.
	for frag in $(fragments); do
		while read -r opt; do
			case $opt in
			"# "*) # "# CONFIG_FOO is not set": no CONFIG_FOO=… may remain
				opt=${opt#\# }; opt=${opt%% *}
				! grep -q "^$opt=" "$out/.config" ;;
			*) grep -qx -- "$opt" "$out/.config" ;;
			esac || die "$flavour kernel config does not honour '$opt' (${frag##*/}); see $log" \
				"(for CONFIG_RUST: make -C $src LLVM=$K43_LLVM rustavailable)"
		done < <(grep -E '^(CONFIG_|# CONFIG_.* is not set)' "$frag")
	done
}

# Print progress of the running build from its log until it finishes.
build_with_progress() {
	local log=$out/build.log start total count pid rc now pct
	local est=$K43_CACHE/.build-steps
	total=$(cat "$est" 2>/dev/null || echo 1700)
	step "building the $flavour kernel with -j$(nproc) (full log: $log)"
	start=$(date +%s)
	kmake -j"$(nproc)" all >"$log" 2>&1 &
	pid=$!
	local next=0
	while kill -0 "$pid" 2>/dev/null; do
		sleep 2
		now=$(($(date +%s) - start))
		if [ -t 2 ] || [ $now -ge $next ]; then
			count=$(grep -cE '^  [A-Z]' "$log" || true)
			pct=$((count * 100 / total)); [ $pct -gt 99 ] && pct=99
			if [ -t 2 ]; then
				printf '\r    %3d%%  %5d build steps  %s ' "$pct" "$count" "$(fmt_secs $now)" >&2
			else
				printf '    %3d%%  %5d build steps  %s\n' "$pct" "$count" "$(fmt_secs $now)" >&2
				next=$((now + 30))
			fi
		fi
	done
	rc=0; wait "$pid" || rc=$?
	[ -t 2 ] && printf '\n' >&2
	[ $rc = 0 ] || { tail -n 20 "$log" >&2; die "kernel build failed; full log: $log"; }
	grep -cE '^  [A-Z]' "$log" >"$est" || true
	info "built in $(fmt_secs $(($(date +%s) - start)))"
}

case $action in
source)
	ensure_source
	;;
path)
	build_dir
	;;
build)
	mkdir -p "$K43_CACHE"
	# Fast path: the pinned source and this flavour's build are there.
	if [ -s "$K43_CACHE/source-version" ] && [ -z "${KMALLOC43_REFRESH:-}" ] &&
		out=$(build_dir) && [ -f "$out/.kmalloc43-built" ]; then
		printf '%s\n' "$out"
		exit 0
	fi
	# One source fetch at a time; then one build per build directory, so
	# building the bench kernel does not hold up a warm make check.
	exec 9>"$K43_CACHE/.lock"
	flock 9
	src=$(ensure_source)
	out=$(build_dir)
	exec 9>&-
	mkdir -p "$out"
	exec 9>"$out.lock"
	flock 9
	if [ ! -f "$out/.kmalloc43-built" ]; then
		[ -f "$out/.config" ] && [ -f "$out/.kmalloc43-configured" ] || { configure; touch "$out/.kmalloc43-configured"; }
		build_with_progress
		touch "$out/.kmalloc43-built"
	fi
	printf '%s\n' "$out"
	;;
*)
	die "usage: $0 build|path|source [test|bench]"
	;;
esac
