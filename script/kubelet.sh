#!/usr/bin/env bash
# Build a kubelet from the Go module proxy for the standalone-kubelet tests
# (integration/kubelet_test.go) and cache it by version:
#
#   script/kubelet.sh LINE [VERSION]  -> build/kubelet/<version>/kubelet (printed)
#
# VERSION defaults to the line's 'kubelet' field in patches/LINE/UPSTREAM
# (the kubelet of the line's generation); another one, e.g. v1.38.0-beta.0,
# can be named to try a line with it. 'go install k8s.io/kubernetes/cmd/kubelet@...' does not work: the
# module's go.mod replaces the k8s.io/* staging modules with ./staging paths.
# So the module is copied to a stable directory under build/, the staging
# replaces are dropped and the published staging modules required instead.
# A second run finds the binary and builds nothing; a rebuild (after
# removing the binary) reuses Go's build cache, since the source directory
# is stable and the build uses -trimpath.
set -euo pipefail

line=${1:?usage: script/kubelet.sh LINE [VERSION]}
. "$(dirname "$0")/lib.sh"
KUBELET_VERSION=${2:-$(pin_field "$line" kubelet)}

# The staging modules of k8s.io/kubernetes v1.X.Y are published as v0.X.Y.
STAGING_VERSION="v0.${KUBELET_VERSION#v1.}"
ROOT=$(repo_root)
OUT_DIR="${ROOT}/build/kubelet/${KUBELET_VERSION}"
BIN="${OUT_DIR}/kubelet"
SRC="${OUT_DIR}/src"
export PATH="/usr/local/go/bin:${PATH}"

if [ -x "$BIN" ]; then
	echo "$BIN"
	exit 0
fi

echo "kubelet.sh: building kubelet ${KUBELET_VERSION} (about 8 minutes cold)" >&2
mkdir -p "$OUT_DIR"

# 1. The module zip from the proxy, verified by go against sum.golang.org.
# A kubelet newer than the installed Go (1.38 needs go 1.27) is built with
# the Go toolchain its go.mod names, which the go command fetches as the
# module golang.org/toolchain from the same proxy (GOTOOLCHAIN).
json=$(go mod download -json "k8s.io/kubernetes@${KUBELET_VERSION}" || true)
GOMOD=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p' <<<"$json")
[ -f "$GOMOD" ] || { echo "kubelet.sh: k8s.io/kubernetes@${KUBELET_VERSION} is not on the module proxy" >&2; exit 1; }
need=$(awk '$1 == "go" { print $2; exit }' "$GOMOD")
have=$(go env GOVERSION)
have=${have#go}
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" != "$need" ]; then
	echo "kubelet.sh: kubelet ${KUBELET_VERSION} needs go ${need} (installed: ${have}); using toolchain go${need}" >&2
	export GOTOOLCHAIN="go${need}"
	json=$(go mod download -json "k8s.io/kubernetes@${KUBELET_VERSION}")
fi
MOD_DIR=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json")
[ -d "$MOD_DIR" ] || { echo "kubelet.sh: go mod download gave no directory" >&2; exit 1; }

# 2. A writable copy in a stable place, prepared once.
if [ ! -f "${SRC}/.prepared" ]; then
	rm -rf "$SRC"
	cp -r "$MOD_DIR" "$SRC"
	chmod -R u+w "$SRC"
	rm -rf "${SRC}/go.work" "${SRC}/go.work.sum" "${SRC}/vendor"
	(
		cd "$SRC"
		# Drop every './staging' replace; require at STAGING_VERSION the
		# staging modules that go.mod already requires (the sample-*
		# modules appear only in replace lines and must stay out).
		staging=$(sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/.*#\1#p' go.mod)
		for m in $staging; do
			go mod edit -dropreplace="$m"
			if grep -Eq "^[[:space:]]+${m//./\\.} v" go.mod; then
				go mod edit -require="${m}@${STAGING_VERSION}"
			fi
		done
		GOFLAGS=-mod=mod go get k8s.io/kubernetes/cmd/kubelet
	)
	touch "${SRC}/.prepared"
fi

# 3. Build. ContainerLogsDir is hard-coded to /var/log/containers; make it
# relative, so each test kubelet keeps its log symlinks below its working
# directory (pkg/kubelet starts kubelet in its private directory).
(
	cd "$SRC"
	CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "${BIN}.tmp" \
		-ldflags "-s -w -X k8s.io/component-base/version.gitVersion=${KUBELET_VERSION} -X k8s.io/kubernetes/pkg/kubelet.ContainerLogsDir=container-logs" \
		./cmd/kubelet
)
mv "${BIN}.tmp" "$BIN"
"$BIN" --version >&2
echo "$BIN"
