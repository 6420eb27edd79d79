#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Make or refresh BUILDDIR, the directory in which one kernel's modules are built
# (the Makefile's out/build/<kernel>): a mirror of the clone's module sources as
# symbolic links, so that each kernel keeps its own objects and make check, which
# builds for the test kernel and then the bench kernel, does not rebuild everything
# at every switch.
#
#   tools/build-tree.sh BUILDDIR
#
# Why links and not Kbuild's own MO= (separate output for external modules): the
# crate roots mount the bindgen output that Kbuild writes into the object
# directory with #[path = "kmalloc43_abi_generated.rs"], which rustc resolves
# beside the crate root as it was named on its command line; in a mirror the
# crate root and the generated file sit in the same directory, as in an in-tree
# build.
#
# Mirrored: every Kbuild file and every .rs, .c, .h and .mk file under Kbuild,
# rust/, samples/ and tools/ that git lists as tracked or as untracked but not
# ignored (so a new, not yet committed source file is built too, and no build
# product of an older in-tree build is).  Outside a git work tree (an unpacked
# tarball), every such file is mirrored except under cargo's target/ directories
# and out/.  Links whose file is gone are removed.
# Links point at the clone's files: an edit is seen by make's timestamps as usual.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

[ $# = 1 ] || die "usage: $0 BUILDDIR"
build=$1

# The module sources, NUL-separated, relative to the clone.
list_sources() {
	if git -C "$K43_ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		git -C "$K43_ROOT" ls-files -z --cached --others --exclude-standard -- Kbuild rust samples tools
	else
		(cd "$K43_ROOT" && find Kbuild rust samples tools \( -name target -o -name out \) -prune \
			-o \( -type f -o -type l \) -print0)
	fi
}

mkdir -p "$build"
list_sources |
	while IFS= read -r -d '' f; do
		case $f in
		Kbuild | */Kbuild | *.rs | *.c | *.h | *.mk) ;;
		*) continue ;;
		esac
		# A file deleted but still in the index is not mirrored.
		[ -e "$K43_ROOT/$f" ] || continue
		[ -L "$build/$f" ] && continue
		[ -e "$build/$f" ] && die "$build/$f exists and is not a link to $K43_ROOT/$f: remove $build"
		mkdir -p "$build/$(dirname "$f")"
		ln -s "$K43_ROOT/$f" "$build/$f"
	done
# Links whose file is gone (deleted or renamed in the clone).
find "$build" -xtype l -delete
