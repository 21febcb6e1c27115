package line

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The lines in this repository load, and differ where the lines differ.
func TestLoadRepoLines(t *testing.T) {
	for _, tc := range []struct {
		name, module string
		config       int
		table        string
		plugin       string
	}{
		{"v2.3", "github.com/containerd/containerd/v2", 3, `plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc`, "io.containerd.cri.v1.runtime"},
		{"v1.7", "github.com/containerd/containerd", 2, `plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc`, "io.containerd.grpc.v1.cri"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Load(RepoRoot(), tc.name)
			require.NoError(t, err)
			assert.Equal(t, tc.module, l.Module)
			assert.Equal(t, tc.config, l.ConfigVersion)
			assert.Equal(t, tc.table, l.RuntimeTable("runc"))
			assert.Equal(t, tc.plugin, l.CRIRuntimePlugin())
			assert.Regexp(t, `^v\d+\.\d+\.\d+\+steady\.\d+$`, l.ForkVersion())
			assert.Equal(t, filepath.Join(RepoRoot(), "build", "runc", l.Runc, "runc"), l.RuncPath())
		})
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name, upstream, want string
	}{
		{"missing", "", "no such file"},
		{"field", "module m\nversion v1\n", `no "sum" field`},
		{"config", "module m\nversion v1\nsum h1:x\nsteady 1\nconfig 4\ncri-runtime-table t\nruncv v1\nrunc v1\nkubelet v1\ncritest v1\nstatus lts\n", `config "4" is not 2 or 3`},
		{"novalue", "module\n", "has no value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if tc.upstream != "" {
				require.NoError(t, os.MkdirAll(filepath.Join(root, "patches", "vX"), 0o755))
				require.NoError(t, os.WriteFile(filepath.Join(root, "patches", "vX", "UPSTREAM"), []byte(tc.upstream), 0o644))
			}
			_, err := Load(root, "vX")
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}
