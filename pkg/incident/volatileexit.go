package incident

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/containerd-steady/containerd-steady/pkg/daemon"
)

// VolatileExit is the benchmark of fix 4 of DESIGN.md (scoped volatile
// overlay): a container writes Size bytes into its rootfs without syncing,
// so they sit in the page cache as dirty pages, and is SIGKILLed while a
// background writer keeps the disk busy. Without volatile the shim's
// unmount of the rootfs syncs those pages; with volatile_rootfs it does
// not. The fork reports the container EXITED before that unmount (patch
// "report a container EXITED when it exits"), so what volatile_rootfs saves
// shows in the cleanup: SIGKILL until the rootfs is unmounted.
type VolatileExit struct {
	// Size is what the container writes into its rootfs; 512 MiB when zero.
	Size int64
	// NoWriter disables the background writer.
	NoWriter bool
	// WriterChunk is what the background writer writes and fsyncs in each
	// round, again and again until the container is EXITED; 256 MiB when
	// zero.
	WriterChunk int64
	// Rounds is how many containers each run writes and kills, one after
	// the other on the same node; 1 when zero. A run reports the round
	// with the median KillToCleaned.
	Rounds int
	// Timeout bounds each wait (the write, kill to EXITED, kill to the
	// rootfs unmounted); 5 min when zero.
	Timeout time.Duration
	Logf    Logf
}

// VolatileExitRun is the measurement of one configuration: the round with
// the median KillToCleaned, and every round's KillToCleaned.
type VolatileExitRun struct {
	// VolatileRootfs is whether the runc handler had volatile_rootfs.
	VolatileRootfs bool
	// RootfsVolatile is whether the container's rootfs was mounted with
	// the overlayfs "volatile" option (from /proc/self/mountinfo).
	RootfsVolatile bool
	Written        int64
	WriteTook      time.Duration // the container's write, until it signalled completion
	KillToExited   time.Duration // SIGKILL to the first ContainerStatus saying EXITED
	KillToCleaned  time.Duration // SIGKILL until nothing is mounted at the rootfs (the shim's cleanup unmounted it)
	ExitCode       int32
	WriterRounds   int // background writer rounds (WriterChunk each) started
	// Rounds are the KillToCleaned of every round, in order.
	Rounds []time.Duration
}

// VolatileExitResult holds both runs on one build.
type VolatileExitResult struct {
	Build    string
	Plain    VolatileExitRun // volatile_rootfs off
	Volatile VolatileExitRun // volatile_rootfs on
}

// Ratio is how many times longer the cleanup (kill to the rootfs
// unmounted) takes without volatile than with it; 0 when a run is missing.
func (r VolatileExitResult) Ratio() float64 {
	return Ratio(r.Plain.KillToCleaned, r.Volatile.KillToCleaned)
}

// Ratio is a/b, or 0 when either is not a positive duration.
func Ratio(a, b time.Duration) float64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func (v *VolatileExit) defaults() {
	if v.Size == 0 {
		v.Size = 512 << 20
	}
	if v.WriterChunk == 0 {
		v.WriterChunk = 256 << 20
	}
	if v.Timeout == 0 {
		v.Timeout = 5 * time.Minute
	}
	if v.Rounds == 0 {
		v.Rounds = 1
	}
}

func (v VolatileExit) logf(format string, args ...any) {
	if v.Logf != nil {
		v.Logf(format, args...)
	}
}

// Run measures on build b, first without and then with volatile_rootfs on
// the runc handler, each on a node of its own under dir (dir/plain,
// dir/volatile, removed after each run). b should be the fork: other builds
// do not know volatile_rootfs, and Volatile.RootfsVolatile says so.
func (v VolatileExit) Run(ctx context.Context, b Build, dir string) (VolatileExitResult, error) {
	v.defaults()
	res := VolatileExitResult{Build: b.Name}
	for _, volatile := range []bool{false, true} {
		run, err := v.runOne(ctx, b, dir, volatile)
		if volatile {
			res.Volatile = run
		} else {
			res.Plain = run
		}
		if err != nil {
			return res, err
		}
		v.logf("%s volatile_rootfs=%v: rootfs volatile=%v, wrote %d MiB in %s, kill to EXITED %s, to the rootfs unmounted %s (median of %v)",
			b.Name, volatile, run.RootfsVolatile, run.Written>>20, run.WriteTook.Round(time.Millisecond),
			run.KillToExited.Round(time.Millisecond), run.KillToCleaned.Round(time.Millisecond), run.Rounds)
	}
	return res, nil
}

func (v VolatileExit) runOne(ctx context.Context, b Build, dir string, volatile bool) (_ VolatileExitRun, err error) {
	name := "plain"
	opts := daemon.Options{}
	if volatile {
		name = "volatile"
		opts.RuntimeExtra = "      volatile_rootfs = true"
	}
	nodeDir := filepath.Join(dir, name)
	if err := os.MkdirAll(nodeDir, 0o755); err != nil {
		return VolatileExitRun{VolatileRootfs: volatile}, err
	}
	node, err := StartNode(ctx, b, nodeDir, opts)
	if err != nil {
		return VolatileExitRun{VolatileRootfs: volatile}, err
	}
	defer func() {
		if cerr := node.Close(); cerr != nil {
			err = errors.Join(err, cerr)
			return
		}
		// Only once nothing is mounted below it any more.
		if left, _ := daemon.MountsUnder(nodeDir); len(left) == 0 {
			err = errors.Join(err, os.RemoveAll(nodeDir))
		}
	}()

	var runs []VolatileExitRun
	var all []time.Duration
	for i := 0; i < v.Rounds; i++ {
		run, err := v.measure(ctx, node, dir, fmt.Sprintf("%s-%d", name, i))
		run.VolatileRootfs = volatile
		if err != nil {
			return run, err
		}
		runs = append(runs, run)
		all = append(all, run.KillToCleaned)
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].KillToCleaned < runs[j].KillToCleaned })
	median := runs[len(runs)/2]
	median.Rounds = all
	return median, nil
}

// measure writes, kills and times one container on node.
func (v VolatileExit) measure(ctx context.Context, node *Node, dir, name string) (run VolatileExitRun, err error) {
	// Start from a clean page cache state, so that the rounds are comparable.
	syscall.Sync()

	pod, err := node.CRI.RunPod(ctx, "volatile-exit-"+name)
	if err != nil {
		return run, err
	}
	defer func() {
		// Free the disk for the next round, after the writer stopped;
		// the node's cleanup catches whatever this leaves.
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if _, err := node.CRI.StopPodSandbox(rctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.ID}); err == nil {
			_, _ = node.CRI.RemovePodSandbox(rctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.ID})
		}
	}()
	mib := v.Size >> 20
	if mib < 1 {
		mib = 1
	}
	// No fsync, no conv=fsync: the point is dirty pages in the upper dir.
	script := fmt.Sprintf("dd if=/dev/zero of=/fill bs=1M count=%d 2>/dev/null && touch /filled; exec sleep 3600", mib)
	writeStart := time.Now()
	id, err := node.CRI.StartContainer(ctx, pod, "writer", node.Image, []string{"sh", "-c", script})
	if err != nil {
		return run, err
	}
	initPID, err := node.CRI.InitPID(ctx, id)
	if err != nil {
		return run, err
	}
	rootfs := filepath.Join(node.Daemon.State, "io.containerd.runtime.v2.task", "k8s.io", id, "rootfs")
	m, err := daemon.LookupMount(rootfs)
	if err != nil {
		return run, err
	}
	run.RootfsVolatile = m.Volatile()
	if err := waitFile(ctx, filepath.Join(rootfs, "filled"), v.Timeout); err != nil {
		return run, fmt.Errorf("container write of %d MiB: %w", mib, err)
	}
	run.WriteTook = time.Since(writeStart)
	run.Written = mib << 20

	if !v.NoWriter {
		w, err := startDiskWriter(filepath.Join(dir, "writer-"+name), v.WriterChunk, false)
		if err != nil {
			return run, err
		}
		defer func() {
			run.WriterRounds = w.stop()
		}()
		time.Sleep(time.Second) // the disk is busy before the kill
	}

	killed := time.Now()
	if err := syscall.Kill(initPID, syscall.SIGKILL); err != nil {
		return run, fmt.Errorf("kill init %d of %s: %w", initPID, id, err)
	}
	deadline := killed.Add(v.Timeout)
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := node.CRI.ContainerStatus(rctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
		cancel()
		if err == nil && resp.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED {
			run.KillToExited = time.Since(killed)
			run.ExitCode = resp.Status.ExitCode
			break
		}
		if time.Now().After(deadline) {
			return run, fmt.Errorf("container %s not EXITED %s after SIGKILL (last error %v)", id, v.Timeout, err)
		}
		if ctx.Err() != nil {
			return run, ctx.Err()
		}
		time.Sleep(20 * time.Millisecond)
	}
	if run.KillToCleaned, err = waitUnmounted(ctx, rootfs, killed, deadline); err != nil {
		return run, fmt.Errorf("container %s: %w", id, err)
	}
	return run, nil
}

// waitUnmounted polls until nothing is mounted at target and returns how
// long after since that was.
func waitUnmounted(ctx context.Context, target string, since, deadline time.Time) (time.Duration, error) {
	for {
		_, err := daemon.LookupMount(target)
		if errors.Is(err, daemon.ErrNoMount) {
			return time.Since(since), nil
		}
		if err != nil {
			return 0, err
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("rootfs %s still mounted %s after SIGKILL", target, time.Since(since).Round(time.Second))
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// diskWriter is a shell loop that writes and fsyncs a file again and again,
// through the page cache or, direct, with O_DIRECT.
type diskWriter struct {
	cmd    *exec.Cmd
	file   string
	rounds string // file the loop appends one byte to per round
	done   chan struct{}
}

func startDiskWriter(file string, chunk int64, direct bool) (*diskWriter, error) {
	w := &diskWriter{file: file, rounds: file + ".rounds", done: make(chan struct{})}
	mib := chunk >> 20
	if mib < 1 {
		mib = 1
	}
	oflag := ""
	if direct {
		oflag = "oflag=direct"
	}
	script := fmt.Sprintf(`while :; do printf . >> %q; dd if=/dev/zero of=%q bs=1M count=%d conv=fsync %s 2>/dev/null; done`,
		w.rounds, file, mib, oflag)
	w.cmd = exec.Command("sh", "-c", script)
	// Its own process group, so that stop ends the loop and its dd.
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := w.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start background writer: %w", err)
	}
	go func() {
		_ = w.cmd.Wait()
		close(w.done)
	}()
	return w, nil
}

// stop kills the writer's process group (the one it started), removes its
// files and returns how many rounds it started.
func (w *diskWriter) stop() int {
	_ = syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
	}
	b, _ := os.ReadFile(w.rounds)
	_ = os.Remove(w.file)
	_ = os.Remove(w.rounds)
	return len(b)
}

func waitFile(ctx context.Context, path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %s", path, timeout)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(50 * time.Millisecond)
	}
}
