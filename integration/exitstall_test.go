package integration

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-steady/containerd-steady/pkg/daemon"
	"github.com/containerd-steady/containerd-steady/pkg/incident"
)

// runExitStall plays incident I1 on a fresh node of build and logs the numbers.
func runExitStall(t *testing.T, b incident.Build, s incident.ExitStall) incident.ExitStallResult {
	t.Helper()
	node, dir := startNode(t, b, daemon.Options{})
	s.Logf = t.Logf
	ctx, cancel := context.WithTimeout(context.Background(), 2*s.Delay+5*time.Minute)
	defer cancel()
	res, err := s.Run(ctx, b.Name, node, dir)
	require.NoError(t, err)
	sum := res.Summarise()
	t.Logf("%s: longest relist %s (p99 %s), longest UpdateContainerResources %s, longest ContainerStatus %s, kill->EXITED %s, shims done->EXITED %s, UNKNOWN seen %v, exit codes %v, update errors %d",
		b.Name, sum.LongestRelist.Round(time.Millisecond), sum.RelistP99.Round(time.Millisecond),
		sum.LongestUpdate.Round(time.Millisecond), sum.LongestStatus.Round(time.Millisecond),
		sum.KillToExited.Round(time.Millisecond), sum.ShimToExited.Round(time.Millisecond),
		sum.UnknownSeen, sum.ExitCodes, sum.UpdateFailures)
	return res
}

// TestExitStallUpstream shows incident I1 on the pristine upstream: a
// container exiting while its shim's rootfs unmount is slow stalls every
// relist of the node.
func TestExitStallUpstream(t *testing.T) {
	b := upstreamBuild()
	requireSetup(t, b)
	t.Parallel()
	d := delay(t)
	res := runExitStall(t, b, incident.ExitStall{Delay: d})
	assert.GreaterOrEqual(t, res.Relist.Max, d/2, "upstream should stall relists for at least D/2; the scenario did not reach the incident")
	assert.True(t, res.AllExited(), "the container should end EXITED")
}
