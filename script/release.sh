#!/usr/bin/env bash
# Pack a release of one line into build/release/:
#   containerd-steady-<version>-linux-amd64.tar.gz
#     bin/                                  as in upstream's tarball
#     etc/systemd/system/containerd.service as in upstream's cri-containerd bundle
#     etc/containerd/config.toml            the line's default config
#   containerd-steady-<version>-patches.tar.gz       UPSTREAM, series, patches
# each with a .sha256sum. Tarballs are reproducible: fixed owner, modes,
# order and mtime, and binaries built with -trimpath.
#
# usage: script/release.sh LINE
set -euo pipefail

line=${1:?usage: script/release.sh LINE}
. "$(dirname "$0")/lib.sh"
root=$(repo_root)
version=$(fork_version "$line")
out="$root/build/release"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

"$root/script/build.sh" "$line" fork

mkdir -p "$out" "$stage/bin" "$stage/patches"
install -m 0755 "$root/build/$line/bin/containerd" "$root/build/$line/bin/containerd-shim-runc-v2" \
	"$root/build/$line/bin/ctr" "$stage/bin/"
install -D -m 0644 "$root/contrib/systemd/containerd.service" "$stage/etc/systemd/system/containerd.service"
install -D -m 0644 "$root/contrib/config/$line.toml" "$stage/etc/containerd/config.toml"
cp "$root/patches/$line/UPSTREAM" "$root/patches/$line/series" "$stage/patches/"
series_patches "$root/patches/$line/series" | while read -r p; do
	cp "$root/patches/$line/$p" "$stage/patches/"
done

bin_tgz="containerd-steady-${version}-linux-amd64.tar.gz"
patch_tgz="containerd-steady-${version}-patches.tar.gz"
reproducible_tar "$out/$bin_tgz" "$stage" bin etc
reproducible_tar "$out/$patch_tgz" "$stage" patches
(cd "$out" && sha256sum "$bin_tgz" > "$bin_tgz.sha256sum" && sha256sum "$patch_tgz" > "$patch_tgz.sha256sum")
echo "release $line: $out/$bin_tgz"
echo "release $line: $out/$patch_tgz"
