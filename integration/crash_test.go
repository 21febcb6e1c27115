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

// crashRun is what the crash scenario saw on one build, cleanup included.
type crashRun struct {
	incident.CrashResult
	Left     incident.Leftovers
	RemoveOK bool
	Check    string // what 'bbolt check' printed, or its error
	CheckOK  bool
}

// TestCrashInTheMiddle (issue 14): 20 pods exit at once while their
// shims' unmounts are delayed; 5 s later containerd is killed with SIGKILL
// and started again on the same root; 5 s after that 3 shims are killed
// while their deletes are stuck. The fork never reports a container
// UNKNOWN or loses one from ListContainers, records every exit it had
// observed with its real code, answers CRI within 5 s of its restart, and
// once everything is removed leaves no shim, mount or snapshot behind and
// a meta.db that passes 'bbolt check'. Upstream's figures are printed
// beside it.
func TestCrashInTheMiddle(t *testing.T) {
	bbolt := bboltBinary(t)
	pods := crashPods(t)
	d := delay(t)
	runs := bothBuilds(t, "builds", func(t *testing.T, b incident.Build) crashRun {
		return runCrash(t, b, bbolt, incident.Crash{Pods: pods, Delay: d})
	})
	t.Log("\n" + crashReport(runs, pods, d))
}

func runCrash(t *testing.T, b incident.Build, bbolt string, s incident.Crash) crashRun {
	node, dir := startNode(t, b, daemon.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*s.Delay+8*time.Minute)
	defer cancel()
	s.Logf = t.Logf
	res, err := s.Run(ctx, b.Name, node, t.TempDir())
	require.NoError(t, err)
	run := crashRun{CrashResult: res}

	left, err := incident.RemoveAll(ctx, node, dir, time.Minute)
	run.Left, run.RemoveOK = left, err == nil
	if err != nil {
		t.Logf("%s: removing everything: %v", b.Name, err)
	}
	require.NoError(t, node.Daemon.Stop(ctx))
	run.Check, err = incident.CheckMetaDB(ctx, bbolt, node.Daemon)
	run.CheckOK = err == nil
	if err != nil {
		run.Check = err.Error()
	}
	reports, affected := res.UnknownReports()
	lostObserved, lostUnobserved := res.LostExits()
	t.Logf("%s: UNKNOWN %d times (%d containers); exits %s; lost observed %d, unobserved %d; CRI back after %s; left %+v; bbolt check: %s",
		b.Name, reports, affected, res.Exits(), len(lostObserved), len(lostUnobserved), res.ReadyAfter.Round(time.Millisecond), run.Left, run.Check)
	if b.Name != "fork" {
		// The incident must be there on upstream, or the scenario proves
		// nothing about the fork.
		assert.True(t, reports > 0 || len(lostObserved) > 0 || res.ReadyAfter > 5*time.Second,
			"upstream reported no UNKNOWN, lost no exit and answered CRI at once: the scenario did not reach the incident")
		return run
	}
	assert.Len(t, res.Containers, s.Pods)
	assert.Zero(t, reports, "the fork must never report a container UNKNOWN")
	for _, c := range res.Containers {
		assert.Zero(t, c.Missing, "%s: missing from ListContainers after the restart", c.ID)
	}
	assert.Empty(t, lostObserved, "the fork must keep every exit it observed before it was killed")
	for _, c := range lostUnobserved {
		assert.Equal(t, "Unknown", c.Reason, "%s: an exit containerd could not observe must say so (exit code %d)", c.ID, c.ExitCode)
	}
	assert.LessOrEqual(t, res.ReadyAfter, 5*time.Second, "CRI must answer within 5 s of the restart")
	assert.True(t, run.RemoveOK, "every container and pod must be removable")
	assert.True(t, run.Left.Empty(), "nothing may be left: %+v", run.Left)
	assert.True(t, run.CheckOK, "meta.db must pass bbolt check: %s", run.Check)
	return run
}

// crashReport prints the fork and upstream side by side.
func crashReport(runs map[string]crashRun, pods int, d time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Crash in the middle: %d pods killed, umount2 delayed %s, containerd SIGKILLed 5 s later, 3 shims SIGKILLed 5 s after its restart\n", pods, d)
	fmt.Fprintf(&b, "%-40s %24s %24s\n", "", "fork", "upstream")
	row := func(label string, f func(crashRun) string) {
		fmt.Fprintf(&b, "%-40s %24s %24s\n", label, f(runs["fork"]), f(runs["upstream"]))
	}
	row("UNKNOWN reports (containers)", func(r crashRun) string {
		n, c := r.UnknownReports()
		return fmt.Sprintf("%d (%d)", n, c)
	})
	row("missing from a list after restart", func(r crashRun) string {
		n := 0
		for _, c := range r.Containers {
			n += c.Missing
		}
		return strconv.Itoa(n)
	})
	row("exits observed before the crash", func(r crashRun) string {
		n := 0
		for _, c := range r.Containers {
			if c.Observed {
				n++
			}
		}
		return fmt.Sprintf("%d of %d", n, len(r.Containers))
	})
	row("lost exit codes: observed / not", func(r crashRun) string {
		o, u := r.LostExits()
		return fmt.Sprintf("%d / %d", len(o), len(u))
	})
	row("restart -> CRI answers", func(r crashRun) string { return r.ReadyAfter.Round(100 * time.Millisecond).String() })
	row("shims / mounts / snapshots left", func(r crashRun) string {
		return fmt.Sprintf("%d / %d / %d", len(r.Left.Shims), len(r.Left.Mounts), len(r.Left.Snapshots))
	})
	row("everything removed", func(r crashRun) string { return strconv.FormatBool(r.RemoveOK) })
	row("bbolt check", func(r crashRun) string {
		if r.CheckOK {
			return r.Check
		}
		return "FAILED"
	})
	for _, name := range []string{"fork", "upstream"} {
		fmt.Fprintf(&b, "%s final exits: %s\n", name, runs[name].Exits())
	}
	return b.String()
}

// bboltBinary is $STEADY_BBOLT, as 'make integration' passes it from
// script/bbolt.sh.
func bboltBinary(t *testing.T) string {
	t.Helper()
	p := os.Getenv("STEADY_BBOLT")
	if p == "" {
		t.Fatalf("STEADY_BBOLT is not set: run 'make integration', or set it to the output of script/bbolt.sh")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no bbolt at %s: run script/bbolt.sh (%v)", p, err)
	}
	return p
}

// crashPods is $STEADY_CRASH_PODS, 20 by default.
func crashPods(t *testing.T) int {
	n := envInt(t, "STEADY_CRASH_PODS", 20)
	if n < 4 {
		t.Fatalf("STEADY_CRASH_PODS=%d: the scenario kills 3 shims, want at least 4 pods", n)
	}
	return n
}
