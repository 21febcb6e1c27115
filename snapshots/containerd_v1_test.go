package snapshots

import (
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
)

// containerdV1 binds the tests to github.com/containerd/containerd (line
// v1.7): snapshots/testsuite, snapshots/proxy and mount.
var containerdV1 = upstream{
	suite: runSuite(testsuite.SnapshotterSuite, proxy.NewSnapshotter),
	mountAll: func(mounts []*types.Mount, target string) error {
		// This module's mount package has no FromProto.
		mm := make([]mount.Mount, len(mounts))
		for i, m := range mounts {
			mm[i] = mount.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options}
		}
		return mount.All(mm, target)
	},
	unmountAll: func(target string) error { return mount.UnmountAll(target, 0) },
}
