package registry

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRepository(t *testing.T) {
	for _, tc := range []struct {
		ref, want, err string
	}{
		{ref: "registry.k8s.io/e2e-test-images/busybox:1.29-2", want: "e2e-test-images/busybox:1.29-2"},
		{ref: "k8s.gcr.io/pause:3.9", want: "pause:3.9"},
		{ref: "localhost:5000/a/b:c", want: "a/b:c"},
		{ref: "gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700", err: "pinned by digest"},
		{ref: "gcr.io/k8s-staging-cri-tools/test-image-latest", err: "has no tag"},
		{ref: "busybox:1", err: "does not name a registry host"},
		{ref: "registry.k8s.io/", err: "does not name a registry host"},
	} {
		got, err := Repository(tc.ref)
		if tc.err != "" {
			assert.ErrorContains(t, err, tc.err, tc.ref)
			continue
		}
		require.NoError(t, err, tc.ref)
		assert.Equal(t, tc.want, got)
	}
}

func TestWriteHosts(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, WriteHosts(dir, Hosts))
	for _, h := range Hosts {
		b, err := os.ReadFile(filepath.Join(dir, h, "hosts.toml"))
		require.NoError(t, err)
		assert.Contains(t, string(b), "server = \"http://127.0.0.1:5000\"\n", h)
		assert.NotContains(t, string(b), "https://", "%s: no fallback to the real registry", h)
	}
	assert.ErrorContains(t, WriteHosts(dir, []string{"a/b"}), `invalid host "a/b"`)
}
