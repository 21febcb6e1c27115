package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/containerd-steady/containerd-steady/pkg/cri"
	"github.com/containerd-steady/containerd-steady/pkg/daemon"
	"github.com/containerd-steady/containerd-steady/pkg/fault"
	"github.com/containerd-steady/containerd-steady/pkg/incident"
	"github.com/containerd-steady/containerd-steady/pkg/kubelet"
)

// The standalone-kubelet scenarios (issue 7): a real kubelet (built by
// script/kubelet.sh) drives the fork and upstream through static pods, and
// kubelet itself says whether its PLEG stays healthy and whether a finished
// pod runs twice. 'make test-kubelet' runs them with a reduced delay D;
// 'make e2e' with the full one.
//
// How kubelet 1.35 is made to call UpdateContainerResources on exiting
// containers, for real: only the static CPU manager's reconcile loop (and
// in-place resize) calls it, for running containers whose cpuset differs
// from what it last applied. The kubelet gets reservedSystemCPUs "0" on
// this 2-core machine and a Guaranteed pod "excl" with 1 CPU: while excl
// runs, every other container is pinned to the shared pool {0}. excl exits
// together with the short-lived pods; once kubelet has seen excl finish, the
// shared pool grows to {0,1} and the reconcile loop (period 1 s here) sends
// UpdateContainerResources to every container kubelet believes running -
// including the short-lived ones whose shims are stuck unmounting, which
// CRI still reports RUNNING. The test checks containerd's log for those
// calls ("UpdateContainerResources for <id>").
//
// The fork and upstream kubelets run in parallel. What kubelet writes
// outside its directories does not clash: each has its own cgroup root
// (kubelet deletes pod cgroups under its root that it does not know, so a
// shared /kubepods would make them kill each other's pods), its own ports,
// root, cert, log and plugin dirs. Shared and harmless: the hard-coded
// /var/lib/kubelet/device-plugins (the second kubelet replaces the first's
// registration socket; no device plugins here) and the sysctls kubelet sets
// (same values); pkg/kubelet restores both after the last kubelet stops.
// The two "exclusive" CPUs are the same CPU 1 for both kubelets, which is
// fine: exclusivity only matters for what the test measures inside one
// kubelet.

const (
	shortPods = 2 // restartPolicy=Never pods exiting under the delay
	// forkRelistBound is generous against a 2-core machine shared with
	// other jobs, and still far below kubelet's 3 min PLEG threshold.
	forkRelistBound = 15 * time.Second
	plegThreshold   = 3 * time.Minute
	syncFrequency   = 10 * time.Second
)

// kubeletBinary is $STEADY_KUBELET, or the line's kubelet as
// script/kubelet.sh builds it.
func kubeletBinary(t *testing.T) string {
	t.Helper()
	p := os.Getenv("STEADY_KUBELET")
	if p == "" {
		p = theLine(t).KubeletPath("")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no kubelet at %s: run 'script/kubelet.sh %s', or 'make test-kubelet' (%v)", p, theLine(t).Name, err)
	}
	return p
}

// kubeletDelay is D for these scenarios (STEADY_KUBELET_DELAY, default 30s).
func kubeletDelay(t *testing.T) time.Duration {
	v := os.Getenv("STEADY_KUBELET_DELAY")
	if v == "" {
		return 30 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 10*time.Second {
		t.Fatalf("STEADY_KUBELET_DELAY=%q: want a duration of at least 10s (%v)", v, err)
	}
	return d
}

// kubeletRun is what one scenario saw on one build.
type kubeletRun struct {
	Build          string
	RelistMaxGap   time.Duration // longest time between PLEG relists (kubelet's log)
	PLEGStale      time.Duration // longest time without a successful relist (kubelet's health measure)
	Relist         kubelet.Histogram
	LastSeenMaxAge time.Duration // now - kubelet_pleg_last_seen_seconds, over successful scrapes
	ScrapesFailed  int           // /metrics scrapes that timed out during the window
	Scrapes        int
	LongSyncs      int           // SyncPod of the long-running pod during the window
	LongSyncMaxGap time.Duration // longest time without one
	UpdatesExiting int           // UpdateContainerResources that reached an exiting container
	UpdateErrors   int           // kubelet's CPU manager logged "failed to update container" for one
	UpdatesDown    int           // of those, failed as Unavailable while containerd restarted (not counted above)
	Exited         time.Duration // trigger -> every short pod EXITED in CRI
	RestartReady   time.Duration // containerd restart -> CRI answers
	RecoveryErrors string        // containerd's errors from the restart until CRI answered
	Broken         []string      // the fork's contract, where it was not kept (forkBroken)
	PLEGUnhealthy  bool          // kubelet logged "PLEG is not healthy"
	CRIStarts      map[string]int
	LogStarts      map[string]int
	Attempts       map[string]uint32
	// The init container scenario: init exit -> next container started,
	// both from CRI's timestamps, and the containers each name ran.
	InitToNext time.Duration
	Runs       map[string]int
}

func TestKubelet(t *testing.T) {
	requireSetup(t, forkBuild(t), upstreamBuild(t))
	bin := kubeletBinary(t)
	d := kubeletDelay(t)
	t.Logf("kubelet %s, umount2 delay D=%s", bin, d)

	// What each scenario printed, printed once more at the end if any
	// failed: the failure's own message may be far above in a long log.
	var report []string
	tell := func(text string) {
		t.Log(text)
		report = append(report, text)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("TestKubelet failed; what each scenario saw, again:\n%s", strings.Join(report, "\n"))
		}
	})

	// A: short-lived pods exit while their shims' unmounts are slow.
	runs := bothBuilds(t, "ExitStall", func(t *testing.T, b incident.Build) kubeletRun {
		return runKubeletScenario(t, b, bin, d, false)
	})
	tell(runsTable("ExitStall", d, runs))
	// B: the same, and containerd restarts during the delay.
	runs = bothBuilds(t, "RestartDuringExit", func(t *testing.T, b incident.Build) kubeletRun {
		return runKubeletScenario(t, b, bin, d, true)
	})
	tell(runsTable("RestartDuringExit", d, runs))
	// C: a pod's init container exits while its shim's unmount is slow.
	runs = bothBuilds(t, "InitContainerExit", func(t *testing.T, b incident.Build) kubeletRun {
		return runInitScenario(t, b, bin, d)
	})
	tell(fmt.Sprintf("\nInitContainerExit, D=%s\n%-34s %14s %14s\n%-34s %14s %14s\n%-34s %14s %14s", d,
		"", "fork", "upstream",
		"init exit -> next container started", runs["fork"].InitToNext.Round(100*time.Millisecond), runs["upstream"].InitToNext.Round(100*time.Millisecond),
		"runs of init, main", perPod(runs["fork"].Runs), perPod(runs["upstream"].Runs)))
}

// runInitScenario plays seed 000 through a real kubelet: a static pod whose
// init container exits 0 at once while its shim's umount2 is delayed by d.
// kubelet starts the pod's container only once CRI reports the init
// container EXITED: on the fork within 3 s of its exit, on upstream once the
// delayed cleanup is over, at least d later. Each container runs once.
func runInitScenario(t *testing.T, b incident.Build, bin string, d time.Duration) kubeletRun {
	node, k, trigger := startKubeletNode(t, b, bin, b.Name+"-init")
	ctx, cancel := context.WithTimeout(context.Background(), 2*d+5*time.Minute)
	defer cancel()
	run := kubeletRun{Build: b.Name, Runs: map[string]int{}, Attempts: map[string]uint32{}}
	pod := k.PodName("job")
	addPod(t, k, kubelet.StaticPod{Name: "job", Image: node.Image, RestartPolicy: "Never",
		InitCommand: []string{"sh", "-c", "while [ ! -e /trigger/go ]; do sleep 0.05; done"},
		Command:     []string{"sh", "-c", "while true; do sleep 1; done"},
		HostPaths:   map[string]string{"/trigger": trigger}})
	initID := waitRunning(ctx, t, node, []string{pod})[pod]

	delayUnmounts(ctx, t, node, initID, d)

	seen := map[string]map[string]bool{}
	poll := func() (mainID string) {
		for _, c := range listPod(ctx, node, pod) {
			name := c.GetMetadata().GetName()
			if seen[name] == nil {
				seen[name] = map[string]bool{}
			}
			seen[name][c.Id] = true
			run.Attempts[name] = max(run.Attempts[name], c.GetMetadata().GetAttempt())
			if name == "main" && c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
				mainID = c.Id
			}
		}
		return mainID
	}
	require.NoError(t, os.WriteFile(filepath.Join(trigger, "go"), nil, 0o644))
	var mainID string
	waitUntil(ctx, 2*d+2*time.Minute, func() bool {
		mainID = poll()
		return mainID != ""
	})
	require.NotEmpty(t, mainID, "kubelet never started the pod's container; kubelet log:\n%s", k.LogTail(40))
	initSt, err := node.CRI.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: initID})
	require.NoError(t, err)
	mainSt, err := node.CRI.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: mainID})
	require.NoError(t, err)
	assert.Zero(t, initSt.Status.ExitCode, "the init container exits 0")
	run.InitToNext = time.Duration(mainSt.Status.StartedAt - initSt.Status.FinishedAt)
	// Let kubelet act on what it saw: it would run a container again now.
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		poll()
	}
	for name, ids := range seen {
		run.Runs[name] = len(ids)
	}
	t.Logf("%s: init exit -> next container started %s; runs %v, attempts %v",
		b.Name, run.InitToNext.Round(time.Millisecond), run.Runs, run.Attempts)

	assert.Equal(t, map[string]int{"init": 1, "main": 1}, run.Runs, "each container of the pod runs exactly once")
	assert.Equal(t, map[string]uint32{"init": 0, "main": 0}, run.Attempts, "no container gets a second attempt")
	if b.Name == "upstream" {
		assert.GreaterOrEqual(t, run.InitToNext, d, "upstream starts the next container only after the init container's delayed cleanup")
		return run
	}
	assert.LessOrEqual(t, run.InitToNext, 3*time.Second, "the fork starts the next container within 3 s of the init container's exit")
	return run
}

// runsTable is one kubelet scenario's figures, fork beside upstream, and
// whatever the fork's contract missed.
func runsTable(name string, d time.Duration, runs map[string]kubeletRun) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s, D=%s (kubelet's PLEG threshold %s)\n", name, d, plegThreshold)
	fmt.Fprintf(&b, "%-34s %14s %14s\n", "", "fork", "upstream")
	row := func(label string, f func(kubeletRun) string) {
		fmt.Fprintf(&b, "%-34s %14s %14s\n", label, f(runs["fork"]), f(runs["upstream"]))
	}
	dur := func(v time.Duration) string { return v.Round(100 * time.Millisecond).String() }
	row("longest gap between relists", func(r kubeletRun) string { return dur(r.RelistMaxGap) })
	row("longest without successful relist", func(r kubeletRun) string { return dur(r.PLEGStale) })
	row("relists > 1 s / > 10 s (metric)", func(r kubeletRun) string {
		return fmt.Sprintf("%.0f / %.0f", r.Relist.Above(1), r.Relist.Above(10))
	})
	row("relist mean (metric)", func(r kubeletRun) string {
		return dur(time.Duration(r.Relist.Mean() * float64(time.Second)))
	})
	row("max age of pleg_last_seen", func(r kubeletRun) string { return dur(r.LastSeenMaxAge) })
	row("/metrics scrapes timed out", func(r kubeletRun) string { return fmt.Sprintf("%d of %d", r.ScrapesFailed, r.Scrapes) })
	row("long pod syncs (max gap)", func(r kubeletRun) string {
		return fmt.Sprintf("%d (%s)", r.LongSyncs, dur(r.LongSyncMaxGap))
	})
	row("updates reaching exiting ctrs", func(r kubeletRun) string { return fmt.Sprint(r.UpdatesExiting) })
	row("updates failed (kubelet log)", func(r kubeletRun) string { return fmt.Sprint(r.UpdateErrors) })
	row("updates failed, containerd down", func(r kubeletRun) string { return fmt.Sprint(r.UpdatesDown) })
	row("exits -> all EXITED in CRI", func(r kubeletRun) string { return dur(r.Exited) })
	row("restart -> CRI ready", func(r kubeletRun) string {
		if r.RestartReady == 0 {
			return "-"
		}
		return dur(r.RestartReady)
	})
	row("PLEG not healthy logged", func(r kubeletRun) string { return fmt.Sprint(r.PLEGUnhealthy) })
	row("runs per short pod (CRI/log)", func(r kubeletRun) string {
		return perPod(r.CRIStarts) + " / " + perPod(r.LogStarts)
	})
	if _, ok := runs["fork"]; !ok {
		b.WriteString("the fork's scenario stopped before its end: see its log above\n")
	}
	for _, broken := range runs["fork"].Broken {
		fmt.Fprintf(&b, "fork broke: %s\n", broken)
	}
	return "\n" + b.String()
}

// perPod lists the counts of a map in the order of its sorted keys.
func perPod(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var vals []string
	for _, k := range keys {
		vals = append(vals, fmt.Sprint(m[k]))
	}
	return strings.Join(vals, ",")
}

// suffering lists, in kubelet's own signals, what kubelet suffered while
// the short pods exited under the umount2 delay d: relists that waited for
// the runtime (1.7 blocks them for about 2*D), relists over a second in its
// histogram and resource updates that failed (2.x fails them after 2 s),
// PLEG reported unhealthy, the finished pods reported EXITED only after
// their cleanup (at least D after their exit; 2.x even later, as it retries
// the exit through a backoff queue), or a finished pod run again.
func (r kubeletRun) suffering(d time.Duration) []string {
	var out []string
	add := func(cond bool, format string, args ...any) {
		if cond {
			out = append(out, fmt.Sprintf(format, args...))
		}
	}
	add(r.RelistMaxGap >= d, "longest gap between relists %s (D=%s)", r.RelistMaxGap.Round(time.Millisecond), d)
	add(r.Relist.Above(1) > 0, "%.0f relists over 1 s (kubelet_pleg_relist_duration_seconds)", r.Relist.Above(1))
	add(r.UpdateErrors > 0, "%d failed updates of exiting containers (CPU manager)", r.UpdateErrors)
	add(r.PLEGUnhealthy, "PLEG reported unhealthy")
	add(r.Exited >= d, "short pods reported EXITED %s after their exit, so kubelet could not act on them until then (D=%s)", r.Exited.Round(time.Millisecond), d)
	for p, n := range r.CRIStarts {
		add(n > 1 || r.LogStarts[p] > 1 || r.Attempts[p] > 0, "finished pod %s ran again (CRI %d, log %d starts)", p, n, r.LogStarts[p])
	}
	return out
}

// forkBroken lists what the fork promises a kubelet in these scenarios and
// did not keep: PLEG healthy and relisting promptly, no failed update of an
// exiting container, every finished pod run exactly once; without a
// restart, the short pods EXITED at once and the long pod synced on time;
// with one, CRI back within 5 s although the deletes are still stuck.
func (r kubeletRun) forkBroken(restart bool) []string {
	var out []string
	add := func(cond bool, format string, args ...any) {
		if cond {
			out = append(out, fmt.Sprintf(format, args...))
		}
	}
	add(r.UpdateErrors > 0, "kubelet's CPU manager failed %d updates of exiting containers", r.UpdateErrors)
	add(r.RelistMaxGap >= forkRelistBound, "longest gap between relists %s, want < %s", r.RelistMaxGap.Round(time.Millisecond), forkRelistBound)
	add(r.PLEGStale >= plegThreshold, "PLEG went %s without a successful relist, kubelet's threshold is %s", r.PLEGStale.Round(time.Millisecond), plegThreshold)
	add(r.PLEGUnhealthy, "kubelet reported PLEG unhealthy")
	if restart {
		// kubelet has stopped the finished pods' sandboxes by now, and
		// their shims are still unmounting: recovery must not wait for them.
		add(r.RestartReady >= 5*time.Second, "CRI answered %s after the restart during the delayed deletes, want < 5s; errors while it recovered:\n%s",
			r.RestartReady.Round(time.Millisecond), r.RecoveryErrors)
	} else {
		add(r.Exited >= 5*time.Second, "short pods reported EXITED %s after their exit, not at once (< 5s)", r.Exited.Round(time.Millisecond))
		add(r.PLEGStale >= forkRelistBound, "PLEG went %s without a successful relist, want < %s", r.PLEGStale.Round(time.Millisecond), forkRelistBound)
		add(r.Relist.Above(10) > 0, "%.0f relists over 10 s", r.Relist.Above(10))
		add(r.LongSyncs < 2, "the long-running pod was synced %d times, want at least 2 (every %s)", r.LongSyncs, syncFrequency)
		add(r.LongSyncMaxGap >= 3*syncFrequency, "the long-running pod went %s without a sync, want < %s", r.LongSyncMaxGap.Round(time.Millisecond), 3*syncFrequency)
	}
	pods := make([]string, 0, len(r.CRIStarts))
	for p := range r.CRIStarts {
		pods = append(pods, p)
	}
	sort.Strings(pods)
	for _, p := range pods {
		add(r.CRIStarts[p] != 1 || r.LogStarts[p] != 1 || r.Attempts[p] != 0,
			"finished pod %s ran %d times in CRI, %d in kubelet's Started events, last attempt %d; want once, attempt 0",
			p, r.CRIStarts[p], r.LogStarts[p], r.Attempts[p])
	}
	return out
}

// runKubeletScenario plays one scenario on a fresh containerd and kubelet.
func runKubeletScenario(t *testing.T, b incident.Build, bin string, d time.Duration, restart bool) kubeletRun {
	scen := "exit"
	if restart {
		scen = "restart"
	}
	node, k, trigger := startKubeletNode(t, b, bin, b.Name+"-"+scen)
	ctx, cancel := context.WithTimeout(context.Background(), 4*d+10*time.Minute)
	defer cancel()
	run := kubeletRun{Build: b.Name}

	// The pods. excl first, so the others are created in the shared pool.
	waitLoop := []string{"sh", "-c", "while [ ! -e /trigger/go ]; do sleep 0.2; done; echo done"}
	hostPaths := map[string]string{"/trigger": trigger}
	addPod(t, k, kubelet.StaticPod{Name: "excl", Image: node.Image, Command: waitLoop, RestartPolicy: "Never",
		CPU: "1", Memory: "64Mi", HostPaths: hostPaths})
	waitRunning(ctx, t, node, []string{k.PodName("excl")})
	pods := []string{k.PodName("long")}
	addPod(t, k, kubelet.StaticPod{Name: "long", Image: node.Image,
		Command: []string{"sh", "-c", "while true; do sleep 1; done"}})
	var shorts []string
	for i := 0; i < shortPods; i++ {
		name := fmt.Sprintf("short-%d", i)
		addPod(t, k, kubelet.StaticPod{Name: name, Image: node.Image, Command: waitLoop, RestartPolicy: "Never", HostPaths: hostPaths})
		shorts = append(shorts, k.PodName(name))
	}
	pods = append(pods, shorts...)
	ids := waitRunning(ctx, t, node, pods)
	// Let the CPU manager settle (every container has had its cpuset).
	time.Sleep(3 * time.Second)

	// Delay umount2 in the short pods' shims.
	var delays []*fault.Delay
	for _, p := range shorts {
		delays = append(delays, delayUnmounts(ctx, t, node, ids[p], d))
	}

	m0, err := k.Metrics(ctx, 10*time.Second)
	require.NoError(t, err, "metrics before the exits")
	h0, _ := m0.Histogram(kubelet.PLEGRelistDuration)
	logStart := len(node.Daemon.Logs())
	starts := newStartCounter(shorts)
	starts.poll(ctx, node)

	// The exits: excl and the short pods end on their own, exit code 0.
	t0 := time.Now()
	require.NoError(t, os.WriteFile(filepath.Join(trigger, "go"), nil, 0o644))
	for _, f := range delays {
		require.NoError(t, f.WaitEntered(ctx, "umount2", 1, 30*time.Second), "the short pods' shims should start unmounting")
	}
	t.Logf("%s: short pods exited, their shims are unmounting (delayed %s each umount2)", b.Name, d)

	if restart {
		// Restart once kubelet's update has reached an exiting container
		// (or 15 s after the exits if it does not, as on a fork that
		// reports the exit at once), well inside the delayed delete.
		waitUntil(ctx, 15*time.Second, func() bool {
			return updatesTo(node.Daemon.Logs()[logStart:], ids, shorts) > 0
		})
		rs := time.Now()
		require.NoError(t, node.Daemon.Stop(ctx))
		logRestart := len(node.Daemon.Logs())
		require.NoError(t, node.Daemon.Launch())
		require.NoError(t, node.Daemon.WaitReady(ctx, 2*d+time.Minute), "containerd should serve CRI again")
		run.RestartReady = time.Since(rs)
		for _, l := range strings.Split(node.Daemon.Logs()[logRestart:], "\n") {
			if strings.Contains(l, "level=error") {
				run.RecoveryErrors += l + "\n"
			}
		}
		t.Logf("%s: containerd restarted %s after the exits; CRI answered %s after the restart",
			b.Name, rs.Sub(t0).Round(time.Millisecond), run.RestartReady.Round(time.Millisecond))
	}

	// Watch until every short pod is EXITED in CRI and every delayed
	// delete has ended (about 2*D; the fork reports EXITED before), polling
	// CRI like kubelet and scraping kubelet's metrics with a short timeout
	// (/metrics hangs while the runtime does).
	deadline := t0.Add(2*d + 2*time.Minute)
	lastScrape := time.Time{}
	for time.Now().Before(deadline) {
		if starts.poll(ctx, node) && run.Exited == 0 {
			run.Exited = time.Since(t0)
		}
		if run.Exited != 0 && fault.AllSettled(delays, "umount2", time.Second) {
			break
		}
		if time.Since(lastScrape) >= 5*time.Second {
			lastScrape = time.Now()
			run.Scrapes++
			if m, err := k.Metrics(ctx, 2*time.Second); err != nil {
				run.ScrapesFailed++
			} else if ls := m.LastSeen(); !ls.IsZero() {
				run.LastSeenMaxAge = max(run.LastSeenMaxAge, time.Since(ls))
			}
		}
		time.Sleep(time.Second)
	}
	require.NotZero(t, run.Exited, "every short pod should end EXITED within 2*D+2m; kubelet log:\n%s", k.LogTail(40))
	// Give kubelet time to act on what it saw: relist, and re-run a pod if
	// it ever would.
	settle := 5 * time.Second
	if restart {
		settle = 20 * time.Second
	}
	for end := time.Now().Add(settle); time.Now().Before(end); time.Sleep(time.Second) {
		starts.poll(ctx, node)
	}
	t1 := time.Now()

	m1, err := k.Metrics(ctx, 30*time.Second)
	require.NoError(t, err, "metrics after the exits")
	h1, _ := m1.Histogram(kubelet.PLEGRelistDuration)
	run.Relist = h1.Sub(h0)
	klog, err := k.Logs()
	require.NoError(t, err)
	lines := kubelet.ParseLog(klog, time.Now())
	run.RelistMaxGap, _ = kubelet.MaxGap(kubelet.Times(lines, kubelet.RelistMessage), t0, t1)
	run.PLEGStale = kubelet.PLEGStaleness(lines, t0, t1)
	var longSyncs []time.Time
	for _, l := range kubelet.Select(lines, "SyncPod enter", map[string]string{"pod": "default/" + k.PodName("long")}) {
		longSyncs = append(longSyncs, l.Time)
		if !l.Time.Before(t0) && !l.Time.After(t1) {
			run.LongSyncs++
		}
	}
	run.LongSyncMaxGap, _ = kubelet.MaxGap(longSyncs, t0, t1)
	// kubelet's health check says "PLEG is not healthy: pleg was last seen
	// active ... ago" once a relist is older than the threshold ("pleg has
	// yet to be successful" at start-up does not count).
	for _, l := range lines {
		if l.Time.After(t0) && strings.Contains(l.Msg, "pleg was last seen active") {
			run.PLEGUnhealthy = true
		}
	}
	run.UpdatesExiting = updatesTo(node.Daemon.Logs()[logStart:], ids, shorts)
	run.UpdateErrors, run.UpdatesDown = failedUpdates(lines, ids, shorts, t0, t1, restart)
	run.CRIStarts, run.Attempts = starts.result()
	run.LogStarts = map[string]int{}
	for _, p := range shorts {
		run.LogStarts[p] = len(kubelet.Select(lines, "Event occurred", map[string]string{"object": "default/" + p, "reason": "Started"}))
	}
	t.Logf("%s: relist max gap %s, without successful relist %s, relists>1s %.0f, long pod syncs %d (max gap %s), updates to exiting containers %d, starts CRI %v log %v",
		b.Name, run.RelistMaxGap.Round(time.Millisecond), run.PLEGStale.Round(time.Millisecond), run.Relist.Above(1), run.LongSyncs,
		run.LongSyncMaxGap.Round(time.Millisecond), run.UpdatesExiting, run.CRIStarts, run.LogStarts)

	// Every start must be visible both ways, or the counts below are moot.
	for _, p := range shorts {
		assert.GreaterOrEqual(t, run.CRIStarts[p], 1, "CRI never showed a container of %s", p)
		assert.GreaterOrEqual(t, run.LogStarts[p], 1, "kubelet never logged a Started event for %s", p)
	}
	if b.Name == "upstream" {
		// The path under test must really be taken: kubelet's own CPU
		// manager updated a container that was exiting.
		assert.Positive(t, run.UpdatesExiting, "kubelet's UpdateContainerResources never reached an exiting container: the scenario does not exercise incident I1")
		if !restart {
			// Incident I1 through a real kubelet, in kubelet's own signals.
			suffered := run.suffering(d)
			assert.NotEmpty(t, suffered, "kubelet suffered nothing on upstream: the scenario does not reach incident I1")
			t.Logf("upstream: what kubelet suffered:\n  %s", strings.Join(suffered, "\n  "))
		}
		for p, n := range run.CRIStarts {
			if n > 1 || run.LogStarts[p] > 1 {
				t.Logf("upstream ran finished pod %s again (CRI %d, log %d starts): incident I4", p, n, run.LogStarts[p])
			}
		}
		return run
	}
	// The fork's contract.
	run.Broken = run.forkBroken(restart)
	assert.Empty(t, run.Broken, "the fork broke its contract under a real kubelet")
	return run
}

// startKubeletNode starts a containerd of b and a standalone kubelet on
// it, and returns the host directory the pods' trigger lives in. Cleanup,
// last registered first: kubelet stops, containerd and its containers go,
// then the kubelet's cgroups (they empty only once the containers are gone).
func startKubeletNode(t *testing.T, b incident.Build, bin, nodeName string) (*incident.Node, *kubelet.Kubelet, string) {
	t.Helper()
	var k *kubelet.Kubelet
	t.Cleanup(func() {
		if k != nil {
			if err := k.RemoveCgroups(); err != nil {
				t.Errorf("kubelet cgroups: %v", err)
			}
		}
	})
	node, dir := startNode(t, b, daemon.Options{})
	kdir := filepath.Join(dir, "kubelet")
	trigger := filepath.Join(dir, "trigger")
	for _, p := range []string{kdir, trigger} {
		require.NoError(t, os.MkdirAll(p, 0o755))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var err error
	k, err = kubelet.Start(ctx, kubelet.Options{
		Binary:             bin,
		Dir:                kdir,
		CRISocket:          node.Daemon.Address,
		NodeName:           nodeName,
		ReservedCPUs:       "0",
		CPUReconcilePeriod: time.Second,
		SyncFrequency:      syncFrequency,
		// generic: PLEG relists; kubelet: SyncPod; event: Started events.
		VModule: "generic=5,kubelet=4,event=3",
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s kubelet log (tail):\n%s", b.Name, k.LogTail(60))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := k.Stop(ctx); err != nil {
			t.Errorf("stop kubelet: %v", err)
		}
	})
	return node, k, trigger
}

// delayUnmounts delays by d every umount2 of the shim serving container id,
// until t ends.
func delayUnmounts(ctx context.Context, t *testing.T, node *incident.Node, id string, d time.Duration) *fault.Delay {
	t.Helper()
	pid, err := node.CRI.InitPID(ctx, id)
	require.NoError(t, err)
	shim, err := cri.ShimPID(pid)
	require.NoError(t, err)
	f, err := fault.DelaySyscalls(ctx, shim, []string{"umount2"}, d, filepath.Join(t.TempDir(), "strace.log"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Detach() })
	return f
}

func addPod(t *testing.T, k *kubelet.Kubelet, p kubelet.StaticPod) {
	t.Helper()
	m, err := p.Manifest()
	require.NoError(t, err)
	require.NoError(t, k.AddStaticPod(p.Name, m))
}

// waitRunning waits until each pod has a RUNNING container and returns
// their ids.
func waitRunning(ctx context.Context, t *testing.T, node *incident.Node, pods []string) map[string]string {
	t.Helper()
	ids := map[string]string{}
	ok := waitUntil(ctx, 2*time.Minute, func() bool {
		for _, p := range pods {
			cs := listPod(ctx, node, p)
			for _, c := range cs {
				if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
					ids[p] = c.Id
				}
			}
		}
		return len(ids) == len(pods)
	})
	require.True(t, ok, "pods %v should run; running: %v\ncontainerd log:\n%s", pods, ids, node.Daemon.LogTail(30))
	return ids
}

// listPod lists the containers of a pod, with its own timeout.
func listPod(ctx context.Context, node *incident.Node, pod string) []*runtimeapi.Container {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := node.CRI.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		LabelSelector: map[string]string{"io.kubernetes.pod.name": pod},
	}})
	if err != nil {
		return nil
	}
	return resp.Containers
}

func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// updatesTo counts the UpdateContainerResources calls in a containerd log
// excerpt addressed to the containers of pods.
func updatesTo(log string, ids map[string]string, pods []string) int {
	n := 0
	for _, p := range pods {
		re := regexp.MustCompile(`UpdateContainerResources for \\?"` + regexp.QuoteMeta(ids[p]) + `\\?" with`)
		n += len(re.FindAllStringIndex(log, -1))
	}
	return n
}

// failedUpdates counts the updates of the pods' containers that kubelet's
// CPU manager logged as failed between from and to. With restart, those
// that failed as Unavailable are counted apart, as down: containerd was
// not there to answer them, which is the restart's doing, not an update
// that the runtime failed or left hanging.
func failedUpdates(lines []kubelet.LogLine, ids map[string]string, pods []string, from, to time.Time, restart bool) (failed, down int) {
	for _, p := range pods {
		for _, l := range kubelet.Select(lines, "failed to update container", map[string]string{"containerID": ids[p]}) {
			switch {
			case l.Time.Before(from) || l.Time.After(to):
			case restart && strings.Contains(l.KV["err"], "code = Unavailable"):
				down++
			default:
				failed++
			}
		}
	}
	return failed, down
}

// startCounter records every container CRI ever lists for some pods.
type startCounter struct {
	mu      sync.Mutex
	pods    []string
	seen    map[string]map[string]bool
	attempt map[string]uint32
}

func newStartCounter(pods []string) *startCounter {
	s := &startCounter{pods: pods, seen: map[string]map[string]bool{}, attempt: map[string]uint32{}}
	for _, p := range pods {
		s.seen[p] = map[string]bool{}
	}
	return s
}

// poll lists the pods' containers and reports whether each pod has at
// least one container and all of them are EXITED.
func (s *startCounter) poll(ctx context.Context, node *incident.Node) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	all := true
	for _, p := range s.pods {
		cs := listPod(ctx, node, p)
		if len(cs) == 0 {
			all = false
		}
		for _, c := range cs {
			s.seen[p][c.Id] = true
			s.attempt[p] = max(s.attempt[p], c.GetMetadata().GetAttempt())
			if c.State != runtimeapi.ContainerState_CONTAINER_EXITED {
				all = false
			}
		}
	}
	return all
}

func (s *startCounter) result() (map[string]int, map[string]uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	counts, attempts := map[string]int{}, map[string]uint32{}
	for p, ids := range s.seen {
		counts[p] = len(ids)
		attempts[p] = s.attempt[p]
	}
	return counts, attempts
}

// TestForkBroken checks the fork's contract under a real kubelet against
// runs that keep it and runs that each break one promise.
func TestForkBroken(t *testing.T) {
	kept := kubeletRun{
		RelistMaxGap: time.Second, PLEGStale: 2 * time.Second, Exited: 400 * time.Millisecond,
		RestartReady: 200 * time.Millisecond, LongSyncs: 5, LongSyncMaxGap: 14 * time.Second,
		CRIStarts: map[string]int{"short-0": 1, "short-1": 1},
		LogStarts: map[string]int{"short-0": 1, "short-1": 1},
		Attempts:  map[string]uint32{},
	}
	for _, tc := range []struct {
		name    string
		restart bool
		change  func(*kubeletRun)
		want    string // in the one broken promise; "" when none is
	}{
		{name: "kept"},
		{name: "kept, restart", restart: true},
		{name: "failed update", change: func(r *kubeletRun) { r.UpdateErrors = 1 }, want: "failed 1 updates"},
		{name: "relist gap", change: func(r *kubeletRun) { r.RelistMaxGap = forkRelistBound }, want: "longest gap between relists"},
		{name: "PLEG unhealthy", restart: true, change: func(r *kubeletRun) { r.PLEGUnhealthy = true }, want: "PLEG unhealthy"},
		{name: "slow restart", restart: true, change: func(r *kubeletRun) {
			r.RestartReady, r.RecoveryErrors = 6*time.Second, "level=error msg=boom"
		}, want: "boom"},
		{name: "late EXITED", change: func(r *kubeletRun) { r.Exited = 30 * time.Second }, want: "EXITED 30s"},
		{name: "late EXITED is fine across a restart", restart: true, change: func(r *kubeletRun) { r.Exited = 30 * time.Second }},
		{name: "long pod not synced", change: func(r *kubeletRun) { r.LongSyncs = 1 }, want: "synced 1 times"},
		{name: "ran twice in CRI", restart: true, change: func(r *kubeletRun) {
			r.CRIStarts = map[string]int{"short-0": 1, "short-1": 2}
		}, want: "short-1 ran 2 times"},
		{name: "second attempt", change: func(r *kubeletRun) { r.Attempts = map[string]uint32{"short-0": 1} }, want: "last attempt 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := kept
			if tc.change != nil {
				tc.change(&r)
			}
			broken := r.forkBroken(tc.restart)
			if tc.want == "" {
				assert.Empty(t, broken)
				return
			}
			require.Len(t, broken, 1, "%q", broken)
			assert.Contains(t, broken[0], tc.want)
		})
	}
}

// TestFailedUpdates counts kubelet's failed updates from its own log lines:
// only the pods' containers, only inside the window, and with a restart,
// Unavailable apart.
func TestFailedUpdates(t *testing.T) {
	const log = `E1203 17:00:43.027040   12659 cpu_manager.go:540] "failed to update container" err="rpc error: code = Unavailable desc = error reading from server: EOF" pod="default/short-0" containerName="main" containerID="aaa" cpuSet="0-1"
E1203 17:00:44.028882   12659 cpu_manager.go:540] "failed to update container" err="rpc error: code = DeadlineExceeded desc = context deadline exceeded" pod="default/short-1" containerName="main" containerID="bbb" cpuSet="0-1"
E1203 17:00:44.029252   12659 cpu_manager.go:540] "failed to update container" err="rpc error: code = DeadlineExceeded desc = context deadline exceeded" pod="default/long" containerName="main" containerID="ccc" cpuSet="0-1"
E1203 17:00:49.030878   12659 cpu_manager.go:540] "failed to update container" err="rpc error: code = DeadlineExceeded desc = context deadline exceeded" pod="default/short-0" containerName="main" containerID="aaa" cpuSet="0-1"
`
	now := time.Date(2026, 12, 3, 18, 0, 0, 0, time.UTC)
	lines := kubelet.ParseLog(log, now)
	require.Len(t, lines, 4)
	from := time.Date(2026, 12, 3, 17, 0, 40, 0, time.UTC)
	to := from.Add(8 * time.Second)
	ids := map[string]string{"short-0": "aaa", "short-1": "bbb", "long": "ccc"}
	shorts := []string{"short-0", "short-1"}
	for _, tc := range []struct {
		restart            bool
		wantFailed, wantDn int
	}{
		{restart: false, wantFailed: 2},
		{restart: true, wantFailed: 1, wantDn: 1},
	} {
		failed, down := failedUpdates(lines, ids, shorts, from, to, tc.restart)
		assert.Equal(t, tc.wantFailed, failed, "failed, restart=%v", tc.restart)
		assert.Equal(t, tc.wantDn, down, "down, restart=%v", tc.restart)
	}
}
