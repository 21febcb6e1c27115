package netns

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLocalLink(t *testing.T) {
	for _, tc := range []struct {
		line string
		want bool
	}{
		{"1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00", true},
		{"3: cni0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 8e:1c:6d:8b:4a:12 brd ff:ff:ff:ff:ff:ff", true},
		{"4: veth1b2c3d4e@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue master cni0 state UP mode DEFAULT group default \\    link/ether 6a:2f:11:22:33:44 brd ff:ff:ff:ff:ff:ff link-netns cni-1234", true},
		{"2: eth0@if7: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 02:42:ac:11:00:02 brd ff:ff:ff:ff:ff:ff link-netnsid 0", false},
		{"5: veth0: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN mode DEFAULT group default qlen 1000\\    link/ether 6a:2f:11:22:33:45 brd ff:ff:ff:ff:ff:ff", false},
		{"", false},
	} {
		assert.Equal(t, tc.want, localLink(tc.line), tc.line)
	}
}

// A new namespace has only its loopback, up, and no route off the machine;
// a way out added to it is found. Needs root (ip netns).
func TestCreateOffline(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: ip netns add")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := Create(ctx, fmt.Sprintf("steady-t%d", os.Getpid()))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, n.Delete(context.Background())) })

	require.NoError(t, n.Offline(ctx))
	out, err := n.Command(ctx, "ip", "-o", "link", "show", "lo").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "UP", "loopback is up")

	out, err = n.Command(ctx, "ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.ErrorContains(t, n.Offline(ctx), "veth")

	m, err := Create(ctx, fmt.Sprintf("steady-u%d", os.Getpid()))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, m.Delete(context.Background())) })
	for _, args := range [][]string{{"link", "add", "v0", "type", "veth", "peer", "name", "v1"}, {"link", "set", "v0", "up"}, {"link", "set", "v1", "up"}, {"route", "add", "default", "dev", "v0"}} {
		out, err := m.Command(ctx, append([]string{"ip"}, args...)...).CombinedOutput()
		require.NoError(t, err, "%s", out)
	}
	assert.ErrorContains(t, m.Offline(ctx), "default route")

	_, err = Create(ctx, "bad/name")
	assert.ErrorContains(t, err, `invalid name "bad/name"`)
}
