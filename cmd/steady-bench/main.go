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
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
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
	// incident marks a case whose builds differ by orders of magnitude:
	// it runs incidentRounds rounds, not the plan's.
	incident bool
}

// incidentRounds is how many rounds an incident case runs outside the
// quick mode: two show the spread, and a third would add a quarter to the
// bench's time (issue 16's budget is 40 minutes a line).
const incidentRounds = 2

// roundsOf is how many rounds c runs.
func (p plan) roundsOf(c benchCase) int {
	if c.incident && !p.quick {
		return min(p.rounds, incidentRounds)
	}
	return p.rounds
}

type plan struct {
	quick  bool
	rounds int
	delay  time.Duration
	// only, when set, selects the cases to run by name.
	only *regexp.Regexp
	// heapDir receives containerd's heap profiles per build on the busy
	// node, empty and at its last count, for 'go tool pprof -base'.
	heapDir string
	// big grows the node case on to 500 containers, which does not fit
	// a line's 40-minute budget on a 2-core machine.
	big bool
}

func main() {
	lineName := flag.String("line", line.Default, "release line to run (patches/<line>/UPSTREAM), built by 'make binaries LINE=<line>'")
	out := flag.String("json", "", "where to write every sample as JSON (default build/bench/<line>.json)")
	only := flag.String("run", "", "run only the cases whose name matches this regular expression (the volatile case is named \"exit cost with volatile\")")
	big := flag.Bool("big", false, "grow the node case on to 500 containers (outside the 40-minute budget of a line)")
	rounds := flag.Int("rounds", 3, "rounds per build of each case (incident cases run at most 2)")
	flag.Parse()
	p := plan{quick: os.Getenv("BENCH_QUICK") == "1", rounds: *rounds, delay: 20 * time.Second, big: *big}
	if p.quick {
		p.rounds, p.delay = 1, 5*time.Second
	}
	if p.rounds < 1 {
		fmt.Fprintf(os.Stderr, "steady-bench: -rounds %d: at least 1\n", p.rounds)
		os.Exit(2)
	}
	// An interrupt cancels the run, so every node is still cleaned up.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	l, err := line.Load(line.RepoRoot(), *lineName)
	if err == nil && *only != "" {
		p.only, err = regexp.Compile(*only)
		if err != nil {
			err = fmt.Errorf("-run: %w", err)
		}
	}
	if err == nil {
		if *out == "" {
			*out = filepath.Join(l.Root, "build", "bench", l.Name+".json")
		}
		p.heapDir = strings.TrimSuffix(*out, ".json") + "-heap"
		err = os.MkdirAll(p.heapDir, 0o755)
	}
	if err == nil {
		err = run(ctx, l, *out, p)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "steady-bench:", err)
		os.Exit(1)
	}
}

func cases(p plan) []benchCase {
	pods := []int{1, 20}
	node := incident.Contention{
		Counts: []int{50, 200}, Duration: time.Minute, SerialPods: 20,
		Idle: incident.Idle{Calls: 500, Burst: 50}, ProfileDir: p.heapDir, Logf: progress,
	}
	if p.big {
		node.Counts = append(node.Counts, 500)
	}
	if p.quick {
		pods = []int{1, 5}
		node.Counts, node.Duration, node.SerialPods = []int{10, 20}, 15*time.Second, 4
		node.Idle = incident.Idle{Calls: 50, Burst: 10}
	}
	var cs []benchCase
	for _, n := range pods {
		cs = append(cs, benchCase{name: fmt.Sprintf("stall under exit, %d pods, D=%s", n, p.delay), run: exitCase(p.delay, n), incident: true})
	}
	cs = append(cs, benchCase{name: fmt.Sprintf("init container exit, D=%s", p.delay), run: initExitCase(p.delay), incident: true})
	cs = append(cs, benchCase{name: fmt.Sprintf("stall under metadata fsync, D=%s", p.delay), run: fsyncCase(p.delay), incident: true})
	cs = append(cs, benchCase{name: fmt.Sprintf("%s %v containers, idle then busy for %s", nodeName, node.Counts, node.Duration), run: nodeCase(node)})
	return p.selected(cs)
}

// nodeName begins the name of the idle and busy node case.
const nodeName = "node at"

// selected keeps the cases p.only matches.
func (p plan) selected(cs []benchCase) []benchCase {
	if p.only == nil {
		return cs
	}
	var keep []benchCase
	for _, c := range cs {
		if p.only.MatchString(c.name) {
			keep = append(keep, c)
		}
	}
	return keep
}

// volatileName is the name the volatile case is selected by.
const volatileName = "exit cost with volatile"

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

func nodeCase(c incident.Contention) func(context.Context, string, *incident.Node, string) (map[string]float64, error) {
	return func(ctx context.Context, build string, node *incident.Node, dir string) (map[string]float64, error) {
		res, err := c.Run(ctx, build, node, dir)
		if err != nil {
			return nil, err
		}
		m := map[string]float64{}
		for _, s := range res.Steps {
			at := func(name string) string { return fmt.Sprintf("%d: %s", s.Containers, name) }
			m[at("pod start, 4-way (/s)")] = s.StartPerSecond
			m[at("RSS (MiB)")] = float64(s.Memory.RSS) / (1 << 20)
			m[at("RSS anonymous (MiB)")] = float64(s.Memory.RSSAnon) / (1 << 20)
			m[at("live heap (MiB)")] = float64(s.Memory.HeapAlloc) / (1 << 20)
			m[at("idle ListContainers p50 (ms)")] = ms(s.Idle.ListP50)
			m[at("idle ListContainers p99 (ms)")] = ms(s.Idle.ListP99)
			m[at("idle ContainerStatus p50 (ms)")] = ms(s.Idle.StatusP50)
			m[at("idle ContainerStatus p99 (ms)")] = ms(s.Idle.StatusP99)
			m[at("idle update burst p99 (ms)")] = ms(s.Idle.BurstP99)
			m[at("idle update burst (/s)")] = s.Idle.BurstPerSecond
			m[at("busy relist p50 (ms)")] = ms(s.Relist.P50)
			m[at("busy relist p99 (ms)")] = ms(s.Relist.P99)
			m[at("busy relist p999 (ms)")] = ms(s.Relist.P999)
			m[at("busy ContainerStatus p50 (ms)")] = ms(s.Status.P50)
			m[at("busy ContainerStatus p99 (ms)")] = ms(s.Status.P99)
			m[at("busy ContainerStatus p999 (ms)")] = ms(s.Status.P999)
			m[at("busy ContainerStatus answered (/s)")] = s.StatusPerSecond
			m[at("busy UpdateContainerResources p99 (ms)")] = ms(s.Update.P99)
			m[at("busy updates done (/s)")] = s.UpdatesPerSecond
			m[at("busy update errors")] = float64(s.Update.Errors)
			m[at("busy containers replaced")] = float64(s.Replaced)
			m[at("busy containerd CPU (% of a core)")] = 100 * s.CPU.Seconds() / s.Took.Seconds()
		}
		m["pod start, serial (/s)"] = res.StartSerialPerSecond
		rss, heap := res.Memory().PerContainer()
		m["memory: RSS per container (KiB)"] = rss / 1024
		m["memory: live heap per container (KiB)"] = heap / 1024
		return m, nil
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
	for _, b := range builds {
		if err := b.DropCache(); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "line %s (%s): fork %s against upstream %s, runc %s\n", l.Name, l.Status, l.ForkVersion(), l.Version, l.Runc)
	all := samples{}
	cs := cases(p)
	begin := time.Now()
	var costs []cost
	for _, c := range cs {
		began := time.Now()
		all[c.name] = map[string]map[string][]float64{}
		rounds := p.roundsOf(c)
		for r := 0; r < rounds; r++ {
			order := builds
			if r%2 == 1 { // alternate who goes first
				order = []incident.Build{builds[1], builds[0]}
			}
			for _, b := range order {
				fmt.Fprintf(os.Stderr, "[%s] %s, round %d/%d, %s\n", time.Since(begin).Round(time.Second), c.name, r+1, rounds, b.Name)
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
		costs = append(costs, cost{name: c.name, took: time.Since(began)})
	}
	printTable(l, cs, all, p)
	if err := complete(cs, all); err != nil {
		return err
	}
	var vol incident.VolatileExitResult
	if p.only == nil || p.only.MatchString(volatileName) {
		began := time.Now()
		var err error
		if vol, err = volatileCase(ctx, builds[0], p); err != nil {
			return fmt.Errorf("%s: %w", volatileName, err)
		}
		costs = append(costs, cost{name: volatileName, took: time.Since(began)})
	}
	printCosts(costs)
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(map[string]any{"rounds": p.rounds, "incident_rounds": p.roundsOf(benchCase{incident: true}), "quick": p.quick, "delay": p.delay.String(), "samples": all, "volatile_exit": vol}, "", "  ")
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
	began := time.Now()
	node, err := incident.StartNode(ctx, b, dir, c.opts)
	if err != nil {
		return nil, err
	}
	progress("node started in %s", time.Since(began).Round(100*time.Millisecond))
	defer func() {
		closing := time.Now()
		_ = node.Close()
		progress("node closed in %s", time.Since(closing).Round(100*time.Millisecond))
	}()
	return c.run(ctx, b.Name, node, dir)
}

// progress tells, on stderr, where a case spends its time.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "  %s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func printTable(l line.Line, cs []benchCase, all samples, p plan) {
	fmt.Printf("line %s: fork %s vs upstream %s (runc %s), %d round(s) each (incident cases %d), alternating; median [min-max]\n",
		l.Name, l.ForkVersion(), l.Version, l.Runc, p.rounds, p.roundsOf(benchCase{incident: true}))
	fmt.Println("fork/upstream: the ratio of the medians [the lowest and highest ratio of one round's fork to the same round's upstream];")
	fmt.Print("differs: \"yes\" only when the two builds' rounds do not overlap, \"noise\" otherwise\n\n")
	fmt.Println("| case | measure | fork | upstream | fork/upstream | differs |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, c := range cs {
		metrics := make([]string, 0, len(all[c.name]))
		for k := range all[c.name] {
			metrics = append(metrics, k)
		}
		sort.Slice(metrics, func(i, j int) bool { return countsFirst(metrics[i], metrics[j]) })
		for _, k := range metrics {
			f, u := all[c.name][k]["fork"], all[c.name][k]["upstream"]
			fmt.Printf("| %s | %s | %s | %s | %s | %s |\n", c.name, k, spread(f), spread(u), ratios(f, u), differs(f, u))
		}
	}
}

// cost is the wall time one case took, all rounds of both builds.
type cost struct {
	name string
	took time.Duration
}

// printCosts prints what each case cost, so the bench can be kept inside
// its budget.
func printCosts(costs []cost) {
	fmt.Print("\nwall time per case (all rounds, both builds)\n\n| case | minutes |\n|---|---|\n")
	var total time.Duration
	for _, c := range costs {
		total += c.took
		fmt.Printf("| %s | %.1f |\n", c.name, c.took.Minutes())
	}
	fmt.Printf("| total | %.1f |\n", total.Minutes())
}

// countsFirst orders "50: x" before "200: x": by the leading container
// count, then by name; names without a count come last.
func countsFirst(a, b string) bool {
	na, ra := leadingCount(a)
	nb, rb := leadingCount(b)
	if na != nb {
		return na < nb
	}
	return ra < rb
}

// leadingCount splits "50: x" into 50 and "x"; a name without a count
// sorts after every count.
func leadingCount(s string) (int, string) {
	before, after, ok := strings.Cut(s, ": ")
	if n, err := strconv.Atoi(before); ok && err == nil {
		return n, after
	}
	return math.MaxInt, s
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

// ratios is the ratio of the medians with the range of the per-round
// ratios (round i of the fork against round i of upstream).
func ratios(f, u []float64) string {
	r := ratio(median(f), median(u))
	if len(f) < 2 || len(f) != len(u) {
		return r
	}
	var per []float64
	for i := range f {
		if u[i] == 0 {
			return r
		}
		per = append(per, f[i]/u[i])
	}
	sort.Float64s(per)
	return fmt.Sprintf("%s [%.2f-%.2f]", r, per[0], per[len(per)-1])
}

// differs says whether the builds' samples are apart: every round of one
// above every round of the other. With one round each it cannot tell.
func differs(f, u []float64) string {
	if len(f) < 2 || len(u) < 2 {
		return "-"
	}
	fmin, fmax := minMax(f)
	umin, umax := minMax(u)
	if fmax < umin || umax < fmin {
		return "yes"
	}
	return "noise"
}

func minMax(v []float64) (lo, hi float64) {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[0], s[len(s)-1]
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

// volatileCase measures kill to EXITED, and kill to the rootfs unmounted,
// of a container with dirty pages in its rootfs, on the fork with and
// without volatile_rootfs, while a background writer keeps the disk busy. Upstream has no volatile_rootfs,
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
	if res.Ratio() == 0 {
		return res, fmt.Errorf("no kill to the rootfs unmounted measured (plain %s, volatile %s)", res.Plain.KillToCleaned, res.Volatile.KillToCleaned)
	}
	fmt.Printf("\nexit cost with volatile_rootfs (fork; %d MiB dirty in the rootfs, disk kept busy; median of %d)\n\n", v.Size>>20, max(v.Rounds, 1))
	fmt.Println("| measure | without volatile_rootfs | with volatile_rootfs | without/with |")
	fmt.Println("|---|---|---|---|")
	fmt.Printf("| SIGKILL to EXITED (s) | %s | %s | %.2f |\n", num(res.Plain.KillToExited.Seconds()), num(res.Volatile.KillToExited.Seconds()),
		incident.Ratio(res.Plain.KillToExited, res.Volatile.KillToExited))
	fmt.Printf("| SIGKILL to the rootfs unmounted (s) | %s | %s | %.2f |\n", num(res.Plain.KillToCleaned.Seconds()), num(res.Volatile.KillToCleaned.Seconds()), res.Ratio())
	return res, nil
}
