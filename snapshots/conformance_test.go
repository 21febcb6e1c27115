package snapshots

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-steady/containerd-steady/pkg/daemon"
	"github.com/containerd-steady/containerd-steady/pkg/incident"
	"github.com/containerd-steady/containerd-steady/pkg/line"
)

// snapshotter is the daemon's snapshotter under test (the one the CRI uses).
const snapshotter = "overlayfs"

// testLine is the release line under test (STEADY_LINE, default
// line.Default), loaded once from patches/<line>/UPSTREAM.
var testLine = sync.OnceValues(line.FromEnv)

// setup returns the builds of the line under test and the adapter of its
// upstream module. It skips without root (the suite mounts the snapshots
// it prepares) and fails when the line does not load or its suite is not
// the line's own.
func setup(t *testing.T) (upstreamBuild, fork incident.Build, _ upstream) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the conformance suite mounts the snapshots it prepares")
	}
	l, err := testLine()
	if err != nil {
		t.Fatalf("line under test: %v", err)
	}
	upstreamBuild, fork = incident.Builds(l)
	return upstreamBuild, fork, upstreamOf(t, l)
}

// startDaemon starts a private containerd of build b, configured for b's
// line, and returns a client of its overlayfs snapshotter. It fails t when
// b is not built. The daemon, its mounts and shims are removed when t
// ends, also when it fails.
func startDaemon(t *testing.T, b incident.Build) (*daemon.Daemon, *Remote) {
	t.Helper()
	if err := b.Missing(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The CRI is not used here; the sandbox image is never pulled.
	d, err := daemon.Start(ctx, dir, b.DaemonOptions(daemon.Options{SandboxImage: "docker.io/steady/pause:1"}))
	require.NoError(t, err)
	conn, err := d.Dial()
	if err != nil {
		_ = d.Cleanup(ctx)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		if t.Failed() {
			t.Logf("%s containerd log (tail):\n%s", b.Name, d.LogTail(60))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := d.Cleanup(ctx); err != nil {
			t.Errorf("clean up daemon: %v", err)
		}
		if left, _ := daemon.MountsUnder(dir); len(left) > 0 {
			t.Errorf("mounts left under %s: %v", dir, left)
		}
	})
	return d, NewRemote(conn, snapshotter)
}

// requireVolatile fails t unless b's overlayfs snapshotter advertises the
// volatile capability, so that the volatile tests never pass without
// a single volatile mount.
func requireVolatile(t *testing.T, b incident.Build, r *Remote) {
	t.Helper()
	caps, err := r.Capabilities(context.Background())
	require.NoError(t, err)
	if !slices.Contains(caps, CapabilityVolatile) {
		t.Fatalf("the %s %s overlayfs snapshotter (%s) does not advertise the %q capability (it has %q), so it would ignore the %s label: "+
			"the build lacks the volatile overlay patches of patches/%s/series, or this kernel lacks overlayfs volatile",
			b.Line.Name, b.Name, b.BinDir, CapabilityVolatile, caps, LabelVolatile, b.Line.Name)
	}
}

// caseScopes gives each case of the suite a namespace and lease of its
// own on the shared daemon (Scope), with opts.
func caseScopes(r *Remote, opts ...ScopeOpt) func(ctx context.Context, root string) (*Scope, error) {
	return func(ctx context.Context, root string) (*Scope, error) {
		// root is <tmp>/snapshot-suite-overlayfs-<random>/root, unique per
		// case. The suite's root directory is not used otherwise: the
		// snapshotter's root is the daemon's.
		return r.Isolated(ctx, filepath.Base(filepath.Dir(root)), opts...)
	}
}

// Every case of the line's upstream suite (snapshots/testsuite of
// github.com/containerd/containerd v1.7.35 for v1.7, core/snapshots/testsuite
// of github.com/containerd/containerd/v2 v2.3.7 for v2.3) works over the
// snapshot API as root: the cases mount the mounts the daemon returns, in
// this process's mount namespace, where the daemon's directories are
// visible. So none is skipped. Its name "overlayfs" selects the overlayfs
// expectations of checkRename (no rename of a lower directory without
// redirect_dir).
//
// What differs from running the suite on a library snapshotter:
//   - the cases share one daemon; each case's Scope isolates it by
//     namespace, and holds a lease so that the daemon's garbage collector
//     does not remove the snapshots that a case creates without a gc.root
//     label;
//   - CloseTwice closes the case's snapshots proxy, not the daemon's
//     snapshotter (a proxy's Close is a no-op on both lines);
//   - the snapshots pass the metadata store, which the library suite skips.

// TestConformance runs the line's upstream snapshotter suite against the
// overlayfs snapshotter of upstream's daemon and of the fork's, through
// the snapshot API: the fork must pass every case upstream passes.
func TestConformance(t *testing.T) {
	upstreamBuild, fork, up := setup(t)
	for _, b := range []incident.Build{upstreamBuild, fork} {
		t.Run(b.Name, func(t *testing.T) {
			_, r := startDaemon(t, b)
			up.suite(t, snapshotter, caseScopes(r))
		})
	}
}

// TestConformanceVolatile runs the suite on the fork with the volatile
// label on every active snapshot, as the CRI sets it with volatile_rootfs.
// The suite mounts, writes, unmounts and commits such snapshots, and in
// places mounts one again.
func TestConformanceVolatile(t *testing.T) {
	_, fork, up := setup(t)
	_, r := startDaemon(t, fork)
	requireVolatile(t, fork, r)

	var (
		mu       sync.Mutex
		volatile int // mounts handed out with "volatile"
		withPar  int // Prepares with a parent
		wrong    []string
	)
	onPrepare := func(key, parent string, mounts []*types.Mount) {
		mu.Lock()
		defer mu.Unlock()
		v := HasVolatile(mounts)
		if v {
			volatile++
		}
		if parent != "" {
			withPar++
		}
		// Only active snapshots with a parent are volatile.
		if v != (parent != "") {
			wrong = append(wrong, fmt.Sprintf("Prepare(%q, parent %q): volatile=%v, mounts %v", key, parent, v, mounts))
		}
	}
	t.Run("suite", func(t *testing.T) {
		up.suite(t, snapshotter, caseScopes(r, WithPrepareLabels(map[string]string{LabelVolatile: "true"}, onPrepare)))
	})
	mu.Lock()
	defer mu.Unlock()
	assert.Empty(t, wrong)
	assert.Positive(t, volatile, "the suite must have run on volatile snapshots")
	assert.Equal(t, withPar, volatile, "every labelled active snapshot with a parent must be volatile")
	t.Logf("%d of the suite's active snapshots were mounted volatile", volatile)
}

// mountedVolatile reports whether the mount at target is volatile.
func mountedVolatile(t *testing.T, target string) bool {
	t.Helper()
	m, err := daemon.LookupMount(target)
	require.NoError(t, err)
	return m.Volatile()
}

// snapshotDir returns the overlay snapshot directory (<root>/snapshots/<id>)
// behind the mounts of an active snapshot with a parent.
func snapshotDir(t *testing.T, mounts []*types.Mount) string {
	t.Helper()
	for _, m := range mounts {
		for _, o := range m.Options {
			if upper, ok := strings.CutPrefix(o, "upperdir="); ok {
				return filepath.Dir(upper)
			}
		}
	}
	t.Fatalf("no upperdir in %v", mounts)
	return ""
}

func bootID(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

// TestVolatileLabel checks the fork's volatile label over the snapshot API:
// only labelled active snapshots with a parent are volatile, they can be
// mounted again in the same boot, and committing one gives a layer that is
// not volatile.
func TestVolatileLabel(t *testing.T) {
	_, fork, up := setup(t)
	d, r := startDaemon(t, fork)
	requireVolatile(t, fork, r)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	sn, err := r.Isolated(ctx, "volatile-label")
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := sn.Close(); err != nil {
			t.Errorf("remove snapshots: %v", err)
		}
	})
	work := t.TempDir()
	label := func(v string) map[string]string { return map[string]string{LabelVolatile: v} }
	overlayRoot := filepath.Join(d.Root, "io.containerd.snapshotter.v1.overlayfs")
	// mountAt mounts mounts on a new directory name under work and
	// unmounts it when t ends, unless unmounted before.
	mountAt := func(t *testing.T, name string, mounts []*types.Mount) string {
		t.Helper()
		target := filepath.Join(work, name)
		require.NoError(t, os.MkdirAll(target, 0o755))
		require.NoError(t, up.mountAll(mounts, target))
		t.Cleanup(func() { _ = up.unmountAll(target) })
		return target
	}

	// A committed base layer, written through a labelled snapshot without
	// a parent (a bind mount, never volatile).
	mounts, err := sn.Prepare(ctx, "base-active", "", label("true"))
	require.NoError(t, err)
	assert.False(t, HasVolatile(mounts), "a snapshot without parent is a bind mount: %v", mounts)
	target := mountAt(t, "base", mounts)
	require.NoError(t, os.WriteFile(filepath.Join(target, "base"), []byte("base\n"), 0o644))
	require.NoError(t, up.unmountAll(target))
	require.NoError(t, sn.Commit(ctx, "base", "base-active"))

	t.Run("not labelled", func(t *testing.T) {
		for key, labels := range map[string]map[string]string{
			"no-label":    nil,
			"label-false": label("false"),
			"label-bogus": label("yes please"),
		} {
			mounts, err := sn.Prepare(ctx, key, "base", labels)
			require.NoError(t, err)
			assert.False(t, HasVolatile(mounts), "%s: %v", key, mounts)
			mounts, err = sn.Mounts(ctx, key)
			require.NoError(t, err)
			assert.False(t, HasVolatile(mounts), "%s: %v", key, mounts)
			require.NoError(t, sn.Remove(ctx, key))
		}
	})

	t.Run("view never", func(t *testing.T) {
		mounts, err := sn.View(ctx, "view", "base", label("true"))
		require.NoError(t, err)
		assert.False(t, HasVolatile(mounts), "%v", mounts)
		target := mountAt(t, "view", mounts)
		assert.False(t, mountedVolatile(t, target), "view mounted volatile")
		require.NoError(t, up.unmountAll(target))
		require.NoError(t, sn.Remove(ctx, "view"))
	})

	var dir string
	t.Run("labelled prepare", func(t *testing.T) {
		mounts, err := sn.Prepare(ctx, "active", "base", label("true"))
		require.NoError(t, err)
		require.True(t, HasVolatile(mounts), "%v", mounts)
		dir = snapshotDir(t, mounts)
		target := mountAt(t, "active-1", mounts)
		assert.True(t, mountedVolatile(t, target), "labelled active snapshot not mounted volatile")
		require.NoError(t, os.WriteFile(filepath.Join(target, "data"), []byte("data\n"), 0o644))

		marker, err := os.ReadFile(filepath.Join(dir, "volatile-boot-id"))
		require.NoError(t, err, "the fork records the boot of a volatile snapshot")
		assert.Equal(t, bootID(t), strings.TrimSpace(string(marker)))
		require.NoError(t, up.unmountAll(target))
		assert.DirExists(t, filepath.Join(dir, "work", "work", "incompat", "volatile"),
			"the kernel leaves its incompat directory behind after a volatile mount")
	})

	t.Run("remount in the same boot", func(t *testing.T) {
		require.NotEmpty(t, dir, "labelled prepare failed")
		mounts, err := sn.Mounts(ctx, "active")
		require.NoError(t, err)
		require.True(t, HasVolatile(mounts), "%v", mounts)
		target := mountAt(t, "active-2", mounts)
		assert.True(t, mountedVolatile(t, target))
		b, err := os.ReadFile(filepath.Join(target, "data"))
		require.NoError(t, err)
		assert.Equal(t, "data\n", string(b))
		require.NoError(t, up.unmountAll(target))
	})

	t.Run("commit is not volatile", func(t *testing.T) {
		require.NotEmpty(t, dir, "labelled prepare failed")
		require.NoError(t, sn.Commit(ctx, "committed", "active"))
		info, err := sn.Stat(ctx, "committed")
		require.NoError(t, err)
		assert.Equal(t, snapshotsapi.Kind_COMMITTED, info.Kind)
		assert.NotContains(t, info.Labels, LabelVolatile, "committed snapshots never carry the label")

		mounts, err := sn.View(ctx, "committed-view", "committed", nil)
		require.NoError(t, err)
		assert.False(t, HasVolatile(mounts), "%v", mounts)
		target := mountAt(t, "committed-view", mounts)
		assert.False(t, mountedVolatile(t, target))
		for name, want := range map[string]string{"base": "base\n", "data": "data\n"} {
			b, err := os.ReadFile(filepath.Join(target, name))
			require.NoError(t, err)
			assert.Equal(t, want, string(b))
		}
		require.NoError(t, up.unmountAll(target))

		// A child without the label is not volatile either.
		mounts, err = sn.Prepare(ctx, "child", "committed", nil)
		require.NoError(t, err)
		assert.False(t, HasVolatile(mounts), "%v", mounts)
	})

	// The committed layer's directory (the former active snapshot's, as
	// overlayfs commits in place) keeps no volatile state: no boot marker
	// and no incompat directory of the kernel. No snapshot directory does,
	// as no volatile active snapshot is left.
	t.Run("committed layer keeps no volatile state", func(t *testing.T) {
		require.NotEmpty(t, dir, "labelled prepare failed")
		assert.NoFileExists(t, filepath.Join(dir, "volatile-boot-id"), "committed snapshot keeps the volatile boot marker")
		assert.NoDirExists(t, filepath.Join(dir, "work", "work", "incompat"), "committed snapshot keeps the kernel's incompat directory")

		entries, err := os.ReadDir(filepath.Join(overlayRoot, "snapshots"))
		require.NoError(t, err)
		var markers []string
		for _, e := range entries {
			if _, err := os.Stat(filepath.Join(overlayRoot, "snapshots", e.Name(), "volatile-boot-id")); err == nil {
				markers = append(markers, e.Name())
			}
		}
		assert.Empty(t, markers, "snapshot directories with a volatile boot marker")
	})
}
