package incident

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/containerd-steady/containerd-steady/pkg/relist"
)

// Idle measures a healthy, idle node's running containers: list and
// status latency, and a burst of concurrent resource updates.
type Idle struct {
	Calls int // ListContainers / ContainerStatus calls to time
	Burst int // concurrent UpdateContainerResources calls
}

// IdleResult holds the measures.
type IdleResult struct {
	ListP50, ListP99     time.Duration
	StatusP50, StatusP99 time.Duration
	BurstP99             time.Duration
	BurstPerSecond       float64
}

// Run measures on node, whose running containers are ids.
func (s Idle) Run(ctx context.Context, node *Node, ids []string) (IdleResult, error) {
	var res IdleResult
	if len(ids) == 0 {
		return res, fmt.Errorf("idle node: no running container to measure")
	}
	var err error
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
	res.BurstP99, res.BurstPerSecond, err = s.burst(ctx, node, ids)
	return res, err
}

func (s Idle) burst(ctx context.Context, node *Node, ids []string) (time.Duration, float64, error) {
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
