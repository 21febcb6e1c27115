package incident

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/containerd-steady/containerd-steady/pkg/cri"
	"github.com/containerd-steady/containerd-steady/pkg/daemon"
	"github.com/containerd-steady/containerd-steady/pkg/fault"
)

// InitExit configures the exit-reporting scenario (DESIGN.md, seed 000): the
// first container of a pod, an init container, exits 0 while the umount2 of
// its shim is delayed, and the harness does what kubelet does next: it starts
// the pod's next container as soon as CRI reports the first one EXITED,
// stops and removes the exited container while its cleanup may still be
// running, and finally removes the pod.
type InitExit struct {
	// Delay is added to every umount2 of the pod's shim while the init
	// container's task is deleted.
	Delay time.Duration
	// RemoveTimeout is the deadline of the first RemoveContainer of the
	// exited init container, sent as soon as it is reported EXITED.
	RemoveTimeout time.Duration
	// Restart, when set, restarts containerd right after that first
	// RemoveContainer, while the init container's cleanup is still delayed.
	Restart bool
	// Logf, when set, receives progress lines.
	Logf Logf
}

// InitExitResult is what the client saw.
type InitExitResult struct {
	Build string
	Delay time.Duration
	// TriggeredAt is when the init container was told to exit, ExitedAt
	// its FinishedAt in CRI and ReportedAt the first ContainerStatus that
	// said EXITED.
	TriggeredAt, ExitedAt, ReportedAt time.Time
	ExitCode                          int32
	States                            []runtimeapi.ContainerState // distinct, in order
	// NextStartedAt is the StartedAt of the next container, started as
	// soon as the init container was reported EXITED; NextErr its error.
	NextStartedAt time.Time
	NextErr       error
	// StopTook and StopErr are StopContainer of the exited init container.
	StopTook time.Duration
	StopErr  error
	// EarlyRemoveErr and EarlyRemoveTook are the first RemoveContainer,
	// with RemoveTimeout; AfterRemove is the init container's status right
	// after it (nil if it was removed).
	EarlyRemoveErr  error
	EarlyRemoveTook time.Duration
	AfterRemove     *runtimeapi.ContainerStatus
	// ReadyAfter is how long CRI took to answer after the restart, and
	// AfterRestart the init container's status then.
	ReadyAfter   time.Duration
	AfterRestart *runtimeapi.ContainerStatus
	// ShimDoneAt is when the last delayed umount2 returned (strace);
	// RemovedAt when a RemoveContainer of the init container succeeded.
	ShimDoneAt, RemovedAt time.Time
	// PodRemoveErr is the error of stopping and removing the pod.
	PodRemoveErr error
	// Leftovers lists the shim processes, mounts and snapshots of the pod
	// still there once it was removed.
	Leftovers []string
}

// ReportDelay is how long after the init container's exit CRI said EXITED.
func (r InitExitResult) ReportDelay() time.Duration { return since(r.ExitedAt, r.ReportedAt) }

// NextStartDelay is how long after the init container's exit the next
// container started.
func (r InitExitResult) NextStartDelay() time.Duration { return since(r.ExitedAt, r.NextStartedAt) }

func since(from, to time.Time) time.Duration {
	if from.IsZero() || to.IsZero() {
		return 0
	}
	return to.Sub(from)
}

// initExitPod is the pod of the scenario and the processes behind it.
type initExitPod struct {
	pod     *cri.Pod
	initID  string
	initPID int
	shimPID int
}

// Run plays the scenario on node; dir receives the strace log.
func (s InitExit) Run(ctx context.Context, build string, node *Node, dir string) (InitExitResult, error) {
	s.defaults()
	res := InitExitResult{Build: build, Delay: s.Delay}
	p, err := s.startInit(ctx, node)
	if err != nil {
		return res, err
	}
	delay, err := fault.DelaySyscalls(ctx, p.shimPID, []string{"umount2"}, s.Delay, filepath.Join(dir, "strace-init-shim.log"))
	if err != nil {
		return res, err
	}
	defer func() { _ = delay.Detach() }()

	res.TriggeredAt = time.Now()
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/root/go", p.initPID), nil, 0o644); err != nil {
		return res, fmt.Errorf("trigger the init container's exit: %w", err)
	}
	if err := s.waitReported(ctx, node.CRI, p.initID, &res); err != nil {
		return res, err
	}
	s.Logf.printf("%s: init container exited (code %d), reported EXITED %s later", build, res.ExitCode, res.ReportDelay().Round(time.Millisecond))

	// What kubelet does next: start the next container, then, with the
	// init container done, stop and remove it.
	res.NextStartedAt, res.NextErr = startNext(ctx, node, p.pod)
	s.stopAndRemoveEarly(ctx, node.CRI, p.initID, &res)
	s.Logf.printf("%s: next container started %s after the init exit (err %v); early RemoveContainer after %s: %v",
		build, res.NextStartDelay().Round(time.Millisecond), res.NextErr, res.EarlyRemoveTook.Round(time.Millisecond), res.EarlyRemoveErr)

	if s.Restart {
		if _, res.ReadyAfter, err = restart(ctx, node); err != nil {
			return res, err
		}
		if st, err := containerStatus(ctx, node.CRI, p.initID); err == nil {
			res.AfterRestart = st
		}
		s.Logf.printf("%s: containerd restarted during the cleanup, CRI answered after %s", build, res.ReadyAfter.Round(time.Millisecond))
	}
	if err := s.waitRemoved(ctx, node.CRI, p.initID, &res); err != nil {
		return res, err
	}
	if end, err := delay.LastEnd("umount2"); err == nil {
		res.ShimDoneAt = end
	}
	if err := delay.Detach(); err != nil {
		return res, err
	}
	res.PodRemoveErr = removePod(ctx, node.CRI, p.pod.ID)
	res.Leftovers, err = leftovers(ctx, node, p)
	return res, err
}

func (s *InitExit) defaults() {
	if s.Delay == 0 {
		s.Delay = 20 * time.Second
	}
	if s.RemoveTimeout == 0 {
		s.RemoveTimeout = 3 * time.Second
	}
}

// startInit runs a pod whose first container waits for /go in its rootfs
// and then exits 0.
func (s InitExit) startInit(ctx context.Context, node *Node) (initExitPod, error) {
	var p initExitPod
	pod, err := node.CRI.RunPod(ctx, "init-exit")
	if err != nil {
		return p, err
	}
	p.pod = pod
	p.initID, err = node.CRI.StartContainer(ctx, pod, "init", node.Image,
		[]string{"sh", "-c", "while [ ! -e /go ]; do sleep 0.05; done"})
	if err != nil {
		return p, err
	}
	if p.initPID, err = node.CRI.InitPID(ctx, p.initID); err != nil {
		return p, err
	}
	p.shimPID, err = cri.ShimPID(p.initPID)
	return p, err
}

// waitReported polls ContainerStatus every 50 ms until the init container
// is EXITED, for at most 2*Delay plus a minute.
func (s InitExit) waitReported(ctx context.Context, client *cri.Client, id string, res *InitExitResult) error {
	deadline := res.TriggeredAt.Add(2*s.Delay + time.Minute)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		st, err := containerStatus(ctx, client, id)
		if err == nil {
			if n := len(res.States); n == 0 || res.States[n-1] != st.State {
				res.States = append(res.States, st.State)
			}
			if st.State == runtimeapi.ContainerState_CONTAINER_EXITED {
				res.ReportedAt = time.Now()
				res.ExitedAt = time.Unix(0, st.FinishedAt)
				res.ExitCode = st.ExitCode
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("init container %s not reported EXITED within %s of its exit (states seen %v)", short(id), 2*s.Delay+time.Minute, res.States)
}

// startNext starts the pod's next container and returns its StartedAt.
func startNext(ctx context.Context, node *Node, pod *cri.Pod) (time.Time, error) {
	id, err := node.CRI.StartContainer(ctx, pod, "app", node.Image, []string{"sh", "-c", "while true; do sleep 1; done"})
	if err != nil {
		return time.Time{}, err
	}
	st, err := containerStatus(ctx, node.CRI, id)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, st.StartedAt), nil
}

// stopAndRemoveEarly stops and removes the exited init container at once,
// as kubelet may while its cleanup is still running.
func (s InitExit) stopAndRemoveEarly(ctx context.Context, client *cri.Client, id string, res *InitExitResult) {
	start := time.Now()
	_, res.StopErr = client.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 30})
	res.StopTook = time.Since(start)

	rctx, cancel := context.WithTimeout(ctx, s.RemoveTimeout)
	start = time.Now()
	_, res.EarlyRemoveErr = client.RemoveContainer(rctx, &runtimeapi.RemoveContainerRequest{ContainerId: id})
	res.EarlyRemoveTook = time.Since(start)
	cancel()
	if res.EarlyRemoveErr == nil {
		res.RemovedAt = time.Now()
		return
	}
	if st, err := containerStatus(ctx, client, id); err == nil {
		res.AfterRemove = st
	}
}

// waitRemoved retries RemoveContainer of the init container, as kubelet's
// garbage collector does, until it succeeds, for at most 2*Delay plus a
// minute after the exit.
func (s InitExit) waitRemoved(ctx context.Context, client *cri.Client, id string, res *InitExitResult) error {
	deadline := res.TriggeredAt.Add(2*s.Delay + time.Minute)
	var err error
	for res.RemovedAt.IsZero() && time.Now().Before(deadline) && ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = client.RemoveContainer(rctx, &runtimeapi.RemoveContainerRequest{ContainerId: id})
		cancel()
		if err == nil {
			res.RemovedAt = time.Now()
			return nil
		}
		time.Sleep(time.Second)
	}
	if res.RemovedAt.IsZero() {
		return fmt.Errorf("init container %s not removed within %s of its exit: %w", short(id), 2*s.Delay+time.Minute, err)
	}
	return nil
}

// removePod stops and removes a pod, with kubelet's request timeout each.
func removePod(ctx context.Context, client *cri.Client, id string) error {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := client.StopPodSandbox(sctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		return fmt.Errorf("stop pod %s: %w", short(id), err)
	}
	if _, err := client.RemovePodSandbox(sctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		return fmt.Errorf("remove pod %s: %w", short(id), err)
	}
	return nil
}

// leftovers lists what of a removed pod is still there: its shim process
// (given 10 s to exit), mounts under the daemon's directory, and active
// snapshots: nothing else runs on the node.
func leftovers(ctx context.Context, node *Node, p initExitPod) ([]string, error) {
	var out []string
	gone := false
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.shimPID)); errors.Is(err, os.ErrNotExist) {
			gone = true
			break
		}
	}
	if !gone {
		out = append(out, fmt.Sprintf("shim process %d", p.shimPID))
	}
	mounts, err := daemon.MountsUnder(node.Daemon.Dir)
	if err != nil {
		return out, err
	}
	for _, m := range mounts {
		out = append(out, "mount "+m)
	}
	snaps, err := node.ActiveSnapshots(ctx)
	if err != nil {
		return out, err
	}
	for _, k := range snaps {
		out = append(out, "snapshot "+k)
	}
	return out, nil
}

func containerStatus(ctx context.Context, client *cri.Client, id string) (*runtimeapi.ContainerStatus, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := client.ContainerStatus(rctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		return nil, err
	}
	return resp.Status, nil
}
