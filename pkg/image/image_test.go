package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func readTar(t *testing.T, r io.Reader) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		require.NoError(t, err)
		b, err := io.ReadAll(tr)
		require.NoError(t, err)
		if h.Typeflag == tar.TypeSymlink {
			b = []byte("-> " + h.Linkname)
		}
		files[h.Name] = b
	}
}

func requireBusybox(t *testing.T) {
	if _, err := os.Stat(Busybox); err != nil {
		t.Fatalf("%s missing: run 'make setup' (Debian's busybox-static)", Busybox)
	}
}

func TestBuildIsReproducible(t *testing.T) {
	requireBusybox(t)
	a, err := Build(t.TempDir(), PauseImage(), Busybox)
	require.NoError(t, err)
	b, err := Build(t.TempDir(), PauseImage(), Busybox)
	require.NoError(t, err)
	ab, err := os.ReadFile(a)
	require.NoError(t, err)
	bb, err := os.ReadFile(b)
	require.NoError(t, err)
	assert.Equal(t, ab, bb, "the same busybox must give the same image")
}

func TestBuildLayout(t *testing.T) {
	requireBusybox(t)
	for _, img := range []Image{BusyboxImage(), PauseImage()} {
		t.Run(img.Name, func(t *testing.T) {
			path, err := Build(t.TempDir(), img, Busybox)
			require.NoError(t, err)
			f, err := os.Open(path)
			require.NoError(t, err)
			defer f.Close()
			files := readTar(t, f)

			var index struct {
				Manifests []descriptor `json:"manifests"`
			}
			require.NoError(t, json.Unmarshal(files["index.json"], &index))
			require.Len(t, index.Manifests, 1)
			assert.Equal(t, img.Name, index.Manifests[0].Annotations["io.containerd.image.name"])

			var manifest struct {
				Config descriptor   `json:"config"`
				Layers []descriptor `json:"layers"`
			}
			mb := files["blobs/sha256/"+strings.TrimPrefix(index.Manifests[0].Digest, "sha256:")]
			require.Equal(t, index.Manifests[0].Digest, digest(mb), "manifest blob digest")
			require.NoError(t, json.Unmarshal(mb, &manifest))
			require.Len(t, manifest.Layers, 1)

			var config struct {
				Config struct{ Entrypoint, Cmd []string } `json:"config"`
				RootFS struct {
					DiffIDs []string `json:"diff_ids"`
				} `json:"rootfs"`
			}
			require.NoError(t, json.Unmarshal(files["blobs/sha256/"+strings.TrimPrefix(manifest.Config.Digest, "sha256:")], &config))
			assert.Equal(t, img.Entrypoint, config.Config.Entrypoint)

			layer := files["blobs/sha256/"+strings.TrimPrefix(manifest.Layers[0].Digest, "sha256:")]
			require.Equal(t, manifest.Layers[0].Digest, digest(layer), "layer blob digest")
			zr, err := gzip.NewReader(bytes.NewReader(layer))
			require.NoError(t, err)
			raw, err := io.ReadAll(zr)
			require.NoError(t, err)
			assert.Equal(t, config.RootFS.DiffIDs[0], digest(raw), "diff id is the digest of the uncompressed layer")
			rootfs := readTar(t, bytes.NewReader(raw))
			assert.Equal(t, "-> busybox", string(rootfs["bin/sh"]))
			assert.Equal(t, "-> busybox", string(rootfs["bin/sleep"]))
			assert.NotEmpty(t, rootfs["bin/busybox"])
		})
	}
}

func TestBuildErrors(t *testing.T) {
	_, err := Build(t.TempDir(), Image{}, Busybox)
	assert.ErrorContains(t, err, "no name")
	_, err = Build(t.TempDir(), PauseImage(), "/nonexistent/busybox")
	assert.ErrorContains(t, err, "busybox-static")
}
