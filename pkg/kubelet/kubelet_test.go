package kubelet

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestRenderConfig(t *testing.T) {
	o := Options{
		Binary: "/bin/kubelet", Dir: "/tmp/k", CRISocket: "/tmp/c/containerd.sock", NodeName: "n1",
		ReservedCPUs: "0", CPUReconcilePeriod: time.Second, SyncFrequency: 10 * time.Second,
		Port: 1, ReadOnlyPort: 2, HealthzPort: 3,
	}
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	p := newPaths(o.Dir, o.NodeName)
	b, err := renderConfig(p, o)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("config is not JSON: %v\n%s", err, b)
	}
	want := map[string]any{
		"kind":                      "KubeletConfiguration",
		"failCgroupV1":              false,
		"failSwapOn":                false,
		"cgroupDriver":              "cgroupfs",
		"cgroupRoot":                "/steady-kubelet-n1",
		"containerRuntimeEndpoint":  "unix:///tmp/c/containerd.sock",
		"readOnlyPort":              float64(2),
		"healthzPort":               float64(3),
		"cpuManagerPolicy":          "static",
		"reservedSystemCPUs":        "0",
		"cpuManagerReconcilePeriod": "1s",
		"syncFrequency":             "10s",
		"podLogsDir":                "/tmp/k/pod-logs",
		"volumePluginDir":           "/tmp/k/volume-plugins",
	}
	for k, v := range want {
		if cfg[k] != v {
			t.Errorf("%s = %v, want %v", k, cfg[k], v)
		}
	}
	o.ReservedCPUs, o.CPUReconcilePeriod = "", 0
	b, _ = renderConfig(p, o)
	if strings.Contains(string(b), "cpuManager") {
		t.Errorf("no ReservedCPUs must leave the CPU manager alone:\n%s", b)
	}
	a := strings.Join(args(p, o), " ")
	for _, w := range []string{"--config=/tmp/k/kubelet.json", "--root-dir=/tmp/k/root", "--pod-manifest-path=/tmp/k/manifests", "--hostname-override=n1", "-v=2", "--vmodule=generic=5"} {
		if !strings.Contains(a, w) {
			t.Errorf("args %q lack %q", a, w)
		}
	}
	if err := (Options{Dir: "rel"}).validate(); err == nil {
		t.Error("validate accepted empty options")
	}
}

const sampleMetrics = `# HELP kubelet_pleg_relist_duration_seconds [ALPHA] Duration in seconds for relisting pods in PLEG.
# TYPE kubelet_pleg_relist_duration_seconds histogram
kubelet_pleg_relist_duration_seconds_bucket{le="0.005"} 10
kubelet_pleg_relist_duration_seconds_bucket{le="0.01"} 20
kubelet_pleg_relist_duration_seconds_bucket{le="1"} 28
kubelet_pleg_relist_duration_seconds_bucket{le="10"} 29
kubelet_pleg_relist_duration_seconds_bucket{le="+Inf"} 30
kubelet_pleg_relist_duration_seconds_sum 75.5
kubelet_pleg_relist_duration_seconds_count 30
# TYPE kubelet_pleg_last_seen_seconds gauge
kubelet_pleg_last_seen_seconds 1.7638e+09
kubelet_cri_losing_support{version="1.36.0"} 1
rest_client_requests_total{code="200",host="a\"b",method="GET"} 3 1700000000000
`

func TestParseMetrics(t *testing.T) {
	m, err := ParseMetrics(sampleMetrics)
	if err != nil {
		t.Fatal(err)
	}
	h, ok := m.Histogram(PLEGRelistDuration)
	if !ok || h.Count != 30 || h.Sum != 75.5 || len(h.Buckets) != 5 {
		t.Fatalf("histogram = %+v, %v", h, ok)
	}
	if got := h.Above(1); got != 2 {
		t.Errorf("Above(1) = %v, want 2", got)
	}
	if got := h.Above(5); got != 1 { // the 10 s bucket is the finest bound >= 5
		t.Errorf("Above(5) = %v, want 1", got)
	}
	if got := h.MaxBound(); got <= 10 {
		t.Errorf("MaxBound = %v, want +Inf", got)
	}
	earlier := Histogram{Buckets: []Bucket{{0.005, 10}, {0.01, 20}, {1, 28}, {10, 28}, {1e300, 28}}, Sum: 5, Count: 28}
	d := h.Sub(earlier)
	if d.Count != 2 || d.Above(1) != 2 || d.MaxBound() <= 10 || d.Mean() != 35.25 {
		t.Errorf("Sub = %+v", d)
	}
	if got := m.LastSeen().Unix(); got != 1763800000 {
		t.Errorf("LastSeen = %v", got)
	}
	if s := m["rest_client_requests_total"]; len(s) != 1 || s[0].Labels["host"] != `a"b` || s[0].Value != 3 {
		t.Errorf("labels: %+v", s)
	}
	if _, err := ParseMetrics("broken{le=\"1 3\n"); err == nil {
		t.Error("ParseMetrics accepted a broken line")
	}
}

func TestParseLog(t *testing.T) {
	now := time.Date(2026, 11, 22, 23, 30, 0, 0, time.Local)
	log := `I1122 23:15:04.100000    1234 generic.go:224] "GenericPLEG: Relisting"
I1122 23:15:05.100000    1234 generic.go:224] "GenericPLEG: Relisting"
W1122 23:15:05.200000    1234 kubelet.go:1955] "SyncPod enter" pod="default/long-n1" podUID="abc"
continuation line
I1122 23:15:35.300000    1234 generic.go:224] "GenericPLEG: Relisting"
I1122 23:15:36.300000    1234 event.go:389] "Event occurred" object="default/short-n1" fieldPath="spec.containers{main}" kind="Pod" reason="Started" message="Started container main"
`
	lines := ParseLog(log, now)
	if len(lines) != 5 {
		t.Fatalf("parsed %d lines, want 5", len(lines))
	}
	if l := lines[2]; l.Severity != 'W' || l.Source != "kubelet.go:1955" || l.Message() != "SyncPod enter" || l.KV["pod"] != "default/long-n1" {
		t.Errorf("line = %+v", l)
	}
	if want := time.Date(2026, 11, 22, 23, 15, 4, 100000000, time.Local); !lines[0].Time.Equal(want) {
		t.Errorf("time = %v, want %v", lines[0].Time, want)
	}
	relists := Times(lines, RelistMessage)
	if len(relists) != 3 {
		t.Fatalf("relists = %v", relists)
	}
	gap, at := MaxGap(relists, relists[0], relists[2])
	if gap != 30200*time.Millisecond || !at.Equal(relists[1]) {
		t.Errorf("MaxGap = %v at %v", gap, at)
	}
	// A relist still stuck at the end of the window counts up to its end.
	if gap, _ := MaxGap(relists[:2], relists[0], relists[1].Add(time.Minute)); gap != time.Minute {
		t.Errorf("open gap = %v", gap)
	}
	// Gaps wholly before the window do not count.
	if gap, _ := MaxGap(relists, relists[2], relists[2].Add(time.Second)); gap != time.Second {
		t.Errorf("gap after window start = %v", gap)
	}
	// Relists at 0 s (ok), 1 s (fails at 3 s), 4 s (ok, blocked until 66 s)
	// and 66 s: kubelet's health saw 66-0 = 66 s without a successful relist.
	stuck := ParseLog(`I1122 23:15:04.000000 1 generic.go:240] "GenericPLEG: Relisting"
I1122 23:15:05.000000 1 generic.go:240] "GenericPLEG: Relisting"
E1122 23:15:07.000000 1 generic.go:254] "GenericPLEG: Unable to retrieve pods" err="rpc error: code = Unavailable"
I1122 23:15:08.000000 1 generic.go:240] "GenericPLEG: Relisting"
I1122 23:16:10.000000 1 generic.go:240] "GenericPLEG: Relisting"
`, now)
	base := stuck[0].Time
	if got := PLEGStaleness(stuck, base, base.Add(67*time.Second)); got != 66*time.Second {
		t.Errorf("PLEGStaleness = %v, want 66s", got)
	}
	// At 30 s the relist of 4 s is still running: 30 s so far.
	if got := PLEGStaleness(stuck, base, base.Add(30*time.Second)); got != 30*time.Second {
		t.Errorf("PLEGStaleness at 30 s = %v, want 30s", got)
	}
	// The relist of 05.1 ended by 35.3 (when the next began): from 04.1.
	if got := PLEGStaleness(lines, relists[2], relists[2].Add(500*time.Millisecond)); got != 31200*time.Millisecond {
		t.Errorf("PLEGStaleness = %v, want 31.2s", got)
	}
	ev := map[string]string{"reason": "Started", "object": "default/short-n1"}
	if n := Count(lines, "Event occurred", ev, relists[0], now); n != 1 {
		t.Errorf("Count = %d", n)
	}
	if n := Count(lines, "Event occurred", ev, now, now); n != 0 {
		t.Errorf("Count outside window = %d", n)
	}
	// A year boundary: a December line read in January is last year's.
	jan := time.Date(2027, 1, 1, 0, 0, 10, 0, time.Local)
	if l := ParseLog("I1231 23:59:59.000000 1 a.go:1] \"x\"\n", jan); len(l) != 1 || l[0].Time.Year() != 2026 {
		t.Errorf("year boundary: %+v", l)
	}
}

func TestStaticPodManifest(t *testing.T) {
	b, err := StaticPod{
		Name: "excl", Image: "docker.io/steady/busybox:1", Command: []string{"sh", "-c", "exit 0"},
		RestartPolicy: "Never", CPU: "1", Memory: "64Mi",
		HostPaths:   map[string]string{"/trigger": "/tmp/t"},
		Annotations: map[string]string{"steady.test/run": "1"},
	}.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var pod struct {
		Metadata struct {
			Name, Namespace string
			Annotations     map[string]string
		}
		Spec struct {
			HostNetwork                   bool
			RestartPolicy                 string
			TerminationGracePeriodSeconds int
			Containers                    []struct {
				Name, Image, ImagePullPolicy string
				Command                      []string
				Resources                    struct{ Requests, Limits map[string]string }
				VolumeMounts                 []struct{ Name, MountPath string }
			}
			Volumes []struct {
				Name     string
				HostPath struct{ Path string }
			}
		}
	}
	if err := json.Unmarshal(b, &pod); err != nil {
		t.Fatal(err)
	}
	c := pod.Spec.Containers[0]
	if pod.Metadata.Namespace != "default" || !pod.Spec.HostNetwork || pod.Spec.RestartPolicy != "Never" ||
		pod.Spec.TerminationGracePeriodSeconds != 2 || c.Name != "main" || c.ImagePullPolicy != "Never" ||
		c.Resources.Limits["cpu"] != "1" || c.Resources.Requests["memory"] != "64Mi" ||
		c.VolumeMounts[0].MountPath != "/trigger" || pod.Spec.Volumes[0].HostPath.Path != "/tmp/t" ||
		pod.Metadata.Annotations["steady.test/run"] != "1" {
		t.Errorf("manifest:\n%s", b)
	}
	if strings.Contains(string(b), "initContainers") {
		t.Errorf("init container without InitCommand:\n%s", b)
	}
	b, err = StaticPod{Name: "job", Image: "i", Command: []string{"app"}, InitCommand: []string{"setup"},
		HostPaths: map[string]string{"/trigger": "/tmp/t"}}.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var withInit struct {
		Spec struct {
			InitContainers []struct {
				Name, Image, ImagePullPolicy string
				Command                      []string
				VolumeMounts                 []struct{ MountPath string }
			}
		}
	}
	if err := json.Unmarshal(b, &withInit); err != nil {
		t.Fatal(err)
	}
	if ic := withInit.Spec.InitContainers; len(ic) != 1 || ic[0].Name != "init" || ic[0].Image != "i" ||
		ic[0].ImagePullPolicy != "Never" || ic[0].Command[0] != "setup" || ic[0].VolumeMounts[0].MountPath != "/trigger" {
		t.Errorf("init container:\n%s", b)
	}
	if _, err := (StaticPod{Name: "x", Image: "i", RestartPolicy: "Sometimes"}).Manifest(); err == nil {
		t.Error("bad restart policy accepted")
	}
	if _, err := (StaticPod{Image: "i"}).Manifest(); err == nil {
		t.Error("pod without name accepted")
	}
}

func TestParseCgroupMounts(t *testing.T) {
	info := `25 30 0:23 / /sys/fs/cgroup rw - tmpfs tmpfs rw
26 25 0:24 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
27 25 0:25 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset
28 25 0:26 / /sys/fs/cgroup/cpu rw shared:9 - cgroup cgroup rw,cpu
`
	got, err := parseCgroupMounts(bufio.NewScanner(strings.NewReader(info)), false)
	if err != nil || strings.Join(got, ",") != "/sys/fs/cgroup/cpu,/sys/fs/cgroup/cpuset" {
		t.Errorf("v1 mounts = %v, %v", got, err)
	}
	got, err = parseCgroupMounts(bufio.NewScanner(strings.NewReader(info)), true)
	if err != nil || strings.Join(got, ",") != "/sys/fs/cgroup/cpu,/sys/fs/cgroup/cpuset,/sys/fs/cgroup/unified" {
		t.Errorf("all mounts = %v, %v", got, err)
	}
}
