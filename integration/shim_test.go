package integration

import (
	"context"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	taskapi "github.com/containerd/containerd/api/types/task"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/containerd-steady/containerd-steady/pkg/daemon"
	"github.com/containerd-steady/containerd-steady/pkg/fault"
	"github.com/containerd-steady/containerd-steady/pkg/incident"
	"github.com/containerd-steady/containerd-steady/pkg/shim"
)

type shimCall struct {
	took  time.Duration
	err   error
	state *taskapi.Status
	exit  uint32
}

// TestShimAnswersWhileDeleteIsStuck dials a pod's shim directly while its
// Delete is stuck in a slow rootfs umount2 (incident I1's third link) and
// asks it Update, State and Kill. Upstream blocks them all behind the
// Delete; the fork answers at once: Update and Kill with NotFound (which
// containerd and the CRI treat as "already exited"), State with STOPPED
// and the real exit status.
func TestShimAnswersWhileDeleteIsStuck(t *testing.T) {
	for _, b := range []incident.Build{upstreamBuild(t), forkBuild(t)} {
		t.Run(b.Name, func(t *testing.T) {
			requireSetup(t, b)
			t.Parallel()
			d := delay(t)
			calls := stuckDeleteCalls(t, b, d)
			for name, c := range calls {
				t.Logf("%s: shim %s took %s: err=%v state=%v exit=%d", b.Name, name, c.took.Round(time.Millisecond), c.err, c.state, c.exit)
			}
			if b.Name == "upstream" {
				for name, c := range calls {
					assert.GreaterOrEqual(t, c.took, d/2, "upstream's %s should wait behind the Delete", name)
				}
				return
			}
			for name, c := range calls {
				assert.Less(t, c.took, 500*time.Millisecond, "fork's %s must not wait for the Delete", name)
			}
			assert.Equal(t, codes.NotFound, status.Code(calls["Update"].err), "Update: %v", calls["Update"].err)
			assert.Contains(t, errString(calls["Update"].err), "init process is not running")
			assert.Equal(t, codes.NotFound, status.Code(calls["Kill"].err), "Kill: %v", calls["Kill"].err)
			require.NoError(t, calls["State"].err)
			require.NotNil(t, calls["State"].state)
			assert.Equal(t, taskapi.Status_STOPPED, *calls["State"].state)
			assert.EqualValues(t, 137, calls["State"].exit, "State must report the real exit status of the SIGKILLed init")
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// stuckDeleteCalls runs a container, delays umount2 in its shim by d, kills
// it, waits until the CRI's Delete is inside the umount, then calls the
// shim's Update, State and Kill concurrently.
func stuckDeleteCalls(t *testing.T, b incident.Build, d time.Duration) map[string]shimCall {
	node, dir := startNode(t, b, daemon.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*d+2*time.Minute)
	defer cancel()
	tk, err := node.StartTicker(ctx, "shim-stuck")
	require.NoError(t, err)
	id, initPID, shimPID := tk.ID, tk.InitPID, tk.ShimPID

	ep, err := shim.Locate(node.Daemon.State, "k8s.io", id)
	require.NoError(t, err)
	client, err := shim.Dial(ep, "k8s.io")
	require.NoError(t, err)
	defer client.Close()

	delayed, err := fault.DelaySyscalls(ctx, shimPID, []string{"umount2"}, d, filepath.Join(dir, "strace-shim.log"))
	require.NoError(t, err)
	defer delayed.Detach()

	require.NoError(t, syscall.Kill(initPID, syscall.SIGKILL))
	require.NoError(t, delayed.WaitEntered(ctx, "umount2", 1, 30*time.Second), "the CRI's Delete never reached the rootfs umount")

	calls := map[string]shimCall{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	run := func(name string, f func(context.Context) shimCall) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 3*d)
			defer cancel()
			start := time.Now()
			c := f(cctx)
			c.took = time.Since(start)
			mu.Lock()
			calls[name] = c
			mu.Unlock()
		}()
	}
	run("Update", func(ctx context.Context) shimCall {
		return shimCall{err: client.UpdateCPUShares(ctx, id, 512)}
	})
	run("State", func(ctx context.Context) shimCall {
		resp, err := client.State(ctx, id)
		if err != nil {
			return shimCall{err: err}
		}
		return shimCall{state: &resp.Status, exit: resp.ExitStatus}
	})
	run("Kill", func(ctx context.Context) shimCall {
		return shimCall{err: client.Kill(ctx, id, uint32(syscall.SIGKILL), false)}
	})
	wg.Wait()
	return calls
}
