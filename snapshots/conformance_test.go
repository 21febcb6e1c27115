package snapshots

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/testsuite"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-steady/containerd-steady/pkg/daemon"
)

// snapshotter is the daemon's snapshotter under test (the one the CRI uses).
const snapshotter = "overlayfs"

// forkBinDir is the fork's bin directory of the line under test
// (STEADY_LINE, default v1.7), as 'make binaries' leaves it.
func forkBinDir() string {
	line := os.Getenv("STEADY_LINE")
	if line == "" {
		line = "v1.7"
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "build", line, "bin")
}

// startFork starts a private fork containerd for t and returns a client of
// its overlayfs snapshotter. The daemon, its mounts and shims are removed
// when t ends, also when it fails.
func startFork(t *testing.T) (*daemon.Daemon, *Remote) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the conformance suite mounts the snapshots it prepares")
	}
	bin := forkBinDir()
	if _, err := os.Stat(filepath.Join(bin, "containerd")); err != nil {
		t.Skipf("fork binaries missing in %s: run 'make binaries' first (%v)", bin, err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The CRI is not used here; the sandbox image is never pulled.
	d, err := daemon.Start(ctx, dir, daemon.Options{BinDir: bin, SandboxImage: "docker.io/steady/pause:1"})
	require.NoError(t, err)
	conn, err := d.Dial()
	if err != nil {
		_ = d.Cleanup(ctx)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		if t.Failed() {
			t.Logf("containerd log (tail):\n%s", d.LogTail(60))
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

// suiteFn returns a testsuite factory that gives each case of the suite a
// namespace and lease of its own on the shared daemon. The suite's root
// directory is not used: the snapshotter's root is the daemon's. wrap, when
// set, wraps the snapshotter each case gets.
func suiteFn(r *Remote, wrap func(snapshots.Snapshotter) snapshots.Snapshotter) testsuite.SnapshotterFunc {
	return func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		// root is <tmp>/snapshot-suite-overlayfs-<random>/root: unique per case.
		ns := filepath.Base(filepath.Dir(root))
		sn, cleanup, err := r.Isolated(ctx, ns)
		if err != nil {
			return nil, nil, err
		}
		if wrap != nil {
			sn = wrap(sn)
		}
		return sn, cleanup, nil
	}
}

// Every case of upstream's suite (snapshots/testsuite of the pinned
// github.com/containerd/containerd v1.7.35) works over the snapshot API as
// root: the cases mount the mounts the daemon returns, in this process's
// mount namespace, where the daemon's directories are visible. So none is
// skipped. Its name "overlayfs" selects the overlayfs expectations of
// checkRename (no rename of a lower directory without redirect_dir).
//
// What differs from running the suite on a library snapshotter:
//   - the cases share one daemon; suiteFn isolates them by namespace, and
//     holds a lease so that the daemon's garbage collector does not remove
//     the snapshots that a case creates without a gc.root label;
//   - CloseTwice closes the case's client, not the daemon's snapshotter
//     (a remote snapshotter's Close is a no-op in upstream's proxy too);
//   - the snapshots pass the metadata store, which the library suite skips.

// TestConformance runs upstream's snapshotter suite against the fork
// daemon's overlayfs snapshotter through the snapshot API.
func TestConformance(t *testing.T) {
	_, r := startFork(t)
	testsuite.SnapshotterSuite(t, snapshotter, suiteFn(r, nil))
}

// TestConformanceVolatile runs upstream's snapshotter suite with the
// volatile label on every active snapshot, as the CRI sets it with
// volatile_rootfs. The suite mounts, writes, unmounts and commits such
// snapshots, and in places mounts one again.
func TestConformanceVolatile(t *testing.T) {
	_, r := startFork(t)
	caps, err := r.Capabilities(context.Background())
	require.NoError(t, err)
	require.Contains(t, caps, CapabilityVolatile, "the fork's overlayfs must advertise volatile on this kernel")

	var (
		mu       sync.Mutex
		volatile int // mounts handed out with "volatile"
		withPar  int // Prepares with a parent
		wrong    []string
	)
	onPrepare := func(key, parent string, mounts []mount.Mount) {
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
		testsuite.SnapshotterSuite(t, snapshotter, suiteFn(r, func(sn snapshots.Snapshotter) snapshots.Snapshotter {
			return &Labelled{Snapshotter: sn, Labels: map[string]string{LabelVolatile: "true"}, OnPrepare: onPrepare}
		}))
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
func snapshotDir(t *testing.T, mounts []mount.Mount) string {
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

// mountAt mounts mounts on a new directory name under dir and unmounts it
// when t ends, unless unmounted before.
func mountAt(t *testing.T, dir, name string, mounts []mount.Mount) string {
	t.Helper()
	target := filepath.Join(dir, name)
	require.NoError(t, os.MkdirAll(target, 0o755))
	require.NoError(t, mount.All(mounts, target))
	t.Cleanup(func() { _ = mount.UnmountAll(target, 0) })
	return target
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
	d, r := startFork(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	caps, err := r.Capabilities(ctx)
	require.NoError(t, err)
	require.Contains(t, caps, CapabilityVolatile, "the fork's overlayfs must advertise volatile on this kernel")

	sn, cleanup, err := r.Isolated(ctx, "volatile-label")
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := cleanup(); err != nil {
			t.Errorf("remove snapshots: %v", err)
		}
	})
	ctx = namespaces.WithNamespace(ctx, "volatile-label")
	work := t.TempDir()
	label := func(v string) snapshots.Opt {
		return snapshots.WithLabels(map[string]string{LabelVolatile: v})
	}
	overlayRoot := filepath.Join(d.Root, "io.containerd.snapshotter.v1.overlayfs")

	// A committed base layer, written through a labelled snapshot without
	// a parent (a bind mount, never volatile).
	mounts, err := sn.Prepare(ctx, "base-active", "", label("true"))
	require.NoError(t, err)
	assert.False(t, HasVolatile(mounts), "a snapshot without parent is a bind mount: %v", mounts)
	target := mountAt(t, work, "base", mounts)
	require.NoError(t, os.WriteFile(filepath.Join(target, "base"), []byte("base\n"), 0o644))
	require.NoError(t, mount.UnmountAll(target, 0))
	require.NoError(t, sn.Commit(ctx, "base", "base-active"))

	t.Run("not labelled", func(t *testing.T) {
		for key, opts := range map[string][]snapshots.Opt{
			"no-label":    nil,
			"label-false": {label("false")},
			"label-bogus": {label("yes please")},
		} {
			mounts, err := sn.Prepare(ctx, key, "base", opts...)
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
		target := mountAt(t, work, "view", mounts)
		assert.False(t, mountedVolatile(t, target), "view mounted volatile")
		require.NoError(t, mount.UnmountAll(target, 0))
		require.NoError(t, sn.Remove(ctx, "view"))
	})

	var dir string
	t.Run("labelled prepare", func(t *testing.T) {
		mounts, err := sn.Prepare(ctx, "active", "base", label("true"))
		require.NoError(t, err)
		require.True(t, HasVolatile(mounts), "%v", mounts)
		dir = snapshotDir(t, mounts)
		target := mountAt(t, work, "active-1", mounts)
		assert.True(t, mountedVolatile(t, target), "labelled active snapshot not mounted volatile")
		require.NoError(t, os.WriteFile(filepath.Join(target, "data"), []byte("data\n"), 0o644))

		marker, err := os.ReadFile(filepath.Join(dir, "volatile-boot-id"))
		require.NoError(t, err, "the fork records the boot of a volatile snapshot")
		assert.Equal(t, bootID(t), strings.TrimSpace(string(marker)))
		require.NoError(t, mount.UnmountAll(target, 0))
		assert.DirExists(t, filepath.Join(dir, "work", "work", "incompat", "volatile"),
			"the kernel leaves its incompat directory behind after a volatile mount")
	})

	t.Run("remount in the same boot", func(t *testing.T) {
		require.NotEmpty(t, dir, "labelled prepare failed")
		mounts, err := sn.Mounts(ctx, "active")
		require.NoError(t, err)
		require.True(t, HasVolatile(mounts), "%v", mounts)
		target := mountAt(t, work, "active-2", mounts)
		assert.True(t, mountedVolatile(t, target))
		b, err := os.ReadFile(filepath.Join(target, "data"))
		require.NoError(t, err)
		assert.Equal(t, "data\n", string(b))
		require.NoError(t, mount.UnmountAll(target, 0))
	})

	t.Run("commit is not volatile", func(t *testing.T) {
		require.NotEmpty(t, dir, "labelled prepare failed")
		require.NoError(t, sn.Commit(ctx, "committed", "active"))
		info, err := sn.Stat(ctx, "committed")
		require.NoError(t, err)
		assert.Equal(t, snapshots.KindCommitted, info.Kind)
		assert.NotContains(t, info.Labels, LabelVolatile, "committed snapshots never carry the label")

		mounts, err := sn.View(ctx, "committed-view", "committed")
		require.NoError(t, err)
		assert.False(t, HasVolatile(mounts), "%v", mounts)
		target := mountAt(t, work, "committed-view", mounts)
		assert.False(t, mountedVolatile(t, target))
		for name, want := range map[string]string{"base": "base\n", "data": "data\n"} {
			b, err := os.ReadFile(filepath.Join(target, name))
			require.NoError(t, err)
			assert.Equal(t, want, string(b))
		}
		require.NoError(t, mount.UnmountAll(target, 0))

		// A child without the label is not volatile either.
		mounts, err = sn.Prepare(ctx, "child", "committed")
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
