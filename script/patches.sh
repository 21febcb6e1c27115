#!/usr/bin/env bash
# Export the commits made on top of the pristine upstream in build/<line>/src
# back to patches/<line>/ as git format-patch files, and rewrite the series.
# The flags keep a patch file stable until its change changes: no real
# commit ids, no git version signature, no diffstat.
#
# usage: script/patches.sh LINE
set -euo pipefail

line=${1:?usage: script/patches.sh LINE}
. "$(dirname "$0")/lib.sh"
root=$(repo_root)
pdir="$root/patches/$line"
src="$root/build/$line/src"

[ -d "$src/.git" ] || { echo "error: no tree at $src; run 'make tree LINE=$line' first" >&2; exit 1; }
if [ -n "$(git -C "$src" status --porcelain)" ]; then
	echo "error: $src has uncommitted changes; commit them first" >&2
	exit 1
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
git -C "$src" format-patch -q --keep-subject --no-stat --no-signature --zero-commit \
	--full-index --no-numbered -o "$out" upstream..HEAD

# The author date is not part of the change: pin it, so that re-exporting
# an unchanged commit gives the same file.
sed -i 's/^Date: .*/Date: Thu, 1 Jan 1970 00:00:00 +0000/' "$out"/*.patch

rm -f "$pdir"/*.patch
{
	echo "# Patches applied in order on top of the UPSTREAM pin, one file name a line."
	for f in "$out"/*.patch; do
		[ -f "$f" ] || continue
		cp "$f" "$pdir/"
		basename "$f"
	done
} > "$pdir/series"
n=$(grep -vc '^#' "$pdir/series" || true)
echo "patches $line: exported $n patches to $pdir"
# The tree now matches the series again.
inputs=$( (cat "$pdir/UPSTREAM" "$pdir/series"; grep -v '^#' "$pdir/series" | while read -r p; do cat "$pdir/$p"; done) | sha256sum | cut -d' ' -f1)
echo "$inputs $(git -C "$src" rev-parse HEAD)" > "$root/build/$line/tree.stamp"
