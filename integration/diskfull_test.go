package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-steady/containerd-steady/pkg/daemon"
	"github.com/containerd-steady/containerd-steady/pkg/fault"
	"github.com/containerd-steady/containerd-steady/pkg/incident"
)

// diskSize is the filesystem containerd's root and state live on in the
// disk-full scenario: room for the images and a few pods.
const diskSize = 96 << 20

// diskFullRun is what the disk-full scenario saw on one build.
type diskFullRun struct {
	incident.DiskFullResult
	Check   string
	CheckOK bool
}

// TestDiskFull (issue 14): containerd's root and state live on a small
// filesystem (a size-limited tmpfs: no loop device is needed), which fills
// up while 4 containers are killed and get resource updates. On the fork
// CRI reads never stall and every error names the full disk; once the
// space is freed every exit is recorded with its real code, also after a
// restart, and meta.db passes 'bbolt check'. Upstream is shown beside it.
func TestDiskFull(t *testing.T) {
	bbolt := bboltBinary(t)
	runs := bothBuilds(t, "builds", func(t *testing.T, b incident.Build) diskFullRun {
		return runDiskFull(t, b, bbolt)
	})
	var out strings.Builder
	fmt.Fprintf(&out, "Disk full: root and state on a %d MiB filesystem, filled while 4 containers are killed\n", diskSize>>20)
	fmt.Fprintf(&out, "%-40s %22s %22s\n", "", "fork", "upstream")
	row := func(label string, f func(diskFullRun) string) {
		fmt.Fprintf(&out, "%-40s %22s %22s\n", label, f(runs["fork"]), f(runs["upstream"]))
	}
	row("longest CRI read while full", func(r diskFullRun) string { return r.ReadMax.Round(time.Millisecond).String() })
	row("read errors (naming ENOSPC)", func(r diskFullRun) string {
		full, _ := incident.ErrorsNamingFullDisk(r.ReadErrs)
		return fmt.Sprintf("%d (%d) of %d", len(r.ReadErrs), len(full), r.Reads)
	})
	row("update errors (naming ENOSPC)", func(r diskFullRun) string {
		full, _ := incident.ErrorsNamingFullDisk(r.UpdateErrs)
		return fmt.Sprintf("%d (%d) of %d", len(r.UpdateErrs), len(full), r.Updates)
	})
	row("EXITED while full", func(r diskFullRun) string { return fmt.Sprint(r.ExitedWhileFull) })
	row("exit codes once freed", func(r diskFullRun) string { return fmt.Sprint(r.Exits) })
	row("exit codes after a restart", func(r diskFullRun) string { return fmt.Sprint(r.AfterRestart) })
	row("bbolt check", func(r diskFullRun) string {
		if r.CheckOK {
			return r.Check
		}
		return "FAILED"
	})
	t.Log("\n" + out.String())
	if fork, up := runs["fork"], runs["upstream"]; fork.Build != "" && up.Build != "" {
		assert.GreaterOrEqual(t, fork.ExitedWhileFull, up.ExitedWhileFull,
			"the fork must report no fewer exits than upstream while the disk is full")
	}
}

func runDiskFull(t *testing.T, b incident.Build, bbolt string) diskFullRun {
	dir := filepath.Join(t.TempDir(), "d")
	require.NoError(t, fault.MountSmallFS(dir, diskSize))
	// Registered first, so it runs last: after the node is gone.
	t.Cleanup(func() { assert.NoError(t, fault.UnmountSmallFS(dir)) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	node, err := incident.StartNode(ctx, b, dir, daemon.Options{})
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s containerd log (tail):\n%s", b.Name, node.Daemon.LogTail(60))
		}
		assert.NoError(t, node.Close())
	})

	res, err := incident.DiskFull{Logf: t.Logf}.Run(ctx, b.Name, node, dir)
	run := diskFullRun{DiskFullResult: res}
	if b.Name == "fork" {
		require.NoError(t, err)
	} else if err != nil {
		t.Logf("upstream: %v", err)
	}
	require.NoError(t, node.Daemon.Stop(ctx))
	run.Check, err = incident.CheckMetaDB(ctx, bbolt, node.Daemon)
	run.CheckOK = err == nil
	if err != nil {
		run.Check = err.Error()
	}
	full, other := incident.ErrorsNamingFullDisk(append(append([]string{}, res.ReadErrs...), res.UpdateErrs...))
	t.Logf("%s: filled %d bytes; longest read %s; %d errors naming the full disk, %d others %q; exits %v, after restart %v; bbolt check: %s",
		b.Name, res.Filled, res.ReadMax.Round(time.Millisecond), len(full), len(other), other, res.Exits, res.AfterRestart, run.Check)
	if b.Name != "fork" {
		return run
	}
	assert.Less(t, res.ReadMax, time.Second, "CRI reads must not stall while the disk is full")
	assert.Empty(t, other, "every error while the disk is full must name it")
	want := []int32{137, 137, 137, 137}
	assert.Equal(t, want, res.Exits, "every exit is recorded with its real code once space is freed")
	assert.Equal(t, want, res.AfterRestart, "and kept across a restart")
	assert.True(t, run.CheckOK, "meta.db must pass bbolt check: %s", run.Check)
	return run
}
