// Command steady-demo runs incident I1 (a container exits while its shim's
// rootfs unmount is slow, kubelet keeps updating and relisting) on the
// pristine upstream and on the fork of one line, and prints both side by side.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/containerd-steady/containerd-steady/pkg/daemon"
	"github.com/containerd-steady/containerd-steady/pkg/incident"
	"github.com/containerd-steady/containerd-steady/pkg/line"
)

func main() {
	lineName := flag.String("line", line.Default, "release line to run (patches/<line>/UPSTREAM), built by 'make binaries LINE=<line>'")
	delay := flag.Duration("delay", 20*time.Second, "umount2 delay injected into the shims (D)")
	flag.Parse()
	// An interrupt cancels the run, so every node is still cleaned up.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	l, err := line.Load(line.RepoRoot(), *lineName)
	if err == nil {
		err = run(ctx, l, *delay)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "steady-demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, l line.Line, d time.Duration) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root (it starts containerd and traces its shims)")
	}
	upstream, fork := incident.Builds(l)
	builds := []incident.Build{upstream, fork}
	fmt.Printf("line %s (%s): upstream %s against the fork %s, runc %s\n", l.Name, l.Status, l.Version, l.ForkVersion(), l.Runc)
	var sums []incident.Summary
	for _, b := range builds {
		fmt.Printf("== %s: container SIGKILLed, umount2 in its shim delayed by %s, UpdateContainerResources every 2s, relist every 1s\n", b.Name, d)
		s, err := runOne(ctx, b, d)
		if err != nil {
			return fmt.Errorf("%s: %w", b.Name, err)
		}
		sums = append(sums, s)
	}
	printTable(builds, sums)
	return nil
}

func runOne(ctx context.Context, b incident.Build, d time.Duration) (incident.Summary, error) {
	dir, err := os.MkdirTemp("", "steady-demo-")
	if err != nil {
		return incident.Summary{}, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(ctx, 2*d+5*time.Minute)
	defer cancel()
	node, err := incident.StartNode(ctx, b, dir, daemon.Options{})
	if err != nil {
		return incident.Summary{}, err
	}
	defer node.Close()
	s := incident.ExitStall{Delay: d, Logf: func(f string, a ...any) { fmt.Printf("   "+f+"\n", a...) }}
	res, err := s.Run(ctx, b.Name, node, dir)
	if err != nil {
		return incident.Summary{}, err
	}
	return res.Summarise(), nil
}

func printTable(builds []incident.Build, sums []incident.Summary) {
	rows := []struct {
		name string
		val  func(incident.Summary) string
	}{
		{"longest relist (kubelet PLEG)", func(s incident.Summary) string { return dur(s.LongestRelist) }},
		{"longest UpdateContainerResources", func(s incident.Summary) string { return dur(s.LongestUpdate) }},
		{"longest ContainerStatus", func(s incident.Summary) string { return dur(s.LongestStatus) }},
		{"kill -> EXITED reported", func(s incident.Summary) string { return dur(s.KillToExited) }},
		{"shim's delete done -> EXITED", func(s incident.Summary) string { return dur(s.ShimToExited) }},
		{"UpdateContainerResources errors", func(s incident.Summary) string { return fmt.Sprint(s.UpdateFailures) }},
		{"UNKNOWN ever seen", func(s incident.Summary) string { return fmt.Sprint(s.UnknownSeen) }},
		{"exit code", func(s incident.Summary) string { return fmt.Sprint(s.ExitCodes) }},
	}
	fmt.Println()
	header := []string{"measure"}
	for _, b := range builds {
		header = append(header, b.Name)
	}
	fmt.Printf("| %s |\n|%s\n", strings.Join(header, " | "), strings.Repeat("---|", len(header)))
	for _, r := range rows {
		cells := []string{r.name}
		for _, s := range sums {
			cells = append(cells, r.val(s))
		}
		fmt.Printf("| %s |\n", strings.Join(cells, " | "))
	}
}

func dur(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.Round(time.Millisecond).String()
}
