package critest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A ginkgo JSON report as critest writes it: suite nodes are not specs,
// ginkgo's states fold into passed, failed and skipped, and a spec skipped
// by -ginkgo.skip (no message) is told from one that skipped itself.
const sampleReport = `[{"SuitePath": "/x", "SpecReports": [
 {"ContainerHierarchyTexts": null, "LeafNodeText": "", "LeafNodeType": "SynchronizedBeforeSuite", "State": "passed"},
 {"ContainerHierarchyTexts": ["[k8s.io] Image Manager"], "LeafNodeText": "public image with tag should be pulled and removed [Conformance]", "LeafNodeType": "It", "State": "passed"},
 {"ContainerHierarchyTexts": ["[k8s.io] Image Manager"], "LeafNodeText": "public image with digest should be pulled and removed [Conformance]", "LeafNodeType": "It", "State": "failed",
  "Failure": {"Message": "failed to pull image\nUnexpected error:\n    <*status.Error | 0x1>: \n    rpc error: code = NotFound desc = failed to pull and unpack image \"x@sha256:9700\": not found\n    {\n"}},
 {"ContainerHierarchyTexts": ["[k8s.io] PodSandbox", "runtime should support metrics operations"], "LeafNodeText": "runtime should support listing pod sandbox metrics [Conformance]", "LeafNodeType": "It", "State": "timedout",
  "Failure": {"Message": "Expected container_threads metrics to be present and they were not\nExpected\n    <[]string | len:1, cap:1>: [\"container_threads\"]\nto be empty"}},
 {"ContainerHierarchyTexts": ["[k8s.io] AppArmor"], "LeafNodeText": "should enforce", "LeafNodeType": "It", "State": "skipped"},
 {"ContainerHierarchyTexts": ["[k8s.io] NRI"], "LeafNodeText": "sync", "LeafNodeType": "It", "State": "skipped", "Failure": {"Message": "spec discrepancy: containerd loses containers"}}
]}]`

func writeReport(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "report.json")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	return p
}

func TestReadReport(t *testing.T) {
	r, err := ReadReport(writeReport(t, sampleReport))
	require.NoError(t, err)
	require.Len(t, r.Specs, 5)
	assert.Equal(t, 1, r.Count(Passed))
	assert.Equal(t, 2, r.Count(Failed))
	assert.Equal(t, 2, r.Count(Skipped))

	digest := r.Specs["[k8s.io] Image Manager public image with digest should be pulled and removed [Conformance]"]
	assert.Equal(t, Failed, digest.State)
	assert.Equal(t, `failed to pull image: failed to pull and unpack image "x@sha256:9700": not found`, digest.Reason)
	metrics := r.Specs["[k8s.io] PodSandbox runtime should support metrics operations runtime should support listing pod sandbox metrics [Conformance]"]
	assert.Equal(t, Failed, metrics.State, "timedout is a failure")
	assert.Contains(t, metrics.Reason, `["container_threads"] to be empty`)
	assert.True(t, r.Specs["[k8s.io] AppArmor should enforce"].Filtered)
	assert.False(t, r.Specs["[k8s.io] NRI sync"].Filtered)
	assert.Equal(t, "spec discrepancy: containerd loses containers", r.Specs["[k8s.io] NRI sync"].Reason)

	_, err = ReadReport(writeReport(t, `[{"SpecReports": []}]`))
	assert.ErrorContains(t, err, "holds no specs")
	_, err = ReadReport(writeReport(t, `{`))
	assert.Error(t, err)
}

func report(states map[string]State) *Report {
	r := &Report{Specs: map[string]Spec{}}
	for n, st := range states {
		r.Specs[n] = Spec{Name: n, Leaf: n, State: st}
	}
	return r
}

func TestDiff(t *testing.T) {
	base := report(map[string]State{"a": Passed, "b": Failed, "c": Skipped, "d": Passed, "e": Passed})
	other := report(map[string]State{"a": Passed, "b": Passed, "c": Skipped, "d": Failed, "f": Passed})
	for _, tc := range []struct {
		regressionsOnly bool
		want            []string
	}{
		{false, []string{"b", "d", "e", "f"}},
		{true, []string{"d", "e"}},
	} {
		var got []string
		for _, d := range Diff(base, other, tc.regressionsOnly) {
			got = append(got, d.Name)
		}
		assert.Equal(t, tc.want, got, "regressionsOnly=%v", tc.regressionsOnly)
	}
	assert.Empty(t, Diff(base, base, false))
}

// A difference of the first run is a flake when a rerun shows, on either
// build, an outcome the other build had; it counts only when the two
// builds' outcomes never meet.
func TestSettle(t *testing.T) {
	first := func(m map[string]State) *Report { return report(m) }
	rerun := func(m map[string]State) *Report {
		r := report(m)
		r.Specs["unfocused"] = Spec{Name: "unfocused", State: Skipped, Filtered: true}
		return r
	}
	up := []*Report{
		first(map[string]State{"same": Passed, "flaky": Passed, "broken": Passed, "race": Skipped, "fixed": Failed, "unfocused": Passed}),
		rerun(map[string]State{"flaky": Passed, "broken": Passed, "race": Skipped, "fixed": Failed}),
	}
	fork := []*Report{
		first(map[string]State{"same": Passed, "flaky": Failed, "broken": Failed, "race": Passed, "fixed": Passed, "unfocused": Passed}),
		rerun(map[string]State{"flaky": Passed, "broken": Failed, "race": Skipped, "fixed": Passed}),
	}
	differ, flaky := Settle(up, fork, false)
	assert.Equal(t, []string{"broken", "fixed"}, specNames(differ))
	assert.Equal(t, []string{"flaky", "race"}, specNames(flaky))

	// Regressions only: what base passed and other never passed.
	differ, flaky = Settle(up, fork, true)
	assert.Equal(t, []string{"broken"}, specNames(differ))
	assert.Equal(t, []string{"flaky"}, specNames(flaky))

	// A race the suite skips as a spec discrepancy: base passed it once
	// and skipped it once, other skipped it twice. No regression, as
	// other did nothing base did not; a new failure still is one.
	base := []*Report{
		first(map[string]State{"race": Passed, "worse": Passed}),
		rerun(map[string]State{"race": Skipped, "worse": Skipped}),
	}
	other := []*Report{
		first(map[string]State{"race": Skipped, "worse": Failed}),
		rerun(map[string]State{"race": Skipped, "worse": Skipped}),
	}
	differ, flaky = Settle(base, other, true)
	assert.Equal(t, []string{"worse"}, specNames(differ))
	assert.Equal(t, []string{"race"}, specNames(flaky))
}

func specNames(diffs []Difference) []string {
	var out []string
	for _, d := range diffs {
		out = append(out, d.Name)
	}
	return out
}

func TestFailedOnAll(t *testing.T) {
	a := report(map[string]State{"a": Passed, "b": Failed, "c": Failed})
	b := report(map[string]State{"a": Failed, "b": Passed, "c": Failed})
	failed := FailedOnAll(a, b)
	require.Len(t, failed, 1)
	assert.Equal(t, "c", failed[0].Name)
	assert.Empty(t, FailedOnAll())
}

func TestSummary(t *testing.T) {
	digest := "[k8s.io] Image Manager public image with digest should be pulled and removed [Conformance]"
	up := report(map[string]State{"a": Passed, digest: Failed})
	up.Specs[digest] = Spec{Name: digest, State: Failed, Reason: "failed to pull image"}
	fork := report(map[string]State{"a": Passed, digest: Failed})
	out := Summary("title", []Column{{"upstream", up}, {"fork", fork}}, nil, nil, []Skip{{Pattern: "AppArmor", Reason: "no AppArmor"}}, []Cause{DigestCause})
	assert.Contains(t, out, "passed   1         1")
	assert.Contains(t, out, "differing specs (after one rerun): 0")
	assert.Contains(t, out, "failed on every build: 1\n  - "+digest+"\n      failed to pull image\n      why: needs "+DigestImage)
	assert.Contains(t, out, `"AppArmor": no AppArmor`)

	r, err := ReadReport(writeReport(t, sampleReport))
	require.NoError(t, err)
	out = Summary("title", []Column{{"upstream", r}}, nil, nil, nil, nil)
	assert.Contains(t, out, "skipped by the suite itself on upstream, by reason:\n  - 1: spec discrepancy\n")
}

func TestRunArgs(t *testing.T) {
	args := Run{Endpoint: "/s/c.sock", NRISocket: "/s/nri.sock", Parallel: 4, Timeout: 30 * 60e9,
		Skips: []Skip{{Pattern: "AppArmor"}}, Focus: []string{"runtime should support HostPID", "a [b] (c)"}}.args("/r.json")
	assert.Equal(t, []string{
		"-runtime-endpoint=unix:///s/c.sock", "-image-endpoint=unix:///s/c.sock", "-parallel=4",
		"-ginkgo.json-report=/r.json", "-ginkgo.no-color", "-ginkgo.timeout=30m0s",
		"-nri-socket=/s/nri.sock", "-ginkgo.skip=AppArmor",
		`-ginkgo.focus=runtime should support HostPID|a \[b\] \(c\)`,
	}, args)
}
