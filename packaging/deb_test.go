package packaging

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-steady/containerd-steady/pkg/daemon"
	"github.com/containerd-steady/containerd-steady/pkg/deb"
)

// debPackage is the line's binary package as 'make deb' builds it.
func debPackage(t *testing.T) string {
	t.Helper()
	l := theLine(t)
	p := filepath.Join(l.Root, "build", "deb", l.Name, "containerd-steady_"+strings.TrimPrefix(l.ForkVersion(), "v")+"-1_amd64.deb")
	_, err := os.Stat(p)
	require.NoError(t, err, "run 'make deb LINE=%s' first ('make test-deb' does)", l.Name)
	return p
}

// TestDebPackage: what dpkg sees before installing. The version sorts after
// the upstream release it patches, however Debian spells that release; the
// package stands in for Debian's containerd; the default config is a
// conffile; the binaries, the unit and the config are where Debian puts them.
func TestDebPackage(t *testing.T) {
	l := theLine(t)
	pkg := debPackage(t)

	version, err := deb.Field(pkg, "Version")
	require.NoError(t, err)
	upstream := strings.TrimPrefix(l.Version, "v")
	for _, other := range []string{upstream, upstream + "-1", upstream + "~ds1-1", upstream + "-9"} {
		later, err := deb.VersionGreater(version, other)
		require.NoError(t, err)
		assert.True(t, later, "%s must sort after upstream's %s", version, other)
	}
	for _, f := range []string{"Provides", "Conflicts", "Replaces"} {
		v, err := deb.Field(pkg, f)
		require.NoError(t, err)
		assert.Regexp(t, `(^|, )containerd( \(|,|$)`, v, "%s", f)
	}
	conffiles, err := deb.Conffiles(pkg)
	require.NoError(t, err)
	assert.Equal(t, []string{"/etc/containerd/config.toml"}, conffiles)
	contents, err := deb.Contents(pkg)
	require.NoError(t, err)
	for _, f := range []string{"usr/bin/containerd", "usr/bin/containerd-shim-runc-v2", "usr/bin/ctr",
		"lib/systemd/system/containerd.service", "etc/containerd/config.toml", "usr/share/doc/containerd-steady/NOTICE"} {
		assert.Contains(t, contents, f)
	}
}

// TestDebInstalled unpacks the package into a scratch root with 'dpkg -x'
// (see README: a debootstrap'd root costs minutes and a mirror per run, and
// the package needs nothing from one): its containerd names the fork, its
// unit verifies against its own /usr/bin/containerd, and its config is the
// line's default. Incident I1 runs on these binaries in 'make test-deb'.
func TestDebInstalled(t *testing.T) {
	l := theLine(t)
	root := t.TempDir()
	require.NoError(t, deb.Extract(debPackage(t), root))

	out, err := exec.Command(filepath.Join(root, "usr", "bin", "containerd"), "--version").CombinedOutput()
	require.NoError(t, err, "%s", out)
	t.Logf("installed: %s", strings.TrimSpace(string(out)))
	assert.Contains(t, string(out), "github.com/containerd-steady/containerd-steady "+l.ForkVersion()+" ")

	unit, err := os.ReadFile(filepath.Join(root, "lib", "systemd", "system", "containerd.service"))
	require.NoError(t, err)
	assert.Contains(t, string(unit), "\nExecStart=/usr/bin/containerd\n")
	require.NoError(t, deb.VerifyUnit(root, "containerd.service"))
	sameFile(t, l.DefaultConfig(), filepath.Join(root, "etc", "containerd", "config.toml"))
}

// TestDebSeriesWithoutAPatch proves the package is built from
// debian/patches, not from anything else in the tree: without a patch that
// later ones build on, dpkg-source refuses the series; without a patch that
// stands alone (naming the key of a config value that cannot be decoded),
// the package builds and its containerd answers as upstream's does.
func TestDebSeriesWithoutAPatch(t *testing.T) {
	l := theLine(t)
	pkg := debPackage(t)

	t.Run("a patch later ones build on", func(t *testing.T) {
		dsc := strings.TrimSuffix(pkg, "_amd64.deb") + ".dsc"
		dir := filepath.Join(t.TempDir(), "src")
		out, err := exec.Command("dpkg-source", "--skip-patches", "-x", dsc, dir).CombinedOutput()
		require.NoError(t, err, "%s", out)
		dropped := dropPatch(t, filepath.Join(dir, "debian", "patches", "series"), "-cri-make-container-status-reads-lock-free.patch")
		out, err = exec.Command("dpkg-source", "--before-build", dir).CombinedOutput()
		require.Error(t, err, "the series applied without %s:\n%s", dropped, out)
		t.Logf("without %s: %s", dropped, lastLines(string(out), 3))
		assert.Regexp(t, `patch .*debian/patches/0\d+-.*\.patch`, string(out), "dpkg-source must name the patch that no longer applies")
	})

	t.Run("a patch on its own", func(t *testing.T) {
		series := filepath.Join(t.TempDir(), "series")
		src, err := os.ReadFile(filepath.Join(l.Root, "patches", l.Name, "series"))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(series, src, 0o644))
		dropped := dropPatch(t, series, "-config-name-the-")

		out := filepath.Join(t.TempDir(), "deb")
		cmd := exec.Command(filepath.Join(l.Root, "script", "deb.sh"), l.Name)
		cmd.Env = append(os.Environ(), "SERIES="+series, "DEB_OUT="+out, "LINTIAN=no")
		b, err := cmd.CombinedOutput()
		require.NoError(t, err, "the package without %s must still build:\n%s", dropped, b)
		without := filepath.Join(t.TempDir(), "root")
		require.NoError(t, deb.Extract(filepath.Join(out, filepath.Base(pkg)), without))
		full := filepath.Join(t.TempDir(), "root")
		require.NoError(t, deb.Extract(pkg, full))

		bad := filepath.Join(t.TempDir(), "config.toml")
		cfg, err := os.ReadFile(l.DefaultConfig())
		require.NoError(t, err)
		require.Contains(t, string(cfg), "record_exit_before_cleanup = true")
		require.NoError(t, os.WriteFile(bad, []byte(strings.Replace(string(cfg), "record_exit_before_cleanup = true", `record_exit_before_cleanup = "yes"`, 1)), 0o600))

		named := "key containerd.record_exit_before_cleanup: "
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		start := func(root string) error {
			return daemon.CheckStart(ctx, daemon.Options{BinDir: filepath.Join(root, "usr", "bin"), Runc: l.RuncPath(), ConfigFile: bad, ReadyTimeout: 30 * time.Second})
		}
		errFull := start(full)
		require.Error(t, errFull)
		assert.Contains(t, errFull.Error(), named, "the full package names the key")
		errWithout := start(without)
		require.Error(t, errWithout)
		assert.NotContains(t, errWithout.Error(), named, "without %s the package must answer as upstream does", dropped)
		t.Logf("full package: %s", lastLines(errFull.Error(), 1))
		t.Logf("without %s: %s", dropped, lastLines(errWithout.Error(), 1))
	})
}

// dropPatch removes the one series entry containing part and returns it.
func dropPatch(t *testing.T, series, part string) string {
	t.Helper()
	b, err := os.ReadFile(series)
	require.NoError(t, err)
	var kept []string
	dropped := ""
	for _, entry := range strings.Split(string(b), "\n") {
		if strings.Contains(entry, part) {
			require.Empty(t, dropped, "two series entries contain %q", part)
			dropped = entry
			continue
		}
		kept = append(kept, entry)
	}
	require.NotEmpty(t, dropped, "no series entry contains %q", part)
	require.NoError(t, os.WriteFile(series, []byte(strings.Join(kept, "\n")), 0o644))
	return dropped
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
