#!/usr/bin/env bash
# Build containerd, containerd-shim-runc-v2 and ctr for one line, twice:
# from the patched tree into build/<line>/bin and from the pristine upstream
# into build/<line>/upstream/bin. -trimpath makes both trees share the Go
# build cache for every package the patches do not touch.
#
# usage: script/build.sh LINE [fork|upstream|both]
set -euo pipefail

line=${1:?usage: script/build.sh LINE [fork|upstream|both]}
which=${2:-both}
. "$(dirname "$0")/lib.sh"
root=$(repo_root)
module=$(pin_field "$line" module)
version=$(pin_field "$line" version)

# build_tree SRC OUT VERSION REVISION PACKAGE COMMIT
# COMMIT is the tree's commit in build/<line>/src: the output is rebuilt
# only when it, the version stamps or the Go toolchain change.
build_tree() {
	local src=$1 out=$2 ver=$3 rev=$4 package=$5 commit=$6
	local ldflags="-X $module/version.Version=$ver -X $module/version.Revision=$rev -X $module/version.Package=$package"
	local tags="urfave_cli_no_docs"
	local stampfile="$out/.build-stamp"
	local key
	key=$(printf '%s\n' "$ldflags" "$commit" "$(go version)" | sha256sum | cut -d' ' -f1)
	if [ -f "$stampfile" ] && [ "$(cat "$stampfile")" = "$key" ] \
		&& [ -x "$out/containerd" ] && [ -x "$out/containerd-shim-runc-v2" ] && [ -x "$out/ctr" ]; then
		echo "build $line: $out up to date ($ver)"
		return 0
	fi
	mkdir -p "$out"
	echo "build $line: $ver from $src into $out"
	(
		cd "$src"
		export GOFLAGS=-mod=mod
		go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$out/containerd" ./cmd/containerd
		go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$out/ctr" ./cmd/ctr
		CGO_ENABLED=0 go build -trimpath -tags "$tags" -ldflags "$ldflags -extldflags -static" \
			-o "$out/containerd-shim-runc-v2" ./cmd/containerd-shim-runc-v2
	)
	echo "$key" > "$stampfile"
}

"$root/script/tree.sh" "$line"

case "$which" in
fork | both)
	build_tree "$root/build/$line/src" "$root/build/$line/bin" \
		"$(fork_version "$line")" "$(repo_revision)" "github.com/containerd-steady/containerd-steady" \
		"$(git -C "$root/build/$line/src" rev-parse HEAD)"
	;;&
upstream | both)
	build_tree "$root/build/$line/upstream/src" "$root/build/$line/upstream/bin" \
		"$version" "upstream-$version" "$module" \
		"$(git -C "$root/build/$line/src" rev-parse upstream)"
	;;
fork) ;;
*)
	echo "error: unknown build '$which' (want fork, upstream or both)" >&2
	exit 1
	;;
esac
