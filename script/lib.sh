#!/usr/bin/env bash
# Shared helpers for the scripts under script/: read a line's upstream pin.
# Sourced, not run.

# pin_field LINE FIELD prints one field of patches/LINE/UPSTREAM.
pin_field() {
	local line=$1 field=$2 file
	file="$(repo_root)/patches/${line}/UPSTREAM"
	[ -f "$file" ] || { echo "error: no pin for line ${line}: ${file} is missing" >&2; return 1; }
	awk -v f="$field" '$1 == f { print $2; found=1 } END { exit !found }' "$file" || {
		echo "error: ${file} has no '${field}' field" >&2
		return 1
	}
}

repo_root() {
	cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd
}

# fork_version LINE prints e.g. v1.7.35+steady.1.
fork_version() {
	echo "$(pin_field "$1" version)+steady.$(pin_field "$1" steady)"
}

# repo_revision prints this repository's commit, with .m when the work tree is dirty.
repo_revision() {
	local root rev
	root=$(repo_root)
	rev=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
	if ! git -C "$root" diff --no-ext-diff --quiet HEAD -- 2>/dev/null; then
		rev="${rev}.m"
	fi
	echo "$rev"
}

# module_dir MODULE@VERSION downloads a module through the Go module proxy
# (go verifies it against sum.golang.org) and prints its directory in the
# module cache.
module_dir() {
	local json dir
	json=$(go mod download -json "$1") || { echo "error: $1 is not on the module proxy" >&2; return 1; }
	dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json")
	[ -d "$dir" ] || { echo "error: go mod download $1 gave no directory" >&2; return 1; }
	echo "$dir"
}

# pinned_module_dir LINE downloads the line's pinned upstream module through
# the Go module proxy, refuses it unless its h1 checksum is the one
# patches/LINE/UPSTREAM pins, and prints its directory in the module cache.
pinned_module_dir() {
	local line=$1 module version sum json got dir
	module=$(pin_field "$line" module)
	version=$(pin_field "$line" version)
	sum=$(pin_field "$line" sum)
	json=$(cd "$(repo_root)" && GOFLAGS=-mod=mod go mod download -json "$module@$version") || {
		echo "error: $module@$version is not on the module proxy" >&2
		return 1
	}
	got=$(sed -n 's/^[[:space:]]*"Sum": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")
	dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")
	if [ "$got" != "$sum" ]; then
		echo "error: $module@$version has checksum '$got', but patches/$line/UPSTREAM pins '$sum'; refusing to build" >&2
		return 1
	fi
	[ -d "$dir" ] || { echo "error: go mod download gave no directory for $module@$version" >&2; return 1; }
	echo "$dir"
}

# series_patches FILE prints the patch names of a series file in order,
# without its comments and blank lines.
series_patches() {
	grep -v -e '^#' -e '^[[:space:]]*$' "$1" || true
}

# reproducible_tar OUTPUT DIR ENTRY... writes a gzipped tarball of the
# entries below DIR that is the same bytes every time: sorted, owner 0,
# modes without group or other write, mtime 0, gzip without a timestamp.
reproducible_tar() {
	local output=$1 dir=$2
	shift 2
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --mode=go-w \
		-C "$dir" -cf - "$@" | gzip -n -9 > "$output"
}
