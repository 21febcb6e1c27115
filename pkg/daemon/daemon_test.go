package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-steady/containerd-steady/pkg/line"
)

// Each line's configuration names the line's CRI runtime table and the
// daemon's private paths.
func TestRenderConfig(t *testing.T) {
	p := newPaths("/tmp/d")
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"v1.7", []string{`version = 2`, `restrict_oom_score_adj = true`, `sandbox_image = "pause:1"`, `Root = "/tmp/d/runc"`, `address = "/tmp/d/containerd.sock"`, `volatile_rootfs = true`, `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]`}},
		{"v2.3", []string{`version = 3`, `restrict_oom_score_adj = true`, `sandbox = "pause:1"`, `Root = "/tmp/d/runc"`, `volatile_rootfs = true`, `[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]`, `[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]`}},
	} {
		l, err := line.Load(line.RepoRoot(), tc.line)
		require.NoError(t, err)
		cfg, err := renderConfig(p, Options{ConfigVersion: l.ConfigVersion, RuntimeTable: l.CRIRuntimeTable, SandboxImage: "pause:1", Runc: "/usr/sbin/runc", RuntimeExtra: "      volatile_rootfs = true",
			ContainerdExtra: "record_exit_before_cleanup = false"})
		require.NoError(t, err)
		assert.Contains(t, string(cfg), "default_runtime_name = \"runc\"\n    record_exit_before_cleanup = false\n", "line %s: in the containerd table", tc.line)
		for _, w := range tc.want {
			assert.Contains(t, string(cfg), w, "line %s", tc.line)
		}
		assert.NotContains(t, string(cfg), "/var/lib/containerd", "nothing may point at the host's containerd")
		assert.NotContains(t, string(cfg), "[metrics]")
	}
	_, err := renderConfig(p, Options{ConfigVersion: 1, RuntimeTable: "t"})
	assert.ErrorContains(t, err, "unsupported containerd config version 1")
	_, err = renderConfig(p, Options{ConfigVersion: 3})
	assert.ErrorContains(t, err, "no CRI runtime table")
}

// The conformance suite's options: NRI with a private socket and plugin
// dirs, and a registry config_path in the line's image table; without them
// NRI is off and no registry table is written.
func TestRenderConfigConformance(t *testing.T) {
	p := newPaths("/tmp/d")
	for _, tc := range []struct {
		line     string
		registry string
	}{
		{"v1.7", `[plugins."io.containerd.grpc.v1.cri".registry]` + "\n    config_path = \"/tmp/d/certs.d\""},
		{"v2.3", `[plugins."io.containerd.cri.v1.images".registry]` + "\n    config_path = \"/tmp/d/certs.d\""},
	} {
		l, err := line.Load(line.RepoRoot(), tc.line)
		require.NoError(t, err)
		opts := Options{ConfigVersion: l.ConfigVersion, RuntimeTable: l.CRIRuntimeTable, SandboxImage: "pause:1", Runc: "/usr/sbin/runc"}
		plain, err := renderConfig(p, opts)
		require.NoError(t, err)
		assert.Contains(t, string(plain), "[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true\n", "line %s", tc.line)
		assert.NotContains(t, string(plain), "config_path", "line %s", tc.line)

		opts.RegistryConfigPath, opts.NRISocket = "/tmp/d/certs.d", "/tmp/d/nri.sock"
		cfg, err := renderConfig(p, opts)
		require.NoError(t, err)
		assert.Contains(t, string(cfg), tc.registry, "line %s", tc.line)
		assert.Contains(t, string(cfg), "  disable = false\n  socket_path = \"/tmp/d/nri.sock\"\n  plugin_path = \"/tmp/d/nri/plugins\"\n  plugin_config_path = \"/tmp/d/nri/conf\"\n", "line %s", tc.line)
	}
}

func TestUnescapeMountPath(t *testing.T) {
	for in, want := range map[string]string{
		`/a/b`:        "/a/b",
		`/a\040b`:     "/a b",
		`/a\011b\134`: "/a\tb\\",
	} {
		assert.Equal(t, want, unescapeMountPath(in))
	}
}

func TestStartErrors(t *testing.T) {
	_, err := Start(context.Background(), t.TempDir(), Options{})
	assert.ErrorContains(t, err, "no BinDir")
	_, err = Start(context.Background(), t.TempDir(), Options{BinDir: t.TempDir()})
	assert.ErrorContains(t, err, "make binaries")
}

// TestUnmountAll mounts real tmpfs file systems, nested, finds them and
// removes them.
func TestUnmountAll(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	dir := t.TempDir()
	outer := filepath.Join(dir, "a b")
	inner := filepath.Join(outer, "inner")
	require.NoError(t, os.MkdirAll(outer, 0o755))
	require.NoError(t, syscall.Mount("tmpfs", outer, "tmpfs", 0, ""))
	require.NoError(t, os.MkdirAll(inner, 0o755))
	require.NoError(t, syscall.Mount("tmpfs", inner, "tmpfs", 0, ""))
	t.Cleanup(func() { _ = UnmountAll(dir) })

	points, err := MountsUnder(dir)
	require.NoError(t, err)
	require.Equal(t, []string{inner, outer}, points, "deepest first, with escaped spaces decoded")
	m, err := LookupMount(outer)
	require.NoError(t, err)
	assert.Equal(t, "tmpfs", m.FSType)
	require.NoError(t, UnmountAll(dir))
	points, err = MountsUnder(dir)
	require.NoError(t, err)
	assert.Empty(t, points)
	_, err = LookupMount(outer)
	assert.ErrorIs(t, err, ErrNoMount)
	assert.False(t, strings.HasPrefix(dir, outer))
}

func TestRegistryTable(t *testing.T) {
	for v, want := range map[int]string{2: `plugins."io.containerd.grpc.v1.cri".registry`, 3: `plugins."io.containerd.cri.v1.images".registry`} {
		got, err := RegistryTable(v)
		require.NoError(t, err)
		assert.Equal(t, want, got)
		cfg, err := renderConfig(newPaths("/tmp/d"), Options{ConfigVersion: v, RuntimeTable: "t", RegistryConfigPath: "/c"})
		require.NoError(t, err)
		assert.Contains(t, string(cfg), "["+want+"]\n    config_path = \"/c\"", "the template writes the same table")
	}
	_, err := RegistryTable(1)
	assert.ErrorContains(t, err, "unsupported containerd config version 1")
}
