#!/usr/bin/env bash
# Run the in-tree tests of every package the series touches, in the patched
# tree, with the race detector. Packages whose tests need root get
# -test.root when run as root, as upstream's root-test target does.
#
# usage: script/test-tree.sh LINE
set -euo pipefail

line=${1:?usage: script/test-tree.sh LINE}
. "$(dirname "$0")/lib.sh"
src="$(repo_root)/build/$line/src"

mapfile -t pkgs < <(git -C "$src" diff --name-only upstream HEAD -- '*.go' \
	| xargs -r -n1 dirname | sort -u | sed 's|^|./|')
if [ ${#pkgs[@]} -eq 0 ]; then
	echo "test-tree $line: the series touches no Go package"
	exit 0
fi
cd "$src"
# Packages whose tests use upstream's testutil know the -test.root flag.
plain=() rooted=()
for p in "${pkgs[@]}"; do
	if [ "$(id -u)" = 0 ] && grep -qs 'containerd/pkg/testutil"' "$p"/*_test.go; then
		rooted+=("$p")
	else
		plain+=("$p")
	fi
done
export GOFLAGS=-mod=mod
echo "test-tree $line: ${pkgs[*]}"
if [ ${#plain[@]} -gt 0 ]; then
	go test -trimpath -race -count=1 "${plain[@]}"
fi
if [ ${#rooted[@]} -gt 0 ]; then
	go test -trimpath -race -count=1 "${rooted[@]}" -args -test.root
fi
