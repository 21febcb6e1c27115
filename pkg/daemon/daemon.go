// Package daemon starts and stops a containerd with a private root, state
// dir, sockets and runc root, for tests that must not touch the host's
// containerd or each other.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/containerd-steady/containerd-steady/pkg/proc"
)

// Options configure a daemon.
type Options struct {
	// BinDir holds containerd, containerd-shim-runc-v2 and ctr. Its shim is
	// the one the daemon starts (BinDir comes first in the daemon's PATH).
	BinDir string
	// Runc is the runc binary (the line's, pkg/line); "runc" from PATH when empty.
	Runc string
	// SandboxImage is the CRI pod sandbox ("pause") image.
	SandboxImage string
	// ConfigVersion is 2 (containerd 1.x) or 3 (2.x), and RuntimeTable the
	// TOML table of the CRI runtime handlers: the line's config and
	// cri-runtime-table (pkg/line).
	ConfigVersion int
	RuntimeTable  string
	// MetricsAddress, when set, enables the Prometheus endpoint.
	MetricsAddress string
	// ContainerdExtra is TOML inserted into the CRI plugin's containerd
	// table (RuntimeTable), e.g. "record_exit_before_cleanup = false".
	ContainerdExtra string
	// RuntimeExtra is TOML inserted into the runc CRI runtime table,
	// e.g. "volatile_rootfs = true".
	RuntimeExtra string
	// Extra is TOML appended to the configuration.
	Extra string
	// NetNS, when set, is the path of a network namespace (/run/netns/X)
	// the daemon runs in, and with it its shims, CNI plugins and containers.
	NetNS string
	// CNIBinDir, when set, holds the CNI plugins (instead of an empty
	// private directory), and CNIConfList is written into the private CNI
	// configuration directory as the pod network.
	CNIBinDir   string
	CNIConfList string
	// RegistryConfigPath, when set, is the CRI's registry config_path: a
	// directory of <host>/hosts.toml files.
	RegistryConfigPath string
	// NRISocket, when set, enables NRI with its socket at that path (and
	// private plugin directories); NRI is disabled otherwise.
	NRISocket string
	// ReadyTimeout bounds the wait for CRI to answer; 30 s when zero.
	ReadyTimeout time.Duration
	// ConfigFile, when set, is a node's configuration file (a shipped
	// default, say) to run instead of one rendered from the options above.
	// It is copied and kept on the daemon's private paths (privateTables
	// and the --root, --state and --address flags); every other option but
	// BinDir and ReadyTimeout is ignored.
	ConfigFile string
}

// Daemon is one running (or stopped) containerd.
type Daemon struct {
	Paths
	opts Options
	proc *proc.Proc
}

// Start writes a configuration under dir and starts containerd with it,
// returning once the CRI answers. dir must exist; everything the daemon
// creates stays below it. On error nothing is left running.
func Start(ctx context.Context, dir string, opts Options) (*Daemon, error) {
	if opts.BinDir == "" {
		return nil, errors.New("daemon: no BinDir")
	}
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "ctr"} {
		if _, err := os.Stat(filepath.Join(opts.BinDir, b)); err != nil {
			return nil, fmt.Errorf("daemon: %s missing in %s (run 'make binaries'): %w", b, opts.BinDir, err)
		}
	}
	if opts.Runc == "" {
		runc, err := exec.LookPath("runc")
		if err != nil {
			return nil, fmt.Errorf("daemon: runc not found (install Debian's runc): %w", err)
		}
		opts.Runc = runc
	}
	d := &Daemon{Paths: newPaths(dir), opts: opts}
	if opts.CNIBinDir != "" {
		d.CNIBin = opts.CNIBinDir
	}
	for _, p := range []string{d.Root, d.State, d.RuncRoot, d.CNIBin, d.CNIConf, d.Opt, d.NRIPlugins, d.NRIConf} {
		if err := os.MkdirAll(p, 0o711); err != nil {
			return nil, fmt.Errorf("daemon: %w", err)
		}
	}
	if opts.CNIConfList != "" {
		if err := os.WriteFile(filepath.Join(d.CNIConf, "10-steady.conflist"), []byte(opts.CNIConfList), 0o644); err != nil {
			return nil, fmt.Errorf("daemon: write CNI configuration: %w", err)
		}
	}
	cfg, err := d.config()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(d.Config, cfg, 0o600); err != nil {
		return nil, fmt.Errorf("daemon: write config: %w", err)
	}
	if err := d.launch(); err != nil {
		return nil, err
	}
	if err := d.WaitReady(ctx, d.readyTimeout()); err != nil {
		_ = d.Stop(ctx)
		return nil, err
	}
	return d, nil
}

func (d *Daemon) readyTimeout() time.Duration {
	if d.opts.ReadyTimeout == 0 {
		return 30 * time.Second
	}
	return d.opts.ReadyTimeout
}

// Options returns the options the daemon was started with.
func (d *Daemon) Options() Options { return d.opts }

// launch starts the containerd process without waiting for it.
func (d *Daemon) launch() error {
	argv := []string{filepath.Join(d.opts.BinDir, "containerd"), "--config", d.Config}
	if d.opts.ConfigFile != "" {
		argv = append(argv, "--root", d.Root, "--state", d.State, "--address", d.Address)
	}
	if d.opts.NetNS != "" {
		// nsenter execs containerd in place: the PID stays the daemon's.
		argv = append([]string{"nsenter", "--net=" + d.opts.NetNS, "--"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "PATH="+d.opts.BinDir+":"+os.Getenv("PATH"))
	p, err := proc.Start(cmd, d.Log)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	d.proc = p
	return nil
}

// WaitReady polls the CRI until it answers, the daemon exits or timeout passes.
func (d *Daemon) WaitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if last = d.ping(ctx); last == nil {
			return nil
		}
		select {
		case <-d.proc.Done():
			return fmt.Errorf("daemon: containerd exited before it was ready (%v); log:\n%s", d.proc.Err(), d.LogTail(40))
		case <-ctx.Done():
			return fmt.Errorf("daemon: CRI not ready after %s: %v; log:\n%s", timeout, last, d.LogTail(40))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (d *Daemon) ping(ctx context.Context) error {
	conn, err := d.Dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = runtimeapi.NewRuntimeServiceClient(conn).ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	return err
}

// Dial opens a gRPC connection to the daemon's socket (CRI and containerd).
func (d *Daemon) Dial() (*grpc.ClientConn, error) {
	return grpc.Dial("unix://"+d.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// PID returns containerd's process id, or 0 when it is not running.
func (d *Daemon) PID() int { return d.proc.PID() }

// Exited reports whether the containerd process has exited.
func (d *Daemon) Exited() bool { return d.proc.Exited() }

// Stop sends SIGTERM and waits up to 20 s, then SIGKILL. Shims and
// containers keep running, as they do when a node's containerd restarts.
func (d *Daemon) Stop(ctx context.Context) error {
	if err := d.proc.Stop(ctx, 20*time.Second); err != nil {
		return fmt.Errorf("daemon: containerd: %w", err)
	}
	return nil
}

// Kill sends containerd SIGKILL, as the OOM killer or a watchdog would:
// it gets no chance to finish what it was doing. Shims and containers keep
// running.
func (d *Daemon) Kill() error {
	if err := d.proc.Kill(); err != nil {
		return fmt.Errorf("daemon: containerd: %w", err)
	}
	return nil
}

// Restart stops containerd and starts it again on the same root and state.
func (d *Daemon) Restart(ctx context.Context) error {
	if err := d.Stop(ctx); err != nil {
		return err
	}
	if err := d.launch(); err != nil {
		return err
	}
	return d.WaitReady(ctx, d.readyTimeout())
}

// Launch starts a stopped daemon on the same root and state without waiting
// for the CRI, so a caller can measure how long recovery takes (WaitReady).
func (d *Daemon) Launch() error {
	if !d.Exited() {
		return errors.New("daemon: still running")
	}
	return d.launch()
}

// LogTail returns the last n lines of containerd's log.
func (d *Daemon) LogTail(n int) string { return proc.Tail(d.Log, n) }

// Logs returns containerd's whole log.
func (d *Daemon) Logs() string {
	b, err := os.ReadFile(d.Log)
	if err != nil {
		return err.Error()
	}
	return string(b)
}
