#!/usr/bin/env bash
# Build bbolt's command-line tool from the Go module proxy and cache it by
# version. The crash scenario (integration/) runs 'bbolt check' on
# containerd's meta.db after killing containerd in the middle of exits.
#
#   script/bbolt.sh -> build/tools/bbolt/<version>/bbolt (its path printed)
#
# A second run finds the binary and builds nothing.
set -euo pipefail

. "$(dirname "$0")/lib.sh"
BBOLT_VERSION=v1.5.0

ROOT=$(repo_root)
OUT_DIR="${ROOT}/build/tools/bbolt/${BBOLT_VERSION}"
export PATH="/usr/local/go/bin:${PATH}"
export CGO_ENABLED=0 GOFLAGS=-trimpath

if [ -x "${OUT_DIR}/bbolt" ]; then
	echo "${OUT_DIR}/bbolt"
	exit 0
fi
echo "bbolt.sh: building go.etcd.io/bbolt/cmd/bbolt ${BBOLT_VERSION}" >&2
mkdir -p "$OUT_DIR"

# Built inside its own module, verified against sum.golang.org, so that its
# go.mod and go.sum pick every dependency.
MOD_DIR=$(module_dir "go.etcd.io/bbolt@${BBOLT_VERSION}")
(
	cd "$MOD_DIR"
	go build -o "${OUT_DIR}/bbolt.tmp" ./cmd/bbolt
)
mv "${OUT_DIR}/bbolt.tmp" "${OUT_DIR}/bbolt"
echo "${OUT_DIR}/bbolt"
