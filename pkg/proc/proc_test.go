package proc

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStartLogsAndStops(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	// A shell that ignores SIGTERM, so Stop has to fall back to SIGKILL.
	p, err := Start(exec.Command("/bin/busybox", "sh", "-c", "trap '' TERM; echo started; while :; do sleep 0.05; done"), log)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return Tail(log, 1) == "started" }, 5*time.Second, 10*time.Millisecond)
	assert.False(t, p.Exited())
	pgid, err := syscall.Getpgid(p.PID())
	require.NoError(t, err)
	assert.Equal(t, p.PID(), pgid, "the child leads its own process group")

	start := time.Now()
	require.NoError(t, p.Stop(context.Background(), 200*time.Millisecond))
	assert.Less(t, time.Since(start), 5*time.Second)
	assert.True(t, p.Exited())
	assert.Equal(t, 0, p.PID())
	assert.Error(t, p.Err(), "killed by SIGKILL")
	require.NoError(t, p.Stop(context.Background(), time.Second), "stopping twice is harmless")
}

func TestKillGivesNoGrace(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	// A shell that would clean up on SIGTERM: Kill must not let it.
	p, err := Start(exec.Command("/bin/busybox", "sh", "-c", "trap 'echo graceful; exit 0' TERM; echo started; while :; do sleep 0.05; done"), log)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return Tail(log, 1) == "started" }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, p.Kill())
	assert.True(t, p.Exited())
	assert.ErrorContains(t, p.Err(), "killed")
	assert.Equal(t, "started", Tail(log, 1), "no SIGTERM handler ran")
	require.NoError(t, p.Kill(), "killing twice is harmless")
}

func TestTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(path, []byte("a\nb\nc\n"), 0o644))
	assert.Equal(t, "b\nc", Tail(path, 2))
	assert.Equal(t, "a\nb\nc", Tail(path, 10))
	assert.Contains(t, Tail(filepath.Join(t.TempDir(), "missing"), 2), "no such file")
	var nilProc *Proc
	assert.True(t, nilProc.Exited())
}
