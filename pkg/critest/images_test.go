package critest

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-steady/containerd-steady/pkg/registry"
)

// Every image the suite names is served, under a name the registry can
// push; the several tags of one image share it, images of different names
// differ; the digest-pinned image is the one left out.
func TestImages(t *testing.T) {
	imgs := Images(Programs{NoNewPrivs: []byte("nnp"), WebServer: []byte("web")})
	byRef := map[string]TestImage{}
	for _, ti := range imgs {
		require.Equal(t, ti.Image.Name, ti.Refs[0])
		for _, ref := range ti.Refs {
			_, err := registry.Repository(ref)
			require.NoError(t, err, ref)
			byRef[ref] = ti
		}
	}
	for _, ref := range []string{
		"registry.k8s.io/e2e-test-images/busybox:1.29-2",
		"registry.k8s.io/e2e-test-images/nginx:1.14-2",
		"registry.k8s.io/e2e-test-images/httpd:2.4.39-4",
		"registry.k8s.io/e2e-test-images/nonewprivs:1.3",
		"gcr.io/k8s-staging-cri-tools/hostnet-nginx-amd64:latest",
		"gcr.io/k8s-staging-cri-tools/test-image-predefined-group:latest",
		"gcr.io/k8s-staging-cri-tools/test-image-tags:3",
		"k8s.gcr.io/pause:3.9",
		SandboxImage,
	} {
		assert.Contains(t, byRef, ref)
	}
	assert.NotContains(t, byRef, DigestImage)
	assert.Equal(t, byRef["registry.k8s.io/pause:3.9"].Image.Name, byRef["k8s.gcr.io/pause:3.9"].Image.Name, "one image from two registries")
	assert.NotEqual(t, byRef[staging+"test-image-1:latest"].Image.Files, byRef[staging+"test-image-2:latest"].Image.Files)

	for ref, user := range map[string]string{
		staging + "test-image-user-uid:latest":            "1002",
		staging + "test-image-user-username:latest":       "www-data",
		staging + "test-image-user-uid-group:latest":      "1003:1003",
		staging + "test-image-user-username-group:latest": "www-data:www-data",
		staging + "test-image-predefined-group:latest":    "1000",
	} {
		assert.Equal(t, user, byRef[ref].Image.User, ref)
	}
	nnp := byRef[e2e+"nonewprivs:1.3"].Image
	assert.Equal(t, int64(0o4755), nnp.Modes["usr/local/bin/nonewprivs"], "setuid root")
	nginx := byRef[e2e+"nginx:1.14-2"].Image
	assert.Contains(t, nginx.Entrypoint[2], "exec -a 'nginx: master process")
	assert.Contains(t, nginx.Entrypoint[2], "-port 80 ")
	assert.Contains(t, byRef[staging+"hostnet-nginx-amd64:latest"].Image.Entrypoint[2], "-port 12003 ")
}
