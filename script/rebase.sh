#!/usr/bin/env bash
# Move a line to another upstream patch release: re-pin UPSTREAM (module
# version and h1 checksum from the Go module proxy, steady counter back to
# 1) and re-apply the series. A patch that no longer applies is named and
# the old pin is kept.
#
# usage: script/rebase.sh LINE VERSION
set -euo pipefail

line=${1:?usage: script/rebase.sh LINE VERSION}
version=${2:?usage: script/rebase.sh LINE VERSION}
. "$(dirname "$0")/lib.sh"
root=$(repo_root)
pin="$root/patches/$line/UPSTREAM"
module=$(pin_field "$line" module)

json=$(cd "$root" && go mod download -json "$module@$version")
sum=$(sed -n 's/^[[:space:]]*"Sum": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")
[ -n "$sum" ] || { echo "error: no checksum for $module@$version: $json" >&2; exit 1; }

cp "$pin" "$pin.old"
awk -v v="$version" -v s="$sum" '
	$1 == "version" { print "version " v; next }
	$1 == "sum" { print "sum " s; next }
	$1 == "steady" { print "steady 1"; next }
	{ print }' "$pin.old" > "$pin"
if ! FORCE=1 "$root/script/tree.sh" "$line"; then
	mv "$pin.old" "$pin"
	echo "rebase $line: the series does not apply to $version (see the patch named above); pin left at $(pin_field "$line" version)" >&2
	exit 1
fi
rm -f "$pin.old"
echo "rebase $line: now on $module $version ($sum); review, run 'make test', then commit patches/$line/UPSTREAM"
