#!/usr/bin/env bash
# Install what the tests and the demo need from Debian's packages, if missing:
# busybox-static (offline images), strace (fault injection), curl and procps
# (contrib/diag reads the metrics and the process tree with them), gcc,
# pkg-config and libseccomp-dev to build each line's pinned runc
# (script/runc.sh), and for the conformance suite (make conformance) the CNI
# plugins (containernetworking-plugins), iproute2 for its private network
# namespace and iptables for the portmap plugin; for the packages (make deb,
# make test-package) dpkg-dev, debhelper and lintian, and systemd for
# systemd-analyze. Go itself must already be installed.
set -euo pipefail

missing=()
command -v gcc >/dev/null || missing+=(gcc)
command -v pkg-config >/dev/null || missing+=(pkg-config)
pkg-config --exists libseccomp 2>/dev/null || missing+=(libseccomp-dev)
[ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 || missing+=(busybox-static)
command -v strace >/dev/null || missing+=(strace)
command -v git >/dev/null || missing+=(git)
command -v curl >/dev/null || missing+=(curl)
command -v ps >/dev/null || missing+=(procps)
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
command -v ip >/dev/null || missing+=(iproute2)
command -v iptables >/dev/null || missing+=(iptables)
command -v dpkg-buildpackage >/dev/null || missing+=(dpkg-dev)
command -v dh >/dev/null || missing+=(debhelper)
command -v lintian >/dev/null || missing+=(lintian)
command -v systemd-analyze >/dev/null || missing+=(systemd)

if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "error: missing ${missing[*]}; install them (as root: apt-get install ${missing[*]})" >&2
	exit 1
fi
echo "setup: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
