package incident

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
	mu    sync.Mutex
	live  []*Ticker
	next  int // name counter
	wg    sync.WaitGroup
	start func(ctx context.Context, name string) (*Ticker, error)
}

func (f *soakFleet) pick(i int) *Ticker {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.live) == 0 {
		return nil
	}
	return f.live[i%len(f.live)]
}

// size is the number of live containers.
func (f *soakFleet) size() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.live)
}

// ids lists the live containers.
func (f *soakFleet) ids() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, len(f.live))
	for i, tk := range f.live {
		ids[i] = tk.ID
	}
	return ids
}

// newFleet starts n containers on node with start, one at a time.
func newFleet(ctx context.Context, n int, start func(context.Context, string) (*Ticker, error)) (*soakFleet, error) {
	f := &soakFleet{start: start}
	if err := f.grow(ctx, n, 1); err != nil {
		return nil, err
	}
	return f, nil
}

// grow starts containers, width at a time, until the fleet has n.
func (f *soakFleet) grow(ctx context.Context, n, width int) error {
	f.mu.Lock()
	first, count := f.next, n-len(f.live)
	f.next += max(count, 0)
	f.mu.Unlock()
	started := make([]*Ticker, max(count, 0))
	errs := make([]error, len(started))
	sem := make(chan struct{}, width)
	var wg sync.WaitGroup
	for i := range started {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			started[i], errs[i] = f.start(ctx, fmt.Sprintf("soak-%d", first+i))
		}(i)
	}
	wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, tk := range started {
		if tk != nil {
			f.live = append(f.live, tk)
		}
	}
	return errors.Join(errs...)
}

// soakLoad is the soak's load on a fleet, running until its context ends:
// resource updates at UpdatesPerSecond and a replacement every
// ReplaceEvery.
type soakLoad struct {
	wg                sync.WaitGroup
	mu                sync.Mutex
	updates, errs     int
	replaced, delayed int
	updateLatencies   []time.Duration
}

const soakWorkers = 5

// startLoad starts the update workers and the replace loop on fleet.
func (s Soak) startLoad(ctx context.Context, node *Node, fleet *soakFleet, dir string) *soakLoad {
	l := &soakLoad{}
	for w := 0; w < soakWorkers; w++ {
		l.wg.Add(1)
		go func(w int) {
			defer l.wg.Done()
			s.updates(ctx, node, fleet, w, l)
		}(w)
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		r, d := s.replace(ctx, node, fleet, dir)
		l.mu.Lock()
		l.replaced, l.delayed = r, d
		l.mu.Unlock()
	}()
	return l
}

// wait waits for the load to end (its context must be done).
func (l *soakLoad) wait() {
	l.wg.Wait()
}

// Run plays the soak on node; dir receives strace logs.
func (s Soak) Run(ctx context.Context, build string, node *Node, dir string) (SoakResult, error) {
	s.defaults()
	res := SoakResult{Build: build}
	fleet, err := newFleet(ctx, s.Containers, node.StartTicker)
	if err != nil {
		return res, err
	}
	s.Logf.printf("%s: %d containers running; soaking for %s", build, s.Containers, s.Duration)

	start := time.Now()
	runCtx, stop := context.WithTimeout(ctx, s.Duration)
	defer stop()
	probe := relist.Start(runCtx, node.CRI.RuntimeServiceClient, time.Second)
	load := s.startLoad(runCtx, node, fleet, dir)

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
	load.wait()
	res.Updates, res.UpdateErrs, res.Replaced, res.Delayed = load.updates, load.errs, load.replaced, load.delayed
	res.Relist = probe.Stop()
	fleet.wg.Wait() // the replaced pods' removal
	return res, nil
}

// updates sends this worker's share of UpdatesPerSecond, round robin over
// the live containers, and counts them in l.
func (s Soak) updates(ctx context.Context, node *Node, fleet *soakFleet, w int, l *soakLoad) {
	every := time.Duration(soakWorkers) * time.Second / time.Duration(s.UpdatesPerSecond)
	onFleet(ctx, fleet, every, w, soakWorkers, func(ctx context.Context, tk *Ticker, i int) error {
		return node.CRI.UpdateCPU(ctx, tk.ID, int64(256+i%512))
	}, func(took time.Duration, err error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.updates++
		l.updateLatencies = append(l.updateLatencies, took)
		if err != nil {
			l.errs++
		}
	})
}

// onFleet calls call on the fleet's live containers in turn, one call
// every every, the i-th, then the i+step-th and so on, until ctx ends.
// Each call has relist.RequestTimeout; record gets how long it took and
// its error, unless ctx ended meanwhile.
func onFleet(ctx context.Context, fleet *soakFleet, every time.Duration, i, step int,
	call func(ctx context.Context, tk *Ticker, i int) error, record func(took time.Duration, err error)) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for ; ; i += step {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		tk := fleet.pick(i)
		if tk == nil {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, relist.RequestTimeout)
		began := time.Now()
		err := call(rctx, tk, i)
		took := time.Since(began)
		cancel()
		if ctx.Err() != nil {
			return
		}
		record(took, err)
	}
}

// replace kills the oldest container every ReplaceEvery and starts a new
// one in its place; every DelayEvery-th dies with its shim's umount2
// delayed (none when DelayEvery is negative). The old pod is removed in the background once its container
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
		if s.DelayEvery > 0 && (replaced+1)%s.DelayEvery == 0 {
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

		tk, err := fleet.start(ctx, name)
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
	body, err := debugGet(sock, "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, err
	}
	defer body.Close()
	line, err := bufio.NewReader(body).ReadString('\n')
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
	v, err := procStatus(pid, "VmRSS")
	return v["VmRSS"], err
}

// procStatus reads the named kB fields of /proc/<pid>/status, in bytes.
func procStatus(pid int, names ...string) (map[string]int64, error) {
	path := fmt.Sprintf("/proc/%d/status", pid)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	values := map[string]int64{}
	for _, l := range strings.Split(string(b), "\n") {
		name, v, ok := strings.Cut(l, ":")
		if !ok || !slices.Contains(names, name) {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, name, err)
		}
		values[name] = kb * 1024
	}
	for _, name := range names {
		if _, ok := values[name]; !ok {
			return nil, fmt.Errorf("no %s in %s", name, path)
		}
	}
	return values, nil
}

// userHZ is the unit of the CPU times in /proc/<pid>/stat: USER_HZ, 100
// on every Linux architecture Go supports.
const userHZ = 100

// cpuTimeOf is the CPU time, user and system, that every thread of pid has
// used so far.
func cpuTimeOf(pid int) (time.Duration, error) {
	return parseCPUTime(fmt.Sprintf("/proc/%d/stat", pid))
}

func parseCPUTime(path string) (time.Duration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces and parentheses:
	// fields count from after the last closing parenthesis, where field 3
	// (state) begins.
	i := strings.LastIndex(string(b), ") ")
	f := strings.Fields(string(b)[i+1:])
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("%s: too few fields", path)
	}
	var ticks int64
	for _, v := range f[11:13] { // utime and stime, fields 14 and 15
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", path, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}
