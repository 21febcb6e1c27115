package critest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/containerd-steady/containerd-steady/pkg/netns"
	"github.com/containerd-steady/containerd-steady/pkg/proc"
)

// Skip is a ginkgo skip pattern and why this machine cannot run what it
// matches. Only what the machine lacks is skipped, on every build alike.
type Skip struct {
	Pattern string
	Reason  string
}

// Run is one critest invocation against one containerd.
type Run struct {
	// Tools holds critest and ginkgo (script/critest.sh).
	Tools string
	// Endpoint is the containerd socket (runtime and image service).
	Endpoint string
	// NetNS is the namespace critest runs in, the daemon's.
	NetNS *netns.NetNS
	// NRISocket, when set, enables the NRI specs.
	NRISocket string
	// Dir receives the report and critest's output.
	Dir string
	// Parallel is the number of ginkgo nodes.
	Parallel int
	Skips    []Skip
	// Focus, when set, runs only the specs whose It text is one of these;
	// FocusRegexp, when set, only those whose full text matches it.
	Focus       []string
	FocusRegexp string
	// Timeout bounds the whole suite.
	Timeout time.Duration
}

// Exec runs critest and returns its report. A run whose specs fail is not
// an error; a run that leaves no report is.
func (r Run) Exec(ctx context.Context) (*Report, error) {
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("critest: %w", err)
	}
	report := filepath.Join(r.Dir, "report.json")
	_ = os.Remove(report)
	args := r.args(report)
	cmd := r.NetNS.Command(ctx, append([]string{filepath.Join(r.Tools, "critest")}, args...)...)
	// critest runs ginkgo from PATH for its parallel nodes.
	cmd.Env = append(os.Environ(), "PATH="+r.Tools+":"+os.Getenv("PATH"))
	cmd.Dir = r.Dir
	log := filepath.Join(r.Dir, "critest.log")
	p, err := proc.Start(cmd, log)
	if err != nil {
		return nil, fmt.Errorf("critest: %w", err)
	}
	select {
	case <-p.Done():
	case <-ctx.Done():
		_ = p.Stop(context.Background(), 10*time.Second)
		return nil, fmt.Errorf("critest did not finish: %w\n%s", ctx.Err(), proc.Tail(log, 30))
	}
	rep, err := ReadReport(report)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("critest exited: %v", p.Err()), err, errors.New(proc.Tail(log, 30)))
	}
	return rep, nil
}

func (r Run) args(report string) []string {
	args := []string{
		"-runtime-endpoint=unix://" + r.Endpoint,
		"-image-endpoint=unix://" + r.Endpoint,
		fmt.Sprintf("-parallel=%d", max(r.Parallel, 1)),
		"-ginkgo.json-report=" + report,
		"-ginkgo.no-color",
		"-ginkgo.timeout=" + r.Timeout.String(),
	}
	if r.NRISocket != "" {
		args = append(args, "-nri-socket="+r.NRISocket)
	}
	for _, s := range r.Skips {
		args = append(args, "-ginkgo.skip="+s.Pattern)
	}
	if r.FocusRegexp != "" {
		args = append(args, "-ginkgo.focus="+r.FocusRegexp)
	}
	if len(r.Focus) > 0 {
		quoted := make([]string, len(r.Focus))
		for i, f := range r.Focus {
			quoted[i] = regexp.QuoteMeta(f)
		}
		args = append(args, "-ginkgo.focus="+strings.Join(quoted, "|"))
	}
	return args
}
