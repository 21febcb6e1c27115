// Package kubelet runs a real kubelet in standalone mode (static pods from
// a manifest directory, no API server) against a private containerd, and
// reads its PLEG health from outside: its metrics and its log.
//
// Everything kubelet writes stays below Options.Dir except what it
// hard-codes (see host.go); Stop and RemoveCgroups undo that.
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd-steady/containerd-steady/pkg/daemon"
	"github.com/containerd-steady/containerd-steady/pkg/proc"
)

// Kubelet is one started (or stopped) kubelet process.
type Kubelet struct {
	Paths
	opts    Options
	proc    *proc.Proc
	stopped bool
}

// Start configures and starts a kubelet and returns once it answers on
// its healthz port. On error nothing is left running.
func Start(ctx context.Context, opts Options) (*Kubelet, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(opts.Binary); err != nil {
		return nil, fmt.Errorf("kubelet: binary missing (run script/kubelet.sh): %w", err)
	}
	if err := pickPorts(&opts); err != nil {
		return nil, err
	}
	k := &Kubelet{Paths: newPaths(opts.Dir, opts.NodeName), opts: opts}
	for _, d := range []string{k.RootDir, k.CertDir, k.ManifestDir, k.PodLogsDir, k.PluginDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("kubelet: %w", err)
		}
	}
	cfg, err := renderConfig(k.Paths, opts)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(k.Config, cfg, 0o600); err != nil {
		return nil, fmt.Errorf("kubelet: write config: %w", err)
	}
	if err := acquireHost(); err != nil {
		return nil, err
	}
	if err := createCgroupRoot(k.CgroupRoot); err != nil {
		return nil, errors.Join(err, k.undo(), removeCgroupRoot(k.CgroupRoot, 0))
	}
	if err := k.launch(); err != nil {
		return nil, errors.Join(err, k.undo(), removeCgroupRoot(k.CgroupRoot, 0))
	}
	if err := k.WaitHealthy(ctx, time.Minute); err != nil {
		return nil, errors.Join(err, k.Stop(ctx), k.RemoveCgroups())
	}
	return k, nil
}

// Options returns the options the kubelet runs with (ports filled in).
func (k *Kubelet) Options() Options { return k.opts }

// PID is the kubelet's process id, 0 when it is not running.
func (k *Kubelet) PID() int { return k.proc.PID() }

// Exited reports whether the kubelet process has exited.
func (k *Kubelet) Exited() bool { return k.proc.Exited() }

func (k *Kubelet) launch() error {
	cmd := exec.Command(k.opts.Binary, args(k.Paths, k.opts)...)
	cmd.Dir = k.Dir
	p, err := proc.Start(cmd, k.Log)
	if err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	k.proc = p
	return nil
}

// WaitHealthy polls kubelet's healthz until it says ok.
func (k *Kubelet) WaitHealthy(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", k.opts.HealthzPort)
	var last error
	for {
		body, err := k.get(ctx, url, 2*time.Second)
		if err == nil && strings.TrimSpace(body) == "ok" {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("healthz said %q", body)
		}
		last = err
		select {
		case <-k.proc.Done():
			return fmt.Errorf("kubelet: exited before it was healthy (%v); log:\n%s", k.proc.Err(), k.LogTail(40))
		case <-ctx.Done():
			return fmt.Errorf("kubelet: not healthy after %s: %v; log:\n%s", timeout, last, k.LogTail(40))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// get fetches url from the kubelet with its own timeout.
func (k *Kubelet) get(ctx context.Context, url string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}

// Metrics scrapes kubelet's /metrics on its read-only port. kubelet's
// /metrics hangs while the runtime hangs (a log metrics collector calls
// it), so timeout bounds the scrape.
func (k *Kubelet) Metrics(ctx context.Context, timeout time.Duration) (Metrics, error) {
	body, err := k.get(ctx, fmt.Sprintf("http://127.0.0.1:%d/metrics", k.opts.ReadOnlyPort), timeout)
	if err != nil {
		return nil, fmt.Errorf("kubelet: scrape metrics: %w", err)
	}
	return ParseMetrics(body)
}

// AddStaticPod writes a manifest (YAML or JSON) into the manifest
// directory, atomically: kubelet ignores files whose name starts with a dot.
func (k *Kubelet) AddStaticPod(name string, manifest []byte) error {
	if name == "" || strings.ContainsAny(name, "/") || strings.HasPrefix(name, ".") {
		return fmt.Errorf("kubelet: bad manifest name %q", name)
	}
	tmp := filepath.Join(k.ManifestDir, "."+name+".tmp")
	if err := os.WriteFile(tmp, manifest, 0o644); err != nil {
		return fmt.Errorf("kubelet: write manifest: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(k.ManifestDir, name+".json")); err != nil {
		return fmt.Errorf("kubelet: add manifest: %w", err)
	}
	return nil
}

// RemoveStaticPod removes a manifest; kubelet then stops the pod.
func (k *Kubelet) RemoveStaticPod(name string) error {
	if err := os.Remove(filepath.Join(k.ManifestDir, name+".json")); err != nil {
		return fmt.Errorf("kubelet: remove manifest: %w", err)
	}
	return nil
}

// PodName is the name kubelet gives the static pod of a manifest.
func (k *Kubelet) PodName(manifestName string) string {
	return manifestName + "-" + k.opts.NodeName
}

// Stop ends the kubelet this value started (SIGTERM, SIGKILL after 10 s;
// by its pid only), unmounts what it mounted under its root dir and, when
// it is the last kubelet of this process, removes its device-plugin files
// and restores the sysctls it changed. Pods keep running, as when a node's
// kubelet stops; their cgroups are removed by RemoveCgroups once the
// runtime has removed the containers. Safe to call twice.
func (k *Kubelet) Stop(ctx context.Context) error {
	if k.stopped {
		return nil
	}
	var errs []error
	if err := k.proc.Stop(ctx, 10*time.Second); err != nil {
		errs = append(errs, fmt.Errorf("kubelet: %w", err))
	}
	k.stopped = true
	errs = append(errs, k.undo())
	return errors.Join(errs...)
}

// undo unmounts below the root dir and releases the shared host state.
func (k *Kubelet) undo() error {
	var errs []error
	if err := daemon.UnmountAll(k.RootDir); err != nil {
		errs = append(errs, fmt.Errorf("kubelet: %w", err))
	}
	errs = append(errs, releaseHost())
	return errors.Join(errs...)
}

// RemoveCgroups removes the kubelet's cgroup root and everything below it
// in every hierarchy; call it after Stop and after the runtime has removed
// the pods' containers. It retries for a few seconds while cgroups empty.
func (k *Kubelet) RemoveCgroups() error {
	return removeCgroupRoot(k.CgroupRoot, 10*time.Second)
}

// Logs returns kubelet's whole log.
func (k *Kubelet) Logs() (string, error) {
	b, err := os.ReadFile(k.Log)
	if err != nil {
		return "", fmt.Errorf("kubelet: %w", err)
	}
	return string(b), nil
}

// LogTail returns the last n lines of kubelet's log.
func (k *Kubelet) LogTail(n int) string { return proc.Tail(k.Log, n) }

// pickPorts fills the zero ports with free ones on 127.0.0.1 (all
// listeners stay open until every port is picked, so none repeats).
func pickPorts(o *Options) error {
	var open []net.Listener
	defer func() {
		for _, l := range open {
			_ = l.Close()
		}
	}()
	for _, p := range []*int{&o.Port, &o.ReadOnlyPort, &o.HealthzPort} {
		if *p != 0 {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("kubelet: pick a port: %w", err)
		}
		open = append(open, l)
		*p = l.Addr().(*net.TCPAddr).Port
	}
	return nil
}
