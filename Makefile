# containerd-steady: pinned upstream containerd plus a patch series.
# Targets follow upstream's Makefile: binaries, install, release, test, integration.

# The release line a target works on (patches/<line>/); make test runs LINES.
LINE ?= v2.3
LINES := v2.3 v1.7
PREFIX ?= /usr/local
DESTDIR ?=
BUILD := build/$(LINE)
GO ?= go

.PHONY: all tree patches binaries runc install release test test-line test-unit test-tree integration kubelet test-kubelet critest conformance e2e soak faults demo rebase setup bench bench-quick deb test-package test-deb clean

all: binaries

## setup: install busybox-static, strace, runc's build dependencies and Debian's packaging
## tools from Debian's packages if missing
setup:
	script/setup.sh

## tree: materialise build/$(LINE)/src (pinned upstream + series) and the pristine copy
tree:
	script/tree.sh $(LINE)

## patches: export the commits in build/$(LINE)/src back to patches/$(LINE)/
patches:
	script/patches.sh $(LINE)

## binaries: fork into build/$(LINE)/bin, upstream into build/$(LINE)/upstream/bin,
## and the line's runc into build/runc/<version>/runc
binaries: runc
	script/build.sh $(LINE) both

## runc: the runc the line is tested with (patches/$(LINE)/UPSTREAM), from the Go module proxy
runc:
	script/runc.sh $(LINE)

## install: the fork's binaries into $(DESTDIR)$(PREFIX)/bin
install:
	script/build.sh $(LINE) fork
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BUILD)/bin/containerd $(BUILD)/bin/containerd-shim-runc-v2 $(BUILD)/bin/ctr $(DESTDIR)$(PREFIX)/bin/

## release: build/release/containerd-steady-<version>-linux-amd64.tar.gz (bin/, the systemd unit
## and the line's default config) and -patches.tar.gz
release:
	script/release.sh $(LINE)

## deb: the Debian source and binary packages in build/deb/$(LINE)/ (dpkg-buildpackage -us -uc,
## offline from a module cache it fills first), checked by lintian
deb: setup tree
	script/deb.sh $(LINE)

## rebase: move LINE to another upstream release, e.g. make rebase LINE=v1.7 VERSION=v1.7.36
rebase:
	@test -n "$(VERSION)" || { echo "usage: make rebase LINE=v1.7 VERSION=v1.7.x" >&2; exit 1; }
	script/rebase.sh $(LINE) $(VERSION)

## demo: run incident I1 on upstream and on the fork, print both side by side
demo: setup binaries
	$(GO) run ./cmd/steady-demo -line $(LINE)

## test: everything CI runs: our unit tests once, then every line's tests, then the Debian
## package of the default line
test: setup test-unit
	set -e; for l in $(LINES); do $(MAKE) --no-print-directory test-line LINE=$$l; done
	$(MAKE) --no-print-directory test-deb

## test-line: one line's in-tree, integration, fault, kubelet, conformance, packaging and
## benchmark smoke tests
test-line: test-tree integration faults test-kubelet conformance test-package bench-quick

## test-package: the release tarball is reproducible and carries the unit and the default
## config, and the unit passes systemd-analyze verify
test-package: binaries
	STEADY_LINE=$(LINE) $(GO) test -count=1 -v -timeout 15m -run '^(TestReleaseReproducible|TestUnitVerifies)$$' ./packaging/

## test-deb: build the line's .deb, check it, unpack it into a scratch root (dpkg -x) and run
## incident I1 on the installed binaries against upstream (root)
test-deb: deb binaries
	STEADY_LINE=$(LINE) $(GO) test -count=1 -v -timeout 20m -run '^TestDeb' ./packaging/
	rm -rf build/deb/$(LINE)/root && dpkg -x build/deb/$(LINE)/containerd-steady_*_amd64.deb build/deb/$(LINE)/root
	STEADY_LINE=$(LINE) STEADY_FORK_BIN=$(CURDIR)/build/deb/$(LINE)/root/usr/bin \
		$(GO) test -count=1 -v -parallel 2 -timeout 20m -run '^TestExitStall(Upstream|Fork)$$' ./integration/

## test-unit: our harness's unit tests and go vet
test-unit:
	$(GO) vet ./...
	$(GO) test -count=1 $$($(GO) list ./... | grep -v -e /integration -e /snapshots -e /conformance -e /packaging)

## test-tree: in-tree tests of every package the series touches (patched tree, -race)
test-tree: tree
	script/test-tree.sh $(LINE)

## integration: black-box tests against both builds, and the line's own upstream
## snapshotter conformance suite against both builds' running daemons (root);
## the kubelet scenarios run in test-kubelet
integration: binaries
	STEADY_LINE=$(LINE) STEADY_BBOLT="$$(script/bbolt.sh)" \
		$(GO) test -count=1 -v -parallel 4 -timeout 40m -skip '^(TestKubelet|TestCrashInTheMiddle|TestSoak)$$' ./integration/ ./snapshots/

## faults: the heavy fault scenarios of issue 14, each alone on the machine (root): the crash in
## the middle (20 pods), then the 2-minute soak (20 containers); fork and upstream side by side
faults: binaries
	STEADY_LINE=$(LINE) STEADY_BBOLT="$$(script/bbolt.sh)" \
		$(GO) test -count=1 -v -timeout 20m -run '^TestCrashInTheMiddle$$' ./integration/
	STEADY_LINE=$(LINE) STEADY_SOAK_CONTAINERS=20 STEADY_SOAK_DURATION=2m \
		$(GO) test -count=1 -v -timeout 20m -run '^TestSoak$$' ./integration/

## soak: the soak of issue 14, fork then upstream, SOAK_CONTAINERS containers for SOAK_DURATION
## each (root); make test runs a 2-minute version with 20 containers
SOAK_CONTAINERS ?= 200
SOAK_DURATION ?= 20m
soak: setup binaries
	STEADY_LINE=$(LINE) STEADY_SOAK_CONTAINERS=$(SOAK_CONTAINERS) STEADY_SOAK_DURATION=$(SOAK_DURATION) \
		$(GO) test -count=1 -v -timeout 3h -run '^TestSoak$$' ./integration/

## kubelet: build the line's kubelet (or KUBELET=vX.Y.Z) into build/kubelet/<version>/kubelet (once; cached)
KUBELET ?=
kubelet:
	script/kubelet.sh $(LINE) $(KUBELET)

## test-kubelet: a real standalone kubelet drives the fork and upstream (root), reduced umount2 delay;
## KUBELET=v1.38.0-beta.0 runs another kubelet than the line's own
KUBELET_DELAY ?= 30s
test-kubelet: binaries kubelet
	STEADY_LINE=$(LINE) STEADY_KUBELET="$$(script/kubelet.sh $(LINE) $(KUBELET))" STEADY_KUBELET_DELAY=$(KUBELET_DELAY) \
		$(GO) test -count=1 -v -timeout 40m -run '^TestKubelet$$' ./integration/

## critest: build cri-tools' critest (the line's 'critest' version), its ginkgo and crane
## into build/critest/<version>/ (once; cached)
critest:
	script/critest.sh $(LINE)

## conformance: critest on upstream, the fork and the fork with volatile_rootfs, offline in a
## private network namespace, judged spec by spec (root); FOCUS=<regexp> [REPEAT=10] instead
## runs only the matching specs REPEAT times on each build and counts their outcomes
FOCUS ?=
REPEAT ?= 10
conformance: setup binaries
	STEADY_LINE=$(LINE) STEADY_CRITEST="$$(script/critest.sh $(LINE))" \
		STEADY_CONFORMANCE_FOCUS='$(FOCUS)' STEADY_CONFORMANCE_REPEAT=$(REPEAT) \
		$(GO) test -count=1 -v -timeout 80m ./conformance/

## e2e: the kubelet scenarios with the full umount2 delay
e2e:
	$(MAKE) test-kubelet KUBELET_DELAY=90s

## bench: fork against upstream, side by side, from one run (BENCH_QUICK=1: smoke run;
## BENCH_RUN=<regexp> runs only the matching cases, e.g. BENCH_RUN='node at';
## BENCH_BIG=1 adds 500 containers to the node case); a selection writes build/bench/<line>-run.json,
## so it never overwrites a full run's samples
BENCH_RUN ?=
BENCH_BIG ?=
bench: setup binaries
	$(GO) run ./cmd/steady-bench -line $(LINE) -json build/bench/$(LINE)$(if $(BENCH_RUN),-run).json -run '$(BENCH_RUN)' $(if $(BENCH_BIG),-big)

## bench-quick: the benchmark's smoke run that make test includes
bench-quick: setup binaries
	BENCH_QUICK=1 $(GO) run ./cmd/steady-bench -line $(LINE) -json build/bench/$(LINE)-quick.json

## clean: remove build/ (the Go module cache of make deb is read-only, hence the chmod)
clean:
	if [ -d build ]; then chmod -R u+w build; fi
	rm -rf build
