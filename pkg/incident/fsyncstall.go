package incident

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd-steady/containerd-steady/pkg/fault"
	"github.com/containerd-steady/containerd-steady/pkg/relist"
)

// FsyncStall configures incident I2: containerd's own fsync and fdatasync
// (bolt commits, status checkpoints) are slow, as on a node that is pulling
// many images at boot, while kubelet updates a running container's
// resources and relists.
type FsyncStall struct {
	// Delay is added to every fsync/fdatasync of the containerd process.
	Delay time.Duration
	// Duration is how long updates and relists run under the delay.
	Duration time.Duration
	// UpdateEvery is the pause between UpdateContainerResources calls.
	UpdateEvery time.Duration
	Logf        Logf
}

// FsyncStallResult is what a node operator would have seen.
type FsyncStallResult struct {
	Build     string
	Delay     time.Duration
	Relist    relist.Result
	Updates   int
	UpdateMax time.Duration
	Syncs     int // delayed fsync/fdatasync calls that finished
}

// Run plays the incident on node; dir receives the strace log.
func (s FsyncStall) Run(ctx context.Context, build string, node *Node, dir string) (FsyncStallResult, error) {
	if s.Delay == 0 {
		s.Delay = 20 * time.Second
	}
	if s.Duration == 0 {
		s.Duration = 4 * s.Delay
	}
	if s.UpdateEvery == 0 {
		s.UpdateEvery = 2 * time.Second
	}
	res := FsyncStallResult{Build: build, Delay: s.Delay}
	tk, err := node.StartTicker(ctx, "fsync")
	if err != nil {
		return res, err
	}
	id := tk.ID
	probe := relist.Start(ctx, node.CRI.RuntimeServiceClient, time.Second)
	delayed, err := fault.DelaySyscalls(ctx, node.Daemon.PID(), []string{"fsync", "fdatasync"}, s.Delay,
		filepath.Join(dir, "strace-containerd.log"))
	if err != nil {
		probe.Stop()
		return res, err
	}
	if s.Logf != nil {
		s.Logf("%s: containerd's fsync/fdatasync delayed by %s; updating %s every %s", build, s.Delay, id, s.UpdateEvery)
	}

	runCtx, stop := context.WithTimeout(ctx, s.Duration)
	var mu sync.Mutex
	var inFlight time.Time // start of the update under way
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for shares := int64(300); runCtx.Err() == nil; shares++ {
			// Not bound to runCtx: an update still waiting when the run
			// ends must keep waiting, so it is counted as in flight below.
			rctx, cancel := context.WithTimeout(ctx, relist.RequestTimeout)
			start := time.Now()
			mu.Lock()
			inFlight = start
			mu.Unlock()
			err := node.CRI.UpdateCPU(rctx, id, shares)
			took := time.Since(start)
			cancel()
			mu.Lock()
			inFlight = time.Time{}
			mu.Unlock()
			if runCtx.Err() != nil {
				return
			}
			mu.Lock()
			res.Updates++
			res.UpdateMax = max(res.UpdateMax, took)
			mu.Unlock()
			if err != nil && s.Logf != nil {
				s.Logf("%s: UpdateContainerResources: %v", build, err)
			}
			sleepCtx(runCtx, s.UpdateEvery)
		}
	}()
	<-runCtx.Done()
	mu.Lock()
	if !inFlight.IsZero() { // an update still waiting counts with its time so far
		res.UpdateMax = max(res.UpdateMax, time.Since(inFlight))
	}
	mu.Unlock()
	stop()
	// Stop the probe first, so a relist stuck behind the delay counts with
	// the time it waited; then detach, which lets a delayed fsync finish.
	res.Relist = probe.Stop()
	if err := delayed.Detach(); err != nil {
		return res, fmt.Errorf("detach strace: %w", err)
	}
	wg.Wait()
	if calls, err := delayed.Calls(); err == nil {
		res.Syncs = len(calls)
	}
	return res, nil
}
