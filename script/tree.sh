#!/usr/bin/env bash
# Materialise build/<line>/src: the pinned upstream module from the Go module
# proxy, checked against its h1 checksum, as a git repository whose first
# commit (tag "upstream") is pristine, with every patch of the line's series
# applied on top by git am, one commit each. Also writes the pristine copy
# build/<line>/upstream/src that the A/B builds use.
#
# usage: script/tree.sh LINE        (FORCE=1 discards unexported commits)
set -euo pipefail

line=${1:?usage: script/tree.sh LINE}
. "$(dirname "$0")/lib.sh"
root=$(repo_root)
pdir="$root/patches/$line"
bdir="$root/build/$line"
src="$bdir/src"
pristine="$bdir/upstream/src"
stamp="$bdir/tree.stamp"

module=$(pin_field "$line" module)
version=$(pin_field "$line" version)
sum=$(pin_field "$line" sum)

# The patches named in the series, in order; comments and blank lines skipped.
mapfile -t patches < <(series_patches "$pdir/series")
for p in "${patches[@]}"; do
	[ -f "$pdir/$p" ] || { echo "error: $pdir/series names $p, which does not exist" >&2; exit 1; }
done

# The inputs of the tree: the pin, the series and every patch named in it.
inputs=$( (cat "$pdir/UPSTREAM" "$pdir/series"; for p in "${patches[@]}"; do cat "$pdir/$p"; done) | sha256sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ -d "$src/.git" ] && [ -d "$pristine" ]; then
	read -r old_inputs old_head < "$stamp"
	head=$(git -C "$src" rev-parse HEAD)
	dirty=$(git -C "$src" status --porcelain)
	if [ "$head" != "$old_head" ] || [ -n "$dirty" ]; then
		if [ "${FORCE:-0}" != 1 ]; then
			echo "error: $src has changes not exported to patches/$line (commit and run 'make patches LINE=$line'), or FORCE=1 to discard them" >&2
			exit 1
		fi
	elif [ "$inputs" = "$old_inputs" ]; then
		echo "tree $line: up to date ($module $version, ${#patches[@]} patches)"
		exit 0
	fi
fi

echo "tree $line: downloading $module@$version"
moddir=$(pinned_module_dir "$line")

# Commits are made by a fixed identity with fixed dates, so the same inputs
# always give the same commit ids.
export GIT_AUTHOR_NAME="containerd-steady" GIT_AUTHOR_EMAIL="steady@localhost"
export GIT_COMMITTER_NAME="containerd-steady" GIT_COMMITTER_EMAIL="steady@localhost"
export GIT_AUTHOR_DATE="@0 +0000" GIT_COMMITTER_DATE="@0 +0000"

tmp="$bdir/src.new"
rm -rf "$tmp"
mkdir -p "$bdir"
cp -r "$moddir" "$tmp"
chmod -R u+w "$tmp"
git -C "$tmp" init -q -b main
git -C "$tmp" config core.autocrlf false
git -C "$tmp" config user.name "$GIT_AUTHOR_NAME"
git -C "$tmp" config user.email "$GIT_AUTHOR_EMAIL"
git -C "$tmp" add -A -f
git -C "$tmp" commit -q -m "upstream: $module $version" -m "Pinned: $sum"
git -C "$tmp" tag upstream
unset GIT_AUTHOR_DATE GIT_COMMITTER_DATE

for p in "${patches[@]}"; do
	if ! git -C "$tmp" am -q --keep-cr --committer-date-is-author-date "$pdir/$p" >"$bdir/am.log" 2>&1; then
		echo "error: patch $p does not apply to $module $version:" >&2
		sed 's/^/  /' "$bdir/am.log" >&2
		rm -rf "$tmp"
		exit 1
	fi
done

rm -rf "$src" "$bdir/upstream/src"
mv "$tmp" "$src"
mkdir -p "$bdir/upstream"
git -C "$src" worktree prune
mkdir "$pristine"
git -C "$src" archive upstream | tar -x -C "$pristine"
echo "$inputs $(git -C "$src" rev-parse HEAD)" > "$stamp"
echo "tree $line: $module $version + ${#patches[@]} patches in $src"
