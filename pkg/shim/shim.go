// Package shim talks to a containerd runc shim directly over its ttrpc
// socket (the task v2 API), the way containerd does, so tests can ask the
// shim questions while containerd itself is busy or gone.
package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/anypb"
)

// Address reads the socket address a v2 shim wrote into a task's bundle
// under containerd's state dir.
func Address(stateDir, namespace, id string) (string, error) {
	path := filepath.Join(stateDir, "io.containerd.runtime.v2.task", namespace, id, "address")
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read shim address of %s: %w", id, err)
	}
	return strings.TrimPrefix(strings.TrimSpace(string(b)), "unix://"), nil
}

// Client is a ttrpc task client for one shim.
type Client struct {
	namespace string
	conn      net.Conn
	client    *ttrpc.Client
	task      taskapi.TaskService
}

// Dial connects to the shim listening at address (a unix socket path;
// "@name" for an abstract socket) and scopes every call to namespace.
func Dial(address, namespace string) (*Client, error) {
	conn, err := net.Dial("unix", address)
	if err != nil {
		return nil, fmt.Errorf("dial shim %s: %w", address, err)
	}
	client := ttrpc.NewClient(conn)
	return &Client{namespace: namespace, conn: conn, client: client, task: taskapi.NewTaskClient(client)}, nil
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
	_, err = c.task.Update(c.ctx(ctx), &taskapi.UpdateTaskRequest{
		ID: id, Resources: &anypb.Any{TypeUrl: linuxResourcesURL, Value: v},
	})
	return err
}

// State asks for a task's state.
func (c *Client) State(ctx context.Context, id string) (*taskapi.StateResponse, error) {
	return c.task.State(c.ctx(ctx), &taskapi.StateRequest{ID: id})
}

// Kill signals a task's init process (all: every process of the task).
func (c *Client) Kill(ctx context.Context, id string, signal uint32, all bool) error {
	_, err := c.task.Kill(c.ctx(ctx), &taskapi.KillRequest{ID: id, Signal: signal, All: all})
	return err
}
