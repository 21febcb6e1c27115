// Package registry serves OCI images to containerd without the network: it
// runs go-containerregistry's crane registry on 127.0.0.1 inside a private
// network namespace, pushes image layouts to it, and writes the hosts.toml
// files (containerd's registry config_path) that send every pull from the
// named registries there and nowhere else.
package registry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd-steady/containerd-steady/pkg/netns"
	"github.com/containerd-steady/containerd-steady/pkg/proc"
)

// Addr is where the registry listens inside its namespace; the namespace
// is private, so the fixed port collides with nothing.
const Addr = "127.0.0.1:5000"

// Registry is one running crane registry.
type Registry struct {
	crane string
	ns    *netns.NetNS
	proc  *proc.Proc
	Log   string
}

// Start runs 'crane registry serve' on Addr in ns, logging to dir, and
// returns once it answers.
func Start(ctx context.Context, crane string, ns *netns.NetNS, dir string) (*Registry, error) {
	if _, err := os.Stat(crane); err != nil {
		return nil, fmt.Errorf("registry: crane missing (run script/critest.sh): %w", err)
	}
	r := &Registry{crane: crane, ns: ns, Log: filepath.Join(dir, "registry.log")}
	p, err := proc.Start(ns.Command(context.Background(), crane, "registry", "serve", "--address", Addr), r.Log)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	r.proc = p
	if err := r.waitReady(ctx); err != nil {
		return nil, errors.Join(err, r.Stop(ctx))
	}
	return r, nil
}

// waitReady polls the registry's /v2/ endpoint from inside the namespace.
func (r *Registry) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := r.ns.Command(ctx, r.crane, "catalog", "--insecure", Addr).CombinedOutput()
		if err == nil {
			return nil
		}
		if r.proc.Exited() || time.Now().After(deadline) {
			return fmt.Errorf("registry did not answer on %s: %w: %s\n%s", Addr, err, out, proc.Tail(r.Log, 20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Push pushes the OCI image layout at layout as ref (e.g.
// registry.k8s.io/pause:3.9): the registry host is dropped, the
// repository path and tag kept, since every host is served by this one
// registry. It returns the pushed manifest's digest.
func (r *Registry) Push(ctx context.Context, layout, ref string) (string, error) {
	repo, err := Repository(ref)
	if err != nil {
		return "", err
	}
	out, err := r.ns.Command(ctx, r.crane, "push", "--insecure", layout, Addr+"/"+repo).Output()
	if err != nil {
		var stderr string
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = string(ee.Stderr)
		}
		return "", fmt.Errorf("crane push %s as %s: %w: %s", layout, ref, err, stderr)
	}
	d := strings.TrimSpace(string(out))
	_, digest, ok := strings.Cut(d, "@")
	if !ok {
		return "", fmt.Errorf("crane push %s: no digest in %q", ref, d)
	}
	return digest, nil
}

// Repository returns ref's repository path and tag without its registry
// host: registry.k8s.io/e2e-test-images/busybox:1.29-2 gives
// e2e-test-images/busybox:1.29-2. ref must name a host and a tag.
func Repository(ref string) (string, error) {
	host, rest, ok := strings.Cut(ref, "/")
	if !ok || !strings.ContainsAny(host, ".:") || rest == "" {
		return "", fmt.Errorf("registry: %q does not name a registry host", ref)
	}
	if strings.Contains(rest, "@") {
		return "", fmt.Errorf("registry: %q is pinned by digest; a digest cannot be pushed as a name", ref)
	}
	if i := strings.LastIndex(rest, ":"); i < 0 || strings.Contains(rest[i:], "/") {
		return "", fmt.Errorf("registry: %q has no tag", ref)
	}
	return rest, nil
}

// Stop ends the registry (by its PID) and waits for it.
func (r *Registry) Stop(ctx context.Context) error {
	if r.proc == nil {
		return nil
	}
	return r.proc.Stop(ctx, 5*time.Second)
}

// WriteHosts writes dir/<host>/hosts.toml for each host, naming the
// registry as the host's server: containerd then pulls from it alone,
// over plain HTTP, and never falls back to the real host.
func WriteHosts(dir string, hosts []string) error {
	for _, h := range hosts {
		if h == "" || strings.ContainsAny(h, "/ ") {
			return fmt.Errorf("registry: invalid host %q", h)
		}
		d := filepath.Join(dir, h)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("registry: %w", err)
		}
		toml := fmt.Sprintf("# %s is served by the offline registry alone.\nserver = \"http://%s\"\n", h, Addr)
		if err := os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(toml), 0o644); err != nil {
			return fmt.Errorf("registry: %w", err)
		}
	}
	return nil
}

// Hosts are the registries critest and kubelet name, all sent to the
// offline registry.
var Hosts = []string{"registry.k8s.io", "k8s.gcr.io", "gcr.io", "docker.io"}
