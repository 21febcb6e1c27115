package critest

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
)

// Column is one build's report in a summary.
type Column struct {
	Name   string
	Report *Report
}

// Cause explains why specs whose name contains Spec fail on every build,
// when their failure contains Failure (any failure when empty).
type Cause struct {
	Spec    string
	Failure string
	Why     string
}

// DigestCause is why the spec that pulls DigestImage fails here.
var DigestCause = Cause{
	Spec: "public image with digest should be pulled and removed",
	Why:  "needs " + DigestImage + ", pinned by a registry digest that no image built offline can have",
}

// Summary prints the builds side by side: passed, failed and skipped per
// build; the specs that differ, and the flakes; the specs that failed on
// every build, with their failure and, where one of causes matches, why;
// and the skips applied to every build, with their reasons.
func Summary(title string, cols []Column, differing, flaky []Difference, skips []Skip, causes []Cause) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\n", title)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "specs\t")
	for _, c := range cols {
		fmt.Fprintf(tw, "%s\t", c.Name)
	}
	fmt.Fprintln(tw)
	for _, st := range []State{Passed, Failed, Skipped} {
		fmt.Fprintf(tw, "%s\t", st)
		for _, c := range cols {
			fmt.Fprintf(tw, "%d\t", c.Report.Count(st))
		}
		fmt.Fprintln(tw)
	}
	_ = tw.Flush()

	fmt.Fprintf(&b, "\ndiffering specs (after one rerun): %d\n", len(differing))
	for _, d := range differing {
		fmt.Fprintf(&b, "  - %s: %s, then %s (%s)\n", d.Name, d.Base.State, d.Other.State, d.Other.Reason)
	}
	if len(flaky) > 0 {
		fmt.Fprintf(&b, "\ndiffered once, matched on the rerun (flakes): %d\n", len(flaky))
		for _, d := range flaky {
			fmt.Fprintf(&b, "  - %s: %s, then %s (%s)\n", d.Name, d.Base.State, d.Other.State, firstNonEmpty(d.Other.Reason, d.Base.Reason))
		}
	}
	reports := make([]*Report, len(cols))
	for i, c := range cols {
		reports[i] = c.Report
	}
	failed := FailedOnAll(reports...)
	fmt.Fprintf(&b, "\nfailed on every build: %d\n", len(failed))
	for _, s := range failed {
		fmt.Fprintf(&b, "  - %s\n      %s\n", s.Name, s.Reason)
		for _, c := range causes {
			if strings.Contains(s.Name, c.Spec) && strings.Contains(s.Reason, c.Failure) {
				fmt.Fprintf(&b, "      why: %s\n", c.Why)
			}
		}
	}
	if len(skips) > 0 {
		fmt.Fprintf(&b, "\nskipped on every build, as this machine cannot run them (-ginkgo.skip; critest itself skips its benchmarks):\n")
		for _, s := range skips {
			fmt.Fprintf(&b, "  - %q: %s\n", s.Pattern, s.Reason)
		}
	}
	if len(cols) > 0 {
		fmt.Fprintf(&b, "\nskipped by the suite itself on %s, by reason:\n", cols[0].Name)
		for _, r := range selfSkips(cols[0].Report) {
			fmt.Fprintf(&b, "  - %d: %s\n", r.n, r.reason)
		}
	}
	return b.String()
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

type skipReason struct {
	reason string
	n      int
}

// selfSkips counts the specs of r that skipped themselves (the runtime
// lacks a feature, a known discrepancy), by reason up to its first colon.
func selfSkips(r *Report) []skipReason {
	counts := map[string]int{}
	for _, s := range r.Specs {
		if s.State != Skipped || s.Filtered {
			continue
		}
		reason, _, _ := strings.Cut(s.Reason, ":")
		counts[reason]++
	}
	out := make([]skipReason, 0, len(counts))
	for reason, n := range counts {
		out = append(out, skipReason{reason, n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].reason < out[j].reason })
	return out
}
