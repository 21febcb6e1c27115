package kubelet

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
)

// StaticPod describes a one-container, host-network static pod.
type StaticPod struct {
	Name      string
	Namespace string // "default" when empty
	Container string // the container's name; "main" when empty
	Image     string
	Command   []string
	// RestartPolicy is Always, OnFailure or Never ("Always" when empty).
	RestartPolicy string
	// CPU and Memory, when set, are both requests and limits: with an
	// integer CPU the pod is Guaranteed and the static CPU manager gives it
	// CPUs of its own. Unset, the pod is BestEffort.
	CPU, Memory string
	// HostPaths maps paths in the container to host directories.
	HostPaths map[string]string
	// Annotations vary a pod's hash (and so its UID) between runs.
	Annotations map[string]string
	// InitCommand, when set, adds an init container named "init" running
	// it, with the same image and host paths as the container.
	InitCommand []string
	// GracePeriod is terminationGracePeriodSeconds; 2 when zero (sh as
	// PID 1 ignores SIGTERM, so every stop waits the whole period).
	GracePeriod int
}

// Manifest renders the pod as a JSON manifest (kubelet reads JSON like
// YAML). Images are never pulled: the test images are imported offline.
func (p StaticPod) Manifest() ([]byte, error) {
	if p.Name == "" || p.Image == "" {
		return nil, errors.New("kubelet: a static pod needs a Name and an Image")
	}
	ns := p.Namespace
	if ns == "" {
		ns = "default"
	}
	cname := p.Container
	if cname == "" {
		cname = "main"
	}
	restart := p.RestartPolicy
	if restart == "" {
		restart = "Always"
	}
	switch restart {
	case "Always", "OnFailure", "Never":
	default:
		return nil, fmt.Errorf("kubelet: bad restart policy %q", restart)
	}
	grace := p.GracePeriod
	if grace == 0 {
		grace = 2
	}
	container := map[string]any{
		"name":            cname,
		"image":           p.Image,
		"imagePullPolicy": "Never",
	}
	if len(p.Command) > 0 {
		container["command"] = p.Command
	}
	if p.CPU != "" || p.Memory != "" {
		res := map[string]string{}
		if p.CPU != "" {
			res["cpu"] = p.CPU
		}
		if p.Memory != "" {
			res["memory"] = p.Memory
		}
		container["resources"] = map[string]any{"requests": res, "limits": res}
	}
	var volumes []map[string]any
	var mounts []map[string]any
	paths := make([]string, 0, len(p.HostPaths))
	for in := range p.HostPaths {
		paths = append(paths, in)
	}
	sort.Strings(paths)
	for i, in := range paths {
		name := fmt.Sprintf("host-%d", i)
		volumes = append(volumes, map[string]any{
			"name":     name,
			"hostPath": map[string]any{"path": p.HostPaths[in], "type": "Directory"},
		})
		mounts = append(mounts, map[string]any{"name": name, "mountPath": in})
	}
	if len(mounts) > 0 {
		container["volumeMounts"] = mounts
	}
	meta := map[string]any{"name": p.Name, "namespace": ns}
	if len(p.Annotations) > 0 {
		meta["annotations"] = p.Annotations
	}
	spec := map[string]any{
		"hostNetwork":                   true,
		"restartPolicy":                 restart,
		"terminationGracePeriodSeconds": grace,
		"containers":                    []any{container},
	}
	if len(volumes) > 0 {
		spec["volumes"] = volumes
	}
	if len(p.InitCommand) > 0 {
		initContainer := map[string]any{
			"name":            "init",
			"image":           p.Image,
			"imagePullPolicy": "Never",
			"command":         p.InitCommand,
		}
		if len(mounts) > 0 {
			initContainer["volumeMounts"] = mounts
		}
		spec["initContainers"] = []any{initContainer}
	}
	b, err := json.MarshalIndent(map[string]any{
		"apiVersion": "v1",
		"kind":       "Pod",
		"metadata":   meta,
		"spec":       spec,
	}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("kubelet: render manifest: %w", err)
	}
	return append(b, '\n'), nil
}
