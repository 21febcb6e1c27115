// Package netns creates a private network namespace that holds only a
// loopback interface, and runs programs in it, so that what they serve and
// what they reach stays on this machine: with no interface to the outside
// and no default route, nothing in it has a route off the machine.
package netns

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// NetNS is one named network namespace (ip netns).
type NetNS struct {
	Name string
	Path string // /run/netns/<Name>, what nsenter --net and containerd's NetNS take
}

// Create adds the namespace name and brings its loopback up. name must not
// exist yet; on error nothing is left behind.
func Create(ctx context.Context, name string) (*NetNS, error) {
	if name == "" || strings.ContainsAny(name, "/ ") {
		return nil, fmt.Errorf("netns: invalid name %q", name)
	}
	if err := ip(ctx, "netns", "add", name); err != nil {
		return nil, err
	}
	n := &NetNS{Name: name, Path: filepath.Join("/run/netns", name)}
	if err := ip(ctx, "-n", name, "link", "set", "lo", "up"); err != nil {
		return nil, errors.Join(err, n.Delete(ctx))
	}
	return n, nil
}

// Command returns a command that runs argv in the namespace. nsenter execs
// argv in place (no fork), so the process's PID is argv's own; only the
// network namespace changes, the mount namespace stays the caller's.
func (n *NetNS) Command(ctx context.Context, argv ...string) *exec.Cmd {
	args := append([]string{"--net=" + n.Path, "--"}, argv...)
	return exec.CommandContext(ctx, "nsenter", args...)
}

// Offline returns an error naming the way out if the namespace has a
// default route or an interface other than loopback, bridges and veths
// (what the CNI bridge plugin adds): nothing in it may reach the outside.
func (n *NetNS) Offline(ctx context.Context) error {
	out, err := n.Command(ctx, "ip", "-o", "route", "show", "default").CombinedOutput()
	if err != nil {
		return fmt.Errorf("netns %s: ip route: %w: %s", n.Name, err, out)
	}
	if r := strings.TrimSpace(string(out)); r != "" {
		return fmt.Errorf("netns %s has a default route: %s", n.Name, r)
	}
	// An address off the machine has no route (RFC 5737's TEST-NET-3).
	if out, err := n.Command(ctx, "ip", "route", "get", "203.0.113.1").CombinedOutput(); err == nil {
		return fmt.Errorf("netns %s routes off the machine: %s", n.Name, strings.TrimSpace(string(out)))
	}
	out, err = n.Command(ctx, "ip", "-o", "link", "show").CombinedOutput()
	if err != nil {
		return fmt.Errorf("netns %s: ip link: %w: %s", n.Name, err, out)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !localLink(l) {
			return fmt.Errorf("netns %s has a link that may lead outside: %s", n.Name, l)
		}
	}
	return nil
}

// localLink reports whether one line of 'ip -o link show' is the
// loopback, the CNI bridge, or a veth whose peer is in another namespace
// (a pod's, attached to that bridge).
func localLink(l string) bool {
	f := strings.Fields(l)
	if len(f) < 2 {
		return false
	}
	name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
	switch {
	case name == "lo":
		return true
	case strings.HasPrefix(name, "cni"):
		return strings.Contains(l, "link/ether")
	case strings.HasPrefix(name, "veth"):
		return strings.Contains(l, " link-netns ") || strings.Contains(l, " link-netnsid ")
	}
	return false
}

// Delete removes the namespace; deleting one that is already gone is not
// an error.
func (n *NetNS) Delete(ctx context.Context) error {
	if _, err := os.Stat(n.Path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return ip(ctx, "netns", "delete", n.Name)
}

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
