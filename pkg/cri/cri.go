// Package cri holds thin helpers over the CRI v1 API for tests: run a
// host-network pod, create and start a container, and find the processes
// behind it.
package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Client is a CRI runtime client on one connection.
type Client struct {
	runtimeapi.RuntimeServiceClient
	images runtimeapi.ImageServiceClient
	conn   *grpc.ClientConn
}

// New wraps an open connection to a containerd socket.
func New(conn *grpc.ClientConn) *Client {
	return &Client{
		RuntimeServiceClient: runtimeapi.NewRuntimeServiceClient(conn),
		images:               runtimeapi.NewImageServiceClient(conn),
		conn:                 conn,
	}
}

// WaitImages waits until the CRI image service knows every ref, at most
// timeout. An image imported through containerd's API reaches the CRI's
// image store through an event, a moment later; a pod started before
// then would try to pull its sandbox image.
func (c *Client) WaitImages(ctx context.Context, timeout time.Duration, refs ...string) error {
	deadline := time.Now().Add(timeout)
	for _, ref := range refs {
		for {
			resp, err := c.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
			if err == nil && resp.GetImage() != nil {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("CRI does not know image %s after %s (err %v)", ref, timeout, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Pod is a running pod sandbox and the config it was created with.
type Pod struct {
	ID     string
	Config *runtimeapi.PodSandboxConfig
}

// RunPod starts a host-network pod. Hostname stays empty: a host-network
// pod has no UTS namespace of its own, and runc refuses to set one.
func (c *Client) RunPod(ctx context.Context, name string) (*Pod, error) {
	return c.RunPodWithHandler(ctx, name, "")
}

// RunPodWithHandler starts a host-network pod like RunPod, with the CRI
// runtime handler (a RuntimeClass's handler); "" is the default handler.
func (c *Client) RunPodWithHandler(ctx context.Context, name, handler string) (*Pod, error) {
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "steady", Uid: name + "-uid"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
			},
		},
		Labels: map[string]string{"steady.test/pod": name},
	}
	resp, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: handler})
	if err != nil {
		return nil, fmt.Errorf("run pod %s: %w", name, err)
	}
	return &Pod{ID: resp.PodSandboxId, Config: cfg}, nil
}

// StartContainer creates and starts a container in pod running command.
func (c *Client) StartContainer(ctx context.Context, pod *Pod, name, image string, command []string) (string, error) {
	cfg := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: image},
		Command:  command,
		Linux:    &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{CpuShares: 256}},
	}
	created, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: pod.ID, Config: cfg, SandboxConfig: pod.Config,
	})
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", name, err)
	}
	if _, err := c.RuntimeServiceClient.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: created.ContainerId}); err != nil {
		return "", fmt.Errorf("start container %s: %w", name, err)
	}
	return created.ContainerId, nil
}

// InitPID returns the host pid of a container's init process, read from
// the verbose ContainerStatus info.
func (c *Client) InitPID(ctx context.Context, id string) (int, error) {
	resp, err := c.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		return 0, fmt.Errorf("container status %s: %w", id, err)
	}
	var info struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil {
		return 0, fmt.Errorf("container %s: parse verbose info: %w", id, err)
	}
	if info.Pid <= 0 {
		return 0, fmt.Errorf("container %s has no pid in its status info", id)
	}
	return info.Pid, nil
}

// ShimPID returns the pid of the shim serving a container: the parent of
// its init process (the shim is the subreaper that runc leaves behind).
func ShimPID(initPID int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", initPID))
	if err != nil {
		return 0, fmt.Errorf("read status of pid %d: %w", initPID, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("no PPid in /proc/%d/status", initPID)
}

// UpdateCPU sends a small resource update to a container, the way kubelet's
// CPU manager does.
func (c *Client) UpdateCPU(ctx context.Context, id string, shares int64) error {
	_, err := c.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{
		ContainerId: id,
		Linux:       &runtimeapi.LinuxContainerResources{CpuShares: shares},
	})
	return err
}
