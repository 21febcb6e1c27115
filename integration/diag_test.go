package integration

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-steady/containerd-steady/pkg/daemon"
	"github.com/containerd-steady/containerd-steady/pkg/fault"
	"github.com/containerd-steady/containerd-steady/pkg/incident"
)

// TestStuckDeleteIsVisible shows an operator a shim Delete stuck in a
// delayed rootfs umount2 (incident I1) while it is still stuck: the
// metrics endpoint counts the Delete in flight and slow, containerd's log
// warns naming the container and its pod, and a steady-diag bundle taken
// at that moment (against a containerd with a private root, state and
// socket) holds the shim's stack inside the unmount.
func TestStuckDeleteIsVisible(t *testing.T) {
	b := forkBuild(t)
	requireSetup(t, b)
	t.Parallel()
	d := delay(t)
	metrics := freeAddress(t)
	node, dir := startNode(t, b, daemon.Options{
		MetricsAddress: metrics,
		Extra:          "[timeouts]\n  \"io.containerd.timeout.slowop.warning\" = \"2s\"\n",
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*d+2*time.Minute)
	defer cancel()

	tk, err := node.StartTicker(ctx, "diag")
	require.NoError(t, err)
	pod, id, initPID, shimPID := tk.Pod, tk.ID, tk.InitPID, tk.ShimPID
	delayed, err := fault.DelaySyscalls(ctx, shimPID, []string{"umount2"}, d, filepath.Join(dir, "strace-shim.log"))
	require.NoError(t, err)
	defer delayed.Detach()
	require.NoError(t, syscall.Kill(initPID, syscall.SIGKILL))
	require.NoError(t, delayed.WaitEntered(ctx, "umount2", 1, 30*time.Second))

	// Past the 2 s threshold, while the first umount2 is still delayed.
	time.Sleep(3 * time.Second)
	_, err = delayed.LastEnd("umount2")
	require.Error(t, err, "the delayed umount2 returned too early for this check; raise STEADY_DELAY")
	scraped := scrape(t, metrics)
	// The task service is containerd.task.v2.Task on 1.x shims, v3 on 2.x.
	assert.Regexp(t, `containerd_shim_rpc_in_flight\{method="Delete",service="containerd\.task\.v[23]\.Task"\} 1`, scraped)
	assert.Contains(t, scraped, `containerd_slow_operations_in_progress{operation="shim.Delete"} 1`)
	warning := findLogLine(node.Daemon.Logs(), `msg="slow operation still running"`, "operation=shim.Delete", "container_id="+id)
	require.NotEmpty(t, warning, "no slow-operation warning naming the container while its Delete is stuck")
	assert.Contains(t, warning, "sandbox_id="+pod.ID)
	t.Logf("warning: %s", warning)

	bundle := runDiag(ctx, t, node, dir)

	files := readBundle(t, bundle)
	for _, name := range []string{"README.txt", "config-dump.toml", "processes.txt", "runc-list.txt", "overlay-mounts.txt", "containerd.log", "metrics.txt"} {
		assert.Contains(t, files, "steady-diag/"+name)
	}
	assert.Contains(t, files["steady-diag/README.txt"], itoa(shimPID), "the shim must be found through its -address")
	// runc has deleted the container itself before the shim unmounts its
	// rootfs; the pod's sandbox is still listed.
	assert.Contains(t, files["steady-diag/runc-list.txt"], pod.ID)
	assert.Contains(t, files["steady-diag/processes.txt"], "containerd-shim-runc-v2")
	assert.Contains(t, files["steady-diag/config-dump.toml"], node.Daemon.Root)
	assert.Contains(t, files["steady-diag/overlay-mounts.txt"], node.Daemon.State, "the stuck container's rootfs is still mounted")

	assert.Contains(t, files["steady-diag/metrics.txt"], "containerd_shim_rpc_in_flight", "the bundle holds the metrics")

	// The shim's goroutine dump, copied into containerd's log, shows the
	// Delete inside the unmount.
	log := files["steady-diag/containerd.log"]
	require.Contains(t, log, "goroutine stack dump")
	assert.True(t, strings.Contains(log, "unix.Unmount") || strings.Contains(log, "mount.UnmountRecursive"),
		"no shim goroutine in the unmount in the bundle's log")
	assert.Contains(t, log, "(*Init).Delete", "the stuck goroutine is the init process's Delete")
}

// runDiag runs contrib/diag/steady-diag against node's containerd and
// returns the bundle it wrote into dir.
func runDiag(ctx context.Context, t *testing.T, node *incident.Node, dir string) string {
	t.Helper()
	bundle := filepath.Join(dir, "diag.tar.gz")
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "contrib", "diag", "steady-diag")
	out, err := exec.CommandContext(ctx, script,
		"--address", node.Daemon.Address, "--config", node.Daemon.Config,
		"--log-file", node.Daemon.Log, "--runc", node.Daemon.Options().Runc, "--runc-root", filepath.Join(node.Daemon.RuncRoot, "k8s.io"),
		"--output", bundle).CombinedOutput()
	require.NoError(t, err, "steady-diag: %s", out)
	t.Logf("steady-diag: %s", out)
	return bundle
}

func readBundle(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	require.NoError(t, err)
	tr := tar.NewReader(zr)
	files := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		require.NoError(t, err)
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			require.NoError(t, err)
			files[h.Name] = string(b)
		}
	}
}

// freeAddress returns a loopback address with a port nothing listens on.
func freeAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// scrape reads containerd's Prometheus endpoint.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + "/v1/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// findLogLine returns the first log line containing every part.
func findLogLine(log string, parts ...string) string {
	for _, line := range strings.Split(log, "\n") {
		found := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				found = false
				break
			}
		}
		if found {
			return line
		}
	}
	return ""
}

// TestDiagBundleCarriesNoSecret plants registry credentials in containerd's
// config (auth, password, identitytoken, a header, an inline private key)
// and in hosts.toml files (header tokens, a client key file, a host
// directory that is a symlink to one outside), takes a steady-diag bundle
// and finds none of the secrets in it: the keys stay, their values are
// "<redacted>". The bundle is still complete and only its owner can read it.
func TestDiagBundleCarriesNoSecret(t *testing.T) {
	b := forkBuild(t)
	requireSetup(t, b)
	t.Parallel()
	table, err := daemon.RegistryTable(b.Line.ConfigVersion)
	require.NoError(t, err)
	secrets := []string{"S3cretPassw0rd", "QXV0aFNlY3JldA", "IdTokenSecret", "HeaderSecret", "MIIEsecretKeyData",
		"HostsBearerSecret", "HostsBasicSecret", "KeyFileSecret", "OutsideSecret"}
	extra := "[" + table + `.configs."reg.example".auth]
  username = "steady"
  password = "S3cretPassw0rd"
  auth = "QXV0aFNlY3JldA=="
  identitytoken = "IdTokenSecret"
[` + table + `.headers]
  X-Registry-Token = ["HeaderSecret"]
  X-Client-Key = ["-----BEGIN PRIVATE KEY-----\nMIIEsecretKeyData\n-----END PRIVATE KEY-----\n"]
`
	node, dir := startNodeIn(t, b, func(dir string) daemon.Options {
		certs := filepath.Join(dir, "certs.d")
		writeFiles(t, map[string]string{
			filepath.Join(certs, "reg.example", "hosts.toml"): "server = \"https://reg.example\"\n[host.\"https://mirror.example\"]\n  capabilities = [\"pull\"]\n  [host.\"https://mirror.example\".header]\n    Authorization = [\n      \"Bearer HostsBearerSecret\",\n    ]\n[header]\n  Authorization = \"Basic HostsBasicSecret\"\n",
			filepath.Join(certs, "reg.example", "client.key"): "KeyFileSecret\n",
			filepath.Join(dir, "outside", "hosts.toml"):       "[header]\n  X-Token = \"OutsideSecret\"\n",
		})
		require.NoError(t, os.Symlink(filepath.Join(dir, "outside"), filepath.Join(certs, "linked.example")))
		return daemon.Options{RegistryConfigPath: certs, Extra: extra}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The planted values are in containerd's own view of its config.
	dump, err := exec.CommandContext(ctx, filepath.Join(b.BinDir, "containerd"), "--config", node.Daemon.Config, "config", "dump").Output()
	require.NoError(t, err)
	for _, s := range secrets[:5] {
		require.Contains(t, string(dump), s, "the config dump must hold the planted secret for this test to mean anything")
	}

	// containerd's own log carries none either (1.7 logged its CRI config,
	// registry headers included, until 0020).
	for _, s := range secrets {
		assert.NotContains(t, node.Daemon.Logs(), s, "containerd's log")
	}

	bundle := runDiag(ctx, t, node, dir)

	fi, err := os.Stat(bundle)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "the bundle is for its owner only")
	files := readBundle(t, bundle)
	for _, name := range []string{"README.txt", "config-dump.toml", "processes.txt", "overlay-mounts.txt", "containerd.log", "certs.d/reg.example/hosts.toml"} {
		assert.Contains(t, files, "steady-diag/"+name, "the bundle is complete")
	}
	for name, content := range files {
		for _, s := range secrets {
			assert.NotContains(t, content, s, "%s leaks %q", name, s)
		}
	}
	cfg := files["steady-diag/config-dump.toml"]
	assert.Contains(t, cfg, node.Daemon.Root, "the rest of the config is kept")
	assert.Regexp(t, `username = ["']steady["']`, cfg)
	for _, key := range []string{"password", "auth", "identitytoken", "X-Registry-Token"} {
		assert.Regexp(t, `(?m)^\s*`+key+` = "<redacted>"`, cfg, "the key stays, its value goes")
	}
	assert.Contains(t, files["steady-diag/certs.d/reg.example/hosts.toml"], `Authorization = "<redacted>"`)
	assert.NotContains(t, files, "steady-diag/certs.d/linked.example/hosts.toml", "a symlinked host directory is not followed")
	assert.Contains(t, files["steady-diag/README.txt"], "symlink not followed: "+filepath.Join(dir, "certs.d", "linked.example"))
}

func writeFiles(t *testing.T, files map[string]string) {
	t.Helper()
	for path, content := range files {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	}
}
