package incident

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/containerd-steady/containerd-steady/pkg/cri"
	"github.com/containerd-steady/containerd-steady/pkg/fault"
	"github.com/containerd-steady/containerd-steady/pkg/relist"
)

// ExitStall configures incident I1: containers exit while umount2 in their
// shims is delayed, kubelet keeps updating their resources and relisting.
type ExitStall struct {
	// Delay is added to every umount2 of the shims (they unmount a rootfs
	// twice per delete, so a delete holds its lock about 2*Delay).
	Delay time.Duration
	// Pods is how many pods, with one container each, exit together.
	Pods int
	// UpdateEvery is the period of UpdateContainerResources per container.
	UpdateEvery time.Duration
	// RestartAfter, when non-zero, restarts containerd this long after the
	// kill, while the deletes are still delayed (incident I4).
	RestartAfter time.Duration
	// Logf, when set, receives progress lines.
	Logf Logf
}

// ContainerResult is what was seen of one exiting container.
type ContainerResult struct {
	ID         string
	States     []runtimeapi.ContainerState // distinct states in the order seen
	ExitedAt   time.Time                   // first ContainerStatus saying EXITED
	ExitCode   int32
	Reason     string
	FinishedAt time.Time
	Updates    int
	UpdateErrs []string
	// UpdateDown counts updates refused because containerd was down
	// (restarting); kubelet retries those like any error.
	UpdateDown int
	UpdateMax  time.Duration
	StatusMax  time.Duration
	NotFound   bool // ContainerStatus ever answered NotFound
}

// ExitStallResult is what a node operator would have seen.
type ExitStallResult struct {
	Build      string
	Delay      time.Duration
	KilledAt   time.Time
	ShimDoneAt time.Time // the last delayed umount2 returned (from strace)
	RestartAt  time.Time
	ReadyAfter time.Duration // restart to CRI answering again
	Relist     relist.Result
	Containers []ContainerResult
}

// UpdateMax is the longest UpdateContainerResources of any container.
func (r ExitStallResult) UpdateMax() time.Duration {
	var m time.Duration
	for _, c := range r.Containers {
		m = max(m, c.UpdateMax)
	}
	return m
}

// StatusMax is the longest ContainerStatus of any container.
func (r ExitStallResult) StatusMax() time.Duration {
	var m time.Duration
	for _, c := range r.Containers {
		m = max(m, c.StatusMax)
	}
	return m
}

// UnknownSeen reports whether any container was ever reported UNKNOWN.
func (r ExitStallResult) UnknownSeen() bool {
	for _, c := range r.Containers {
		for _, s := range c.States {
			if s == runtimeapi.ContainerState_CONTAINER_UNKNOWN {
				return true
			}
		}
		if r.Relist.Seen(c.ID, runtimeapi.ContainerState_CONTAINER_UNKNOWN) {
			return true
		}
	}
	return false
}

// LastExited is when the last container was first reported EXITED.
func (r ExitStallResult) LastExited() time.Time {
	var last time.Time
	for _, c := range r.Containers {
		if c.ExitedAt.After(last) {
			last = c.ExitedAt
		}
	}
	return last
}

// AllExited reports whether every container was reported EXITED.
func (r ExitStallResult) AllExited() bool {
	for _, c := range r.Containers {
		if c.ExitedAt.IsZero() {
			return false
		}
	}
	return len(r.Containers) > 0
}

// RelistPeriod is kubelet's PLEG relist period: a relist slower than this
// delays every pod's sync on the node.
const RelistPeriod = time.Second

// LateExited is how long after the shim's delete finished a container may
// still be reported RUNNING before kubelet is held back by it.
const LateExited = 10 * time.Second

// Suffering lists what a kubelet on this node would have suffered, one
// line each: relists slower than its relist period, failed resource
// updates, UNKNOWN, a lost exit code, EXITED reported long after the
// shim's delete finished. Empty means kubelet noticed nothing. The lines
// differ in how upstream suffers (1.7 blocks relists for minutes, 2.x fails
// updates after 2 s and reports the dead container RUNNING long after the
// cleanup), so tests assert this list rather than one symptom.
func (r ExitStallResult) Suffering() []string {
	var out []string
	if r.Relist.Max > RelistPeriod {
		out = append(out, fmt.Sprintf("longest relist %s (over kubelet's %s period)", r.Relist.Max.Round(time.Millisecond), RelistPeriod))
	}
	for _, c := range r.Containers {
		if n := len(c.UpdateErrs); n > 0 {
			out = append(out, fmt.Sprintf("%s: %d UpdateContainerResources errors (first: %s)", short(c.ID), n, c.UpdateErrs[0]))
		}
		for _, st := range c.States {
			if st == runtimeapi.ContainerState_CONTAINER_UNKNOWN {
				out = append(out, fmt.Sprintf("%s: reported UNKNOWN", short(c.ID)))
				break
			}
		}
		switch {
		case c.ExitedAt.IsZero():
			out = append(out, fmt.Sprintf("%s: never reported EXITED", short(c.ID)))
		case c.ExitCode != 137:
			out = append(out, fmt.Sprintf("%s: exit code %d (reason %q), not the SIGKILL's 137", short(c.ID), c.ExitCode, c.Reason))
		case !r.ShimDoneAt.IsZero() && c.ExitedAt.Sub(r.ShimDoneAt) > LateExited:
			out = append(out, fmt.Sprintf("%s: EXITED reported %s after the shim's delete finished", short(c.ID), c.ExitedAt.Sub(r.ShimDoneAt).Round(time.Millisecond)))
		}
	}
	return out
}

func short(id string) string { return id[:min(len(id), 12)] }

type stalledContainer struct {
	id      string
	initPID int
	shimPID int
	mu      sync.Mutex
	res     ContainerResult
}

// Run plays the incident on node; dir receives strace logs.
func (s ExitStall) Run(ctx context.Context, build string, node *Node, dir string) (ExitStallResult, error) {
	s.defaults()
	res := ExitStallResult{Build: build, Delay: s.Delay}
	cs, err := s.startContainers(ctx, node)
	if err != nil {
		return res, err
	}
	delays, err := s.injectDelays(ctx, cs, dir)
	defer func() {
		for _, d := range delays {
			_ = d.Detach()
		}
	}()
	if err != nil {
		return res, err
	}

	probe := relist.Start(ctx, node.CRI.RuntimeServiceClient, time.Second)
	time.Sleep(2 * time.Second) // a few healthy relists first
	res.KilledAt = time.Now()
	for _, c := range cs {
		if err := syscall.Kill(c.initPID, syscall.SIGKILL); err != nil {
			probe.Stop()
			return res, fmt.Errorf("kill init %d of %s: %w", c.initPID, c.id, err)
		}
	}
	s.Logf.printf("%s: killed %d containers; umount2 delayed by %s", build, len(cs), s.Delay)

	watchCtx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(2)
		go func(c *stalledContainer) { defer wg.Done(); s.updateLoop(watchCtx, node.CRI, c) }(c)
		go func(c *stalledContainer) { defer wg.Done(); s.statusLoop(watchCtx, node.CRI, c) }(c)
	}

	var restartErr error
	if s.RestartAfter > 0 {
		time.Sleep(time.Until(res.KilledAt.Add(s.RestartAfter)))
		res.RestartAt, res.ReadyAfter, restartErr = restart(ctx, node)
		s.Logf.printf("%s: containerd restarted, CRI ready after %s (err %v)", build, res.ReadyAfter.Round(time.Millisecond), restartErr)
	}

	// Bounded wait: every container EXITED and every shim done with its
	// delayed unmounts, or 2*Delay plus a minute. A fork reports EXITED
	// before the cleanup; watching on through it shows that nothing changes
	// when the cleanup ends.
	deadline := res.KilledAt.Add(2*s.Delay + time.Minute)
	for restartErr == nil && ctx.Err() == nil && time.Now().Before(deadline) && !(allExited(cs) && fault.AllSettled(delays, "umount2", time.Second)) {
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // a few relists after the exit
	stopWatch()
	wg.Wait()
	res.Relist = probe.Stop()

	for _, d := range delays {
		if end, err := d.LastEnd("umount2"); err == nil && end.After(res.ShimDoneAt) {
			res.ShimDoneAt = end
		}
	}
	for _, c := range cs {
		c.mu.Lock()
		res.Containers = append(res.Containers, c.res)
		c.mu.Unlock()
	}
	return res, restartErr
}

func (s *ExitStall) defaults() {
	if s.Pods == 0 {
		s.Pods = 1
	}
	if s.UpdateEvery == 0 {
		s.UpdateEvery = 2 * time.Second
	}
	if s.Delay == 0 {
		s.Delay = 20 * time.Second
	}
}

func (s ExitStall) startContainers(ctx context.Context, node *Node) ([]*stalledContainer, error) {
	var cs []*stalledContainer
	for i := 0; i < s.Pods; i++ {
		tk, err := node.StartTicker(ctx, fmt.Sprintf("exit-%d", i))
		if err != nil {
			return nil, err
		}
		cs = append(cs, &stalledContainer{id: tk.ID, initPID: tk.InitPID, shimPID: tk.ShimPID, res: ContainerResult{ID: tk.ID}})
	}
	return cs, nil
}

func (s ExitStall) injectDelays(ctx context.Context, cs []*stalledContainer, dir string) ([]*fault.Delay, error) {
	var delays []*fault.Delay
	seen := map[int]bool{}
	for _, c := range cs {
		if seen[c.shimPID] {
			continue
		}
		seen[c.shimPID] = true
		d, err := fault.DelaySyscalls(ctx, c.shimPID, []string{"umount2"}, s.Delay,
			filepath.Join(dir, fmt.Sprintf("strace-shim-%d.log", c.shimPID)))
		if err != nil {
			return delays, err
		}
		delays = append(delays, d)
	}
	return delays, nil
}

// updateLoop calls UpdateContainerResources like kubelet's CPU manager:
// one call at a time, every UpdateEvery, with kubelet's request timeout.
func (s ExitStall) updateLoop(ctx context.Context, client *cri.Client, c *stalledContainer) {
	shares := int64(300)
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, relist.RequestTimeout)
		start := time.Now()
		err := client.UpdateCPU(rctx, c.id, shares)
		took := time.Since(start)
		cancel()
		if ctx.Err() != nil {
			return
		}
		shares++
		c.mu.Lock()
		c.res.Updates++
		c.res.UpdateMax = max(c.res.UpdateMax, took)
		switch {
		case status.Code(err) == codes.Unavailable:
			c.res.UpdateDown++
		case err != nil:
			c.res.UpdateErrs = append(c.res.UpdateErrs, err.Error())
		}
		c.mu.Unlock()
		sleepCtx(ctx, s.UpdateEvery)
	}
}

// statusEvery is the ContainerStatus period of statusLoop: fine enough to
// time the EXITED report to a fraction of a second.
const statusEvery = 200 * time.Millisecond

// statusLoop asks ContainerStatus every statusEvery and records what it says.
func (s ExitStall) statusLoop(ctx context.Context, client *cri.Client, c *stalledContainer) {
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, relist.RequestTimeout)
		start := time.Now()
		resp, err := client.ContainerStatus(rctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.id})
		took := time.Since(start)
		cancel()
		if ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		c.res.StatusMax = max(c.res.StatusMax, took)
		if status.Code(err) == codes.NotFound {
			c.res.NotFound = true
		}
		if err == nil {
			c.record(resp.Status)
		}
		c.mu.Unlock()
		sleepCtx(ctx, statusEvery)
	}
}

// record notes a status; called with c.mu held.
func (c *stalledContainer) record(st *runtimeapi.ContainerStatus) {
	if n := len(c.res.States); n == 0 || c.res.States[n-1] != st.State {
		c.res.States = append(c.res.States, st.State)
	}
	if st.State == runtimeapi.ContainerState_CONTAINER_EXITED && c.res.ExitedAt.IsZero() {
		c.res.ExitedAt = time.Now()
		c.res.ExitCode = st.ExitCode
		c.res.Reason = st.Reason
		c.res.FinishedAt = time.Unix(0, st.FinishedAt)
	}
}

func allExited(cs []*stalledContainer) bool {
	for _, c := range cs {
		c.mu.Lock()
		done := !c.res.ExitedAt.IsZero()
		c.mu.Unlock()
		if !done {
			return false
		}
	}
	return true
}

// restart stops containerd and starts it again on the same root, and
// returns when it was restarted and how long until its CRI answered.
func restart(ctx context.Context, node *Node) (time.Time, time.Duration, error) {
	if err := node.Daemon.Stop(ctx); err != nil {
		return time.Time{}, 0, err
	}
	at := time.Now()
	if err := node.Daemon.Launch(); err != nil {
		return at, 0, err
	}
	if err := node.Daemon.WaitReady(ctx, 3*time.Minute); err != nil {
		return at, time.Since(at), errors.Join(errors.New("containerd did not serve CRI after restart"), err)
	}
	return at, time.Since(at), nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// Summary is the side-by-side row material for a result.
type Summary struct {
	LongestRelist  time.Duration
	RelistP99      time.Duration
	LongestUpdate  time.Duration
	LongestStatus  time.Duration
	KillToExited   time.Duration // last container
	ShimToExited   time.Duration // last EXITED after the shims finished
	UnknownSeen    bool
	ExitCodes      []int32
	UpdateFailures int
}

// Summarise condenses a result.
func (r ExitStallResult) Summarise() Summary {
	s := Summary{
		LongestRelist: r.Relist.Max,
		RelistP99:     r.Relist.P99,
		LongestUpdate: r.UpdateMax(),
		LongestStatus: r.StatusMax(),
		UnknownSeen:   r.UnknownSeen(),
	}
	if r.AllExited() {
		s.KillToExited = r.LastExited().Sub(r.KilledAt)
		if !r.ShimDoneAt.IsZero() {
			s.ShimToExited = r.LastExited().Sub(r.ShimDoneAt)
		}
	}
	for _, c := range r.Containers {
		s.ExitCodes = append(s.ExitCodes, c.ExitCode)
		s.UpdateFailures += len(c.UpdateErrs)
	}
	sort.Slice(s.ExitCodes, func(i, j int) bool { return s.ExitCodes[i] < s.ExitCodes[j] })
	return s
}
