package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/containerd-steady/containerd-steady/pkg/daemon"
	"github.com/containerd-steady/containerd-steady/pkg/incident"
)

// Bad input (issue 14): a configuration or a CRI request that is wrong gets
// a clear error that names what was wrong, and changes nothing.

// TestBadConfigRefused starts containerd with a wrong value for each key the
// fork adds. The fork refuses to start and names the key; upstream, which
// does not know these keys, is shown beside it.
func TestBadConfigRefused(t *testing.T) {
	l := theLine(t)
	plugin := l.CRIRuntimePlugin()
	const slowop = `"io.containerd.timeout.slowop.warning"`
	rows := []struct {
		name string
		opts daemon.Options
		want string // in the fork's error
	}{
		{
			name: "record_exit_before_cleanup is not a boolean",
			opts: daemon.Options{ContainerdExtra: `record_exit_before_cleanup = "yes"`},
			want: fmt.Sprintf("plugin %q: key containerd.record_exit_before_cleanup: ", plugin),
		},
		{
			name: "volatile_rootfs is not a boolean",
			opts: daemon.Options{RuntimeExtra: "      volatile_rootfs = 1"},
			want: fmt.Sprintf("plugin %q: key containerd.runtimes.runc.volatile_rootfs: ", plugin),
		},
		{
			name: "the slow operation threshold is not a duration",
			opts: daemon.Options{Extra: "[timeouts]\n  " + slowop + " = \"soon\"\n"},
			want: `timeouts: key ` + slowop + `: unable to parse "soon" into a time duration`,
		},
		{
			name: "the slow operation threshold is not a string",
			opts: daemon.Options{Extra: "[timeouts]\n  " + slowop + " = 5\n"},
			want: `key timeouts.` + slowop,
		},
	}
	for _, b := range []incident.Build{forkBuild(t), upstreamBuild(t)} {
		requireSetup(t, b)
		for _, row := range rows {
			t.Run(b.Name+"/"+row.name, func(t *testing.T) {
				t.Parallel()
				err := startRefused(t, b, row.opts)
				t.Logf("%s: %s", b.Name, firstLine(err))
				if b.Name == "upstream" {
					return
				}
				require.Error(t, err, "the fork must refuse to start")
				assert.Contains(t, err.Error(), row.want)
			})
		}
	}
}

// startRefused starts a daemon of b with opts and returns why it did not
// start; a daemon that starts is stopped and nil is returned.
func startRefused(t *testing.T, b incident.Build, opts daemon.Options) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts = b.DaemonOptions(opts)
	opts.ReadyTimeout = 30 * time.Second
	return daemon.CheckStart(ctx, opts)
}

// firstLine is the line of err that containerd printed last before it
// exited ("containerd: ..."), or err's first line.
func firstLine(err error) string {
	if err == nil {
		return "started"
	}
	lines := strings.Split(err.Error(), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); strings.HasPrefix(l, "containerd: ") {
			return l
		}
	}
	return lines[0]
}

// TestVolatileRootfsOnNonOverlaySnapshotter: volatile_rootfs on a runtime
// handler whose snapshotter is not overlayfs logs a warning at start that
// names the handler, and the handler's containers still run.
func TestVolatileRootfsOnNonOverlaySnapshotter(t *testing.T) {
	b := forkBuild(t)
	requireSetup(t, b)
	t.Parallel()
	node, _ := startNodeIn(t, b, func(dir string) daemon.Options {
		return daemon.Options{Extra: nativeHandler(t, filepath.Join(dir, "runc"))}
	})
	warning := fmt.Sprintf(`volatile_rootfs is enabled for runtime handler \"%s\", but its snapshotter \"native\" does not support overlayfs`, "native-volatile")
	startLog := node.Daemon.Logs()
	assert.Equal(t, 1, strings.Count(startLog, warning), "one warning at start naming the handler; log:\n%s", node.Daemon.LogTail(40))
	assert.Contains(t, startLog, "runtime_handler=native-volatile")

	// The handler's pod and container unpack the imported images for the
	// native snapshotter when they are created.
	_, id := startCRIContainer(t, node, "native", "native-volatile", node.Image)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := node.CRI.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	require.NoError(t, err)
	assert.Equal(t, runtimeapi.ContainerState_CONTAINER_RUNNING, st.Status.State, "the handler's container runs, without volatile")
	m, err := daemon.LookupMount(filepath.Join(node.Daemon.State, "io.containerd.runtime.v2.task", "k8s.io", id, "rootfs"))
	require.NoError(t, err)
	assert.NotEqual(t, "overlay", m.FSType, "the native snapshotter's rootfs is not an overlay")
	assert.False(t, m.Volatile())
	assert.Equal(t, 1, strings.Count(node.Daemon.Logs(), warning), "no second warning for the handler's containers")
}

// nativeHandler is a CRI runtime handler, "native-volatile", with
// volatile_rootfs on the native snapshotter, sharing the daemon's private
// runc root.
func nativeHandler(t *testing.T, runcRoot string) string {
	t.Helper()
	l := theLine(t)
	return fmt.Sprintf(`    [%[1]s]
      runtime_type = "io.containerd.runc.v2"
      snapshotter = "native"
      volatile_rootfs = true
      [%[1]s.options]
        BinaryName = %[2]q
        Root = %[3]q
        SystemdCgroup = false
`, l.RuntimeTable("native-volatile"), l.RuncPath(), runcRoot)
}

// updateRow is one invalid resource update.
type updateRow struct {
	name      string
	resources *runtimeapi.LinuxContainerResources
	field     string // what the fork's error names
}

func invalidUpdates() []updateRow {
	return []updateRow{
		{"negative cpu shares", &runtimeapi.LinuxContainerResources{CpuShares: -2}, "cpu_shares -2"},
		{"quota below the kernel minimum", &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 999}, "cpu_quota 999"},
		// No machine this runs on has a CPU 4095.
		{"cpuset outside the machine", &runtimeapi.LinuxContainerResources{CpusetCpus: "0,4095"}, `cpuset_cpus "0,4095"`},
	}
}

// outcome is what one call did.
type outcome struct {
	code     codes.Code
	msg      string
	changed  string // what changed in the container's recorded status, "" if nothing
	duration time.Duration
}

func (o outcome) String() string {
	s := o.code.String()
	if o.changed != "" {
		s += ", changed " + o.changed
	}
	return s
}

// TestUpdateResourcesRefusesBadInput sends invalid resource updates to a
// running, a stopping (its shim stuck unmounting) and an exited container,
// on the fork and on upstream. The fork answers InvalidArgument naming the
// field, at once, and nothing about the container changes.
func TestUpdateResourcesRefusesBadInput(t *testing.T) {
	seen := bothBuilds(t, "builds", func(t *testing.T, b incident.Build) map[string]outcome {
		return runBadUpdates(t, b, delay(t))
	})
	var out strings.Builder
	fmt.Fprintf(&out, "%-52s %-28s %s\n", "", "fork", "upstream")
	for _, state := range []string{"running", "stopping", "exited"} {
		for _, row := range invalidUpdates() {
			k := state + "/" + row.name
			fmt.Fprintf(&out, "%-52s %-28s %s\n", k, seen["fork"][k], seen["upstream"][k])
		}
	}
	t.Log("\nUpdateContainerResources with invalid values\n" + out.String())
}

// runBadUpdates plays the invalid updates on one build and asserts the
// fork's contract.
func runBadUpdates(t *testing.T, b incident.Build, d time.Duration) map[string]outcome {
	node, _ := startNode(t, b, daemon.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*d+3*time.Minute)
	defer cancel()
	pod, err := node.CRI.RunPod(ctx, "bad-"+b.Name)
	require.NoError(t, err)

	// exited: ends on its own and is cleaned up before any delay.
	exited, err := node.CRI.StartContainer(ctx, pod, "exited", node.Image, []string{"sh", "-c", "exit 3"})
	require.NoError(t, err)
	require.True(t, waitUntil(ctx, time.Minute, func() bool {
		st, err := node.CRI.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: exited})
		return err == nil && st.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED
	}), "the exited container never exited")
	running, err := node.CRI.StartContainer(ctx, pod, "running", node.Image, []string{"sleep", "3600"})
	require.NoError(t, err)
	stopping, err := node.CRI.StartContainer(ctx, pod, "stopping", node.Image, []string{"sleep", "3600"})
	require.NoError(t, err)

	// stopping: killed while its shim's umount2 is delayed by d.
	f := delayUnmounts(ctx, t, node, stopping, d)
	pid, err := node.CRI.InitPID(ctx, stopping)
	require.NoError(t, err)
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	require.NoError(t, f.WaitEntered(ctx, "umount2", 1, 30*time.Second), "the stopping container's shim should start unmounting")

	res := map[string]outcome{}
	for state, id := range map[string]string{"running": running, "stopping": stopping, "exited": exited} {
		for _, row := range invalidUpdates() {
			o := badUpdate(ctx, node, id, row.resources)
			res[state+"/"+row.name] = o
			t.Logf("%s: %s/%s: %s %q (%s)", b.Name, state, row.name, o, o.msg, o.duration.Round(time.Millisecond))
			if b.Name != "fork" {
				continue
			}
			assert.Equal(t, codes.InvalidArgument, o.code, "%s/%s: %s", state, row.name, o.msg)
			assert.Contains(t, o.msg, row.field, "%s/%s: the error must name the field", state, row.name)
			assert.Empty(t, o.changed, "%s/%s: nothing may change", state, row.name)
			assert.Less(t, o.duration, 2*time.Second, "%s/%s: an invalid update is refused at once", state, row.name)
		}
	}
	return res
}

// badUpdate sends one update to id and reports its outcome, and what it
// changed in the container's recorded status.
func badUpdate(ctx context.Context, node *incident.Node, id string, r *runtimeapi.LinuxContainerResources) outcome {
	before, errBefore := statusOf(ctx, node, id)
	callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := node.CRI.UpdateContainerResources(callCtx, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: r})
	o := outcome{code: status.Code(err), msg: status.Convert(err).Message(), duration: time.Since(start)}
	after, errAfter := statusOf(ctx, node, id)
	switch {
	case errBefore != nil || errAfter != nil:
		o.changed = fmt.Sprintf("status unreadable (%v, %v)", errBefore, errAfter)
	case before.State != after.State:
		o.changed = fmt.Sprintf("state %s -> %s", before.State, after.State)
	case !proto.Equal(before.Resources, after.Resources):
		o.changed = "resources"
	}
	return o
}

func statusOf(ctx context.Context, node *incident.Node, id string) (*runtimeapi.ContainerStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := node.CRI.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		return nil, err
	}
	return st.Status, nil
}

// TestUnknownAndTruncatedIDs: Status and Update with an ID that names no
// container fail with NotFound, and on the fork the error names the ID;
// Stop and Remove succeed, as the CRI asks of them for a container that is
// already gone; none of them touches the container. A unique prefix of an
// ID names that container, as the CRI has always resolved IDs (crictl
// relies on it).
func TestUnknownAndTruncatedIDs(t *testing.T) {
	for _, b := range []incident.Build{forkBuild(t), upstreamBuild(t)} {
		t.Run(b.Name, func(t *testing.T) {
			requireSetup(t, b)
			t.Parallel()
			node, _ := startNode(t, b, daemon.Options{})
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			_, id := startCRIContainer(t, node, "ids-"+b.Name, "", node.Image)
			before, err := statusOf(ctx, node, id)
			require.NoError(t, err)

			for _, bad := range []string{"0123456789abcdef", id + "0", "ids-" + b.Name} {
				_, statusErr := node.CRI.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: bad})
				_, stopErr := node.CRI.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: bad, Timeout: 1})
				_, removeErr := node.CRI.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: bad})
				calls := map[string]error{
					"status": statusErr,
					"update": node.CRI.UpdateCPU(ctx, bad, 512),
					"stop":   stopErr,
					"remove": removeErr,
				}
				for _, call := range []string{"status", "update", "stop", "remove"} {
					err := calls[call]
					t.Logf("%s: %s %q: %s %q", b.Name, call, bad, status.Code(err), status.Convert(err).Message())
					if call == "stop" || call == "remove" {
						assert.NoError(t, err, "%s of %q: idempotent", call, bad)
						continue
					}
					assert.Equal(t, codes.NotFound, status.Code(err), "%s of %q", call, bad)
					if b.Name == "fork" {
						assert.Contains(t, status.Convert(err).Message(), bad, "%s of %q: the error must name the ID", call, bad)
					}
				}
			}
			after, err := statusOf(ctx, node, id)
			require.NoError(t, err)
			assert.Equal(t, runtimeapi.ContainerState_CONTAINER_RUNNING, after.State, "the container is untouched")
			assert.True(t, proto.Equal(before.Resources, after.Resources), "the container is untouched")

			// A unique prefix names the container.
			short := id[:12]
			st, err := statusOf(ctx, node, short)
			require.NoError(t, err)
			assert.Equal(t, id, st.Id)
			require.NoError(t, node.CRI.UpdateCPU(ctx, short, 512))
			st, err = statusOf(ctx, node, id)
			require.NoError(t, err)
			assert.Equal(t, int64(512), st.GetResources().GetLinux().GetCpuShares(), "the update through the prefix reached the container")
		})
	}
}
