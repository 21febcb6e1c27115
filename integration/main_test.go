// Package integration holds black-box tests that run the incidents of
// DESIGN.md against built containerd binaries: the fork and the pristine
// upstream of one line. They need root, runc, strace and busybox-static,
// and binaries from 'make binaries'; 'make integration' runs them.
package integration

import (
	"context"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/containerd-steady/containerd-steady/pkg/daemon"
	"github.com/containerd-steady/containerd-steady/pkg/incident"
	"github.com/containerd-steady/containerd-steady/pkg/line"
)

// testLine is the release line under test (STEADY_LINE, default
// line.Default), loaded once from patches/<line>/UPSTREAM.
var testLine = sync.OnceValues(line.FromEnv)

// theLine returns the line under test, failing t when its description
// does not load.
func theLine(t *testing.T) line.Line {
	t.Helper()
	l, err := testLine()
	if err != nil {
		t.Fatalf("line under test: %v", err)
	}
	return l
}

func forkBuild(t *testing.T) incident.Build {
	_, fork := incident.Builds(theLine(t))
	return fork
}

func upstreamBuild(t *testing.T) incident.Build {
	upstream, _ := incident.Builds(theLine(t))
	return upstream
}

// requireSetup skips without root (these tests mount, trace and run
// containers) and fails when the binaries have not been built.
func requireSetup(t *testing.T, builds ...incident.Build) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("integration tests need root: run 'make integration' as root")
	}
	for _, b := range builds {
		if err := b.Missing(); err != nil {
			t.Fatal(err)
		}
	}
}

// delay is the umount2/fsync delay D (STEADY_DELAY, default 20s).
func delay(t *testing.T) time.Duration {
	v := os.Getenv("STEADY_DELAY")
	if v == "" {
		return 20 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("STEADY_DELAY=%q: %v", v, err)
	}
	return d
}

// startNode starts a private containerd of build for t and cleans it up,
// printing its log tail if t failed.
func startNode(t *testing.T, b incident.Build, opts daemon.Options) (*incident.Node, string) {
	t.Helper()
	return startNodeIn(t, b, func(string) daemon.Options { return opts })
}

// startNodeIn is startNode for options that must name the daemon's private
// directory (the runc root of a second runtime handler).
func startNodeIn(t *testing.T, b incident.Build, opts func(dir string) daemon.Options) (*incident.Node, string) {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	node, err := incident.StartNode(ctx, b, dir, opts(dir))
	if err != nil {
		t.Fatalf("start %s node: %v", b.Name, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s containerd log (tail):\n%s", b.Name, node.Daemon.LogTail(80))
		}
		if err := node.Close(); err != nil {
			t.Errorf("clean up %s node: %v", b.Name, err)
		}
		if left, _ := daemon.MountsUnder(dir); len(left) > 0 {
			t.Errorf("mounts left under %s: %v", dir, left)
		}
		if shims := node.Daemon.ShimPIDs(); len(shims) > 0 {
			t.Errorf("shims left running: %v", shims)
		}
	})
	return node, dir
}

func itoa(n int) string { return strconv.Itoa(n) }

// bothBuilds runs f for the fork and for upstream in parallel subtests of a
// subtest called name, each after requireSetup, and returns what each saw.
func bothBuilds[R any](t *testing.T, name string, f func(*testing.T, incident.Build) R) map[string]R {
	var mu sync.Mutex
	runs := map[string]R{}
	t.Run(name, func(t *testing.T) {
		for _, b := range []incident.Build{forkBuild(t), upstreamBuild(t)} {
			t.Run(b.Name, func(t *testing.T) {
				requireSetup(t, b)
				t.Parallel()
				r := f(t, b)
				mu.Lock()
				runs[b.Name] = r
				mu.Unlock()
			})
		}
	})
	return runs
}
