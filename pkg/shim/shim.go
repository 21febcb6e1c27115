// Package shim talks to a containerd runc shim directly over its ttrpc
// socket (the task API v2 of containerd 1.x shims or v3 of 2.x shims), the
// way containerd does, so tests can ask the shim questions while
// containerd itself is busy or gone.
package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/anypb"
)

// Endpoint is where a shim listens and which task API it serves.
type Endpoint struct {
	Address string // unix socket path ("@name" for an abstract socket)
	Version int    // task API: 2 (containerd 1.x shims) or 3 (2.x)
}

// Locate reads the endpoint a v2 shim's bootstrap left in a task's bundle
// under containerd's state dir: bootstrap.json on containerd 2.x, the
// address file (task API v2) on 1.x.
func Locate(stateDir, namespace, id string) (Endpoint, error) {
	bundle := filepath.Join(stateDir, "io.containerd.runtime.v2.task", namespace, id)
	ep, err := readBootstrap(filepath.Join(bundle, "bootstrap.json"))
	if errors.Is(err, os.ErrNotExist) {
		var b []byte
		b, err = os.ReadFile(filepath.Join(bundle, "address"))
		ep = Endpoint{Address: string(b), Version: 2}
	}
	if err != nil {
		return Endpoint{}, fmt.Errorf("read shim address of %s: %w", id, err)
	}
	ep.Address = strings.TrimPrefix(strings.TrimSpace(ep.Address), "unix://")
	return ep, nil
}

// readBootstrap reads a 2.x shim's bootstrap.json.
func readBootstrap(path string) (Endpoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Endpoint{}, err
	}
	var params struct {
		Version  int    `json:"version"`
		Address  string `json:"address"`
		Protocol string `json:"protocol"`
	}
	if err := json.Unmarshal(b, &params); err != nil {
		return Endpoint{}, fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case params.Protocol != "" && params.Protocol != "ttrpc":
		return Endpoint{}, fmt.Errorf("%s: shim speaks %q, not ttrpc", path, params.Protocol)
	case params.Address == "":
		return Endpoint{}, fmt.Errorf("%s has no address", path)
	case params.Version != 2 && params.Version != 3:
		return Endpoint{}, fmt.Errorf("%s: task API version %d is neither 2 nor 3", path, params.Version)
	}
	return Endpoint{Address: params.Address, Version: params.Version}, nil
}

// Client is a ttrpc task client for one shim.
type Client struct {
	namespace string
	client    *ttrpc.Client
	task      taskCalls
}

// taskCalls are the task API calls the tests make, for either API version.
type taskCalls interface {
	update(ctx context.Context, id string, resources *anypb.Any) error
	state(ctx context.Context, id string) (State, error)
	kill(ctx context.Context, id string, signal uint32, all bool) error
}

// State is what a shim answers to State.
type State struct {
	Status     tasktypes.Status
	ExitStatus uint32
}

// Dial connects to the shim at ep and scopes every call to namespace.
func Dial(ep Endpoint, namespace string) (*Client, error) {
	conn, err := net.Dial("unix", ep.Address)
	if err != nil {
		return nil, fmt.Errorf("dial shim %s: %w", ep.Address, err)
	}
	client := ttrpc.NewClient(conn)
	c := &Client{namespace: namespace, client: client}
	switch ep.Version {
	case 2:
		c.task = taskV2{taskv2.NewTTRPCTaskClient(client)}
	case 3:
		c.task = taskV3{taskv3.NewTTRPCTaskClient(client)}
	default:
		client.Close()
		return nil, fmt.Errorf("dial shim %s: unknown task API version %d", ep.Address, ep.Version)
	}
	return c, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.client.Close() }

func (c *Client) ctx(ctx context.Context) context.Context {
	return ttrpc.WithMetadata(ctx, ttrpc.MD{"containerd-namespace-ttrpc": []string{c.namespace}})
}

// linuxResourcesURL is the typeurl containerd registers for runtime-spec's
// LinuxResources, which it marshals as JSON.
const linuxResourcesURL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"

// UpdateCPUShares sends the Update containerd sends for a CPU change.
func (c *Client) UpdateCPUShares(ctx context.Context, id string, shares uint64) error {
	v, err := json.Marshal(map[string]any{"cpu": map[string]any{"shares": shares}})
	if err != nil {
		return err
	}
	return c.task.update(c.ctx(ctx), id, &anypb.Any{TypeUrl: linuxResourcesURL, Value: v})
}

// State asks for a task's state.
func (c *Client) State(ctx context.Context, id string) (State, error) {
	return c.task.state(c.ctx(ctx), id)
}

// Kill signals a task's init process (all: every process of the task).
func (c *Client) Kill(ctx context.Context, id string, signal uint32, all bool) error {
	return c.task.kill(c.ctx(ctx), id, signal, all)
}

type taskV2 struct{ c taskv2.TTRPCTaskService }

func (t taskV2) update(ctx context.Context, id string, r *anypb.Any) error {
	_, err := t.c.Update(ctx, &taskv2.UpdateTaskRequest{ID: id, Resources: r})
	return err
}

func (t taskV2) state(ctx context.Context, id string) (State, error) {
	resp, err := t.c.State(ctx, &taskv2.StateRequest{ID: id})
	if err != nil {
		return State{}, err
	}
	return State{Status: resp.Status, ExitStatus: resp.ExitStatus}, nil
}

func (t taskV2) kill(ctx context.Context, id string, signal uint32, all bool) error {
	_, err := t.c.Kill(ctx, &taskv2.KillRequest{ID: id, Signal: signal, All: all})
	return err
}

type taskV3 struct{ c taskv3.TTRPCTaskService }

func (t taskV3) update(ctx context.Context, id string, r *anypb.Any) error {
	_, err := t.c.Update(ctx, &taskv3.UpdateTaskRequest{ID: id, Resources: r})
	return err
}

func (t taskV3) state(ctx context.Context, id string) (State, error) {
	resp, err := t.c.State(ctx, &taskv3.StateRequest{ID: id})
	if err != nil {
		return State{}, err
	}
	return State{Status: resp.Status, ExitStatus: resp.ExitStatus}, nil
}

func (t taskV3) kill(ctx context.Context, id string, signal uint32, all bool) error {
	_, err := t.c.Kill(ctx, &taskv3.KillRequest{ID: id, Signal: signal, All: all})
	return err
}
