package incident

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/containerd-steady/containerd-steady/pkg/fault"
)

// DiskFull is the full-disk scenario (issue 14): containerd's root and
// state live on a small filesystem (dir), which fills up while containers
// exit and get resource updates; then the space is freed and containerd
// restarted.
type DiskFull struct {
	Pods int
	// Full is how long the disk stays full after the containers were
	// killed.
	Full time.Duration
	Logf Logf
}

// DiskFullResult is what one build did with a full disk.
type DiskFullResult struct {
	Build  string
	Filled int64 // bytes the filler took
	// While the disk was full: the longest CRI read (ListContainers or
	// ContainerStatus), how many reads there were, and the errors of reads
	// and resource updates.
	ReadMax    time.Duration
	Reads      int
	ReadErrs   []string
	UpdateErrs []string
	Updates    int
	// ExitedWhileFull is how many containers CRI reported EXITED before
	// the space was freed.
	ExitedWhileFull int
	// Exits are the final exit codes once the space was freed, and
	// AfterRestart those containerd reports after a restart.
	Exits        []int32
	AfterRestart []int32
	ReadyAfter   time.Duration
}

func (s *DiskFull) defaults() {
	if s.Pods == 0 {
		s.Pods = 4
	}
	if s.Full == 0 {
		s.Full = 10 * time.Second
	}
}

// Run plays the scenario on node, whose root and state are in dir.
func (s DiskFull) Run(ctx context.Context, build string, node *Node, dir string) (DiskFullResult, error) {
	s.defaults()
	res := DiskFullResult{Build: build}
	var tickers []*Ticker
	for i := 0; i < s.Pods; i++ {
		tk, err := node.StartTicker(ctx, fmt.Sprintf("full-%d", i))
		if err != nil {
			return res, err
		}
		tickers = append(tickers, tk)
	}

	filler, err := fault.Fill(dir)
	if err != nil {
		return res, err
	}
	defer func() { _ = filler.Free() }()
	res.Filled = filler.Bytes
	s.Logf.printf("%s: filled the disk (%d bytes)", build, filler.Bytes)

	loops := &diskFullLoops{node: node, tickers: tickers}
	loopCtx, stopLoops := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); loops.readLoop(loopCtx) }()
	go func() { defer wg.Done(); loops.updateLoop(loopCtx) }()

	time.Sleep(2 * time.Second)
	for _, tk := range tickers {
		if err := syscall.Kill(tk.InitPID, syscall.SIGKILL); err != nil {
			stopLoops()
			wg.Wait()
			return res, fmt.Errorf("kill init %d of %s: %w", tk.InitPID, tk.ID, err)
		}
	}
	sleepCtx(ctx, s.Full)
	res.ExitedWhileFull = len(loops.exited())
	stopLoops()
	wg.Wait()
	loops.fill(&res)

	if err := filler.Free(); err != nil {
		return res, err
	}
	s.Logf.printf("%s: freed the disk; %d of %d containers were reported EXITED while it was full", build, res.ExitedWhileFull, len(tickers))
	if res.Exits, err = waitExits(ctx, node, tickers, time.Minute); err != nil {
		return res, err
	}

	_, ready, err := restart(ctx, node)
	res.ReadyAfter = ready
	if err != nil {
		return res, err
	}
	res.AfterRestart, err = waitExits(ctx, node, tickers, time.Minute)
	return res, err
}

// waitExits waits up to timeout for every ticker to be EXITED and returns
// their exit codes (-1 for one that is not).
func waitExits(ctx context.Context, node *Node, tickers []*Ticker, timeout time.Duration) ([]int32, error) {
	deadline := time.Now().Add(timeout)
	for {
		codes := make([]int32, len(tickers))
		done := true
		for i, tk := range tickers {
			st, err := node.CRI.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: tk.ID})
			if err != nil || st.Status.State != runtimeapi.ContainerState_CONTAINER_EXITED {
				codes[i], done = -1, false
				continue
			}
			codes[i] = st.Status.ExitCode
		}
		if done || time.Now().After(deadline) || ctx.Err() != nil {
			sort.Slice(codes, func(i, j int) bool { return codes[i] < codes[j] })
			if !done {
				return codes, errors.New("not every container was reported EXITED in time")
			}
			return codes, nil
		}
		sleepCtx(ctx, 500*time.Millisecond)
	}
}

// diskFullLoops reads CRI like kubelet's PLEG and updates resources like
// its CPU manager while the disk is full.
type diskFullLoops struct {
	node    *Node
	tickers []*Ticker

	mu         sync.Mutex
	readMax    time.Duration
	reads      int
	readErrs   []string
	updates    int
	updateErrs []string
	exitedIDs  map[string]bool
}

func (l *diskFullLoops) readLoop(ctx context.Context) {
	for ctx.Err() == nil {
		for _, tk := range l.tickers {
			l.read(ctx, "ContainerStatus", func(rctx context.Context) error {
				st, err := l.node.CRI.ContainerStatus(rctx, &runtimeapi.ContainerStatusRequest{ContainerId: tk.ID})
				if err == nil && st.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED {
					l.mu.Lock()
					if l.exitedIDs == nil {
						l.exitedIDs = map[string]bool{}
					}
					l.exitedIDs[tk.ID] = true
					l.mu.Unlock()
				}
				return err
			})
		}
		l.read(ctx, "ListContainers", func(rctx context.Context) error {
			_, err := l.node.CRI.ListContainers(rctx, &runtimeapi.ListContainersRequest{})
			return err
		})
		sleepCtx(ctx, statusEvery)
	}
}

func (l *diskFullLoops) read(ctx context.Context, name string, call func(context.Context) error) {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	start := time.Now()
	err := call(rctx)
	took := time.Since(start)
	if ctx.Err() != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reads++
	l.readMax = max(l.readMax, took)
	if err != nil {
		l.readErrs = append(l.readErrs, name+": "+err.Error())
	}
}

func (l *diskFullLoops) updateLoop(ctx context.Context) {
	shares := int64(300)
	for ctx.Err() == nil {
		for _, tk := range l.tickers {
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := l.node.CRI.UpdateCPU(rctx, tk.ID, shares)
			cancel()
			if ctx.Err() != nil {
				return
			}
			l.mu.Lock()
			l.updates++
			if err != nil {
				l.updateErrs = append(l.updateErrs, err.Error())
			}
			l.mu.Unlock()
		}
		shares++
		sleepCtx(ctx, 500*time.Millisecond)
	}
}

func (l *diskFullLoops) exited() map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]bool{}
	for id := range l.exitedIDs {
		out[id] = true
	}
	return out
}

func (l *diskFullLoops) fill(res *DiskFullResult) {
	l.mu.Lock()
	defer l.mu.Unlock()
	res.ReadMax, res.Reads, res.ReadErrs = l.readMax, l.reads, l.readErrs
	res.Updates, res.UpdateErrs = l.updates, l.updateErrs
}

// ErrorsNamingFullDisk splits errs into those that say the disk is full
// and the others.
func ErrorsNamingFullDisk(errs []string) (full, other []string) {
	for _, e := range errs {
		if strings.Contains(e, syscall.ENOSPC.Error()) {
			full = append(full, e)
		} else {
			other = append(other, e)
		}
	}
	return full, other
}
