// Package snapshots drives a running containerd's snapshotter through the
// daemon's snapshot API (the snapshots proxy over gRPC), so that upstream's
// snapshotter conformance suite and our volatile overlay checks run against
// the snapshotter as clients see it, not against a library copy of it.
package snapshots

import (
	"context"
	"errors"
	"fmt"
	"sort"

	introspectionapi "github.com/containerd/containerd/api/services/introspection/v1"
	leasesapi "github.com/containerd/containerd/api/services/leases/v1"
	namespacesapi "github.com/containerd/containerd/api/services/namespaces/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/leases"
	leasesproxy "github.com/containerd/containerd/leases/proxy"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	snproxy "github.com/containerd/containerd/snapshots/proxy"
	"google.golang.org/grpc"
)

// LabelVolatile is the snapshot label that makes the fork's overlayfs
// snapshotter mount an active snapshot with a parent "volatile"
// (overlayutils.LabelVolatile in the patched tree).
const LabelVolatile = "containerd.io/snapshot/overlay.volatile"

// CapabilityVolatile is the capability the fork's overlayfs snapshotter
// advertises when the kernel supports "volatile" and it honours the label.
const CapabilityVolatile = "volatile"

// Remote is one snapshotter of a running containerd, reached over gRPC.
type Remote struct {
	// Name is the snapshotter's name, e.g. "overlayfs".
	Name   string
	conn   *grpc.ClientConn
	sn     snapshots.Snapshotter
	leases leases.Manager
	ns     namespacesapi.NamespacesClient
}

// NewRemote returns the snapshotter name of the containerd on conn.
func NewRemote(conn *grpc.ClientConn, name string) *Remote {
	return &Remote{
		Name:   name,
		conn:   conn,
		sn:     snproxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), name),
		leases: leasesproxy.NewLeaseManager(leasesapi.NewLeasesClient(conn)),
		ns:     namespacesapi.NewNamespacesClient(conn),
	}
}

// Snapshotter returns the remote snapshotter itself: every call runs in the
// namespace of its context (namespaces.WithNamespace).
func (r *Remote) Snapshotter() snapshots.Snapshotter { return r.sn }

// Capabilities returns the capabilities the daemon's snapshotter plugin
// advertises through the introspection API.
func (r *Remote) Capabilities(ctx context.Context) ([]string, error) {
	resp, err := introspectionapi.NewIntrospectionClient(r.conn).Plugins(ctx, &introspectionapi.PluginsRequest{
		Filters: []string{fmt.Sprintf("type==io.containerd.snapshotter.v1,id==%s", r.Name)},
	})
	if err != nil {
		return nil, err
	}
	if len(resp.Plugins) != 1 {
		return nil, fmt.Errorf("snapshotter plugin %q: found %d plugins", r.Name, len(resp.Plugins))
	}
	if p := resp.Plugins[0]; p.InitErr != nil {
		return nil, fmt.Errorf("snapshotter plugin %q failed to initialise: %s", r.Name, p.InitErr.Message)
	}
	return resp.Plugins[0].Capabilities, nil
}

// Isolated returns the remote snapshotter seen from namespace ns only:
// every call runs in ns and in a lease of its own, whatever namespace the
// caller's context names, so that callers sharing one daemon (the
// conformance suite runs its cases in parallel, all in one namespace, and
// some use fixed keys) never see each other's snapshots, and the daemon's
// garbage collector never removes a snapshot while a case still uses it.
// cleanup removes every snapshot of ns, the lease and the namespace; the
// caller must have unmounted everything it mounted.
func (r *Remote) Isolated(ctx context.Context, ns string) (_ snapshots.Snapshotter, cleanup func() error, _ error) {
	ctx = namespaces.WithNamespace(ctx, ns)
	l, err := r.leases.Create(ctx, leases.WithRandomID())
	if err != nil {
		return nil, nil, fmt.Errorf("create lease in namespace %s: %w", ns, err)
	}
	s := &isolated{Snapshotter: r.sn, ns: ns, lease: l.ID}
	cleanup = func() error {
		ctx := namespaces.WithNamespace(context.Background(), ns)
		var errs []error
		if err := RemoveAll(ctx, r.sn); err != nil {
			errs = append(errs, err)
		}
		// A synchronous delete runs the garbage collector, which removes
		// the snapshots' directories in the backend.
		if err := r.leases.Delete(ctx, l, leases.SynchronousDelete); err != nil {
			errs = append(errs, fmt.Errorf("delete lease %s: %w", l.ID, err))
		}
		if _, err := r.ns.Delete(ctx, &namespacesapi.DeleteNamespaceRequest{Name: ns}); err != nil {
			errs = append(errs, fmt.Errorf("delete namespace %s: %w", ns, err))
		}
		return errors.Join(errs...)
	}
	return s, cleanup, nil
}

// RemoveAll removes every snapshot of sn in ctx's namespace, children first.
func RemoveAll(ctx context.Context, sn snapshots.Snapshotter) error {
	for round := 0; round < 10; round++ {
		parents := map[string]string{}
		if err := sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
			parents[info.Name] = info.Parent
			return nil
		}); err != nil {
			return fmt.Errorf("walk snapshots: %w", err)
		}
		if len(parents) == 0 {
			return nil
		}
		// Deepest first: a snapshot is removed after all its children.
		depth := func(k string) int {
			n := 0
			for p := parents[k]; p != "" && n <= len(parents); p = parents[p] {
				n++
			}
			return n
		}
		keys := make([]string, 0, len(parents))
		for k := range parents {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return depth(keys[i]) > depth(keys[j]) })
		var errs []error
		removed := 0
		for _, k := range keys {
			err := sn.Remove(ctx, k)
			switch {
			case err == nil:
				removed++
			case errdefs.IsFailedPrecondition(err) || errdefs.IsNotFound(err):
				// Has children that appeared meanwhile (next round) or gone.
			default:
				errs = append(errs, fmt.Errorf("remove snapshot %s: %w", k, err))
			}
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
		if removed == 0 {
			return fmt.Errorf("cannot remove snapshots %v", keys)
		}
	}
	return errors.New("snapshots left after 10 rounds of removal")
}

// isolated runs every call of a remote snapshotter in one namespace and lease.
type isolated struct {
	snapshots.Snapshotter
	ns, lease string
}

func (s *isolated) ctx(ctx context.Context) context.Context {
	return leases.WithLease(namespaces.WithNamespace(ctx, s.ns), s.lease)
}

func (s *isolated) Stat(ctx context.Context, key string) (snapshots.Info, error) {
	return s.Snapshotter.Stat(s.ctx(ctx), key)
}

func (s *isolated) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (snapshots.Info, error) {
	return s.Snapshotter.Update(s.ctx(ctx), info, fieldpaths...)
}

func (s *isolated) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	return s.Snapshotter.Usage(s.ctx(ctx), key)
}

func (s *isolated) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	return s.Snapshotter.Mounts(s.ctx(ctx), key)
}

func (s *isolated) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.Snapshotter.Prepare(s.ctx(ctx), key, parent, opts...)
}

func (s *isolated) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.Snapshotter.View(s.ctx(ctx), key, parent, opts...)
}

func (s *isolated) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	return s.Snapshotter.Commit(s.ctx(ctx), name, key, opts...)
}

func (s *isolated) Remove(ctx context.Context, key string) error {
	return s.Snapshotter.Remove(s.ctx(ctx), key)
}

func (s *isolated) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	return s.Snapshotter.Walk(s.ctx(ctx), fn, filters...)
}

// Close does not close the shared connection: the conformance suite closes
// its snapshotter (twice, in one case), while others still use the daemon.
func (s *isolated) Close() error { return nil }

// Labelled adds Labels to every snapshot created by Prepare (active
// snapshots), leaving views and commits alone, and counts the mounts it
// handed out with the overlayfs "volatile" option.
type Labelled struct {
	snapshots.Snapshotter
	Labels map[string]string
	// OnPrepare, when set, is called with the mounts of every Prepare.
	OnPrepare func(key, parent string, mounts []mount.Mount)
}

func (s *Labelled) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	opts = append(append([]snapshots.Opt(nil), opts...), snapshots.WithLabels(s.Labels))
	mounts, err := s.Snapshotter.Prepare(ctx, key, parent, opts...)
	if err == nil && s.OnPrepare != nil {
		s.OnPrepare(key, parent, mounts)
	}
	return mounts, err
}

// HasVolatile reports whether any of mounts carries the overlayfs
// "volatile" option (or its newer spelling "fsync=volatile").
func HasVolatile(mounts []mount.Mount) bool {
	for _, m := range mounts {
		for _, o := range m.Options {
			if o == "volatile" || o == "fsync=volatile" {
				return true
			}
		}
	}
	return false
}
