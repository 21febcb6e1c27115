// Command steady-demo runs incident I1 (a container exits while its shim's
// rootfs unmount is slow, kubelet keeps updating and relisting) and the
// init container exit (the next container starts once CRI reports the first
// one EXITED) on the pristine upstream and on the fork of one line, and
// prints both side by side.
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

	"google.golang.org/grpc/status"

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
	var outs []outcome
	for _, b := range builds {
		var o outcome
		fmt.Printf("== %s: container SIGKILLed, umount2 in its shim delayed by %s, UpdateContainerResources every 2s, relist every 1s\n", b.Name, d)
		err := onNode(ctx, b, d, func(node *incident.Node, dir string) error {
			res, err := incident.ExitStall{Delay: d, Logf: logf}.Run(ctx, b.Name, node, dir)
			o.exit = res.Summarise()
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: %w", b.Name, err)
		}
		fmt.Printf("== %s: a pod's init container exits 0, umount2 in its shim delayed by %s; the next container starts once CRI says EXITED\n", b.Name, d)
		err = onNode(ctx, b, d, func(node *incident.Node, dir string) error {
			var err error
			o.init, err = incident.InitExit{Delay: d, Logf: logf}.Run(ctx, b.Name, node, dir)
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: %w", b.Name, err)
		}
		outs = append(outs, o)
	}
	printTable(builds, outs)
	return nil
}

// outcome is what one build showed in both scenarios.
type outcome struct {
	exit incident.Summary
	init incident.InitExitResult
}

func logf(f string, a ...any) { fmt.Printf("   "+f+"\n", a...) }

// onNode runs f on a fresh node of b and cleans the node up.
func onNode(ctx context.Context, b incident.Build, d time.Duration, f func(*incident.Node, string) error) error {
	dir, err := os.MkdirTemp("", "steady-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(ctx, 2*d+5*time.Minute)
	defer cancel()
	node, err := incident.StartNode(ctx, b, dir, daemon.Options{})
	if err != nil {
		return err
	}
	defer node.Close()
	return f(node, dir)
}

func printTable(builds []incident.Build, outs []outcome) {
	rows := []struct {
		name string
		val  func(outcome) string
	}{
		{"longest relist (kubelet PLEG)", func(o outcome) string { return dur(o.exit.LongestRelist) }},
		{"longest UpdateContainerResources", func(o outcome) string { return dur(o.exit.LongestUpdate) }},
		{"longest ContainerStatus", func(o outcome) string { return dur(o.exit.LongestStatus) }},
		{"kill -> EXITED reported", func(o outcome) string { return dur(o.exit.KillToExited) }},
		{"shim's delete done -> EXITED", func(o outcome) string { return dur(o.exit.ShimToExited) }},
		{"UpdateContainerResources errors", func(o outcome) string { return fmt.Sprint(o.exit.UpdateFailures) }},
		{"UNKNOWN ever seen", func(o outcome) string { return fmt.Sprint(o.exit.UnknownSeen) }},
		{"exit code", func(o outcome) string { return fmt.Sprint(o.exit.ExitCodes) }},
		{"init container exit -> EXITED reported", func(o outcome) string { return dur(o.init.ReportDelay()) }},
		{"init container exit -> next container started", func(o outcome) string { return dur(o.init.NextStartDelay()) }},
		{"RemoveContainer during the cleanup", func(o outcome) string { return removeOutcome(o.init) }},
		{"left after the pod's removal", func(o outcome) string { return fmt.Sprint(len(o.init.Leftovers)) }},
	}
	fmt.Println()
	header := []string{"measure"}
	for _, b := range builds {
		header = append(header, b.Name)
	}
	fmt.Printf("| %s |\n|%s\n", strings.Join(header, " | "), strings.Repeat("---|", len(header)))
	for _, r := range rows {
		cells := []string{r.name}
		for _, o := range outs {
			cells = append(cells, r.val(o))
		}
		fmt.Printf("| %s |\n", strings.Join(cells, " | "))
	}
}

// removeOutcome says how the RemoveContainer sent right after the EXITED
// report ended: upstream reports EXITED only after the cleanup, so it removes.
func removeOutcome(r incident.InitExitResult) string {
	if r.EarlyRemoveErr == nil {
		return "removed (" + dur(r.EarlyRemoveTook) + ")"
	}
	return status.Code(r.EarlyRemoveErr).String() + ", retried (" + dur(r.EarlyRemoveTook) + ")"
}

func dur(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.Round(time.Millisecond).String()
}
