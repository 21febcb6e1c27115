package incident

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/containerd-steady/containerd-steady/pkg/relist"
)

// SteadyState measures a healthy node: list and status latency with many
// running containers, a burst of concurrent resource updates, pod start
// throughput, and containerd's memory.
type SteadyState struct {
	Containers int // running containers, one pod each
	Calls      int // ListContainers / ContainerStatus calls to time
	Burst      int // concurrent UpdateContainerResources calls
	StartPods  int // pods started for the throughput measure
}

// SteadyStateResult holds the measures.
type SteadyStateResult struct {
	ListP50, ListP99       time.Duration
	StatusP50, StatusP99   time.Duration
	BurstP99               time.Duration
	BurstPerSecond         float64
	StartSerialPerSecond   float64
	StartParallelPerSecond float64 // 4-way concurrent
	RSSBytes               int64   // containerd's resident memory at the end
}

// Run measures on node.
func (s SteadyState) Run(ctx context.Context, node *Node) (SteadyStateResult, error) {
	var res SteadyStateResult
	// Ten containers a pod, as on a node with multi-container pods; the
	// pod start rate is measured separately below.
	ids, err := startIdleIn(ctx, node, "idle", s.Containers, 10, 4)
	if err != nil {
		return res, err
	}
	res.ListP50, res.ListP99, err = timeCalls(s.Calls, func() error {
		_, err := node.CRI.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
		return err
	})
	if err != nil {
		return res, fmt.Errorf("ListContainers: %w", err)
	}
	i := 0
	res.StatusP50, res.StatusP99, err = timeCalls(s.Calls, func() error {
		i++
		_, err := node.CRI.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ids[i%len(ids)]})
		return err
	})
	if err != nil {
		return res, fmt.Errorf("ContainerStatus: %w", err)
	}
	if res.BurstP99, res.BurstPerSecond, err = s.burst(ctx, node, ids); err != nil {
		return res, err
	}
	if res.StartSerialPerSecond, err = podRate(ctx, node, "serial", s.StartPods, 1); err != nil {
		return res, err
	}
	if res.StartParallelPerSecond, err = podRate(ctx, node, "parallel", s.StartPods, 4); err != nil {
		return res, err
	}
	res.RSSBytes, err = rss(node.Daemon.PID())
	return res, err
}

func (s SteadyState) burst(ctx context.Context, node *Node, ids []string) (time.Duration, float64, error) {
	n := min(s.Burst, len(ids))
	durations := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			t := time.Now()
			errs[i] = node.CRI.UpdateCPU(ctx, ids[i], int64(400+i))
			durations[i] = time.Since(t)
		}(i)
	}
	wg.Wait()
	total := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return 0, 0, fmt.Errorf("UpdateContainerResources burst: %w", err)
		}
	}
	sort.Slice(durations, func(i, j int) bool { return durations[i] < durations[j] })
	return relist.Percentile(durations, 99), float64(n) / total.Seconds(), nil
}

// startIdle starts n pods with one sleeping container each, width at a time.
func startIdle(ctx context.Context, node *Node, prefix string, n, width int) ([]string, error) {
	return startIdleIn(ctx, node, prefix, n, 1, width)
}

// startIdleIn starts n sleeping containers, perPod in each pod, width pods
// at a time.
func startIdleIn(ctx context.Context, node *Node, prefix string, n, perPod, width int) ([]string, error) {
	ids := make([]string, n)
	errs := make([]error, n)
	sem := make(chan struct{}, width)
	var wg sync.WaitGroup
	for first := 0; first < n; first += perPod {
		wg.Add(1)
		sem <- struct{}{}
		go func(first int) {
			defer wg.Done()
			defer func() { <-sem }()
			pod, err := node.CRI.RunPod(ctx, prefix+"-"+strconv.Itoa(first))
			if err != nil {
				errs[first] = err
				return
			}
			for i := first; i < min(first+perPod, n); i++ {
				ids[i], errs[i] = node.CRI.StartContainer(ctx, pod, "sleep-"+strconv.Itoa(i), node.Image, []string{"sleep", "2147483647"})
			}
		}(first)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return ids, nil
}

func podRate(ctx context.Context, node *Node, prefix string, n, width int) (float64, error) {
	start := time.Now()
	if _, err := startIdle(ctx, node, prefix, n, width); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// timeCalls runs f n times and returns the p50 and p99 latency.
func timeCalls(n int, f func() error) (time.Duration, time.Duration, error) {
	durations := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		if err := f(); err != nil {
			return 0, 0, err
		}
		durations = append(durations, time.Since(start))
	}
	sort.Slice(durations, func(i, j int) bool { return durations[i] < durations[j] })
	return relist.Percentile(durations, 50), relist.Percentile(durations, 99), nil
}

// rss reads a process's resident set size.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read containerd's memory: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}
