package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-steady/containerd-steady/pkg/daemon"
	"github.com/containerd-steady/containerd-steady/pkg/incident"
)

// slowopKey is the slow operation threshold in containerd's [timeouts].
const slowopKey = "io.containerd.timeout.slowop.warning"

// TestDefaultConfig runs the line's shipped default configuration
// (contrib/config/<line>.toml, what the release tarball and the Debian
// package install as /etc/containerd/config.toml) on the fork: it starts,
// each key we add takes the value the file gives it, and a wrong value for
// one of them stops containerd at start with an error naming the key.
//
// Each row edits the shipped text, so a key that moves or is dropped from
// the file fails the row instead of testing nothing.
func TestDefaultConfig(t *testing.T) {
	b := forkBuild(t)
	requireSetup(t, b)
	l := theLine(t)
	shipped, err := os.ReadFile(l.DefaultConfig())
	require.NoError(t, err)
	plugin := l.CRIRuntimePlugin()
	exitKey := []string{"plugins", plugin, "containerd", "record_exit_before_cleanup"}
	volatileKey := []string{"plugins", plugin, "containerd", "runtimes", "runc", "volatile_rootfs"}
	slowop := []string{"timeouts", slowopKey}

	rows := []struct {
		name    string
		edit    [2]string // old, new in the shipped text; none when empty
		want    map[string]any
		refused string // in the start error when the file is wrong
	}{
		{
			name: "as shipped",
			want: map[string]any{key(exitKey): true, key(volatileKey): false, key(slowop): "5s"},
		},
		{
			name: "record_exit_before_cleanup off",
			edit: [2]string{"record_exit_before_cleanup = true", "record_exit_before_cleanup = false"},
			want: map[string]any{key(exitKey): false},
		},
		{
			name: "volatile_rootfs on",
			edit: [2]string{"volatile_rootfs = false", "volatile_rootfs = true"},
			want: map[string]any{key(volatileKey): true},
		},
		{
			name: "slow operation threshold 2s",
			edit: [2]string{"'" + slowopKey + "' = '5s'", "'" + slowopKey + "' = '2s'"},
			want: map[string]any{key(slowop): "2s"},
		},
		{
			name:    "record_exit_before_cleanup not a boolean",
			edit:    [2]string{"record_exit_before_cleanup = true", `record_exit_before_cleanup = "yes"`},
			refused: fmt.Sprintf("plugin %q: key containerd.record_exit_before_cleanup: ", plugin),
		},
		{
			name:    "volatile_rootfs not a boolean",
			edit:    [2]string{"volatile_rootfs = false", "volatile_rootfs = 1"},
			refused: fmt.Sprintf("plugin %q: key containerd.runtimes.runc.volatile_rootfs: ", plugin),
		},
		{
			name:    "slow operation threshold not a duration",
			edit:    [2]string{"'" + slowopKey + "' = '5s'", "'" + slowopKey + "' = 'soon'"},
			refused: fmt.Sprintf(`timeouts: key %q: unable to parse "soon"`, slowopKey),
		},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			t.Parallel()
			text := string(shipped)
			if row.edit[0] != "" {
				require.Contains(t, text, row.edit[0], "the shipped %s lost the line this row edits", l.DefaultConfig())
				text = strings.Replace(text, row.edit[0], row.edit[1], 1)
			}
			file := filepath.Join(t.TempDir(), "config.toml")
			require.NoError(t, os.WriteFile(file, []byte(text), 0o600))

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err := daemon.CheckStart(ctx, b.DaemonOptions(daemon.Options{ConfigFile: file, ReadyTimeout: 30 * time.Second}))
			if row.refused != "" {
				require.Error(t, err, "the fork must refuse to start")
				t.Logf("refused: %s", firstLine(err))
				assert.Contains(t, err.Error(), row.refused)
				return
			}
			require.NoError(t, err)
			dump, err := configDump(b, file)
			require.NoError(t, err)
			for k, v := range row.want {
				assert.Equal(t, v, lookup(dump, strings.Split(k, "\x00")), "%s in the dump", strings.ReplaceAll(k, "\x00", "."))
			}
		})
	}
}

// key joins a TOML key path into one map key.
func key(path []string) string { return strings.Join(path, "\x00") }

// configDump is 'containerd config dump' of b with the file, decoded.
func configDump(b incident.Build, file string) (map[string]any, error) {
	out, err := exec.Command(filepath.Join(b.BinDir, "containerd"), "--config", file, "config", "dump").Output()
	if err != nil {
		return nil, fmt.Errorf("containerd config dump: %w", err)
	}
	var dump map[string]any
	if err := toml.Unmarshal(out, &dump); err != nil {
		return nil, fmt.Errorf("decode config dump: %w", err)
	}
	return dump, nil
}

// lookup returns the value at path in a decoded TOML document, or nil.
func lookup(doc map[string]any, path []string) any {
	var v any = doc
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}
