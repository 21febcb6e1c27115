package kubelet

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"time"
)

// Options configure one standalone kubelet.
type Options struct {
	// Binary is the kubelet executable (script/kubelet.sh builds one).
	Binary string
	// Dir is the kubelet's private directory; it must exist. Its root,
	// cert, log, plugin and manifest directories are created below it,
	// and it is the kubelet's working directory (script/kubelet.sh makes
	// the container log symlink directory relative to it).
	Dir string
	// CRISocket is the path of the container runtime's CRI socket.
	CRISocket string
	// NodeName is the node's name (--hostname-override); static pods are
	// named "<manifest name>-<NodeName>".
	NodeName string
	// ReservedCPUs, when set (e.g. "0"), turns on the static CPU manager
	// with these CPUs reserved for the system, so a Guaranteed pod with an
	// integer CPU request gets CPUs of its own and the others share the
	// rest. Its reconcile loop is what sends UpdateContainerResources.
	ReservedCPUs string
	// CPUReconcilePeriod is cpuManagerReconcilePeriod; 10 s when zero.
	CPUReconcilePeriod time.Duration
	// SyncFrequency is how often a running pod is re-synced; 1 m when zero.
	SyncFrequency time.Duration
	// Verbosity is klog's -v; 2 when zero.
	Verbosity int
	// VModule is klog's --vmodule; "generic=5" (PLEG relists) when empty.
	VModule string
	// Port, ReadOnlyPort and HealthzPort are bound on 127.0.0.1; free
	// ports are picked for zero values.
	Port, ReadOnlyPort, HealthzPort int
	// ExtraArgs are appended to the command line.
	ExtraArgs []string
}

// Paths are the private locations of one kubelet, all under Dir, and the
// cgroup it runs its pods under.
type Paths struct {
	Dir         string
	RootDir     string // --root-dir: pods, volumes, CPU manager state
	CertDir     string
	ManifestDir string // --pod-manifest-path
	PodLogsDir  string
	PluginDir   string // volumePluginDir
	Config      string
	Log         string // kubelet's stderr
	// CgroupRoot is the kubelet's cgroup root in every cgroup v1 hierarchy,
	// private to this kubelet: kubelet removes pod cgroups under its root
	// that it does not know, so two kubelets must not share one.
	CgroupRoot string
}

func newPaths(dir, nodeName string) Paths {
	return Paths{
		Dir:         dir,
		RootDir:     filepath.Join(dir, "root"),
		CertDir:     filepath.Join(dir, "pki"),
		ManifestDir: filepath.Join(dir, "manifests"),
		PodLogsDir:  filepath.Join(dir, "pod-logs"),
		PluginDir:   filepath.Join(dir, "volume-plugins"),
		Config:      filepath.Join(dir, "kubelet.json"),
		Log:         filepath.Join(dir, "kubelet.log"),
		CgroupRoot:  "/steady-kubelet-" + nodeName,
	}
}

func (o Options) validate() error {
	var errs []error
	if o.Binary == "" {
		errs = append(errs, errors.New("no kubelet Binary"))
	}
	if o.Dir == "" || !filepath.IsAbs(o.Dir) {
		errs = append(errs, fmt.Errorf("Dir %q is not an absolute path", o.Dir))
	}
	if o.CRISocket == "" {
		errs = append(errs, errors.New("no CRISocket"))
	}
	if o.NodeName == "" {
		errs = append(errs, errors.New("no NodeName"))
	}
	for _, p := range []int{o.Port, o.ReadOnlyPort, o.HealthzPort} {
		if p < 0 || p > 65535 {
			errs = append(errs, fmt.Errorf("bad port %d", p))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	return nil
}

// renderConfig returns the KubeletConfiguration (JSON, which kubelet reads
// like YAML) for a kubelet with no API server on this kind of machine.
func renderConfig(p Paths, o Options) ([]byte, error) {
	cfg := map[string]any{
		"apiVersion": "kubelet.config.k8s.io/v1beta1",
		"kind":       "KubeletConfiguration",
		// Serving: loopback only; anonymous and AlwaysAllow, since there is
		// no API server to authenticate against.
		"address":            "127.0.0.1",
		"port":               o.Port,
		"readOnlyPort":       o.ReadOnlyPort,
		"healthzBindAddress": "127.0.0.1",
		"healthzPort":        o.HealthzPort,
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": true},
			"webhook":   map[string]any{"enabled": false},
		},
		"authorization": map[string]any{"mode": "AlwaysAllow"},
		// This machine: cgroup v1 (hybrid), no systemd, swap not accounted.
		"failCgroupV1":  false,
		"cgroupDriver":  "cgroupfs",
		"cgroupsPerQOS": true,
		"cgroupRoot":    p.CgroupRoot,
		"failSwapOn":    false,
		// The runtime, and private directories for what kubelet writes.
		"containerRuntimeEndpoint": "unix://" + o.CRISocket,
		"podLogsDir":               p.PodLogsDir,
		"volumePluginDir":          p.PluginDir,
		// kubelet sets sysctls it wants (vm.overcommit_memory, kernel.panic,
		// ...) instead of refusing to start; Stop restores them.
		"protectKernelDefaults": false,
		// No API server: nothing to attach or detach volumes for.
		"enableControllerAttachDetach": false,
		// The test images are imported offline: never garbage-collect them.
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
	}
	if o.ReservedCPUs != "" {
		cfg["cpuManagerPolicy"] = "static"
		cfg["reservedSystemCPUs"] = o.ReservedCPUs
	}
	if o.CPUReconcilePeriod > 0 {
		cfg["cpuManagerReconcilePeriod"] = o.CPUReconcilePeriod.String()
	}
	if o.SyncFrequency > 0 {
		cfg["syncFrequency"] = o.SyncFrequency.String()
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("kubelet: render config: %w", err)
	}
	return append(b, '\n'), nil
}

// args is kubelet's command line.
func args(p Paths, o Options) []string {
	v := o.Verbosity
	if v == 0 {
		v = 2
	}
	vmodule := o.VModule
	if vmodule == "" {
		vmodule = "generic=5"
	}
	a := []string{
		"--config=" + p.Config,
		"--root-dir=" + p.RootDir,
		"--cert-dir=" + p.CertDir,
		"--pod-manifest-path=" + p.ManifestDir,
		"--hostname-override=" + o.NodeName,
		"-v=" + strconv.Itoa(v),
		"--vmodule=" + vmodule,
	}
	return append(a, o.ExtraArgs...)
}
