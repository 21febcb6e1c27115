// Command steady-bench runs the fork and the pristine upstream of one line
// on this machine in the same run, alternating rounds, and prints one
// markdown table (median and spread per build, and their ratio) plus a
// JSON file with every sample.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/containerd-steady/containerd-steady/pkg/daemon"
	"github.com/containerd-steady/containerd-steady/pkg/incident"
	"github.com/containerd-steady/containerd-steady/pkg/line"
)

// benchCase is one thing measured on a fresh node per build and round.
type benchCase struct {
	name string
	opts daemon.Options
	run  func(ctx context.Context, build string, node *incident.Node, dir string) (map[string]float64, error)
}

type plan struct {
	quick  bool
	rounds int
	delay  time.Duration
}

func main() {
	lineName := flag.String("line", line.Default, "release line to run (patches/<line>/UPSTREAM), built by 'make binaries LINE=<line>'")
	out := flag.String("json", "", "where to write every sample as JSON (default build/bench/<line>.json)")
	flag.Parse()
	p := plan{quick: os.Getenv("BENCH_QUICK") == "1", rounds: 3, delay: 20 * time.Second}
	if p.quick {
		p.rounds, p.delay = 1, 5*time.Second
	}
	// An interrupt cancels the run, so every node is still cleaned up.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	l, err := line.Load(line.RepoRoot(), *lineName)
	if err == nil {
		if *out == "" {
			*out = filepath.Join(l.Root, "build", "bench", l.Name+".json")
		}
		err = run(ctx, l, *out, p)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "steady-bench:", err)
		os.Exit(1)
	}
}

func cases(p plan) []benchCase {
	pods, steady := []int{1, 20}, []int{50, 200}
	calls, burst, start := 500, 50, 20
	if p.quick {
		pods, steady = []int{1, 5}, []int{10}
		calls, burst, start = 50, 10, 4
	}
	var cs []benchCase
	for _, n := range pods {
		cs = append(cs, benchCase{name: fmt.Sprintf("stall under exit, %d pods, D=%s", n, p.delay), run: exitCase(p.delay, n)})
	}
	cs = append(cs, benchCase{name: fmt.Sprintf("init container exit, D=%s", p.delay), run: initExitCase(p.delay)})
	cs = append(cs, benchCase{name: fmt.Sprintf("stall under metadata fsync, D=%s", p.delay), run: fsyncCase(p.delay)})
	for _, n := range steady {
		s := incident.SteadyState{Containers: n, Calls: calls, Burst: burst, StartPods: start}
		cs = append(cs, benchCase{name: fmt.Sprintf("steady state, %d containers", n), run: steadyCase(s)})
	}
	return cs
}

func exitCase(d time.Duration, pods int) func(context.Context, string, *incident.Node, string) (map[string]float64, error) {
	return func(ctx context.Context, build string, node *incident.Node, dir string) (map[string]float64, error) {
		res, err := incident.ExitStall{Delay: d, Pods: pods}.Run(ctx, build, node, dir)
		if err != nil {
			return nil, err
		}
		s := res.Summarise()
		unknown := 0.0
		if s.UnknownSeen {
			unknown = 1
		}
		return map[string]float64{
			"longest relist (s)":                   s.LongestRelist.Seconds(),
			"relist p99 (s)":                       s.RelistP99.Seconds(),
			"longest UpdateContainerResources (s)": s.LongestUpdate.Seconds(),
			"kill to EXITED, last pod (s)":         s.KillToExited.Seconds(),
			"shims done to EXITED (s)":             s.ShimToExited.Seconds(),
			"UNKNOWN seen (0/1)":                   unknown,
		}, nil
	}
}

func initExitCase(d time.Duration) func(context.Context, string, *incident.Node, string) (map[string]float64, error) {
	return func(ctx context.Context, build string, node *incident.Node, dir string) (map[string]float64, error) {
		res, err := incident.InitExit{Delay: d}.Run(ctx, build, node, dir)
		if err != nil {
			return nil, err
		}
		return map[string]float64{
			"init exit to EXITED reported (s)":        res.ReportDelay().Seconds(),
			"init exit to next container started (s)": res.NextStartDelay().Seconds(),
			"left after the pod's removal":            float64(len(res.Leftovers)),
		}, nil
	}
}

func fsyncCase(d time.Duration) func(context.Context, string, *incident.Node, string) (map[string]float64, error) {
	return func(ctx context.Context, build string, node *incident.Node, dir string) (map[string]float64, error) {
		res, err := incident.FsyncStall{Delay: d, Duration: 3 * d}.Run(ctx, build, node, dir)
		if err != nil {
			return nil, err
		}
		return map[string]float64{
			"longest relist (s)":                   res.Relist.Max.Seconds(),
			"relist p99 (s)":                       res.Relist.P99.Seconds(),
			"longest UpdateContainerResources (s)": res.UpdateMax.Seconds(),
		}, nil
	}
}

func steadyCase(s incident.SteadyState) func(context.Context, string, *incident.Node, string) (map[string]float64, error) {
	return func(ctx context.Context, build string, node *incident.Node, dir string) (map[string]float64, error) {
		res, err := s.Run(ctx, node)
		if err != nil {
			return nil, err
		}
		return map[string]float64{
			"ListContainers p50 (ms)":         ms(res.ListP50),
			"ListContainers p99 (ms)":         ms(res.ListP99),
			"ContainerStatus p50 (ms)":        ms(res.StatusP50),
			"ContainerStatus p99 (ms)":        ms(res.StatusP99),
			"update burst p99 (ms)":           ms(res.BurstP99),
			"update burst throughput (/s)":    res.BurstPerSecond,
			"pod start, serial (/s)":          res.StartSerialPerSecond,
			"pod start, 4-way (/s)":           res.StartParallelPerSecond,
			"containerd RSS at the end (MiB)": float64(res.RSSBytes) / (1 << 20),
		}, nil
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// samples[case][metric][build] lists one value per round.
type samples map[string]map[string]map[string][]float64

func run(ctx context.Context, l line.Line, out string, p plan) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root (it starts containerd and traces its shims)")
	}
	upstream, fork := incident.Builds(l)
	builds := []incident.Build{fork, upstream}
	fmt.Fprintf(os.Stderr, "line %s (%s): fork %s against upstream %s, runc %s\n", l.Name, l.Status, l.ForkVersion(), l.Version, l.Runc)
	all := samples{}
	cs := cases(p)
	begin := time.Now()
	for _, c := range cs {
		all[c.name] = map[string]map[string][]float64{}
		for r := 0; r < p.rounds; r++ {
			order := builds
			if r%2 == 1 { // alternate who goes first
				order = []incident.Build{builds[1], builds[0]}
			}
			for _, b := range order {
				fmt.Fprintf(os.Stderr, "[%s] %s, round %d/%d, %s\n", time.Since(begin).Round(time.Second), c.name, r+1, p.rounds, b.Name)
				m, err := runCase(ctx, c, b)
				if err != nil {
					return fmt.Errorf("%s on %s: %w", c.name, b.Name, err)
				}
				for k, v := range m {
					if all[c.name][k] == nil {
						all[c.name][k] = map[string][]float64{}
					}
					all[c.name][k][b.Name] = append(all[c.name][k][b.Name], v)
				}
			}
		}
	}
	printTable(l, cs, all, p)
	if err := complete(cs, all); err != nil {
		return err
	}
	vol, err := volatileCase(ctx, builds[0], p)
	if err != nil {
		return fmt.Errorf("exit cost with volatile: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(map[string]any{"rounds": p.rounds, "quick": p.quick, "delay": p.delay.String(), "samples": all, "volatile_exit": vol}, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s after %s\n", out, time.Since(begin).Round(time.Second))
	return os.WriteFile(out, b, 0o644)
}

func runCase(ctx context.Context, c benchCase, b incident.Build) (map[string]float64, error) {
	dir, err := os.MkdirTemp("", "steady-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	node, err := incident.StartNode(ctx, b, dir, c.opts)
	if err != nil {
		return nil, err
	}
	defer node.Close()
	return c.run(ctx, b.Name, node, dir)
}

func printTable(l line.Line, cs []benchCase, all samples, p plan) {
	fmt.Printf("line %s: fork %s vs upstream %s (runc %s), %d round(s) each, alternating; median [min-max]\n\n", l.Name, l.ForkVersion(), l.Version, l.Runc, p.rounds)
	fmt.Println("| case | measure | fork | upstream | fork/upstream |")
	fmt.Println("|---|---|---|---|---|")
	for _, c := range cs {
		metrics := make([]string, 0, len(all[c.name]))
		for k := range all[c.name] {
			metrics = append(metrics, k)
		}
		sort.Strings(metrics)
		for _, k := range metrics {
			f, u := all[c.name][k]["fork"], all[c.name][k]["upstream"]
			fmt.Printf("| %s | %s | %s | %s | %s |\n", c.name, k, spread(f), spread(u), ratio(median(f), median(u)))
		}
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func spread(v []float64) string {
	if len(v) == 0 {
		return "-"
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 1 {
		return num(s[0])
	}
	return fmt.Sprintf("%s [%s-%s]", num(median(s)), num(s[0]), num(s[len(s)-1]))
}

func ratio(f, u float64) string {
	if u == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", f/u)
}

func num(v float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
}

// complete checks that every case produced numbers for both builds.
func complete(cs []benchCase, all samples) error {
	for _, c := range cs {
		if len(all[c.name]) == 0 {
			return fmt.Errorf("%s produced no numbers", c.name)
		}
		for k, byBuild := range all[c.name] {
			if len(byBuild["fork"]) == 0 || len(byBuild["upstream"]) == 0 {
				return fmt.Errorf("%s: %s has no sample for one build", c.name, k)
			}
		}
	}
	return nil
}

// volatileCase measures kill to EXITED of a container with dirty pages in
// its rootfs, on the fork with and without volatile_rootfs, while a
// background writer keeps the disk busy. Upstream has no volatile_rootfs,
// so this compares the fork with itself.
func volatileCase(ctx context.Context, fork incident.Build, p plan) (incident.VolatileExitResult, error) {
	v := incident.VolatileExit{Rounds: p.rounds, Size: 512 << 20}
	if p.quick {
		v.Size, v.WriterChunk = 64<<20, 64<<20
	}
	fmt.Fprintf(os.Stderr, "exit cost with volatile: %d MiB dirty, %d round(s), fork with and without volatile_rootfs\n", v.Size>>20, max(v.Rounds, 1))
	dir, err := os.MkdirTemp("", "steady-bench-volatile-")
	if err != nil {
		return incident.VolatileExitResult{}, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	res, err := v.Run(ctx, fork, dir)
	if err != nil {
		return res, err
	}
	if res.Plain.KillToExited <= 0 || res.Volatile.KillToExited <= 0 {
		return res, fmt.Errorf("no kill-to-EXITED measured (plain %s, volatile %s)", res.Plain.KillToExited, res.Volatile.KillToExited)
	}
	fmt.Printf("\nexit cost with volatile_rootfs (fork; %d MiB dirty in the rootfs, disk kept busy; median of %d)\n\n", v.Size>>20, max(v.Rounds, 1))
	fmt.Println("| measure | without volatile_rootfs | with volatile_rootfs | without/with |")
	fmt.Println("|---|---|---|---|")
	fmt.Printf("| SIGKILL to EXITED (s) | %s | %s | %.2f |\n", num(res.Plain.KillToExited.Seconds()), num(res.Volatile.KillToExited.Seconds()), res.Ratio())
	return res, nil
}
