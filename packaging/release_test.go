// Package packaging tests what node-image builders and distro packagers
// install: the release tarball, the systemd unit and the Debian package.
package packaging

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-steady/containerd-steady/pkg/deb"
	"github.com/containerd-steady/containerd-steady/pkg/line"
)

// TestReleaseReproducible builds the line's release twice, the second time
// after relinking the binaries, and requires the same bytes: the tarball
// holds bin/ as upstream's does, the unit where upstream's cri-containerd
// bundle has it, and the line's default config.
func TestReleaseReproducible(t *testing.T) {
	l := theLine(t)
	first := release(t, l)
	require.NoError(t, os.Remove(filepath.Join(l.ForkBin(), ".build-stamp")), "force a rebuild of the binaries")
	second := release(t, l)
	assert.Equal(t, first, second, "two builds of the release must be the same bytes")

	tarball := tarballPath(l)
	sum, err := os.ReadFile(tarball + ".sha256sum")
	require.NoError(t, err)
	assert.Equal(t, second+"  "+filepath.Base(tarball)+"\n", string(sum), "the .sha256sum beside the tarball")

	root := t.TempDir()
	untar(t, tarball, root)
	for _, f := range []string{"bin/containerd", "bin/containerd-shim-runc-v2", "bin/ctr"} {
		st, err := os.Stat(filepath.Join(root, f))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o755), st.Mode().Perm(), f)
	}
	sameFile(t, filepath.Join(l.Root, "contrib", "systemd", "containerd.service"), filepath.Join(root, "etc", "systemd", "system", "containerd.service"))
	sameFile(t, l.DefaultConfig(), filepath.Join(root, "etc", "containerd", "config.toml"))
}

// TestUnitVerifies installs the release tarball as upstream's getting-started
// guide does (bin/ into /usr/local) with its unit into a scratch root, and
// runs systemd-analyze verify on it. A unit whose ExecStart names a missing
// binary must fail the same check.
func TestUnitVerifies(t *testing.T) {
	l := theLine(t)
	tarball := tarballPath(l)
	if _, err := os.Stat(tarball); err != nil {
		release(t, l)
	}
	rows := []struct {
		name string
		edit func(unit string) string
		ok   bool
	}{
		{name: "as shipped", edit: func(u string) string { return u }, ok: true},
		{name: "ExecStart names a missing binary", edit: func(u string) string {
			return strings.Replace(u, "ExecStart=/usr/local/bin/containerd\n", "ExecStart=/usr/local/bin/containerd-missing\n", 1)
		}},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			stage, root := t.TempDir(), t.TempDir()
			untar(t, tarball, stage)
			require.NoError(t, os.MkdirAll(filepath.Join(root, "usr", "local"), 0o755))
			require.NoError(t, os.Rename(filepath.Join(stage, "bin"), filepath.Join(root, "usr", "local", "bin")))
			require.NoError(t, os.Rename(filepath.Join(stage, "etc"), filepath.Join(root, "etc")))
			unit := filepath.Join(root, "etc", "systemd", "system", "containerd.service")
			b, err := os.ReadFile(unit)
			require.NoError(t, err)
			edited := row.edit(string(b))
			require.True(t, row.ok || edited != string(b), "the row's edit did not change the unit")
			require.NoError(t, os.WriteFile(unit, []byte(edited), 0o644))

			err = deb.VerifyUnit(root, "containerd.service")
			if row.ok {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			t.Logf("refused as it should be: %v", err)
		})
	}
}

// release runs script/release.sh for l and returns the tarball's sha256.
func release(t *testing.T, l line.Line) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(l.Root, "script", "release.sh"), l.Name)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "script/release.sh %s:\n%s", l.Name, out)
	return sha256File(t, tarballPath(l))
}

func tarballPath(l line.Line) string {
	return filepath.Join(l.Root, "build", "release", "containerd-steady-"+l.ForkVersion()+"-linux-amd64.tar.gz")
}

func untar(t *testing.T, tarball, dir string) {
	t.Helper()
	out, err := exec.Command("tar", "-xzf", tarball, "-C", dir).CombinedOutput()
	require.NoError(t, err, "untar %s: %s", tarball, out)
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	require.NoError(t, err)
	return hex.EncodeToString(h.Sum(nil))
}

func sameFile(t *testing.T, want, got string) {
	t.Helper()
	w, err := os.ReadFile(want)
	require.NoError(t, err)
	g, err := os.ReadFile(got)
	require.NoError(t, err)
	assert.Equal(t, string(w), string(g), "%s must be %s", got, want)
}

func theLine(t *testing.T) line.Line {
	t.Helper()
	l, err := line.FromEnv()
	require.NoError(t, err)
	return l
}
