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

func runFsyncStall(t *testing.T, b incident.Build, d time.Duration) incident.FsyncStallResult {
	t.Helper()
	node, dir := startNode(t, b, daemon.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*d+2*time.Minute)
	defer cancel()
	res, err := incident.FsyncStall{Delay: d, Logf: t.Logf}.Run(ctx, b.Name, node, dir)
	require.NoError(t, err)
	t.Logf("%s: longest relist %s (p99 %s, %d relists), longest UpdateContainerResources %s over %d updates, %d delayed syncs",
		b.Name, res.Relist.Max.Round(time.Millisecond), res.Relist.P99.Round(time.Millisecond), len(res.Relist.Samples),
		res.UpdateMax.Round(time.Millisecond), res.Updates, res.Syncs)
	require.Positive(t, res.Syncs, "containerd never fsynced under the delay; the scenario did not reach the incident")
	return res
}

// TestFsyncStall is incident I2: a running container's resource update
// waits for containerd's own slow fsyncs. Upstream holds the container's
// status lock meanwhile, so relists stall; the fork's relists do not wait.
func TestFsyncStall(t *testing.T) {
	for _, b := range []incident.Build{upstreamBuild(t), forkBuild(t)} {
		t.Run(b.Name, func(t *testing.T) {
			requireSetup(t, b)
			t.Parallel()
			d := delay(t)
			res := runFsyncStall(t, b, d)
			if b.Name == "upstream" {
				assert.GreaterOrEqual(t, res.Relist.Max, d/2, "upstream relists should wait behind the update's fsyncs")
				return
			}
			assert.LessOrEqual(t, res.Relist.Max, 200*time.Millisecond, "fork relists must not wait for a writer")
		})
	}
}
