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
		if h.Typeflag == tar.TypeSymlink || h.Typeflag == tar.TypeLink {
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
			assert.Equal(t, "-> bin/busybox", string(rootfs["bin/sh"]), "applets are hard links")
			assert.Equal(t, "-> bin/busybox", string(rootfs["bin/sleep"]))
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

// A dynamically linked binary brings its libraries and loader; the static
// busybox none.
func TestSharedLibraries(t *testing.T) {
	requireBusybox(t)
	libs, err := sharedLibraries(Busybox)
	require.NoError(t, err)
	assert.Empty(t, libs)
	libs, err = sharedLibraries("/bin/ls")
	require.NoError(t, err)
	assert.Contains(t, strings.Join(libs, " "), "libc.so.6")
	assert.Contains(t, strings.Join(libs, " "), "ld-linux")
	_, err = sharedLibraries("/nonexistent")
	assert.Error(t, err)
}

// BuildLayout writes the same layout as Build, as a directory; the user
// and the files' modes reach the config and the second layer.
func TestBuildLayoutDirUserModes(t *testing.T) {
	requireBusybox(t)
	img := Image{Name: "gcr.io/steady/user:1", Cmd: []string{"sh"}, User: "1002:1003",
		Files: map[string]string{"usr/bin/tool": "x", "etc/motd": "hi"}, Modes: map[string]int64{"usr/bin/tool": 0o4755}}
	dir, err := BuildLayout(t.TempDir(), img, Busybox)
	require.NoError(t, err)
	tarPath, err := Build(t.TempDir(), img, Busybox)
	require.NoError(t, err)
	f, err := os.Open(tarPath)
	require.NoError(t, err)
	defer f.Close()
	for name, want := range readTar(t, f) {
		if strings.HasSuffix(name, "/") {
			continue
		}
		got, err := os.ReadFile(dir + "/" + name)
		require.NoError(t, err, name)
		assert.Equal(t, want, got, name)
	}

	var index struct{ Manifests []descriptor }
	b, err := os.ReadFile(dir + "/index.json")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &index))
	var manifest struct {
		Config descriptor
		Layers []descriptor
	}
	b, err = os.ReadFile(dir + "/" + blobPathOf(index.Manifests[0].Digest))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &manifest))
	var config struct{ Config struct{ User string } }
	b, err = os.ReadFile(dir + "/" + blobPathOf(manifest.Config.Digest))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &config))
	assert.Equal(t, "1002:1003", config.Config.User)

	require.Len(t, manifest.Layers, 2)
	layer, err := os.ReadFile(dir + "/" + blobPathOf(manifest.Layers[1].Digest))
	require.NoError(t, err)
	zr, err := gzip.NewReader(bytes.NewReader(layer))
	require.NoError(t, err)
	tr := tar.NewReader(zr)
	modes := map[string]int64{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		modes[h.Name] = h.Mode
	}
	assert.Equal(t, int64(0o4755), modes["usr/bin/tool"])
	assert.Equal(t, int64(0o644), modes["etc/motd"])
}

func blobPathOf(d string) string { return "blobs/sha256/" + strings.TrimPrefix(d, "sha256:") }
