package critest

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

// State is a spec's outcome, folded from ginkgo's states.
type State string

const (
	Passed  State = "passed"
	Failed  State = "failed" // failed, panicked, timedout, interrupted, aborted
	Skipped State = "skipped"
)

// Spec is one spec's outcome in a report.
type Spec struct {
	Name   string // container texts and leaf text, joined by spaces
	Leaf   string // the It's own text
	State  State
	Reason string // the failure or skip message, condensed to one line
	// Filtered is true for a spec skipped by -ginkgo.skip, not by itself.
	Filtered bool
}

// Report is what one critest run found, by spec name.
type Report struct {
	Specs map[string]Spec
}

// ginkgoReport is the part of ginkgo's JSON report (types.Report) read here.
type ginkgoReport struct {
	SpecReports []struct {
		ContainerHierarchyTexts []string
		LeafNodeText            string
		LeafNodeType            string
		State                   string
		Failure                 struct {
			Message string
		}
	}
}

// ReadReport reads a ginkgo JSON report (a list of suite reports).
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("critest report: %w", err)
	}
	var suites []ginkgoReport
	if err := json.Unmarshal(b, &suites); err != nil {
		return nil, fmt.Errorf("critest report %s: %w", path, err)
	}
	r := &Report{Specs: map[string]Spec{}}
	for _, s := range suites {
		for _, sr := range s.SpecReports {
			if sr.LeafNodeType != "It" {
				continue
			}
			name := strings.Join(append(append([]string{}, sr.ContainerHierarchyTexts...), sr.LeafNodeText), " ")
			r.Specs[name] = Spec{
				Name: name, Leaf: sr.LeafNodeText,
				State:    fold(sr.State),
				Reason:   reason(sr.Failure.Message),
				Filtered: sr.State == "skipped" && sr.Failure.Message == "",
			}
		}
	}
	if len(r.Specs) == 0 {
		return nil, fmt.Errorf("critest report %s holds no specs", path)
	}
	return r, nil
}

func fold(s string) State {
	switch s {
	case "passed":
		return Passed
	case "skipped", "pending":
		return Skipped
	}
	return Failed
}

// reason condenses a ginkgo failure message to one line: its first line,
// with the gRPC error's description when there is one, or else the next
// few lines of a gomega expectation.
func reason(msg string) string {
	var lines []string
	for _, l := range strings.Split(msg, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return ""
	}
	out := lines[0]
	for _, l := range lines[1:] {
		if _, desc, ok := strings.Cut(l, "desc = "); ok && strings.HasPrefix(l, "rpc error:") {
			out += ": " + desc
			return clip(out)
		}
	}
	if len(lines) > 1 && !strings.HasPrefix(lines[1], "Unexpected error") {
		out = strings.Join(lines[:min(len(lines), 5)], " ")
	}
	return clip(out)
}

func clip(s string) string {
	const max = 300
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

// Count returns how many specs are in state st.
func (r *Report) Count(st State) int {
	n := 0
	for _, s := range r.Specs {
		if s.State == st {
			n++
		}
	}
	return n
}

// Names returns the names of the specs in state st, sorted.
func (r *Report) Names(st State) []string {
	var names []string
	for n, s := range r.Specs {
		if s.State == st {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// Difference is a spec whose outcome differs between two builds.
type Difference struct {
	Name        string
	Base, Other Spec
}

// Diff returns the specs whose state differs between base and other, and
// those base has that other lacks (or the reverse), sorted by name. When
// regressionsOnly is set, only the specs that pass on base and not on
// other count.
func Diff(base, other *Report, regressionsOnly bool) []Difference {
	var diffs []Difference
	for _, n := range names(base, other) {
		b, o := base.spec(n), other.spec(n)
		if b.State == o.State || (regressionsOnly && b.State != Passed) {
			continue
		}
		diffs = append(diffs, Difference{Name: n, Base: b, Other: o})
	}
	return diffs
}

// Settle judges the differences of a first run after the differing specs
// were rerun once on both builds (base and other hold each build's runs,
// the first run first). A spec differs only if no outcome seen on one
// build was seen on the other: one that matched in some run was a flake.
// With regressionsOnly, only a spec base passed differs, and only when
// other never passed it and ended in a state base never did: a spec that
// base itself passed once and skipped once (a known race the suite skips
// as a spec discrepancy) is no regression when other only skips it too.
func Settle(base, other []*Report, regressionsOnly bool) (differ, flaky []Difference) {
	for _, d := range Diff(base[0], other[0], regressionsOnly) {
		bs, os := outcomes(base, d.Name), outcomes(other, d.Name)
		matched := false
		for st := range bs {
			if os[st] {
				matched = true
			}
		}
		if regressionsOnly {
			matched = !bs[Passed] || os[Passed] || subset(os, bs)
		}
		if matched {
			flaky = append(flaky, d)
		} else {
			differ = append(differ, d)
		}
	}
	return differ, flaky
}

// subset reports whether every state in a is in b.
func subset(a, b map[State]bool) bool {
	for st := range a {
		if !b[st] {
			return false
		}
	}
	return true
}

// outcomes is the set of states spec n had in runs, leaving out runs
// that did not run it (a focused rerun filters the others out).
func outcomes(runs []*Report, n string) map[State]bool {
	seen := map[State]bool{}
	for i, r := range runs {
		s, ok := r.Specs[n]
		if i > 0 && (!ok || s.Filtered) {
			continue
		}
		seen[r.spec(n).State] = true
	}
	return seen
}

func names(reports ...*Report) []string {
	set := map[string]bool{}
	for _, r := range reports {
		for n := range r.Specs {
			set[n] = true
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// spec returns the spec named n, or one in state "missing".
func (r *Report) spec(n string) Spec {
	if s, ok := r.Specs[n]; ok {
		return s
	}
	return Spec{Name: n, State: "missing"}
}

// FailedOnAll returns the specs that failed in every report, by name, with
// the first report's spec.
func FailedOnAll(reports ...*Report) []Spec {
	if len(reports) == 0 {
		return nil
	}
	var out []Spec
	for _, n := range reports[0].Names(Failed) {
		all := true
		for _, r := range reports[1:] {
			if r.Specs[n].State != Failed {
				all = false
			}
		}
		if all {
			out = append(out, reports[0].Specs[n])
		}
	}
	return out
}
