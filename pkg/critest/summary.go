package critest

import (
	"fmt"
	"strings"
	"text/tabwriter"
)

// Column is one build's report in a summary.
type Column struct {
	Name   string
	Report *Report
}

// Summary prints the builds side by side: passed, failed and skipped per
// build; the specs that differ; the specs that failed on every build, with
// their reasons (naming DigestImage where it is the cause); and the skips
// applied to every build, with theirs.
func Summary(title string, cols []Column, differing, flaky []Difference, skips []Skip) string {
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
		fmt.Fprintf(&b, "  - %s\n      %s\n", s.Name, failureReason(s))
	}
	if len(skips) > 0 {
		fmt.Fprintf(&b, "\nskipped on every build, as this machine cannot run them:\n")
		for _, s := range skips {
			fmt.Fprintf(&b, "  - %q: %s\n", s.Pattern, s.Reason)
		}
	}
	return b.String()
}

// failureReason is a spec's failure message, saying when the cause is the
// digest-pinned image no offline registry can serve.
func failureReason(s Spec) string {
	if strings.Contains(s.Reason, "test-image-digest") || strings.Contains(s.Name, "digest") {
		return "needs " + DigestImage + ", pinned by a registry digest that no image built offline can have: " + s.Reason
	}
	return s.Reason
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
