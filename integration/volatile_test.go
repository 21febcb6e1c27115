package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/containerd-steady/containerd-steady/pkg/daemon"
	"github.com/containerd-steady/containerd-steady/pkg/image"
	"github.com/containerd-steady/containerd-steady/pkg/incident"
	"github.com/containerd-steady/containerd-steady/snapshots"
)

// volatileRootfs is the CRI runtime option under test, indented as it sits
// in the runc runtime table of the daemon's configuration.
const volatileRootfs = "      volatile_rootfs = true"

// layeredImage has a second layer, so that its unpack prepares an active
// snapshot with a parent and applies the layer through an overlay mount
// (the first layer alone is unpacked through a bind mount).
func layeredImage() image.Image {
	return image.Image{
		Name:  "docker.io/steady/layered:1",
		Cmd:   []string{"sh"},
		Files: map[string]string{"etc/steady-layer": "second layer\n"},
	}
}

// volumeImage declares a VOLUME whose directory has content in the image,
// so that the CRI copies it up into the volume (upstream #9964, #10227).
func volumeImage() image.Image {
	return image.Image{
		Name:    "docker.io/steady/volume:1",
		Cmd:     []string{"sh"},
		Volumes: []string{"/data"},
		Files:   map[string]string{"data/hello": "hello from the image\n"},
	}
}

// plainHandler is a second CRI runtime handler, "plain", without
// volatile_rootfs, sharing the daemon's private runc root.
func plainHandler(t *testing.T, runcRoot string) string {
	t.Helper()
	l := theLine(t)
	return fmt.Sprintf(`    [%[1]s]
      runtime_type = "io.containerd.runc.v2"
      [%[1]s.options]
        BinaryName = %[2]q
        Root = %[3]q
        SystemdCgroup = false
`, l.RuntimeTable("plain"), l.RuncPath(), runcRoot)
}

// importImage builds img and imports it into the node's k8s.io namespace.
func importImage(t *testing.T, node *incident.Node, img image.Image) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	path, err := image.Build(t.TempDir(), img, image.Busybox)
	require.NoError(t, err)
	require.NoError(t, image.Import(ctx, filepath.Join(node.Daemon.Options().BinDir, "ctr"), node.Daemon.Address, path))
}

// upperDir returns the overlay upper directory of the mount.
func upperDir(m daemon.Mount) string {
	for _, o := range m.Super {
		if v, ok := strings.CutPrefix(o, "upperdir="); ok {
			return v
		}
	}
	return ""
}

// rootfsMount returns the rootfs mount of a task in namespace ns.
func rootfsMount(t *testing.T, d *daemon.Daemon, ns, id string) daemon.Mount {
	t.Helper()
	m, err := daemon.LookupMount(filepath.Join(d.State, "io.containerd.runtime.v2.task", ns, id, "rootfs"))
	require.NoError(t, err)
	require.Equal(t, "overlay", m.FSType, "rootfs of %s", id)
	return m
}

// startCRIContainer starts a sleeping container from img in a pod of the
// runtime handler (""=default).
func startCRIContainer(t *testing.T, node *incident.Node, pod, handler, img string) (podID, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := node.CRI.RunPodWithHandler(ctx, pod, handler)
	require.NoError(t, err)
	id, err = node.CRI.StartContainer(ctx, p, "sleeper", img, []string{"sleep", "3600"})
	require.NoError(t, err)
	return p.ID, id
}

func currentBootID(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

// TestVolatileRootfs: with volatile_rootfs on the runc handler, a CRI
// container's rootfs is mounted volatile, while the container of a handler
// without it, the pod sandboxes and every image snapshot are not.
func TestVolatileRootfs(t *testing.T) {
	b := forkBuild(t)
	requireSetup(t, b)
	t.Parallel()
	node, dir := startNodeIn(t, b, func(dir string) daemon.Options {
		return daemon.Options{RuntimeExtra: volatileRootfs, Extra: plainHandler(t, filepath.Join(dir, "runc"))}
	})
	d := node.Daemon
	require.Equal(t, filepath.Join(dir, "runc"), d.RuncRoot, "the plain handler must share the daemon's private runc root")
	importImage(t, node, layeredImage())

	volPod, volID := startCRIContainer(t, node, "volatile", "", layeredImage().Name)
	plainPod, plainID := startCRIContainer(t, node, "plain", "plain", layeredImage().Name)

	volMount := rootfsMount(t, d, "k8s.io", volID)
	assert.True(t, volMount.Volatile(), "rootfs of a volatile_rootfs container not volatile: %v", volMount.Super)
	plainMount := rootfsMount(t, d, "k8s.io", plainID)
	assert.False(t, plainMount.Volatile(), "rootfs of the plain handler's container is volatile: %v", plainMount.Super)
	for _, pod := range []string{volPod, plainPod} {
		m, err := daemon.LookupMount(filepath.Join(d.State, "io.containerd.runtime.v2.task", "k8s.io", pod, "rootfs"))
		require.NoError(t, err)
		assert.False(t, m.Volatile(), "sandbox %s rootfs is volatile: %v", pod, m.Super)
	}

	// The snapshots as the daemon's snapshot API sees them: only the
	// volatile container's carries the label; every committed one (the
	// unpacked layers) has none.
	conn, err := d.Dial()
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	infos, err := snapshots.NewRemote(conn, "overlayfs").List(ctx, "k8s.io")
	require.NoError(t, err)
	var committed, active []*snapshotsapi.Info
	for _, info := range infos {
		switch info.Kind {
		case snapshotsapi.Kind_COMMITTED:
			committed = append(committed, info)
		default:
			active = append(active, info)
		}
	}
	for _, info := range committed {
		assert.NotContains(t, info.Labels, snapshots.LabelVolatile, "committed snapshot %s", info.Name)
	}
	require.Len(t, active, 4, "two sandboxes and two containers: %v", active)
	for _, info := range active {
		want := info.Name == volID
		assert.Equal(t, want, info.Labels[snapshots.LabelVolatile] == "true", "label of snapshot %s", info.Name)
	}
	// busybox (shared with pause) plus the layered image's second layer.
	require.GreaterOrEqual(t, len(committed), 2, "committed snapshots: %v", committed)

	// On disk: the directories of the active snapshots are the upper dirs
	// of the rootfs mounts; every other one is an unpacked layer, which
	// must carry neither the fork's boot marker nor the kernel's incompat
	// directory of a volatile mount. The volatile container's has both.
	overlay := filepath.Join(d.Root, "io.containerd.snapshotter.v1.overlayfs", "snapshots")
	activeDirs := map[string]bool{}
	for _, id := range []string{volPod, volID, plainPod, plainID} {
		m, err := daemon.LookupMount(filepath.Join(d.State, "io.containerd.runtime.v2.task", "k8s.io", id, "rootfs"))
		require.NoError(t, err)
		require.NotEmpty(t, upperDir(m), "upperdir of %s: %v", id, m.Super)
		activeDirs[filepath.Dir(upperDir(m))] = true
	}
	entries, err := os.ReadDir(overlay)
	require.NoError(t, err)
	var layers int
	for _, e := range entries {
		p := filepath.Join(overlay, e.Name())
		if activeDirs[p] {
			continue
		}
		layers++
		assert.NoFileExists(t, filepath.Join(p, "volatile-boot-id"), "image layer snapshot %s", e.Name())
		assert.NoDirExists(t, filepath.Join(p, "work", "work", "incompat"), "image layer snapshot %s", e.Name())
	}
	assert.Equal(t, len(committed), layers, "snapshot directories of image layers")
	volDir := filepath.Dir(upperDir(volMount))
	marker, err := os.ReadFile(filepath.Join(volDir, "volatile-boot-id"))
	require.NoError(t, err, "boot marker of the volatile container's snapshot")
	assert.Equal(t, currentBootID(t), strings.TrimSpace(string(marker)))
	assert.NoFileExists(t, filepath.Join(filepath.Dir(upperDir(plainMount)), "volatile-boot-id"))
}

// TestVolatileRootfsVolumeImage: a container of an image with a VOLUME
// starts with volatile_rootfs on, and the image's content at the volume
// path is copied into the volume (the CRI mounts the new rootfs snapshot a
// first time for the copy, before the shim mounts it).
func TestVolatileRootfsVolumeImage(t *testing.T) {
	b := forkBuild(t)
	requireSetup(t, b)
	t.Parallel()
	node, _ := startNode(t, b, daemon.Options{RuntimeExtra: volatileRootfs})
	importImage(t, node, volumeImage())

	_, id := startCRIContainer(t, node, "volume", "", volumeImage().Name)
	m := rootfsMount(t, node.Daemon, "k8s.io", id)
	assert.True(t, m.Volatile(), "rootfs not volatile: %v", m.Super)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := node.CRI.ExecSync(ctx, &runtimeapi.ExecSyncRequest{
		ContainerId: id,
		Cmd:         []string{"sh", "-c", "cat /data/hello && grep -q ' /data ' /proc/self/mounts && echo volume"},
		Timeout:     30,
	})
	require.NoError(t, err)
	assert.Equal(t, int32(0), resp.ExitCode, "stderr: %s", resp.Stderr)
	assert.Equal(t, "hello from the image\nvolume\n", string(resp.Stdout))
}

// ctr runs the build's ctr against the node's daemon in the k8s.io
// namespace, where StartNode imported the images.
func ctr(ctx context.Context, d *daemon.Daemon, args ...string) (string, error) {
	args = append([]string{"--address", d.Address, "--namespace", "k8s.io"}, args...)
	out, err := exec.CommandContext(ctx, filepath.Join(d.Options().BinDir, "ctr"), args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args[4:], " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// killAndDeleteTask SIGKILLs the task of id and deletes it once it has
// exited, which unmounts its rootfs.
func killAndDeleteTask(ctx context.Context, d *daemon.Daemon, id string) error {
	if _, err := ctr(ctx, d, "task", "kill", "--signal", "SIGKILL", id); err != nil {
		return err
	}
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if _, err = ctr(ctx, d, "task", "delete", id); err == nil {
			return nil
		}
	}
	return err
}

// ctrContainer runs a ctr container id on node whose command appends a line
// to /runs on every start, and removes it (task, container and snapshot)
// when t ends.
func ctrContainer(t *testing.T, node *incident.Node, id string, runArgs ...string) {
	t.Helper()
	d := node.Daemon
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := append([]string{"run", "--detach", "--null-io", "--snapshotter", "overlayfs",
		"--runc-binary", d.Options().Runc, "--runc-root", d.RuncRoot}, runArgs...)
	args = append(args, node.Image, id, "sh", "-c", "echo started >> /runs; exec sleep 3600")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = ctr(ctx, d, "task", "kill", "--signal", "SIGKILL", id)
		for i := 0; i < 50; i++ {
			if out, err := ctr(ctx, d, "task", "delete", id); err == nil || strings.Contains(out, "not found") {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if _, err := ctr(ctx, d, "container", "delete", id); err != nil {
			t.Logf("delete container %s: %v", id, err)
		}
	})
	_, err := ctr(ctx, d, args...)
	require.NoError(t, err)
}

// waitRuns waits until /runs in the rootfs at target has n lines.
func waitRuns(target string, n int) (int, error) {
	var got int
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		b, err := os.ReadFile(filepath.Join(target, "runs"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
		if got = strings.Count(string(b), "started\n"); got >= n {
			return got, nil
		}
	}
	return got, fmt.Errorf("/runs has %d lines, want %d", got, n)
}

// TestVolatileRemountCtr: a container whose rootfs was mounted volatile is
// started a second time in the same boot through ctr (task start, kill,
// delete, start again). The fork's labelled snapshot can be mounted again;
// upstream's snapshotter-wide mount_options = ["volatile"] cannot, because
// the kernel left work/incompat/volatile behind.
func TestVolatileRemountCtr(t *testing.T) {
	t.Run("fork label", func(t *testing.T) {
		b := forkBuild(t)
		requireSetup(t, b)
		t.Parallel()
		node, _ := startNode(t, b, daemon.Options{})
		d := node.Daemon
		// Each build's container has its own id: ctr puts it in the cgroup
		// /k8s.io/<id>, shared by the daemons running in parallel, and
		// runc 1.2+ refuses to create a container in a non-empty cgroup.
		const id = "volatile-remount-fork"
		ctrContainer(t, node, id, "--snapshotter-label", snapshots.LabelVolatile+"=true")

		m := rootfsMount(t, d, "k8s.io", id)
		require.True(t, m.Volatile(), "labelled rootfs not volatile: %v", m.Super)
		_, err := waitRuns(m.Target, 1)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		require.NoError(t, killAndDeleteTask(ctx, d, id))
		require.DirExists(t, filepath.Join(filepath.Dir(upperDir(m)), "work", "work", "incompat", "volatile"),
			"the kernel leaves its incompat directory behind")

		_, err = ctr(ctx, d, "task", "start", "--detach", "--null-io", id)
		require.NoError(t, err, "second start in the same boot")
		m2 := rootfsMount(t, d, "k8s.io", id)
		assert.True(t, m2.Volatile(), "rootfs of the second start not volatile: %v", m2.Super)
		assert.Equal(t, upperDir(m), upperDir(m2), "the same snapshot")
		n, err := waitRuns(m2.Target, 2)
		require.NoError(t, err)
		assert.Equal(t, 2, n, "the first run's writes survive")
	})

	t.Run("upstream mount_options", func(t *testing.T) {
		b := upstreamBuild(t)
		requireSetup(t, b)
		t.Parallel()
		node, _ := startNode(t, b, daemon.Options{Extra: `
[plugins."io.containerd.snapshotter.v1.overlayfs"]
  mount_options = ["volatile"]
`})
		d := node.Daemon
		const id = "volatile-remount-upstream"
		ctrContainer(t, node, id)

		m := rootfsMount(t, d, "k8s.io", id)
		require.True(t, m.Volatile(), "mount_options volatile not applied: %v", m.Super)
		_, err := waitRuns(m.Target, 1)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		require.NoError(t, killAndDeleteTask(ctx, d, id))

		out, err := ctr(ctx, d, "task", "start", "--detach", "--null-io", id)
		require.Error(t, err, "upstream mounted a volatile upper dir a second time: %s", out)
		t.Logf("second start on upstream fails as expected: %v", err)
		assert.Contains(t, err.Error(), "mount", "the failure is the rootfs mount")
		_, lerr := daemon.LookupMount(m.Target)
		assert.Error(t, lerr, "no rootfs mounted after the failed start")
	})
}
