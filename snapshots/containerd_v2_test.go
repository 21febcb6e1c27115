package snapshots

import (
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/containerd/v2/core/snapshots/testsuite"
)

// containerdV2 binds the tests to github.com/containerd/containerd/v2
// (line v2.3): core/snapshots/testsuite, core/snapshots/proxy and
// core/mount.
var containerdV2 = upstream{
	suite:      runSuite(testsuite.SnapshotterSuite, proxy.NewSnapshotter),
	mountAll:   func(mounts []*types.Mount, target string) error { return mount.All(mount.FromProto(mounts), target) },
	unmountAll: func(target string) error { return mount.UnmountAll(target, 0) },
}
