package integration

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-steady/containerd-steady/pkg/daemon"
	"github.com/containerd-steady/containerd-steady/pkg/incident"
)

// TestSoak (issue 14) runs many containers with resource updates at 50/s
// in total, a relist every second, and one container exiting and being
// replaced every 10 s (every 5th with its shim's umount2 delayed), on the
// fork and upstream side by side, sampling containerd's goroutines, RSS and open fds.
// 'make soak' runs 200 containers for 20 minutes (STEADY_SOAK_CONTAINERS,
// STEADY_SOAK_DURATION); 'make test' a 2-minute version with 20. The fork's
// goroutines and fds must not grow beyond what the churn explains, nor its
// RSS double; the slopes are printed beside upstream's.
func TestSoak(t *testing.T) {
	s := incident.Soak{
		Containers: envInt(t, "STEADY_SOAK_CONTAINERS", 20),
		Duration:   envDuration(t, "STEADY_SOAK_DURATION", 2*time.Minute),
		Delay:      delay(t),
		Logf:       t.Logf,
	}
	s.SampleEvery = min(30*time.Second, s.Duration/8)
	runs := bothBuilds(t, "builds", func(t *testing.T, b incident.Build) incident.SoakResult {
		node, _ := startNode(t, b, daemon.Options{})
		ctx, cancel := context.WithTimeout(context.Background(), s.Duration+2*s.Delay+10*time.Minute)
		defer cancel()
		res, err := s.Run(ctx, b.Name, node, t.TempDir())
		require.NoError(t, err)
		if b.Name == "fork" {
			assertNoGrowth(t, res)
		}
		return res
	})
	t.Log("\n" + soakReport(s, runs))
}

// assertNoGrowth checks that the fork's footprint at the end of the soak is
// within what a steady state allows of its footprint once every container
// had started.
func assertNoGrowth(t *testing.T, r incident.SoakResult) {
	t.Helper()
	require.GreaterOrEqual(t, len(r.Samples), 3, "too few samples")
	first, last := r.Samples[0], r.Samples[len(r.Samples)-1]
	assert.LessOrEqual(t, last.Goroutines, first.Goroutines+first.Goroutines/10+50,
		"goroutines grew from %d to %d", first.Goroutines, last.Goroutines)
	assert.LessOrEqual(t, last.FDs, first.FDs+first.FDs/10+50, "open fds grew from %d to %d", first.FDs, last.FDs)
	assert.LessOrEqual(t, last.RSS, 2*first.RSS, "RSS grew from %d to %d bytes", first.RSS, last.RSS)
	assert.False(t, r.Relist.Unhealthy, "a relist took longer than kubelet's PLEG threshold")
}

func soakReport(s incident.Soak, runs map[string]incident.SoakResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Soak: %d containers for %s, updates 50/s, relist 1/s, one replaced every 10 s (every 5th delayed %s)\n",
		s.Containers, s.Duration, s.Delay)
	fmt.Fprintf(&b, "%-36s %24s %24s\n", "", "fork", "upstream")
	row := func(label string, f func(incident.SoakResult) string) {
		fmt.Fprintf(&b, "%-36s %24s %24s\n", label, f(runs["fork"]), f(runs["upstream"]))
	}
	ends := func(f func(incident.SoakSample) string) func(incident.SoakResult) string {
		return func(r incident.SoakResult) string {
			if len(r.Samples) == 0 {
				return "-"
			}
			return f(r.Samples[0]) + " -> " + f(r.Samples[len(r.Samples)-1])
		}
	}
	row("goroutines", ends(func(s incident.SoakSample) string { return strconv.Itoa(s.Goroutines) }))
	row("RSS (MiB)", ends(func(s incident.SoakSample) string { return fmt.Sprintf("%.1f", float64(s.RSS)/(1<<20)) }))
	row("open fds", ends(func(s incident.SoakSample) string { return strconv.Itoa(s.FDs) }))
	row("slope goroutines / fds per min", func(r incident.SoakResult) string {
		g, _, f := r.Slopes()
		return fmt.Sprintf("%+.1f / %+.1f", g, f)
	})
	row("slope RSS per min (KiB)", func(r incident.SoakResult) string {
		_, m, _ := r.Slopes()
		return fmt.Sprintf("%+.0f", m/1024)
	})
	row("relist p50 / p99 / max", func(r incident.SoakResult) string {
		d := func(v time.Duration) string { return v.Round(time.Millisecond).String() }
		return d(r.Relist.P50) + " / " + d(r.Relist.P99) + " / " + d(r.Relist.Max)
	})
	row("updates (failed)", func(r incident.SoakResult) string { return fmt.Sprintf("%d (%d)", r.Updates, r.UpdateErrs) })
	row("replaced (delayed)", func(r incident.SoakResult) string { return fmt.Sprintf("%d (%d)", r.Replaced, r.Delayed) })
	return b.String()
}

// envInt is the integer in the environment variable name, or def.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// envDuration is the duration in the environment variable name, or def.
func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration", name, v)
	}
	return d
}
