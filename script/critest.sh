#!/usr/bin/env bash
# Build the CRI conformance tools from the Go module proxy and cache them by
# version (make conformance, conformance/):
#
#   script/critest.sh LINE  -> build/critest/<version>/ (printed), holding
#     critest  cri-tools' validation suite, built as its Makefile does:
#              cmd/critest holds only test files, so 'go test -c';
#     ginkgo   the ginkgo CLI of the version cri-tools requires, which
#              critest runs for its -parallel nodes;
#     crane    go-containerregistry's crane (CRANE_VERSION), which serves the
#              offline registry on 127.0.0.1 and pushes the test images;
#     busybox  Debian's dynamically linked busybox, the base of the test
#              images, from the package downloaded (not installed: it
#              conflicts with busybox-static). Its shell runs commands by
#              exec, as the suite's busybox image does, where
#              busybox-static's runs its applets in-process (the
#              MaskedPaths spec tells them apart).
#
# The cri-tools version is the line's 'critest' field in patches/LINE/UPSTREAM.
# A second run finds the binaries and builds nothing.
set -euo pipefail

line=${1:?usage: script/critest.sh LINE}
. "$(dirname "$0")/lib.sh"
CRITEST_VERSION=$(pin_field "$line" critest)
CRANE_VERSION=v0.22.1

ROOT=$(repo_root)
OUT_DIR="${ROOT}/build/critest/${CRITEST_VERSION}"
export PATH="/usr/local/go/bin:${PATH}"
export CGO_ENABLED=0 GOFLAGS=-trimpath

if [ -x "${OUT_DIR}/critest" ] && [ -x "${OUT_DIR}/ginkgo" ] && [ -x "${OUT_DIR}/crane" ] && [ -x "${OUT_DIR}/busybox" ]; then
	echo "$OUT_DIR"
	exit 0
fi
echo "critest.sh: building critest ${CRITEST_VERSION}, its ginkgo and crane ${CRANE_VERSION}" >&2
mkdir -p "$OUT_DIR"

# 1. cri-tools' module from the proxy, verified against sum.golang.org.
MOD_DIR=$(module_dir "sigs.k8s.io/cri-tools@${CRITEST_VERSION}")

# 2. critest and ginkgo, built inside that module so that its go.mod and
# go.sum pick every dependency (the module cache is read-only, so go may
# not write go.sum: -mod=mod is not needed, everything is listed).
(
	cd "$MOD_DIR"
	go test -c -o "${OUT_DIR}/critest.tmp" \
		-ldflags "-X sigs.k8s.io/cri-tools/pkg/version.Version=${CRITEST_VERSION}" \
		./cmd/critest
	go build -o "${OUT_DIR}/ginkgo.tmp" github.com/onsi/ginkgo/v2/ginkgo
)
mv "${OUT_DIR}/critest.tmp" "${OUT_DIR}/critest"
mv "${OUT_DIR}/ginkgo.tmp" "${OUT_DIR}/ginkgo"

# 3. crane, from its own module.
GOBIN="$OUT_DIR" go install "github.com/google/go-containerregistry/cmd/crane@${CRANE_VERSION}"

# 4. busybox from Debian's package.
deb_dir=$(mktemp -d)
trap 'rm -rf "$deb_dir"' EXIT
(
	cd "$deb_dir"
	apt-get download busybox >/dev/null 2>&1 || { apt-get update -qq && apt-get download busybox; }
	dpkg-deb -x busybox_*.deb root
)
install -m 0755 "${deb_dir}/root/bin/busybox" "${OUT_DIR}/busybox"

"${OUT_DIR}/critest" -version >&2
"${OUT_DIR}/crane" version >&2
echo "$OUT_DIR"
