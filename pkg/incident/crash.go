package incident

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/containerd-steady/containerd-steady/pkg/daemon"
	"github.com/containerd-steady/containerd-steady/pkg/fault"
	"github.com/containerd-steady/containerd-steady/pkg/relist"
)

// Crash is the crash in the middle of exits (issue 14): many containers
// exit at once while their shims' unmounts are slow; containerd is killed
// (SIGKILL, as the OOM killer or a watchdog would) and started again on the
// same root; then some shims are killed while their deletes are stuck.
type Crash struct {
	Pods  int           // pods of one container each, all killed at once
	Delay time.Duration // added to every umount2 of every shim
	// CrashAfter is how long after the kill containerd is killed, and
	// ShimKillAfter how long after its restart ShimKills shims are killed.
	CrashAfter    time.Duration
	ShimKillAfter time.Duration
	ShimKills     int
	Logf          Logf
}

// CrashContainer is what CRI said of one container over the whole run.
type CrashContainer struct {
	ID       string
	Observed bool // containerd logged its exit before it was killed
	Unknown  int  // polls that reported it UNKNOWN
	Missing  int  // polls after the restart that did not list it
	State    runtimeapi.ContainerState
	ExitCode int32
	Reason   string
	ShimKill bool // its shim was killed during its delete
}

// CrashResult is what the crash scenario saw on one build.
type CrashResult struct {
	Build      string
	Pods       int
	Polls      int
	ReadyAfter time.Duration // restart to CRI answering
	Containers []CrashContainer
}

// UnknownReports is how many times any container was reported UNKNOWN.
func (r CrashResult) UnknownReports() (reports, containers int) {
	for _, c := range r.Containers {
		reports += c.Unknown
		if c.Unknown > 0 {
			containers++
		}
	}
	return reports, containers
}

// LostExits lists the containers whose final exit code is not the
// SIGKILL's 137, split by whether containerd had observed their exit
// before it was killed.
func (r CrashResult) LostExits() (observed, unobserved []CrashContainer) {
	for _, c := range r.Containers {
		if c.State == runtimeapi.ContainerState_CONTAINER_EXITED && c.ExitCode == 137 {
			continue
		}
		if c.Observed {
			observed = append(observed, c)
		} else {
			unobserved = append(unobserved, c)
		}
	}
	return observed, unobserved
}

func (s *Crash) defaults() {
	if s.Pods == 0 {
		s.Pods = 20
	}
	if s.Delay == 0 {
		s.Delay = 20 * time.Second
	}
	if s.CrashAfter == 0 {
		s.CrashAfter = 5 * time.Second
	}
	if s.ShimKillAfter == 0 {
		s.ShimKillAfter = 5 * time.Second
	}
	if s.ShimKills == 0 {
		s.ShimKills = 3
	}
}

// crashTarget is one container of the scenario and its processes.
type crashTarget struct {
	Ticker
	delay *fault.Delay
}

// Run plays the scenario on node; dir receives strace logs. It returns
// once every container is EXITED and every shim has finished or died, or
// after 2*Delay plus a minute.
func (s Crash) Run(ctx context.Context, build string, node *Node, dir string) (CrashResult, error) {
	s.defaults()
	res := CrashResult{Build: build, Pods: s.Pods}
	targets, err := s.start(ctx, node, dir)
	defer func() {
		for _, t := range targets {
			if t.delay != nil {
				_ = t.delay.Detach()
			}
		}
	}()
	if err != nil {
		return res, err
	}
	watch := newCrashWatch(node)
	pollCtx, stopPolls := context.WithCancel(ctx)
	defer stopPolls()
	go watch.poll(pollCtx)

	killedAt := time.Now()
	for _, t := range targets {
		if err := syscall.Kill(t.InitPID, syscall.SIGKILL); err != nil {
			return res, fmt.Errorf("kill init %d of %s: %w", t.InitPID, t.ID, err)
		}
	}
	s.Logf.printf("%s: killed %d containers; umount2 delayed by %s", build, len(targets), s.Delay)

	sleepCtx(ctx, time.Until(killedAt.Add(s.CrashAfter)))
	logBefore := node.Daemon.Logs()
	if err := node.Daemon.Kill(); err != nil {
		return res, err
	}
	restartAt := time.Now()
	if err := node.Daemon.Launch(); err != nil {
		return res, err
	}
	if err := node.Daemon.WaitReady(ctx, 3*time.Minute); err != nil {
		return res, fmt.Errorf("containerd did not serve CRI after it was killed: %w", err)
	}
	res.ReadyAfter = time.Since(restartAt)
	watch.restarted()
	s.Logf.printf("%s: containerd killed %s after the exits, CRI answered %s after its restart", build, s.CrashAfter, res.ReadyAfter.Round(time.Millisecond))

	sleepCtx(ctx, time.Until(restartAt.Add(s.ShimKillAfter)))
	killed, err := s.killShims(targets)
	if err != nil {
		return res, err
	}
	s.Logf.printf("%s: killed %d shims during their deletes", build, len(killed))

	deadline := killedAt.Add(2*s.Delay + time.Minute)
	for ctx.Err() == nil && time.Now().Before(deadline) && !(watch.allExited(targets) && settled(targets, killed)) {
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // a few polls once everything settled
	stopPolls()
	watch.wait()

	for _, t := range targets {
		c := watch.result(t.ID)
		c.Observed = exitLogged(logBefore, t.ID)
		c.ShimKill = killed[t.ShimPID]
		res.Containers = append(res.Containers, c)
	}
	res.Polls = watch.polls
	return res, nil
}

// start runs the pods and delays umount2 in their shims.
func (s Crash) start(ctx context.Context, node *Node, dir string) ([]*crashTarget, error) {
	var targets []*crashTarget
	for i := 0; i < s.Pods; i++ {
		tk, err := node.StartTicker(ctx, fmt.Sprintf("crash-%d", i))
		if err != nil {
			return targets, err
		}
		t := &crashTarget{Ticker: *tk}
		targets = append(targets, t)
		t.delay, err = fault.DelaySyscalls(ctx, tk.ShimPID, []string{"umount2"}, s.Delay,
			filepath.Join(dir, fmt.Sprintf("strace-shim-%d.log", tk.ShimPID)))
		if err != nil {
			return targets, err
		}
	}
	return targets, nil
}

// killShims sends SIGKILL to the shims of the first ShimKills targets
// whose deletes are still in their delayed umount2, and returns their pids.
func (s Crash) killShims(targets []*crashTarget) (map[int]bool, error) {
	killed := map[int]bool{}
	for _, t := range targets {
		if len(killed) == s.ShimKills {
			break
		}
		if ok, err := t.delay.Settled("umount2", 0); err != nil || ok {
			continue // not inside its delete (any more)
		}
		if err := syscall.Kill(t.ShimPID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return killed, fmt.Errorf("kill shim %d of %s: %w", t.ShimPID, t.ID, err)
		}
		killed[t.ShimPID] = true
	}
	return killed, nil
}

// settled reports whether every shim not killed has finished its delayed
// unmounts.
func settled(targets []*crashTarget, killed map[int]bool) bool {
	var delays []*fault.Delay
	for _, t := range targets {
		if !killed[t.ShimPID] {
			delays = append(delays, t.delay)
		}
	}
	return fault.AllSettled(delays, "umount2", time.Second)
}

// exitLogged reports whether containerd's log says it received the exit of
// the task id ("received exit event" on 1.7, "received container exit
// event" on 2.x).
func exitLogged(log, id string) bool {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "exit event") && strings.Contains(l, id) {
			return true
		}
	}
	return false
}

// crashWatch polls ListContainers every 200 ms, as the issue asks, and
// keeps what each container was reported as.
type crashWatch struct {
	node *Node
	mu   sync.Mutex
	// after is set once CRI answered after the restart: a container
	// missing from a list then counts.
	after bool
	seen  map[string]*CrashContainer
	polls int
	done  chan struct{}
}

func newCrashWatch(node *Node) *crashWatch {
	return &crashWatch{node: node, seen: map[string]*CrashContainer{}, done: make(chan struct{})}
}

func (w *crashWatch) poll(ctx context.Context) {
	defer close(w.done)
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, relist.RequestTimeout)
		resp, err := w.node.CRI.ListContainers(rctx, &runtimeapi.ListContainersRequest{})
		cancel()
		if err == nil {
			w.record(resp.Containers)
		}
		sleepCtx(ctx, statusEvery)
	}
}

func (w *crashWatch) record(list []*runtimeapi.Container) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.polls++
	listed := map[string]bool{}
	for _, c := range list {
		listed[c.Id] = true
		r := w.seen[c.Id]
		if r == nil {
			r = &CrashContainer{ID: c.Id}
			w.seen[c.Id] = r
		}
		r.State = c.State
		if c.State == runtimeapi.ContainerState_CONTAINER_UNKNOWN {
			r.Unknown++
		}
	}
	if w.after {
		for id, r := range w.seen {
			if !listed[id] {
				r.Missing++
			}
		}
	}
}

func (w *crashWatch) restarted() { w.mu.Lock(); w.after = true; w.mu.Unlock() }
func (w *crashWatch) wait()      { <-w.done }

func (w *crashWatch) allExited(targets []*crashTarget) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, t := range targets {
		if r := w.seen[t.ID]; r == nil || r.State != runtimeapi.ContainerState_CONTAINER_EXITED {
			return false
		}
	}
	return true
}

// result is what was seen of id, with its final exit code and reason from
// ContainerStatus.
func (w *crashWatch) result(id string) CrashContainer {
	w.mu.Lock()
	c := CrashContainer{ID: id}
	if r := w.seen[id]; r != nil {
		c = *r
	}
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), relist.RequestTimeout)
	defer cancel()
	if st, err := w.node.CRI.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id}); err == nil {
		c.State, c.ExitCode, c.Reason = st.Status.State, st.Status.ExitCode, st.Status.Reason
	} else {
		c.Reason = "ContainerStatus: " + err.Error()
	}
	return c
}

// Leftovers is what remained once every container and pod was removed.
type Leftovers struct {
	Shims     []int
	Mounts    []string // below the daemon's directory
	Snapshots []string // active overlayfs snapshots
}

// Empty reports whether nothing was left.
func (l Leftovers) Empty() bool {
	return len(l.Shims) == 0 && len(l.Mounts) == 0 && len(l.Snapshots) == 0
}

// RemoveAll stops and removes every container and pod of node through CRI,
// as kubelet would once the pods are done, retrying for up to timeout
// while removals fail, and returns what was left.
func RemoveAll(ctx context.Context, node *Node, dir string, timeout time.Duration) (Leftovers, error) {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		lastErr = removeAllOnce(ctx, node)
		if lastErr == nil || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		sleepCtx(ctx, time.Second)
	}
	var left Leftovers
	left.Shims = node.Daemon.ShimPIDs()
	left.Mounts, _ = daemon.MountsUnder(dir)
	snaps, err := node.ActiveSnapshots(ctx)
	left.Snapshots = snaps
	return left, errors.Join(lastErr, err)
}

func removeAllOnce(ctx context.Context, node *Node) error {
	var errs []error
	cs, err := node.CRI.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return err
	}
	for _, c := range cs.Containers {
		if _, err := node.CRI.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c.Id}); err != nil {
			errs = append(errs, fmt.Errorf("remove container %s: %w", short(c.Id), err))
		}
	}
	pods, err := node.CRI.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, p := range pods.Items {
		if _, err := node.CRI.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			errs = append(errs, fmt.Errorf("stop pod %s: %w", short(p.Id), err))
			continue
		}
		if _, err := node.CRI.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			errs = append(errs, fmt.Errorf("remove pod %s: %w", short(p.Id), err))
		}
	}
	return errors.Join(errs...)
}

// CheckMetaDB runs 'bbolt check' on the metadata database of the daemon,
// which must be stopped (bbolt waits for containerd's lock otherwise), and
// returns what it printed.
func CheckMetaDB(ctx context.Context, bbolt string, d *daemon.Daemon) (string, error) {
	db := filepath.Join(d.Root, "io.containerd.metadata.v1.bolt", "meta.db")
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bbolt, "check", db).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("bbolt check %s: %w: %s", db, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// Exits lists the final exit codes and reasons, sorted, for a report.
func (r CrashResult) Exits() string {
	count := map[string]int{}
	for _, c := range r.Containers {
		k := fmt.Sprintf("%d", c.ExitCode)
		if c.State != runtimeapi.ContainerState_CONTAINER_EXITED {
			k = c.State.String()
		} else if c.Reason != "" {
			k += " " + c.Reason
		}
		count[k]++
	}
	var keys []string
	for k := range count {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d x %s", count[k], k))
	}
	return strings.Join(parts, ", ")
}
