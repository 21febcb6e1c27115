// Package conformance runs cri-tools' CRI validation suite (critest) on the
// pristine upstream and the fork of one line, and on the fork again with
// volatile_rootfs, and judges parity spec by spec: the fork must pass every
// spec upstream passes. Everything runs offline, in a private network
// namespace: a registry on 127.0.0.1 serving the suite's images, the
// daemons, their CNI bridge and critest. 'make conformance' runs it.
package conformance

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-steady/containerd-steady/pkg/critest"
	"github.com/containerd-steady/containerd-steady/pkg/daemon"
	"github.com/containerd-steady/containerd-steady/pkg/image"
	"github.com/containerd-steady/containerd-steady/pkg/incident"
	"github.com/containerd-steady/containerd-steady/pkg/line"
	"github.com/containerd-steady/containerd-steady/pkg/netns"
	"github.com/containerd-steady/containerd-steady/pkg/registry"
)

// cniConfList is the pods' network: a bridge inside the private namespace,
// with host-local addresses and the portmap plugin for host ports. The
// namespace has no way out, so neither do the pods.
const cniConfList = `{
  "cniVersion": "1.0.0",
  "name": "steady-conformance",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}`

// cniBinDir is where Debian's containernetworking-plugins installs.
const cniBinDir = "/usr/lib/cni"

// target is one build the suite runs on.
type target struct {
	name  string
	build incident.Build
	// runtimeExtra is TOML for the runc handler, e.g. volatile_rootfs.
	runtimeExtra string
}

// suite is the shared set-up of one line's conformance run.
type suite struct {
	line  line.Line
	tools string
	dir   string
	ns    *netns.NetNS
	skips []critest.Skip
	// causes explain the specs known to fail on every build here.
	causes []critest.Cause
	// keep is set when a spec differed: the logs stay for a look.
	keep bool
}

func TestConformance(t *testing.T) {
	s := setUp(t)
	upstream, fork := incident.Builds(s.line)
	targets := []target{
		{name: "upstream", build: upstream},
		{name: "fork", build: fork},
		{name: "fork+volatile", build: fork, runtimeExtra: "      volatile_rootfs = true"},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 75*time.Minute)
	defer cancel()
	if focus := os.Getenv("STEADY_CONFORMANCE_FOCUS"); focus != "" {
		s.repeat(ctx, t, targets, focus)
		return
	}

	runs := map[string][]*critest.Report{}
	for _, tg := range targets {
		rep, err := s.run(ctx, t, tg, nil)
		require.NoError(t, err, "%s", tg.name)
		runs[tg.name] = []*critest.Report{rep}
	}

	// Parity: fork against upstream in both directions, volatile against
	// the plain fork for what the fork passes. A difference is rerun once
	// on both sides before it counts.
	forkDiffs, forkFlaky := s.settle(ctx, t, runs, targets[0], targets[1], false)
	volatileDiffs, volatileFlaky := s.settle(ctx, t, runs, targets[1], targets[2], true)

	t.Log("\n" + summary(s, runs, append(forkDiffs, volatileDiffs...), append(forkFlaky, volatileFlaky...)))
	require.NoError(t, s.ns.Offline(ctx), "the namespace must still have no way out")
	requireNRIRan(t, runs)
	for _, d := range forkDiffs {
		t.Errorf("fork differs from upstream: %s: upstream %s, fork %s (%s)", d.Name, d.Base.State, d.Other.State, d.Other.Reason)
	}
	for _, d := range volatileDiffs {
		t.Errorf("volatile_rootfs loses a spec the fork passes: %s: %s (%s)", d.Name, d.Other.State, d.Other.Reason)
	}
}

// setUp checks what the suite needs, creates the private namespace and the
// registry, and pushes the suite's images.
func setUp(t *testing.T) *suite {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the conformance suite needs root: run 'make conformance' as root")
	}
	l, err := line.FromEnv()
	require.NoError(t, err)
	tools := os.Getenv("STEADY_CRITEST")
	if tools == "" {
		t.Fatal("STEADY_CRITEST is not set: run 'make conformance', which builds critest (script/critest.sh)")
	}
	for _, b := range []string{"critest", "ginkgo", "crane", "busybox"} {
		_, err := os.Stat(filepath.Join(tools, b))
		require.NoError(t, err, "run script/critest.sh %s", l.Name)
	}
	_, err = os.Stat(filepath.Join(cniBinDir, "bridge"))
	require.NoError(t, err, "the CNI plugins are missing: run 'make setup' (Debian's containernetworking-plugins)")
	upstream, fork := incident.Builds(l)
	require.NoError(t, upstream.Missing())
	require.NoError(t, fork.Missing())

	// A short path: the daemons' sockets live below it. Traversable by
	// all, as /run/containerd is: a pod in a user namespace runs as an
	// unprivileged host uid, which must reach its rootfs below it.
	dir, err := os.MkdirTemp("/tmp", "sc")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o711))
	s := &suite{dir: dir}
	t.Cleanup(func() {
		if t.Failed() || s.keep {
			t.Logf("conformance logs (containerd's and critest's, per build and rerun) kept in %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ns, err := netns.Create(ctx, fmt.Sprintf("steady-ct%d", os.Getpid()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = ns.Delete(context.Background()) })
	require.NoError(t, ns.Offline(ctx))

	reg, err := registry.Start(ctx, filepath.Join(tools, "crane"), ns, dir)
	require.NoError(t, err)
	t.Cleanup(func() { _ = reg.Stop(context.Background()) })
	pushImages(ctx, t, reg, dir, filepath.Join(tools, "busybox"))
	require.NoError(t, registry.WriteHosts(filepath.Join(dir, "certs.d"), registry.Hosts))

	s.line, s.tools, s.ns, s.skips, s.causes = l, tools, ns, machineSkips(), machineCauses()
	return s
}

// pushImages builds the suite's images from busybox and pushes each under
// all its names.
func pushImages(ctx context.Context, t *testing.T, reg *registry.Registry, dir, busybox string) {
	t.Helper()
	progs, err := critest.BuildPrograms(ctx, dir)
	require.NoError(t, err)
	layouts := filepath.Join(dir, "images")
	for _, ti := range critest.Images(progs) {
		path, err := image.BuildLayout(layouts, ti.Image, busybox)
		require.NoError(t, err)
		for _, ref := range ti.Refs {
			_, err := reg.Push(ctx, path, ref)
			require.NoError(t, err)
		}
	}
}

// machineSkips are the specs this machine cannot run, whatever the build.
func machineSkips() []critest.Skip {
	var skips []critest.Skip
	if b, err := os.ReadFile("/sys/module/apparmor/parameters/enabled"); err != nil || !strings.HasPrefix(string(b), "Y") {
		skips = append(skips, critest.Skip{Pattern: "AppArmor", Reason: "this kernel has no AppArmor (/sys/module/apparmor/parameters/enabled)"})
	}
	return skips
}

// machineCauses explain the specs that fail on every build: the image no
// offline registry can serve, and what this machine lacks.
func machineCauses() []critest.Cause {
	causes := []critest.Cause{critest.DigestCause}
	if !cgroup2() {
		causes = append(causes, critest.Cause{
			Spec:    "runtime should support listing pod sandbox metrics",
			Failure: "container_threads",
			Why:     "containerd reports container_threads from cgroup v2 only, and this machine mounts cgroup v1",
		})
	}
	return causes
}

// cgroup2 reports whether /sys/fs/cgroup is the unified hierarchy.
func cgroup2() bool {
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	return err == nil
}

// run starts a daemon of tg in the namespace, runs critest (only the specs
// in focus when set) and removes the daemon and all it started.
func (s *suite) run(ctx context.Context, t *testing.T, tg target, focus []string) (*critest.Report, error) {
	t.Helper()
	suffix := ""
	if len(focus) > 0 {
		suffix = "rerun"
	}
	return s.runFocused(ctx, t, tg, critest.Run{Focus: focus}, suffix)
}

// runFocused is run with the focus of sel, in a directory named for tg and
// suffix.
func (s *suite) runFocused(ctx context.Context, t *testing.T, tg target, sel critest.Run, suffix string) (*critest.Report, error) {
	t.Helper()
	name := strings.NewReplacer("+", "-").Replace(tg.name)
	if suffix != "" {
		name += "-" + suffix
	}
	dir := filepath.Join(s.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	opts := tg.build.DaemonOptions(daemon.Options{
		SandboxImage:       critest.SandboxImage,
		NetNS:              s.ns.Path,
		CNIBinDir:          cniBinDir,
		CNIConfList:        cniConfList,
		RegistryConfigPath: filepath.Join(s.dir, "certs.d"),
		NRISocket:          filepath.Join(dir, "nri.sock"),
		RuntimeExtra:       tg.runtimeExtra,
		ReadyTimeout:       time.Minute,
	})
	d, err := daemon.Start(ctx, dir, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tg.name, err)
	}
	defer func() {
		if err := d.Cleanup(context.Background()); err != nil {
			t.Logf("%s: cleanup: %v", tg.name, err)
		}
	}()
	start := time.Now()
	rep, err := critest.Run{
		Tools: s.tools, Endpoint: d.Address, NetNS: s.ns, NRISocket: opts.NRISocket,
		Dir: filepath.Join(dir, "critest"), Parallel: 4, Skips: s.skips,
		Focus: sel.Focus, FocusRegexp: sel.FocusRegexp,
		Timeout: 30 * time.Minute,
	}.Exec(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w\ncontainerd log:\n%s", tg.name, err, d.LogTail(30))
	}
	t.Logf("%s: %d passed, %d failed, %d skipped in %s", tg.name, rep.Count(critest.Passed), rep.Count(critest.Failed), rep.Count(critest.Skipped), time.Since(start).Round(time.Second))
	return rep, nil
}

// settle compares other's first run against base's, reruns the differing
// specs once on both builds and judges them on all runs (critest.Settle):
// what still differs, and what was a flake.
func (s *suite) settle(ctx context.Context, t *testing.T, runs map[string][]*critest.Report, base, other target, regressionsOnly bool) (differ, flaky []critest.Difference) {
	t.Helper()
	diffs := critest.Diff(runs[base.name][0], runs[other.name][0], regressionsOnly)
	if len(diffs) == 0 {
		return nil, nil
	}
	s.keep = true
	var focus []string
	for _, d := range diffs {
		t.Logf("%s and %s differ on %q (%s, %s); rerunning it once on both", base.name, other.name, d.Name, d.Base.State, d.Other.State)
		focus = append(focus, leaf(d))
	}
	for _, tg := range []target{base, other} {
		rep, err := s.run(ctx, t, tg, focus)
		require.NoError(t, err, "rerun on %s", tg.name)
		runs[tg.name] = append(runs[tg.name], rep)
	}
	return critest.Settle(runs[base.name], runs[other.name], regressionsOnly)
}

// repeat runs the specs matching focus (make conformance FOCUS=…)
// STEADY_CONFORMANCE_REPEAT times (default 10) on every target and prints
// how often each spec ended in each state: to tell a flake from a
// difference. It fails when a spec passed on upstream every time and not
// every time on another build.
func (s *suite) repeat(ctx context.Context, t *testing.T, targets []target, focus string) {
	n := 10
	if v := os.Getenv("STEADY_CONFORMANCE_REPEAT"); v != "" {
		_, err := fmt.Sscan(v, &n)
		require.NoError(t, err, "STEADY_CONFORMANCE_REPEAT=%q", v)
	}
	counts := map[string]map[string]map[critest.State]int{} // spec -> target -> state -> runs
	for _, tg := range targets {
		for i := 0; i < n; i++ {
			rep, err := s.runFocused(ctx, t, tg, critest.Run{FocusRegexp: focus}, fmt.Sprintf("repeat%d", i))
			require.NoError(t, err)
			for name, sp := range rep.Specs {
				if sp.Filtered {
					continue
				}
				if counts[name] == nil {
					counts[name] = map[string]map[critest.State]int{}
				}
				if counts[name][tg.name] == nil {
					counts[name][tg.name] = map[critest.State]int{}
				}
				counts[name][tg.name][sp.State]++
			}
		}
	}
	require.NotEmpty(t, counts, "no spec matches %q", focus)
	for name, byTarget := range counts {
		t.Logf("%s, %d runs each:", name, n)
		for _, tg := range targets {
			t.Logf("  %-14s %v", tg.name, byTarget[tg.name])
		}
		if byTarget["upstream"][critest.Passed] == n {
			for _, tg := range targets[1:] {
				assert.Equal(t, n, byTarget[tg.name][critest.Passed], "%s: upstream passed %d of %d runs", tg.name, n, n)
			}
		}
	}
}

func leaf(d critest.Difference) string {
	if d.Base.Leaf != "" {
		return d.Base.Leaf
	}
	return d.Other.Leaf
}

// requireNRIRan fails unless every build ran the NRI specs: not one of them
// may be skipped for want of an NRI socket.
func requireNRIRan(t *testing.T, runs map[string][]*critest.Report) {
	t.Helper()
	for name, reps := range runs {
		rep := reps[0]
		n := 0
		for spec, sp := range rep.Specs {
			if !strings.HasPrefix(spec, "[k8s.io] NRI ") {
				continue
			}
			n++
			require.NotContains(t, sp.Reason, "NRI socket not configured", "%s: %s", name, spec)
		}
		require.NotZero(t, n, "%s: the report has no NRI specs", name)
	}
}

func summary(s *suite, runs map[string][]*critest.Report, differing, flaky []critest.Difference) string {
	title := fmt.Sprintf("critest %s on line %s: upstream %s, fork %s (first runs)", s.line.Critest, s.line.Name, s.line.Version, s.line.ForkVersion())
	cols := []critest.Column{
		{Name: "upstream", Report: runs["upstream"][0]},
		{Name: "fork", Report: runs["fork"][0]},
		{Name: "fork+volatile", Report: runs["fork+volatile"][0]},
	}
	return critest.Summary(title, cols, differing, flaky, s.skips, s.causes)
}
