package incident

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/containerd-steady/containerd-steady/pkg/relist"
)

// Contention is a node outside any incident (issue 16), idle and then
// busy. The node grows to each of Counts sleeping containers, one a pod:
// the first SerialPods pods one at a time, the rest FleetWidth at a time,
// and the start rates are timed. At each count the idle node is measured
// first: containerd's memory (see MemorySample), then Idle's list and
// status latency and update burst. Then the load runs for Duration:
// UpdateContainerResources at UpdatesPerSecond in total, one container
// exiting and replaced every ReplaceEvery, and a background writer keeping
// the disk under the node busy with O_DIRECT writes and fsyncs. Meanwhile
// kubelet's reads are timed: a relist every second and a ContainerStatus
// every StatusEvery. Status writers (resource updates, exits) checkpoint
// to that disk: upstream's readers wait behind them, the fork's do not.
//
// One node serves every count and measure, because starting hundreds of
// pods is what costs the bench its time.
type Contention struct {
	Counts           []int         // container counts, ascending
	SerialPods       int           // pods first started one at a time
	FleetWidth       int           // pods started at once after them; 4 when zero
	Idle             Idle          // measures of the idle node at each count
	Duration         time.Duration // 60 s when zero
	UpdatesPerSecond int           // 50 when zero
	ReplaceEvery     time.Duration // 2 s when zero
	StatusEvery      time.Duration // 20 ms when zero
	WriterChunk      int64         // 64 MiB when zero
	// ProfileDir, when set, receives containerd's heap profile on the
	// empty node and at the last count (heap-<build>-<count>.pb.gz). What
	// the containers hold is 'go tool pprof -base <empty> <last>'; set
	// GODEBUG=memprofilerate=1 for containerd to record every allocation.
	ProfileDir string
	Logf       Logf
}

// Latencies are percentiles of one kind of call.
type Latencies struct {
	N                   int
	Errors              int
	P50, P99, P999, Max time.Duration
}

func latencies(d []time.Duration, errs int) Latencies {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	l := Latencies{N: len(s), Errors: errs}
	if len(s) == 0 {
		return l
	}
	l.P50, l.P99, l.P999, l.Max = relist.Percentile(s, 50), relist.Percentile(s, 99), relist.Percentile(s, 99.9), s[len(s)-1]
	return l
}

// ContentionStep is what one build did at one container count.
type ContentionStep struct {
	Containers int
	// StartPerSecond is the rate at which the node grew to Containers,
	// FleetWidth pods at a time.
	StartPerSecond   float64
	Memory           MemorySample // idle, before the load
	Idle             IdleResult
	Relist           Latencies
	Status           Latencies
	Update           Latencies
	UpdatesPerSecond float64 // completed, errors included
	// StatusPerSecond is how many ContainerStatus calls were answered a
	// second: a reader that waits misses its next turns.
	StatusPerSecond float64
	// CPU is the CPU time containerd used during the load.
	CPU          time.Duration
	Took         time.Duration
	Replaced     int
	WriterRounds int
}

// ContentionResult is one build's run: the empty node's memory and a step
// for each count.
type ContentionResult struct {
	Build string
	Empty MemorySample
	// StartSerialPerSecond is the rate of the first SerialPods starts.
	StartSerialPerSecond float64
	Steps                []ContentionStep
}

// Memory lists the memory samples, the empty node's first.
func (r ContentionResult) Memory() MemoryResult {
	m := MemoryResult{Build: r.Build, Samples: []MemorySample{r.Empty}}
	for _, s := range r.Steps {
		m.Samples = append(m.Samples, s.Memory)
	}
	return m
}

func (c *Contention) defaults() {
	if c.Duration == 0 {
		c.Duration = time.Minute
	}
	if c.UpdatesPerSecond == 0 {
		c.UpdatesPerSecond = 50
	}
	if c.ReplaceEvery == 0 {
		c.ReplaceEvery = 2 * time.Second
	}
	if c.StatusEvery == 0 {
		c.StatusEvery = 20 * time.Millisecond
	}
	if c.WriterChunk == 0 {
		c.WriterChunk = 64 << 20
	}
	if c.FleetWidth == 0 {
		c.FleetWidth = 4
	}
}

// Run grows the node to each count, measures it idle and plays the load;
// dir holds the writer's file (on the same disk as the node's root and
// state).
func (c Contention) Run(ctx context.Context, build string, node *Node, dir string) (ContentionResult, error) {
	c.defaults()
	res := ContentionResult{Build: build}
	var err error
	if res.Empty, err = c.idleMemory(ctx, node, build, 0, true); err != nil {
		return res, err
	}
	fleet := &soakFleet{start: node.StartSleeper}
	defer fleet.wg.Wait()
	if res.StartSerialPerSecond, err = c.timeGrow(ctx, fleet, c.SerialPods, 1); err != nil {
		return res, fmt.Errorf("start %d pods one at a time: %w", c.SerialPods, err)
	}
	for i, n := range c.Counts {
		step := ContentionStep{Containers: n}
		if step.StartPerSecond, err = c.timeGrow(ctx, fleet, n, c.FleetWidth); err != nil {
			return res, fmt.Errorf("start %d containers: %w", n, err)
		}
		if step.Memory, err = c.idleMemory(ctx, node, build, n, i == len(c.Counts)-1); err != nil {
			return res, err
		}
		idle := time.Now()
		if step.Idle, err = c.Idle.Run(ctx, node, fleet.ids()); err != nil {
			return res, fmt.Errorf("idle node at %d containers: %w", n, err)
		}
		c.Logf.printf("%s: idle node measured in %s", build, time.Since(idle).Round(100*time.Millisecond))
		c.Logf.printf("%s: %d containers running; loading for %s", build, n, c.Duration)
		if err := c.load(ctx, node, fleet, dir, &step); err != nil {
			return res, err
		}
		res.Steps = append(res.Steps, step)
	}
	return res, nil
}

// timeGrow grows fleet to n, width pods at a time, and returns the starts
// a second (0 when it had n already).
func (c Contention) timeGrow(ctx context.Context, fleet *soakFleet, n, width int) (float64, error) {
	before := fleet.size()
	start := time.Now()
	if err := fleet.grow(ctx, n, width); err != nil {
		return 0, err
	}
	if n <= before {
		return 0, nil
	}
	took := time.Since(start)
	c.Logf.printf("%d pods started, %d at a time, in %s", n-before, width, took.Round(100*time.Millisecond))
	return float64(n-before) / took.Seconds(), nil
}

// idleMemory lets the starts' garbage and goroutines settle, reads
// containerd's memory and, when profile is set, keeps its heap profile.
func (c Contention) idleMemory(ctx context.Context, node *Node, build string, containers int, profile bool) (MemorySample, error) {
	sleepCtx(ctx, 3*time.Second)
	s, err := memorySample(node, containers)
	if err != nil {
		return s, err
	}
	c.Logf.printf("%s: %d containers: RSS %.1f MiB (anon %.1f, file %.1f); Go: live heap %.1f, heap in use %.1f, released %.1f, stacks %.1f, from the OS %.1f MiB",
		build, containers, mib(s.RSS), mib(s.RSSAnon), mib(s.RSSFile), mib(s.HeapAlloc), mib(s.HeapInuse), mib(s.HeapReleased), mib(s.StackInuse), mib(s.Sys))
	if c.ProfileDir == "" || !profile {
		return s, nil
	}
	path := filepath.Join(c.ProfileDir, fmt.Sprintf("heap-%s-%d.pb.gz", build, containers))
	return s, saveHeapProfile(node.Daemon.Debug, path)
}

// load plays the load on fleet for Duration and records it in step.
func (c Contention) load(ctx context.Context, node *Node, fleet *soakFleet, dir string, step *ContentionStep) error {
	w, err := startDiskWriter(filepath.Join(dir, "contention-writer"), c.WriterChunk, true)
	if err != nil {
		return err
	}
	defer func() { step.WriterRounds = w.stop() }()

	runCtx, stop := context.WithTimeout(ctx, c.Duration)
	defer stop()
	load := Soak{Containers: step.Containers, UpdatesPerSecond: c.UpdatesPerSecond, ReplaceEvery: c.ReplaceEvery, DelayEvery: -1}
	cpu, err := cpuTimeOf(node.Daemon.PID())
	if err != nil {
		return err
	}
	probe := relist.Start(runCtx, node.CRI.RuntimeServiceClient, time.Second)
	began := time.Now()
	l := load.startLoad(runCtx, node, fleet, dir)
	status := pollStatus(runCtx, node, fleet, c.StatusEvery)
	<-runCtx.Done()
	l.wait()
	took := time.Since(began)
	cpuAfter, err := cpuTimeOf(node.Daemon.PID())
	if err != nil {
		return err
	}
	rl := probe.Stop()
	waited := time.Now()
	fleet.wg.Wait() // the replaced containers are removed
	c.Logf.printf("replaced containers removed %s after the load", time.Since(waited).Round(100*time.Millisecond))

	var relists []time.Duration
	for _, s := range rl.Samples {
		relists = append(relists, s.Duration)
	}
	st := <-status
	step.Relist = latencies(relists, rl.Errors)
	step.Status = latencies(st.durations, st.errs)
	step.Update = latencies(l.updateLatencies, l.errs)
	step.UpdatesPerSecond = float64(l.updates) / took.Seconds()
	step.StatusPerSecond = float64(len(st.durations)) / took.Seconds()
	step.CPU, step.Took = cpuAfter-cpu, took
	step.Replaced = l.replaced
	return nil
}

type statusPolls struct {
	durations []time.Duration
	errs      int
}

// pollStatus asks ContainerStatus of the live containers in turn, one
// every every, until ctx ends, and then sends what it timed. A container
// replaced meanwhile (NotFound) counts as an error, not as a latency.
func pollStatus(ctx context.Context, node *Node, fleet *soakFleet, every time.Duration) <-chan statusPolls {
	out := make(chan statusPolls, 1)
	go func() {
		var p statusPolls
		onFleet(ctx, fleet, every, 0, 1, func(ctx context.Context, tk *Ticker, _ int) error {
			_, err := node.CRI.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: tk.ID})
			return err
		}, func(took time.Duration, err error) {
			if err != nil {
				p.errs++
			} else {
				p.durations = append(p.durations, took)
			}
		})
		out <- p
	}()
	return out
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
