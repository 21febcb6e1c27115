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
# Upstream tests that cannot pass on this host, whatever the series does.
# This machine mounts cgroup v1 (a tmpfs at /sys/fs/cgroup): 2.x's CRI gives
# containers a cgroup namespace only on cgroup v2, and its
# TestCgroupNamespace expects one. It fails the same way on the pristine
# tree here; on a cgroup v2 host it runs.
skip=()
if [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" != cgroup2fs ] && grep -qs 'func TestCgroupNamespace(' internal/cri/server/*_test.go; then
	echo "test-tree $line: skipping upstream's TestCgroupNamespace: this host has no cgroup v2 at /sys/fs/cgroup"
	skip=(-skip '^TestCgroupNamespace$')
fi
export GOFLAGS=-mod=mod
echo "test-tree $line: ${pkgs[*]}"
if [ ${#plain[@]} -gt 0 ]; then
	go test -trimpath -race -count=1 "${skip[@]}" "${plain[@]}"
fi
if [ ${#rooted[@]} -gt 0 ]; then
	go test -trimpath -race -count=1 "${skip[@]}" "${rooted[@]}" -args -test.root
fi
