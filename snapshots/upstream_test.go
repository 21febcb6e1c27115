package snapshots

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/api/types"

	"github.com/containerd-steady/containerd-steady/pkg/line"
)

// upstream is all that the tests take from a line's own upstream module
// (the module of patches/<line>/UPSTREAM, at the version go.mod requires):
// its snapshotter conformance suite, run through its snapshots proxy, and
// its mount package. The two adapters, containerd_v1_test.go (module
// github.com/containerd/containerd, line v1.7) and containerd_v2_test.go
// (github.com/containerd/containerd/v2, line v2.3), only bind these to
// the module's packages; everything else is written once, against the
// snapshot API that both modules' clients speak (remote.go).
type upstream struct {
	// suite runs the module's testsuite.SnapshotterSuite on snapshotter
	// name; each case talks to the daemon over the connection of the
	// scope that newScope gives it.
	suite func(t *testing.T, name string, newScope func(ctx context.Context, root string) (*Scope, error))
	// mountAll mounts mounts on target and unmountAll unmounts everything
	// there, with the module's mount package.
	mountAll   func(mounts []*types.Mount, target string) error
	unmountAll func(target string) error
}

// upstreams maps a line's upstream module to its adapter.
var upstreams = map[string]upstream{
	"github.com/containerd/containerd":    containerdV1,
	"github.com/containerd/containerd/v2": containerdV2,
}

// upstreamOf returns the adapter of l's upstream module. It fails t when
// there is none, or when go.mod requires another version of the module
// than the one l pins: the suite must be the line's own.
func upstreamOf(t *testing.T, l line.Line) upstream {
	t.Helper()
	u, ok := upstreams[l.Module]
	if !ok {
		t.Fatalf("line %s: no snapshot test adapter for module %s (snapshots/upstream_test.go)", l.Name, l.Module)
	}
	if v := requiredVersion(t, filepath.Join(l.Root, "go.mod"), l.Module); v != l.Version {
		t.Fatalf("line %s pins %s %s, but go.mod requires %s, whose snapshotter suite would run: go get %s@%s",
			l.Name, l.Module, l.Version, v, l.Module, l.Version)
	}
	return u
}

// requiredVersion returns the version of module that the go.mod at path
// requires ("" when it does not).
func requiredVersion(t *testing.T, path, module string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "require "))
		if len(fields) >= 2 && fields[0] == module {
			return fields[1]
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return ""
}

// runSuite returns an upstream.suite for a module: its
// testsuite.SnapshotterSuite, whose factory type is F, and its proxy
// constructor, which makes the module's Snapshotter S from a client of
// the snapshot API. The adapters differ only in these two arguments.
func runSuite[S any, F ~func(context.Context, string) (S, func() error, error)](
	suite func(*testing.T, string, F),
	newProxy func(snapshotsapi.SnapshotsClient, string) S,
) func(*testing.T, string, func(context.Context, string) (*Scope, error)) {
	return func(t *testing.T, name string, newScope func(context.Context, string) (*Scope, error)) {
		suite(t, name, func(ctx context.Context, root string) (S, func() error, error) {
			s, err := newScope(ctx, root)
			if err != nil {
				var none S
				return none, nil, err
			}
			return newProxy(snapshotsapi.NewSnapshotsClient(s.Conn), name), s.Close, nil
		})
	}
}
