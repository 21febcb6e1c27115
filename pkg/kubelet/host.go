package kubelet

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// kubelet writes a few things outside the directories it is given. Those
// that several kubelets of one process share are saved when the first
// kubelet starts and restored when the last one stops:
//
//   - sysctls it wants (container_manager_linux.go, setupKernelTunables);
//   - /var/lib/kubelet/device-plugins/{kubelet.sock,kubelet_internal_checkpoint}
//     (k8s.io/kubelet's DevicePluginPath is hard-coded). A second kubelet
//     removes the first one's socket when it starts, which only matters to
//     device plugins; there are none here.
//
// Private to each kubelet, and undone by Stop and RemoveCgroups: the
// self bind-mount of its root dir and the cgroups below its cgroup root.

// kubeletSysctls are the keys setupKernelTunables may change, under /proc/sys.
var kubeletSysctls = []string{
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
}

// DevicePluginDir is where kubelet always puts its device-plugin socket.
const DevicePluginDir = "/var/lib/kubelet/device-plugins"

// hostPaths are removed on release if they did not exist before, in this
// order (files first, then the directories, which must then be empty).
var hostPaths = []string{
	DevicePluginDir + "/kubelet.sock",
	DevicePluginDir + "/kubelet_internal_checkpoint",
	DevicePluginDir,
	"/var/lib/kubelet",
}

var host struct {
	mu      sync.Mutex
	users   int
	sysctls map[string]string // saved values
	existed map[string]bool   // hostPaths that existed before
}

// acquireHost records the host state kubelets change, when no kubelet of
// this process is running yet.
func acquireHost() error {
	host.mu.Lock()
	defer host.mu.Unlock()
	if host.users == 0 {
		saved := map[string]string{}
		for _, k := range kubeletSysctls {
			b, err := os.ReadFile(filepath.Join("/proc/sys", k))
			if err != nil {
				return fmt.Errorf("kubelet: save sysctl %s: %w", k, err)
			}
			saved[k] = strings.TrimSpace(string(b))
		}
		existed := map[string]bool{}
		for _, p := range hostPaths {
			_, err := os.Lstat(p)
			existed[p] = err == nil
		}
		host.sysctls, host.existed = saved, existed
	}
	host.users++
	return nil
}

// releaseHost restores what acquireHost recorded once the last kubelet of
// this process has stopped. The device-plugin socket is removed even if it
// was there before: only a kubelet serves it, and ours replaced it.
func releaseHost() error {
	host.mu.Lock()
	defer host.mu.Unlock()
	if host.users == 0 {
		return nil
	}
	host.users--
	if host.users > 0 {
		return nil
	}
	var errs []error
	for _, p := range hostPaths {
		if host.existed[p] && p != hostPaths[0] {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("kubelet: remove %s: %w", p, err))
		}
	}
	for _, k := range kubeletSysctls {
		want, ok := host.sysctls[k]
		if !ok {
			continue
		}
		path := filepath.Join("/proc/sys", k)
		b, err := os.ReadFile(path)
		if err == nil && strings.TrimSpace(string(b)) == want {
			continue
		}
		if err := os.WriteFile(path, []byte(want+"\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("kubelet: restore sysctl %s=%s: %w", k, want, err))
		}
	}
	return errors.Join(errs...)
}

// cgroupMounts returns the mount points of the cgroup v1 hierarchies and,
// with v2, of the cgroup2 one (in hybrid mode runc and kubelet create their
// cgroups there too).
func cgroupMounts(v2 bool) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseCgroupMounts(bufio.NewScanner(f), v2)
}

func parseCgroupMounts(sc *bufio.Scanner, v2 bool) ([]string, error) {
	var mounts []string
	for sc.Scan() {
		// 36 25 0:31 / /sys/fs/cgroup/cpu rw,nosuid - cgroup cgroup rw,cpu
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, postFields := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(postFields) < 1 {
			continue
		}
		if typ := postFields[0]; typ != "cgroup" && (!v2 || typ != "cgroup2") {
			continue
		}
		mounts = append(mounts, fields[4])
	}
	sort.Strings(mounts)
	return mounts, sc.Err()
}

// createCgroupRoot creates root in every cgroup v1 hierarchy (kubelet
// refuses a cgroup root that does not exist). A new cpuset cgroup gets its
// parent's cpus and mems, or no task could join it.
func createCgroupRoot(root string) error {
	mounts, err := cgroupMounts(false)
	if err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	if len(mounts) == 0 {
		return errors.New("kubelet: no cgroup v1 hierarchies mounted")
	}
	for _, m := range mounts {
		dir := filepath.Join(m, root)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("kubelet: create cgroup %s: %w", dir, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			b, err := os.ReadFile(filepath.Join(m, f))
			if err != nil {
				continue // not the cpuset hierarchy
			}
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
				return fmt.Errorf("kubelet: init %s/%s: %w", dir, f, err)
			}
		}
	}
	return nil
}

// removeCgroupRoot removes root and every cgroup below it in every
// hierarchy (v1 and v2), deepest first, retrying for up to timeout while
// cgroups are still busy (their processes exiting).
func removeCgroupRoot(root string, timeout time.Duration) error {
	mounts, err := cgroupMounts(true)
	if err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for {
		var busy []error
		for _, m := range mounts {
			for _, dir := range cgroupTree(filepath.Join(m, root)) {
				if err := syscall.Rmdir(dir); err != nil && !errors.Is(err, syscall.ENOENT) {
					busy = append(busy, fmt.Errorf("remove cgroup %s: %w", dir, err))
				}
			}
		}
		if len(busy) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kubelet: %w", errors.Join(busy...))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cgroupTree lists dir and the directories below it, deepest first.
func cgroupTree(dir string) []string {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
	return dirs
}
