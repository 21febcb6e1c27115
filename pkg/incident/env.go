// Package incident runs the incidents of DESIGN.md against a containerd
// build and returns what a node operator would have seen, so the same
// scenario serves the integration tests, the demo and the benchmark.
package incident

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/containerd-steady/containerd-steady/pkg/cri"
	"github.com/containerd-steady/containerd-steady/pkg/daemon"
	"github.com/containerd-steady/containerd-steady/pkg/image"
	"github.com/containerd-steady/containerd-steady/pkg/line"
)

// Build names a set of binaries to run, and the line they belong to.
type Build struct {
	Name   string // "fork" or "upstream"
	BinDir string
	Line   line.Line
}

// Builds returns the upstream and the fork build of l, in that order.
//
// STEADY_FORK_BIN, when set, names another directory holding the fork's
// binaries: an installed package's /usr/bin, say ('make test-deb').
func Builds(l line.Line) (upstream, fork Build) {
	forkBin := l.ForkBin()
	if dir := os.Getenv("STEADY_FORK_BIN"); dir != "" {
		forkBin = dir
	}
	return Build{Name: "upstream", BinDir: l.UpstreamBin(), Line: l}, Build{Name: "fork", BinDir: forkBin, Line: l}
}

// DaemonOptions fills in what opts needs from b's line: the configuration
// version, the CRI runtime table and the line's runc.
func (b Build) DaemonOptions(opts daemon.Options) daemon.Options {
	opts.BinDir = b.BinDir
	opts.ConfigVersion = b.Line.ConfigVersion
	opts.RuntimeTable = b.Line.CRIRuntimeTable
	if opts.Runc == "" {
		opts.Runc = b.Line.RuncPath()
	}
	return opts
}

// binaries are the programs of a build that a node runs.
var binaries = []string{"containerd", "containerd-shim-runc-v2"}

// DropCache evicts b's binaries from the page cache. A binary the linker
// has just written is cached whole, in large folios, and a process mapping
// it gets more of it resident at each fault than one that had to read it
// from disk: 5 MiB more of containerd's RSS on this machine, which once
// passed for the fork's memory. Dropping both builds' binaries before a
// measurement makes their file-backed RSS comparable.
func (b Build) DropCache() error {
	for _, name := range binaries {
		if err := dropCache(filepath.Join(b.BinDir, name)); err != nil {
			return fmt.Errorf("%s: %w", b.Name, err)
		}
	}
	return nil
}

func dropCache(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	// Dirty pages are not dropped: write them back first.
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("drop %s from the page cache: %w", path, err)
	}
	return nil
}

// Missing names what of b is not built yet (its containerd or the line's
// runc) and the command that builds it; nil when b can run.
func (b Build) Missing() error {
	if _, err := os.Stat(filepath.Join(b.BinDir, "containerd")); err != nil {
		return fmt.Errorf("%s binaries missing in %s: run 'make binaries LINE=%s' first", b.Name, b.BinDir, b.Line.Name)
	}
	if _, err := os.Stat(b.Line.RuncPath()); err != nil {
		return fmt.Errorf("runc %s missing at %s: run 'script/runc.sh %s' (make binaries does) first", b.Line.Runc, b.Line.RuncPath(), b.Line.Name)
	}
	return nil
}

// Node is a started containerd with our images imported and a CRI client.
type Node struct {
	Daemon *daemon.Daemon
	CRI    *cri.Client
	Image  string // the busybox image reference
}

// Logf receives progress lines.
type Logf func(format string, args ...any)

// printf hands a line to l, if there is one.
func (l Logf) printf(format string, args ...any) {
	if l != nil {
		l(format, args...)
	}
}

// StartNode starts a daemon of build under dir with the offline images.
func StartNode(ctx context.Context, b Build, dir string, opts daemon.Options) (*Node, error) {
	busybox, pause := image.BusyboxImage(), image.PauseImage()
	opts = b.DaemonOptions(opts)
	opts.SandboxImage = pause.Name
	d, err := daemon.Start(ctx, dir, opts)
	if err != nil {
		return nil, fmt.Errorf("start %s containerd: %w", b.Name, err)
	}
	n := &Node{Daemon: d, Image: busybox.Name}
	if err := n.importImages(ctx, dir, busybox, pause); err != nil {
		_ = d.Cleanup(ctx)
		return nil, err
	}
	conn, err := d.Dial()
	if err != nil {
		_ = d.Cleanup(ctx)
		return nil, err
	}
	n.CRI = cri.New(conn)
	if err := n.CRI.WaitImages(ctx, 30*time.Second, busybox.Name, pause.Name); err != nil {
		_ = n.CRI.Close()
		_ = d.Cleanup(ctx)
		return nil, err
	}
	return n, nil
}

func (n *Node) importImages(ctx context.Context, dir string, imgs ...image.Image) error {
	imgDir := filepath.Join(dir, "images")
	if err := os.MkdirAll(imgDir, 0o755); err != nil {
		return err
	}
	for _, img := range imgs {
		path, err := image.Build(imgDir, img, image.Busybox)
		if err != nil {
			return err
		}
		if err := image.Import(ctx, filepath.Join(n.Daemon.Options().BinDir, "ctr"), n.Daemon.Address, path); err != nil {
			return err
		}
	}
	return nil
}

// Close stops the daemon and removes everything it started.
func (n *Node) Close() error {
	// Generous: the soak leaves 200 pods, 400 containers for runc to
	// force-delete one by one.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if n.CRI != nil {
		_ = n.CRI.Close()
	}
	return n.Daemon.Cleanup(ctx)
}

// Ticker is a running container that prints the date once a second, the
// workload of the incidents, with the processes behind it.
type Ticker struct {
	Pod     *cri.Pod
	ID      string
	InitPID int // the container's init process
	ShimPID int // the shim serving its pod
}

// StartTicker runs a host-network pod named name with one ticker container.
func (n *Node) StartTicker(ctx context.Context, name string) (*Ticker, error) {
	return n.startOne(ctx, name, []string{"sh", "-c", "while true; do date; sleep 1; done"})
}

// StartSleeper runs a host-network pod named name with one container that
// only sleeps: many of them cost the machine no CPU.
func (n *Node) StartSleeper(ctx context.Context, name string) (*Ticker, error) {
	return n.startOne(ctx, name, []string{"sleep", "2147483647"})
}

func (n *Node) startOne(ctx context.Context, name string, cmd []string) (*Ticker, error) {
	pod, err := n.CRI.RunPod(ctx, name)
	if err != nil {
		return nil, err
	}
	id, err := n.CRI.StartContainer(ctx, pod, "ticker", n.Image, cmd)
	if err != nil {
		return nil, err
	}
	initPID, err := n.CRI.InitPID(ctx, id)
	if err != nil {
		return nil, err
	}
	shimPID, err := cri.ShimPID(initPID)
	if err != nil {
		return nil, err
	}
	return &Ticker{Pod: pod, ID: id, InitPID: initPID, ShimPID: shimPID}, nil
}

// ActiveSnapshots lists the keys of the active (mounted or mountable)
// overlayfs snapshots of the CRI namespace, as ctr shows them: a container's
// rootfs until the container is removed. Committed image layers are left out.
func (n *Node) ActiveSnapshots(ctx context.Context) ([]string, error) {
	ctr := filepath.Join(n.Daemon.Options().BinDir, "ctr")
	out, err := exec.CommandContext(ctx, ctr, "--address", n.Daemon.Address, "--namespace", "k8s.io",
		"snapshots", "--snapshotter", "overlayfs", "ls").Output()
	if err != nil {
		return nil, fmt.Errorf("ctr snapshots ls: %w", err)
	}
	var keys []string
	for _, l := range strings.Split(string(out), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) >= 2 && f[len(f)-1] == "Active" {
			keys = append(keys, f[0])
		}
	}
	return keys, nil
}
