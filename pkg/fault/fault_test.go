package fault

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseCall(t *testing.T) {
	c, ok := parseCall(`4242 1795388135.458175 umount2("/run/x/rootfs", 0) = 0 (DELAYED) <2.004071>`)
	require.True(t, ok)
	assert.Equal(t, 4242, c.PID)
	assert.Equal(t, "umount2", c.Syscall)
	assert.Equal(t, `"/run/x/rootfs", 0`, c.Args)
	assert.Equal(t, "0 (DELAYED)", c.Result)
	assert.InDelta(t, 2.004071, c.End.Sub(c.Start).Seconds(), 1e-6)

	_, ok = parseCall(`4242 1795388137.473488 +++ exited with 0 +++`)
	assert.False(t, ok)
}

// TestDelaySyscalls delays sync(2) in a real shell loop and checks that the
// delay happened, was recorded, and that Detach lets the process go on.
func TestDelaySyscalls(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("tracing needs root here")
	}
	if _, err := exec.LookPath("strace"); err != nil {
		t.Fatal("strace missing: run 'make setup'")
	}
	cmd := exec.Command("/bin/busybox", "sh", "-c", "while true; do sync; sleep 0.1; done")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	ctx := context.Background()
	d, err := DelaySyscalls(ctx, cmd.Process.Pid, []string{"sync"}, 300*time.Millisecond, filepath.Join(t.TempDir(), "trace"))
	require.NoError(t, err)
	require.NoError(t, d.WaitEntered(ctx, "sync", 3, 10*time.Second))
	require.NoError(t, d.Detach())
	require.NoError(t, d.Detach(), "a second Detach is harmless")

	calls, err := d.Calls()
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(calls), 2)
	for _, c := range calls {
		assert.Equal(t, "sync", c.Syscall)
		assert.GreaterOrEqual(t, c.End.Sub(c.Start), 300*time.Millisecond, "every sync is delayed")
	}
	last, err := d.LastEnd("sync")
	require.NoError(t, err)
	assert.False(t, last.IsZero())
	_, err = d.LastEnd("umount2")
	assert.ErrorContains(t, err, "no finished umount2")

	status, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "status"))
	require.NoError(t, err)
	assert.Equal(t, 0, tracerPID(string(status)), "the process is no longer traced")
}

func TestSettled(t *testing.T) {
	past := float64(time.Now().Add(-time.Minute).UnixNano()) / 1e9
	now := float64(time.Now().UnixNano()) / 1e9
	for _, tc := range []struct {
		desc string
		log  string
		want bool
	}{
		{"no call yet", "", false},
		{"a call still running", fmt.Sprintf("7 %.6f umount2(\"/r\", 0 <unfinished ...>\n", past), false},
		{"the first of two calls done, the second running", fmt.Sprintf("7 %.6f umount2(\"/r\", 0) = 0 (DELAYED) <1.000000>\n7 %.6f umount2(\"/r\", 0 <unfinished ...>\n", past, past+1), false},
		{"every call done, the last just now", fmt.Sprintf("7 %.6f umount2(\"/r\", 0) = 0 (DELAYED) <0.000100>\n", now), false},
		{"every call done a while ago", fmt.Sprintf("7 %.6f umount2(\"/r\", 0) = 0 (DELAYED) <1.000000>\n7 %.6f umount2(\"/r\", 0) = -1 EINVAL (Invalid argument) (DELAYED) <1.000000>\n", past, past+1), true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			d := &Delay{PID: 7, Log: filepath.Join(t.TempDir(), "trace")}
			require.NoError(t, os.WriteFile(d.Log, []byte(tc.log), 0o644))
			got, err := d.Settled("umount2", 10*time.Second)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestFillSmallFS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("mounting a tmpfs needs root; run the tests as root, as make test does")
	}
	dir := filepath.Join(t.TempDir(), "small")
	require.NoError(t, MountSmallFS(dir, 4<<20))
	t.Cleanup(func() { assert.NoError(t, UnmountSmallFS(dir)) })

	f, err := Fill(dir)
	require.NoError(t, err)
	assert.InDelta(t, 4<<20, f.Bytes, 64<<10, "the filler takes the whole filesystem")
	err = os.WriteFile(filepath.Join(dir, "more"), []byte("x"), 0o644)
	require.ErrorIs(t, err, syscall.ENOSPC, "nothing fits once it is full")

	require.NoError(t, f.Free())
	require.NoError(t, os.WriteFile(filepath.Join(dir, "more"), []byte("x"), 0o644), "space is back once freed")
}
