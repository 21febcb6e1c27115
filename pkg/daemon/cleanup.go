package daemon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Cleanup stops containerd and removes everything it started: the
// containers in its private runc root, its shims (found by their -address
// argument, which names this daemon's private socket), their sockets and
// every mount below the daemon's directory. It is safe to call twice and
// after a failed test; it returns every error it met.
func (d *Daemon) Cleanup(ctx context.Context) error {
	var errs []error
	if err := d.Stop(ctx); err != nil {
		errs = append(errs, err)
	}
	shimSockets := d.shimSockets()
	if err := d.killContainers(ctx); err != nil {
		errs = append(errs, err)
	}
	for _, pid := range d.ShimPIDs() {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill shim %d: %w", pid, err))
		}
	}
	waitGone(d.ShimPIDs, 10*time.Second)
	for _, s := range shimSockets {
		_ = os.Remove(s)
	}
	if err := UnmountAll(d.Dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ShimPIDs returns the pids of the shims started by this daemon.
func (d *Daemon) ShimPIDs() []int {
	return findProcs(func(args []string) bool {
		if len(args) == 0 || !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") {
			return false
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-address" && args[i+1] == d.Address {
				return true
			}
		}
		return false
	})
}

// shimSockets reads the socket addresses the shims wrote into their bundles.
func (d *Daemon) shimSockets() []string {
	files, _ := filepath.Glob(filepath.Join(d.State, "io.containerd.runtime.v2.task", "*", "*", "address"))
	var socks []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		addr := strings.TrimSpace(string(b))
		if p, ok := strings.CutPrefix(addr, "unix://"); ok && !strings.HasPrefix(p, "@") {
			socks = append(socks, p)
		}
	}
	return socks
}

// deleteWidth is how many 'runc delete --force' run at once: a node of
// hundreds of pods is otherwise torn down one runc at a time.
const deleteWidth = 4

// killContainers force-deletes every container in the private runc roots.
func (d *Daemon) killContainers(ctx context.Context) error {
	roots, _ := filepath.Glob(filepath.Join(d.RuncRoot, "*"))
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	sem := make(chan struct{}, deleteWidth)
	for _, root := range roots {
		out, err := exec.CommandContext(ctx, d.opts.Runc, "--root", root, "list", "-q").Output()
		if err != nil {
			continue
		}
		for _, id := range strings.Fields(string(out)) {
			wg.Add(1)
			sem <- struct{}{}
			go func(root, id string) {
				defer wg.Done()
				defer func() { <-sem }()
				if err := d.forceDelete(ctx, root, id); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}(root, id)
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}

// forceDelete runs 'runc delete --force' on container id, up to three
// times: on a loaded host the kernel can refuse to remove a cgroup whose
// last process has only just exited ("unable to remove container's
// cgroup").
func (d *Daemon) forceDelete(ctx context.Context, root, id string) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var out []byte
		out, err = exec.CommandContext(ctx, d.opts.Runc, "--root", root, "delete", "--force", id).CombinedOutput()
		if err == nil {
			return nil
		}
		err = fmt.Errorf("runc delete --force %s: %w: %s", id, err, bytes.TrimSpace(out))
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
	return err
}

// UnmountAll unmounts every mount point at or below dir, deepest first.
func UnmountAll(dir string) error {
	var errs []error
	for i := 0; i < 5; i++ {
		points, err := MountsUnder(dir)
		if err != nil {
			return err
		}
		if len(points) == 0 {
			return nil
		}
		errs = errs[:0]
		for _, p := range points {
			if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
			}
		}
	}
	return errors.Join(errs...)
}

// MountsUnder lists the mount points at or below dir, deepest first.
func MountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMountPath(fields[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	return points, sc.Err()
}

func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// findProcs returns the pids whose command line matches.
func findProcs(match func(args []string) bool) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		if match(strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func waitGone(list func() []int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for len(list()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
}
