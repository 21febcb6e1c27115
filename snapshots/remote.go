// Package snapshots drives a running containerd's snapshotter through the
// daemon's snapshot API, so that upstream's snapshotter conformance suite
// and our volatile overlay checks run against the snapshotter as clients
// see it, not against a library copy of it.
//
// Both release lines speak the same snapshot API: the gRPC services of
// github.com/containerd/containerd/api, which one version in go.mod serves
// for the containerd 1.7 and the 2.x client libraries alike. So everything
// here is written once against that API: Remote and Scope (a namespace and
// lease of its own for each user of a shared daemon, put on the wire by
// the connection Scope.Conn, not by a client library), the removal of a
// scope's snapshots, the labels added to every Prepare, HasVolatile.
//
// Only the tests need a line's own client library, to run that line's
// upstream suite through that line's snapshots proxy: upstream_test.go
// declares what they take from it, and one thin adapter per upstream
// module (containerd_v1_test.go, containerd_v2_test.go) binds it; the
// line under test (STEADY_LINE) picks the adapter by its module. Both
// adapters are compiled into every build of the tests, without build
// tags, so that go vet and the compiler check both, and one test binary
// runs either line.
package snapshots

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"

	introspectionapi "github.com/containerd/containerd/api/services/introspection/v1"
	leasesapi "github.com/containerd/containerd/api/services/leases/v1"
	namespacesapi "github.com/containerd/containerd/api/services/namespaces/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// LabelVolatile is the snapshot label that makes the fork's overlayfs
// snapshotter mount an active snapshot with a parent "volatile"
// (overlayutils.LabelVolatile in the patched tree).
const LabelVolatile = "containerd.io/snapshot/overlay.volatile"

// CapabilityVolatile is the capability the fork's overlayfs snapshotter
// advertises when the kernel supports "volatile" and it honours the label.
const CapabilityVolatile = "volatile"

// The gRPC headers that carry a call's namespace and lease, as
// namespaces.WithNamespace and leases.WithLease set them on both lines.
const (
	namespaceHeader = "containerd-namespace"
	leaseHeader     = "containerd-lease"
)

// Remote is one snapshotter of a running containerd, reached over gRPC.
type Remote struct {
	// Name is the snapshotter's name, e.g. "overlayfs".
	Name string
	conn grpc.ClientConnInterface
}

// NewRemote returns the snapshotter name of the containerd on conn.
func NewRemote(conn grpc.ClientConnInterface, name string) *Remote {
	return &Remote{Name: name, conn: conn}
}

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

// List returns every snapshot of namespace ns.
func (r *Remote) List(ctx context.Context, ns string) ([]*snapshotsapi.Info, error) {
	return list(ctx, snapshotsapi.NewSnapshotsClient(withHeaders(r.conn, namespaceHeader, ns)), r.Name)
}

// A ScopeOpt changes what a Scope's connection does.
type ScopeOpt func(*scopedConn)

// WithPrepareLabels adds labels to every Prepare (active snapshots) made
// over the scope's connection, whatever client makes it, leaving views and
// commits alone. onPrepare, when not nil, sees the mounts of every
// successful Prepare.
func WithPrepareLabels(labels map[string]string, onPrepare func(key, parent string, mounts []*types.Mount)) ScopeOpt {
	return func(c *scopedConn) {
		c.labels = labels
		c.onPrepare = onPrepare
	}
}

// Scope is the remote snapshotter seen from one namespace only: every call
// made over Conn runs in that namespace and in a lease of its own, whatever
// namespace and lease the caller's context names. Users sharing one daemon
// (the conformance suite runs its cases in parallel, all in one namespace,
// and some use fixed keys) then never see each other's snapshots, and the
// daemon's garbage collector never removes a snapshot while its user still
// needs it.
type Scope struct {
	Namespace, Lease string
	// Conn is the daemon's connection as the scope's calls use it: give it
	// to any client of the containerd API (a snapshots proxy of either line).
	Conn        grpc.ClientConnInterface
	remote      *Remote
	snapshotter snapshotsapi.SnapshotsClient
}

// Isolated returns a Scope in namespace ns with a new lease.
func (r *Remote) Isolated(ctx context.Context, ns string, opts ...ScopeOpt) (*Scope, error) {
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	s := &Scope{Namespace: ns, Lease: "snapshots-" + hex.EncodeToString(id), remote: r}
	if _, err := leasesapi.NewLeasesClient(s.nsConn()).Create(ctx, &leasesapi.CreateRequest{ID: s.Lease}); err != nil {
		return nil, fmt.Errorf("create lease in namespace %s: %w", ns, err)
	}
	c := withHeaders(r.conn, namespaceHeader, ns, leaseHeader, s.Lease)
	for _, o := range opts {
		o(c)
	}
	s.Conn = c
	s.snapshotter = snapshotsapi.NewSnapshotsClient(c)
	return s, nil
}

// nsConn is the scope's namespace without its lease.
func (s *Scope) nsConn() grpc.ClientConnInterface {
	return withHeaders(s.remote.conn, namespaceHeader, s.Namespace)
}

// Close removes every snapshot of the scope's namespace, its lease and the
// namespace; the caller must have unmounted everything it mounted.
func (s *Scope) Close() error {
	ctx := context.Background()
	conn := s.nsConn()
	var errs []error
	if err := RemoveAll(ctx, snapshotsapi.NewSnapshotsClient(conn), s.remote.Name); err != nil {
		errs = append(errs, err)
	}
	// A synchronous delete runs the garbage collector, which removes
	// the snapshots' directories in the backend.
	if _, err := leasesapi.NewLeasesClient(conn).Delete(ctx, &leasesapi.DeleteRequest{ID: s.Lease, Sync: true}); err != nil {
		errs = append(errs, fmt.Errorf("delete lease %s: %w", s.Lease, err))
	}
	if _, err := namespacesapi.NewNamespacesClient(conn).Delete(ctx, &namespacesapi.DeleteNamespaceRequest{Name: s.Namespace}); err != nil {
		errs = append(errs, fmt.Errorf("delete namespace %s: %w", s.Namespace, err))
	}
	return errors.Join(errs...)
}

// Prepare creates an active snapshot key on parent with labels.
func (s *Scope) Prepare(ctx context.Context, key, parent string, labels map[string]string) ([]*types.Mount, error) {
	resp, err := s.snapshotter.Prepare(ctx, &snapshotsapi.PrepareSnapshotRequest{Snapshotter: s.remote.Name, Key: key, Parent: parent, Labels: labels})
	return resp.GetMounts(), err
}

// View creates a read-only snapshot key on parent with labels.
func (s *Scope) View(ctx context.Context, key, parent string, labels map[string]string) ([]*types.Mount, error) {
	resp, err := s.snapshotter.View(ctx, &snapshotsapi.ViewSnapshotRequest{Snapshotter: s.remote.Name, Key: key, Parent: parent, Labels: labels})
	return resp.GetMounts(), err
}

// Mounts returns the mounts of snapshot key.
func (s *Scope) Mounts(ctx context.Context, key string) ([]*types.Mount, error) {
	resp, err := s.snapshotter.Mounts(ctx, &snapshotsapi.MountsRequest{Snapshotter: s.remote.Name, Key: key})
	return resp.GetMounts(), err
}

// Commit commits active snapshot key as name.
func (s *Scope) Commit(ctx context.Context, name, key string) error {
	_, err := s.snapshotter.Commit(ctx, &snapshotsapi.CommitSnapshotRequest{Snapshotter: s.remote.Name, Name: name, Key: key})
	return err
}

// Stat returns the snapshot key.
func (s *Scope) Stat(ctx context.Context, key string) (*snapshotsapi.Info, error) {
	resp, err := s.snapshotter.Stat(ctx, &snapshotsapi.StatSnapshotRequest{Snapshotter: s.remote.Name, Key: key})
	return resp.GetInfo(), err
}

// Remove removes the snapshot key.
func (s *Scope) Remove(ctx context.Context, key string) error {
	return remove(ctx, s.snapshotter, s.remote.Name, key)
}

func remove(ctx context.Context, c snapshotsapi.SnapshotsClient, snapshotter, key string) error {
	_, err := c.Remove(ctx, &snapshotsapi.RemoveSnapshotRequest{Snapshotter: snapshotter, Key: key})
	return err
}

func list(ctx context.Context, c snapshotsapi.SnapshotsClient, snapshotter string) ([]*snapshotsapi.Info, error) {
	stream, err := c.List(ctx, &snapshotsapi.ListSnapshotsRequest{Snapshotter: snapshotter})
	if err != nil {
		return nil, err
	}
	var infos []*snapshotsapi.Info
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return infos, nil
		}
		if err != nil {
			return nil, err
		}
		infos = append(infos, resp.Info...)
	}
}

// RemoveAll removes every snapshot of snapshotter that c sees (the
// namespace of its connection or context), children first.
func RemoveAll(ctx context.Context, c snapshotsapi.SnapshotsClient, snapshotter string) error {
	for round := 0; round < 10; round++ {
		infos, err := list(ctx, c, snapshotter)
		if err != nil {
			return fmt.Errorf("list snapshots: %w", err)
		}
		if len(infos) == 0 {
			return nil
		}
		parents := map[string]string{}
		for _, info := range infos {
			parents[info.Name] = info.Parent
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
			err := remove(ctx, c, snapshotter, k)
			switch status.Code(err) {
			case codes.OK:
				removed++
			case codes.FailedPrecondition, codes.NotFound:
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

// scopedConn sets fixed gRPC headers on every call it carries, replacing
// those of the caller's context, and adds labels to every Prepare.
type scopedConn struct {
	cc        grpc.ClientConnInterface
	headers   metadata.MD
	labels    map[string]string
	onPrepare func(key, parent string, mounts []*types.Mount)
}

// withHeaders returns cc setting the header, value pairs kv on every call.
func withHeaders(cc grpc.ClientConnInterface, kv ...string) *scopedConn {
	return &scopedConn{cc: cc, headers: metadata.Pairs(kv...)}
}

func (c *scopedConn) outgoing(ctx context.Context) context.Context {
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	for k, v := range c.headers {
		md[k] = v
	}
	return metadata.NewOutgoingContext(ctx, md)
}

func (c *scopedConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	req, prepare := args.(*snapshotsapi.PrepareSnapshotRequest)
	if prepare && c.labels != nil {
		labels := make(map[string]string, len(req.Labels)+len(c.labels))
		for k, v := range req.Labels {
			labels[k] = v
		}
		for k, v := range c.labels {
			labels[k] = v
		}
		req.Labels = labels
	}
	err := c.cc.Invoke(c.outgoing(ctx), method, args, reply, opts...)
	if prepare && err == nil && c.onPrepare != nil {
		c.onPrepare(req.Key, req.Parent, reply.(*snapshotsapi.PrepareSnapshotResponse).Mounts)
	}
	return err
}

func (c *scopedConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return c.cc.NewStream(c.outgoing(ctx), desc, method, opts...)
}

// HasVolatile reports whether any of mounts carries the overlayfs
// "volatile" option (or its newer spelling "fsync=volatile").
func HasVolatile(mounts []*types.Mount) bool {
	for _, m := range mounts {
		for _, o := range m.Options {
			if o == "volatile" || o == "fsync=volatile" {
				return true
			}
		}
	}
	return false
}
