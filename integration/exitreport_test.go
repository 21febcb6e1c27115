package integration

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/containerd-steady/containerd-steady/pkg/daemon"
	"github.com/containerd-steady/containerd-steady/pkg/incident"
)

// The exit-reporting scenarios (issue 12): a pod's init container exits 0
// while its shim's umount2 is delayed by D, and the harness does what
// kubelet does next (pkg/incident.InitExit). The fork reports the exit at
// once and starts the next container; upstream waits for the cleanup.

// runInitExit plays the scenario on a fresh node of build and logs the numbers.
func runInitExit(t *testing.T, b incident.Build, opts daemon.Options, s incident.InitExit) incident.InitExitResult {
	t.Helper()
	node, dir := startNode(t, b, opts)
	s.Logf = t.Logf
	ctx, cancel := context.WithTimeout(context.Background(), 2*s.Delay+5*time.Minute)
	defer cancel()
	res, err := s.Run(ctx, b.Name, node, dir)
	require.NoError(t, err)
	t.Logf("%s: init exit -> EXITED reported %s, -> next container started %s; StopContainer %s (%v); early RemoveContainer %s (%v); leftovers %v",
		b.Name, res.ReportDelay().Round(time.Millisecond), res.NextStartDelay().Round(time.Millisecond),
		res.StopTook.Round(time.Millisecond), res.StopErr, res.EarlyRemoveTook.Round(time.Millisecond), res.EarlyRemoveErr, res.Leftovers)
	return res
}

// TestInitExitUpstream shows the gap on the pristine upstream: the init
// container is reported EXITED, and so the next container can start, only
// once its delayed cleanup has ended, at least D after its exit.
func TestInitExitUpstream(t *testing.T) {
	b := upstreamBuild(t)
	requireSetup(t, b)
	t.Parallel()
	d := delay(t)
	res := runInitExit(t, b, daemon.Options{}, incident.InitExit{Delay: d})
	assert.GreaterOrEqual(t, res.ReportDelay(), d, "upstream reports the exit only after the cleanup")
	assert.GreaterOrEqual(t, res.NextStartDelay(), d)
	assertCleanedUp(t, res)
}

// TestInitExitFork checks the fork's contract: EXITED within 2 s of the
// exit whatever D is, the next container started within 3 s, StopContainer
// at once, RemoveContainer during the cleanup failing retriably before its
// deadline without losing anything, and nothing left once the cleanup ends.
func TestInitExitFork(t *testing.T) {
	b := forkBuild(t)
	requireSetup(t, b)
	t.Parallel()
	d := delay(t)
	res := runInitExit(t, b, daemon.Options{}, incident.InitExit{Delay: d})
	assertExitReportedEarly(t, res)
	assertRemoveWaitsForCleanup(t, res)
	assertCleanedUp(t, res)
}

// TestInitExitForkRestartDuringCleanup restarts the fork's containerd while
// the exited init container's cleanup is still delayed: CRI answers within
// 5 s, the container is still EXITED with its recorded exit, and the cleanup
// finishes in the background without leaving anything behind. (Upstream's
// restart during a stuck delete is TestRestartDuringStuckExit.)
func TestInitExitForkRestartDuringCleanup(t *testing.T) {
	b := forkBuild(t)
	requireSetup(t, b)
	t.Parallel()
	d := max(delay(t), 15*time.Second) // the restart must land inside the cleanup
	res := runInitExit(t, b, daemon.Options{}, incident.InitExit{Delay: d, Restart: true})
	assertExitReportedEarly(t, res)
	assertRemoveWaitsForCleanup(t, res)
	assert.LessOrEqual(t, res.ReadyAfter, 5*time.Second, "CRI must answer soon after the restart")
	require.NotNil(t, res.AfterRestart, "the init container must still be there after the restart")
	assert.Equal(t, runtimeapi.ContainerState_CONTAINER_EXITED, res.AfterRestart.State)
	assert.Equal(t, res.ExitCode, res.AfterRestart.ExitCode)
	assert.Equal(t, res.ExitedAt.UnixNano(), res.AfterRestart.FinishedAt, "the recorded exit time must survive the restart")
	assert.True(t, res.RemovedAt.After(res.ShimDoneAt), "the cleanup must have finished in the background before the removal")
	assertCleanedUp(t, res)
}

// TestInitExitForkUpstreamOrder runs the fork with record_exit_before_cleanup
// = false: the switch restores upstream's order, the exit is reported only
// after the cleanup.
func TestInitExitForkUpstreamOrder(t *testing.T) {
	b := forkBuild(t)
	requireSetup(t, b)
	t.Parallel()
	d := delay(t)
	res := runInitExit(t, b, daemon.Options{ContainerdExtra: "record_exit_before_cleanup = false"}, incident.InitExit{Delay: d})
	assert.GreaterOrEqual(t, res.ReportDelay(), d, "with the switch off the exit is reported after the cleanup, as upstream")
	assertCleanedUp(t, res)
}

// assertExitReportedEarly checks that the exit was reported at once and the
// next container started right after.
func assertExitReportedEarly(t *testing.T, res incident.InitExitResult) {
	t.Helper()
	assert.Equal(t, []runtimeapi.ContainerState{runtimeapi.ContainerState_CONTAINER_RUNNING, runtimeapi.ContainerState_CONTAINER_EXITED}, res.States)
	assert.Zero(t, res.ExitCode)
	assert.WithinRange(t, res.ExitedAt, res.TriggeredAt.Add(-time.Second), res.TriggeredAt.Add(2*time.Second), "the finish time is the exit's")
	assert.LessOrEqual(t, res.ReportDelay(), 2*time.Second, "EXITED must be reported within 2 s of the exit")
	require.NoError(t, res.NextErr, "the next container must start while the cleanup runs")
	assert.LessOrEqual(t, res.NextStartDelay(), 3*time.Second, "the next container must start within 3 s of the exit")
	assert.True(t, res.ReportedAt.Before(res.ShimDoneAt), "the exit must be reported before the delayed cleanup ends")
}

// assertRemoveWaitsForCleanup checks StopContainer and the early
// RemoveContainer of the exited container while its cleanup was pending.
func assertRemoveWaitsForCleanup(t *testing.T, res incident.InitExitResult) {
	t.Helper()
	assert.NoError(t, res.StopErr)
	assert.Less(t, res.StopTook, time.Second, "StopContainer of an exited container returns at once")
	require.Error(t, res.EarlyRemoveErr, "RemoveContainer cannot finish while the cleanup is pending")
	st, _ := status.FromError(res.EarlyRemoveErr)
	assert.Equal(t, codes.Unavailable, st.Code(), "a retriable error: %v", res.EarlyRemoveErr)
	assert.Contains(t, st.Message(), "cleanup of its task", "the error names the pending cleanup")
	assert.Less(t, res.EarlyRemoveTook, 3*time.Second, "the answer comes before the caller's deadline")
	assert.Greater(t, res.EarlyRemoveTook, 2*time.Second, "RemoveContainer waits for the cleanup within the deadline")
	require.NotNil(t, res.AfterRemove, "a failed RemoveContainer must leave the container")
	assert.Equal(t, runtimeapi.ContainerState_CONTAINER_EXITED, res.AfterRemove.State)
	assert.Equal(t, res.ExitCode, res.AfterRemove.ExitCode)
	assert.Equal(t, res.ExitedAt.UnixNano(), res.AfterRemove.FinishedAt)
	assert.True(t, res.RemovedAt.After(res.ShimDoneAt), "the container is removed only after its cleanup")
}

// assertCleanedUp checks that the pod went away and left nothing.
func assertCleanedUp(t *testing.T, res incident.InitExitResult) {
	t.Helper()
	assert.NoError(t, res.PodRemoveErr)
	assert.Empty(t, res.Leftovers, "shims, mounts or snapshots left after the pod was removed")
	assert.False(t, res.RemovedAt.IsZero(), "the init container must be removed")
}
