package incident

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/containerd-steady/containerd-steady/pkg/fault"
	"github.com/containerd-steady/containerd-steady/pkg/relist"
)

// Soak is the long run of issue 14: many containers get resource updates
// at a steady rate and a relist every second, while one container after
// another exits and is replaced, every DelayEvery-th of them with its
// shim's umount2 delayed. containerd's goroutines, RSS and open fds are
// sampled, to show whether anything grows without bound.
type Soak struct {
	Containers       int
	Duration         time.Duration
	UpdatesPerSecond int
	ReplaceEvery     time.Duration
	DelayEvery       int
	Delay            time.Duration
	SampleEvery      time.Duration
	Logf             Logf
}

// SoakSample is containerd's footprint at one time.
type SoakSample struct {
	At         time.Duration // since the soak started
	Goroutines int
	RSS        int64 // bytes
	FDs        int
}

// SoakResult is what one build did in the soak.
type SoakResult struct {
	Build      string
	Samples    []SoakSample
	Relist     relist.Result
	Updates    int
	UpdateErrs int
	Replaced   int
	Delayed    int
}

// Slopes are the least-squares growth rates per minute of goroutines, RSS
// (bytes) and fds over the samples.
func (r SoakResult) Slopes() (goroutines, rss, fds float64) {
	x := make([]float64, len(r.Samples))
	g, m, f := make([]float64, len(x)), make([]float64, len(x)), make([]float64, len(x))
	for i, s := range r.Samples {
		x[i] = s.At.Minutes()
		g[i], m[i], f[i] = float64(s.Goroutines), float64(s.RSS), float64(s.FDs)
	}
	return slope(x, g), slope(x, m), slope(x, f)
}

// slope is the least-squares slope of y over x, 0 with fewer than 2 points.
func slope(x, y []float64) float64 {
	n := float64(len(x))
	if n < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range x {
		sx += x[i]
		sy += y[i]
		sxx += x[i] * x[i]
		sxy += x[i] * y[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

func (s *Soak) defaults() {
	if s.Containers == 0 {
		s.Containers = 200
	}
	if s.Duration == 0 {
		s.Duration = 20 * time.Minute
	}
	if s.UpdatesPerSecond == 0 {
		s.UpdatesPerSecond = 50
	}
	if s.ReplaceEvery == 0 {
		s.ReplaceEvery = 10 * time.Second
	}
	if s.DelayEvery == 0 {
		s.DelayEvery = 5
	}
	if s.Delay == 0 {
		s.Delay = 20 * time.Second
	}
	if s.SampleEvery == 0 {
		s.SampleEvery = 30 * time.Second
	}
}

// soakFleet is the set of running containers, replaced one by one.
type soakFleet struct {
	mu   sync.Mutex
	live []*Ticker
	next int // name counter
	wg   sync.WaitGroup
}

func (f *soakFleet) pick(i int) *Ticker {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.live) == 0 {
		return nil
	}
	return f.live[i%len(f.live)]
}

// Run plays the soak on node; dir receives strace logs.
func (s Soak) Run(ctx context.Context, build string, node *Node, dir string) (SoakResult, error) {
	s.defaults()
	res := SoakResult{Build: build}
	fleet := &soakFleet{}
	for i := 0; i < s.Containers; i++ {
		tk, err := node.StartTicker(ctx, fmt.Sprintf("soak-%d", fleet.next))
		if err != nil {
			return res, err
		}
		fleet.next++
		fleet.live = append(fleet.live, tk)
	}
	s.Logf.printf("%s: %d containers running; soaking for %s", build, s.Containers, s.Duration)

	start := time.Now()
	runCtx, stop := context.WithTimeout(ctx, s.Duration)
	defer stop()
	probe := relist.Start(runCtx, node.CRI.RuntimeServiceClient, time.Second)
	var mu sync.Mutex
	var wg sync.WaitGroup
	const workers = 5
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			n, errs := s.updates(runCtx, node, fleet, w, workers)
			mu.Lock()
			res.Updates += n
			res.UpdateErrs += errs
			mu.Unlock()
		}(w)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		res.Replaced, res.Delayed = s.replace(runCtx, node, fleet, dir)
	}()

	sample := func() {
		if sm, err := footprint(node, time.Since(start)); err == nil {
			res.Samples = append(res.Samples, sm)
		} else {
			s.Logf.printf("%s: sample: %v", build, err)
		}
	}
	sample()
	tick := time.NewTicker(s.SampleEvery)
	defer tick.Stop()
	for runCtx.Err() == nil {
		select {
		case <-runCtx.Done():
		case <-tick.C:
			sample()
		}
	}
	sample()
	wg.Wait()
	res.Relist = probe.Stop()
	fleet.wg.Wait() // the replaced pods' removal
	return res, nil
}

// updates sends this worker's share of UpdatesPerSecond, round robin over
// the live containers, and returns how many it sent and how many failed.
func (s Soak) updates(ctx context.Context, node *Node, fleet *soakFleet, w, workers int) (n, errs int) {
	every := time.Duration(workers) * time.Second / time.Duration(s.UpdatesPerSecond)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for i := w; ctx.Err() == nil; i += workers {
		select {
		case <-ctx.Done():
			return n, errs
		case <-tick.C:
		}
		tk := fleet.pick(i)
		if tk == nil {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, relist.RequestTimeout)
		err := node.CRI.UpdateCPU(rctx, tk.ID, int64(256+i%512))
		cancel()
		if ctx.Err() != nil {
			return n, errs
		}
		n++
		if err != nil {
			errs++
		}
	}
	return n, errs
}

// replace kills the oldest container every ReplaceEvery and starts a new
// one in its place; every DelayEvery-th dies with its shim's umount2
// delayed. The old pod is removed in the background once its container
// has exited.
func (s Soak) replace(ctx context.Context, node *Node, fleet *soakFleet, dir string) (replaced, delayed int) {
	tick := time.NewTicker(s.ReplaceEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return replaced, delayed
		case <-tick.C:
		}
		fleet.mu.Lock()
		old := fleet.live[0]
		fleet.live = fleet.live[1:]
		name := fmt.Sprintf("soak-%d", fleet.next)
		fleet.next++
		fleet.mu.Unlock()

		var d *fault.Delay
		if (replaced+1)%s.DelayEvery == 0 {
			var err error
			d, err = fault.DelaySyscalls(ctx, old.ShimPID, []string{"umount2"}, s.Delay,
				filepath.Join(dir, fmt.Sprintf("strace-shim-%d.log", old.ShimPID)))
			if err == nil {
				delayed++
			} else {
				s.Logf.printf("soak: delay shim %d: %v", old.ShimPID, err)
			}
		}
		_ = syscall.Kill(old.InitPID, syscall.SIGKILL)
		fleet.wg.Add(1)
		go func() {
			defer fleet.wg.Done()
			removeWhenExited(node, old, d, s.Delay)
		}()
		replaced++

		tk, err := node.StartTicker(ctx, name)
		if err != nil {
			s.Logf.printf("soak: start %s: %v", name, err)
			continue
		}
		fleet.mu.Lock()
		fleet.live = append(fleet.live, tk)
		fleet.mu.Unlock()
	}
}

// removeWhenExited waits for tk's container to be EXITED and its delayed
// unmounts, if any, to finish, then removes its pod as kubelet would.
func removeWhenExited(node *Node, tk *Ticker, d *fault.Delay, delay time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*delay+2*time.Minute)
	defer cancel()
	if d != nil {
		defer func() { _ = d.Detach() }()
	}
	for ctx.Err() == nil {
		st, err := node.CRI.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: tk.ID})
		done := err == nil && st.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED
		if done && d != nil {
			settled, err := d.Settled("umount2", time.Second)
			done = err == nil && settled
		}
		if done {
			break
		}
		sleepCtx(ctx, time.Second)
	}
	if _, err := node.CRI.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: tk.Pod.ID}); err == nil {
		_, _ = node.CRI.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: tk.Pod.ID})
	}
}

// footprint samples containerd's goroutines (from its debug socket's
// pprof), RSS and open fds.
func footprint(node *Node, at time.Duration) (SoakSample, error) {
	pid := node.Daemon.PID()
	if pid == 0 {
		return SoakSample{}, fmt.Errorf("containerd is not running")
	}
	g, err := goroutines(node.Daemon.Debug)
	if err != nil {
		return SoakSample{}, err
	}
	rss, err := rssOf(pid)
	if err != nil {
		return SoakSample{}, err
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return SoakSample{}, err
	}
	return SoakSample{At: at, Goroutines: g, RSS: rss, FDs: len(fds)}, nil
}

// goroutines reads "goroutine profile: total N" from containerd's debug
// server at the unix socket sock.
func goroutines(sock string) (int, error) {
	client := http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}},
	}
	resp, err := client.Get("http://containerd/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, fmt.Errorf("goroutine profile: %w", err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("goroutine profile: %w", err)
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(line), "goroutine profile: total ")
	if !ok {
		return 0, fmt.Errorf("goroutine profile: unexpected first line %q", line)
	}
	return strconv.Atoi(v)
}

// rssOf is VmRSS of pid, in bytes.
func rssOf(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
