// Package relist probes a CRI runtime the way kubelet's generic PLEG does:
// ListPodSandbox and ListContainers, then a one second pause, again and
// again, recording how long each relist took and which container states
// it saw.
package relist

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// HealthThreshold is kubelet's genericPlegRelistThreshold: a relist that
// has not completed for this long makes the node NotReady.
const HealthThreshold = 3 * time.Minute

// RequestTimeout is kubelet's default runtimeRequestTimeout.
const RequestTimeout = 2 * time.Minute

// Sample is one relist.
type Sample struct {
	Start    time.Time
	Duration time.Duration
	Err      error
}

// StateChange is the first time a relist saw a container in a state.
type StateChange struct {
	At    time.Time
	State runtimeapi.ContainerState
}

// Probe is a running relist loop.
type Probe struct {
	client   runtimeapi.RuntimeServiceClient
	interval time.Duration
	cancel   context.CancelFunc
	done     chan struct{}

	mu       sync.Mutex
	samples  []Sample
	states   map[string][]StateChange
	inFlight time.Time // start of the relist under way, zero between relists
}

// Start begins relisting every interval (the pause after each relist, as
// kubelet's wait.Until does) until Stop.
func Start(ctx context.Context, client runtimeapi.RuntimeServiceClient, interval time.Duration) *Probe {
	ctx, cancel := context.WithCancel(ctx)
	p := &Probe{client: client, interval: interval, cancel: cancel, done: make(chan struct{}), states: map[string][]StateChange{}}
	go p.loop(ctx)
	return p
}

func (p *Probe) loop(ctx context.Context) {
	defer close(p.done)
	for {
		p.relist(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(p.interval):
		}
	}
}

func (p *Probe) relist(ctx context.Context) {
	start := time.Now()
	p.mu.Lock()
	p.inFlight = start
	p.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	_, err := p.client.ListPodSandbox(rctx, &runtimeapi.ListPodSandboxRequest{})
	var containers []*runtimeapi.Container
	if err == nil {
		var resp *runtimeapi.ListContainersResponse
		resp, err = p.client.ListContainers(rctx, &runtimeapi.ListContainersRequest{})
		if resp != nil {
			containers = resp.Containers
		}
	}
	end := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inFlight = time.Time{}
	if ctx.Err() != nil {
		// Stopped while listing: Stop already counted it as unfinished.
		return
	}
	p.samples = append(p.samples, Sample{Start: start, Duration: end.Sub(start), Err: err})
	for _, c := range containers {
		seen := p.states[c.Id]
		if len(seen) == 0 || seen[len(seen)-1].State != c.State {
			p.states[c.Id] = append(seen, StateChange{At: end, State: c.State})
		}
	}
}

// Stop ends the loop and returns what it measured. A relist still under
// way counts with the time it has taken so far, as ErrUnfinished.
func (p *Probe) Stop() Result {
	p.mu.Lock()
	if !p.inFlight.IsZero() {
		p.samples = append(p.samples, Sample{Start: p.inFlight, Duration: time.Since(p.inFlight), Err: ErrUnfinished})
	}
	p.mu.Unlock()
	p.cancel()
	<-p.done
	return p.Result()
}

// ErrUnfinished marks a relist that was still waiting when the probe stopped.
var ErrUnfinished = errors.New("relist still under way when the probe stopped")

// Result summarises the relists so far.
func (p *Probe) Result() Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := Result{Samples: append([]Sample(nil), p.samples...), States: map[string][]StateChange{}}
	for id, s := range p.states {
		r.States[id] = append([]StateChange(nil), s...)
	}
	r.summarise()
	return r
}

// Result is what a probe measured.
type Result struct {
	Samples []Sample
	States  map[string][]StateChange
	Max     time.Duration
	P50     time.Duration
	P99     time.Duration
	Errors  int
	// Unhealthy is true when kubelet would have reported PLEG unhealthy:
	// a relist took longer than HealthThreshold.
	Unhealthy bool
}

func (r *Result) summarise() {
	durations := make([]time.Duration, 0, len(r.Samples))
	for _, s := range r.Samples {
		durations = append(durations, s.Duration)
		if s.Err != nil {
			r.Errors++
		}
	}
	if len(durations) == 0 {
		return
	}
	sort.Slice(durations, func(i, j int) bool { return durations[i] < durations[j] })
	r.Max = durations[len(durations)-1]
	r.P50 = Percentile(durations, 50)
	r.P99 = Percentile(durations, 99)
	r.Unhealthy = r.Max > HealthThreshold
}

// Percentile returns the p-th percentile (nearest rank) of sorted durations.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted))+0.999999) - 1
	if rank < 0 {
		rank = 0
	}
	if rank >= len(sorted) {
		rank = len(sorted) - 1
	}
	return sorted[rank]
}

// Seen reports whether any relist saw container id in state.
func (r Result) Seen(id string, state runtimeapi.ContainerState) bool {
	for _, s := range r.States[id] {
		if s.State == state {
			return true
		}
	}
	return false
}

// FirstSeen returns when a relist first saw container id in state.
func (r Result) FirstSeen(id string, state runtimeapi.ContainerState) (time.Time, bool) {
	for _, s := range r.States[id] {
		if s.State == state {
			return s.At, true
		}
	}
	return time.Time{}, false
}
