#!/usr/bin/env bash
# Build the runc a line is tested and shipped with (the 'runc' field of
# patches/LINE/UPSTREAM, which is upstream containerd's own CI pin from
# script/setup/runc-version) from the Go module proxy, and cache it by
# version:
#
#   script/runc.sh LINE     -> build/runc/<version>/runc (printed)
#
# runc is built as its Makefile builds it (-trimpath, PIE, tags seccomp and
# urfave_cli_no_docs, main.version and main.gitCommit set), with cgo and
# Debian's libseccomp-dev, except for the libpathrs tag of runc 1.5: that
# links a Rust library Debian does not ship, and without it runc uses its
# pure-Go pathrs-lite, as upstream documents for such builds.
set -euo pipefail

line=${1:?usage: script/runc.sh LINE}
. "$(dirname "$0")/lib.sh"
root=$(repo_root)
version=$(pin_field "$line" runc)
out="$root/build/runc/$version"
bin="$out/runc"

if [ -x "$bin" ]; then
	echo "$bin"
	exit 0
fi
pkg-config --exists libseccomp || {
	echo "error: libseccomp-dev is missing; run 'make setup' (script/setup.sh) first" >&2
	exit 1
}

echo "runc.sh: building runc $version for line $line" >&2
json=$(cd "$root" && GOFLAGS=-mod=mod go mod download -json "github.com/opencontainers/runc@$version")
moddir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")
[ -d "$moddir" ] || { echo "error: go mod download gave no directory for runc $version" >&2; exit 1; }

# The module cache is read-only: build from a copy in a stable place, so Go's
# build cache serves a rebuild.
src="$out/src"
rm -rf "$src"
mkdir -p "$out"
cp -r "$moddir" "$src"
chmod -R u+w "$src"
(
	cd "$src"
	CGO_ENABLED=1 GOFLAGS=-mod=mod go build -trimpath -buildmode=pie \
		-tags "seccomp urfave_cli_no_docs" \
		-ldflags "-X main.version=${version#v} -X main.gitCommit=${version}-module" \
		-o "$bin.tmp" .
)
mv "$bin.tmp" "$bin"
rm -rf "$src"
"$bin" --version >&2
echo "$bin"
