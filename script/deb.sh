#!/usr/bin/env bash
# Build the Debian package of one line the way Debian builds containerd,
# into build/deb/<line>/:
#   containerd-steady_<ver>.orig.tar.gz   the pristine upstream source, from
#                                         the checksum-verified module zip
#   containerd-steady-<ver>/debian/       contrib/debian, the unit, the
#                                         line's default config, a changelog
#                                         and debian/patches: the series
#   the source and binary packages of 'dpkg-buildpackage -us -uc', built
#   offline from build/deb/_gomodcache (filled here first; the underscore
#   keeps it out of this module's ./... patterns), then lintian.
#
# <ver> is the fork's version without its v (2.3.7+steady.1): it sorts after
# the upstream release it patches. The package version adds Debian revision 1.
#
# usage: script/deb.sh LINE
# For the packaging tests: SERIES=file builds with another series file in
# place of the line's, DEB_OUT=dir builds there instead, LINTIAN=no skips
# lintian.
set -euo pipefail

line=${1:?usage: script/deb.sh LINE}
. "$(dirname "$0")/lib.sh"
root=$(repo_root)
pdir="$root/patches/$line"
upstream=$(pin_field "$line" version)
upver=$(fork_version "$line")
upver=${upver#v}
debver="$upver-1"
out=${DEB_OUT:-$root/build/deb/$line}
src="$out/containerd-steady-$upver"
series=${SERIES:-$pdir/series}

for tool in dpkg-buildpackage dh lintian; do
	command -v "$tool" >/dev/null || { echo "error: $tool is missing: run 'make setup'" >&2; exit 1; }
done

rm -rf "$out"
mkdir -p "$out"

# The orig tarball: the module zip's files under containerd-<version>/,
# with fixed owner, order, modes and mtime, so it is the same every time.
moddir=$(pinned_module_dir "$line")
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r "$moddir" "$stage/containerd-${upstream#v}"
chmod -R u+w "$stage"
reproducible_tar "$out/containerd-steady_$upver.orig.tar.gz" "$stage" "containerd-${upstream#v}"
mv "$stage/containerd-${upstream#v}" "$src"

# debian/: ours, the unit at the Debian path, the default config, the
# patches in quilt form (git format-patch headers are DEP-3 headers).
cp -r "$root/contrib/debian" "$src/debian"
sed 's|^ExecStart=/usr/local/bin/containerd$|ExecStart=/usr/bin/containerd|' \
	"$root/contrib/systemd/containerd.service" > "$src/debian/containerd-steady.containerd.service"
grep -q '^ExecStart=/usr/bin/containerd$' "$src/debian/containerd-steady.containerd.service" || {
	echo "error: contrib/systemd/containerd.service has no ExecStart=/usr/local/bin/containerd line to point at /usr/bin" >&2
	exit 1
}
cp "$root/contrib/config/$line.toml" "$src/debian/config.toml"
mkdir -p "$src/debian/patches"
series_patches "$series" > "$src/debian/patches/series"
while read -r p; do
	cp "$pdir/$p" "$src/debian/patches/"
done < "$src/debian/patches/series"

# The changelog, dated by this repository's last commit (the packages'
# SOURCE_DATE_EPOCH), so that one commit always gives the same packages.
when=$(date -u -R -d "@$(git -C "$root" log -1 --format=%ct)")
cat > "$src/debian/changelog" <<CHANGELOG
containerd-steady ($debver) unstable; urgency=medium

  * containerd $upstream with the containerd-steady series for $line:
    $(wc -l < "$src/debian/patches/series") patches (debian/patches/series), from
    containerd-steady $(repo_revision).

 -- containerd-steady developers <steady@containerd-steady.invalid>  $when
CHANGELOG

# The module cache the offline build reads: every module go.mod needs,
# copied from this machine's module cache where it has them.
gomodcache="$root/build/deb/_gomodcache"
hostcache=$(go env GOMODCACHE)
(cd "$root/build/$line/src" && GOMODCACHE="$gomodcache" GOFLAGS=-mod=mod \
	GOPROXY="file://$hostcache/cache/download,$(go env GOPROXY)" go mod download)

echo "deb $line: dpkg-buildpackage in $src"
(cd "$src" && GOMODCACHE="$gomodcache" GOCACHE="$(go env GOCACHE)" \
	dpkg-buildpackage -us -uc) > "$out/build.log" 2>&1 || {
	echo "error: dpkg-buildpackage failed for $line; the end of $out/build.log:" >&2
	tail -30 "$out/build.log" >&2
	exit 1
}
if [ "${LINTIAN:-yes}" != no ]; then
	echo "deb $line: lintian"
	lintian --fail-on error --info "$out/containerd-steady_${debver}_amd64.changes" > "$out/lintian.log" || {
		echo "error: lintian found errors in the $line package:" >&2
		grep '^E: ' "$out/lintian.log" >&2
		exit 1
	}
	echo "deb $line: lintian: $(grep -c '^E: ' "$out/lintian.log") errors, $(grep -c '^W: ' "$out/lintian.log") warnings ($out/lintian.log):"
	grep -E '^(E|W): ' "$out/lintian.log" || true
fi
echo "deb $line: $out/containerd-steady_${debver}_amd64.deb"
