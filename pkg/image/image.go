// Package image builds small OCI images offline from a busybox binary of
// the host (Debian's statically linked busybox-static by default; a
// dynamically linked busybox brings its shared libraries along), so tests
// never contact a registry.
package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Busybox is where Debian's busybox-static installs its binary.
const Busybox = "/bin/busybox"

// Image describes an image to build.
type Image struct {
	// Name is the full reference the image is imported as,
	// e.g. "docker.io/steady/busybox:1".
	Name string
	// Entrypoint and Cmd are the image config's defaults.
	Entrypoint []string
	Cmd        []string
	// Volumes are the image config's volumes (a Dockerfile's VOLUME), e.g. "/data".
	Volumes []string
	// Files, when set, are regular files (path without leading slash ->
	// content) of a second layer on top of busybox, so that unpacking the
	// image mounts an overlay (a first layer alone is unpacked through a
	// bind mount). Their parent directories are created in that layer.
	Files map[string]string
	// Modes give the mode of a file in Files, 0644 when absent; e.g.
	// 04755 for a setuid-root program. Files are owned by root.
	Modes map[string]int64
	// User is the image config's default user (a Dockerfile's USER),
	// e.g. "1002", "www-data" or "1003:1003".
	User string
}

// Busybox image: a shell and the core applets, no default command.
func BusyboxImage() Image {
	return Image{Name: "docker.io/steady/busybox:1", Cmd: []string{"sh"}}
}

// PauseImage is a sandbox image whose only process sleeps until it is killed.
func PauseImage() Image {
	return Image{Name: "docker.io/steady/pause:1", Entrypoint: []string{"/bin/sleep", "2147483647"}}
}

// epoch is the modification time of every file, so that the same busybox
// always gives the same layer digest.
var epoch = time.Unix(0, 0).UTC()

// Build writes an OCI image-layout tar for img into dir and returns its path.
func Build(dir string, img Image, busybox string) (string, error) {
	entries, err := layoutEntries(img, busybox)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, safeName(img.Name)+".tar")
	if err := writeLayoutTar(path, entries); err != nil {
		return "", fmt.Errorf("write image %s: %w", img.Name, err)
	}
	return path, nil
}

// BuildLayout writes img as an OCI image layout directory below dir (the
// form 'crane push' reads) and returns the directory.
func BuildLayout(dir string, img Image, busybox string) (string, error) {
	entries, err := layoutEntries(img, busybox)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, safeName(img.Name))
	for _, e := range entries {
		name := filepath.Join(path, e.name)
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			return "", fmt.Errorf("write image %s: %w", img.Name, err)
		}
		if err := os.WriteFile(name, e.data, 0o644); err != nil {
			return "", fmt.Errorf("write image %s: %w", img.Name, err)
		}
	}
	return path, nil
}

// layoutEntries builds img's layers and returns the files of its OCI
// image layout: oci-layout, index.json and the blobs.
func layoutEntries(img Image, busybox string) ([]entry, error) {
	if img.Name == "" {
		return nil, fmt.Errorf("image has no name")
	}
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return nil, fmt.Errorf("read busybox (install Debian's busybox-static): %w", err)
	}
	applets, err := listApplets(busybox)
	if err != nil {
		return nil, err
	}
	libs, err := sharedLibraries(busybox)
	if err != nil {
		return nil, err
	}
	layer, diffID, err := rootfsLayer(bin, applets, libs)
	if err != nil {
		return nil, err
	}
	layers, diffIDs := [][]byte{layer}, []string{diffID}
	if len(img.Files) > 0 {
		layer, diffID, err := filesLayer(img.Files, img.Modes)
		if err != nil {
			return nil, err
		}
		layers, diffIDs = append(layers, layer), append(diffIDs, diffID)
	}
	entries, err := layout(img, layers, diffIDs)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", img.Name, err)
	}
	return entries, nil
}

func listApplets(busybox string) ([]string, error) {
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("list busybox applets: %w", err)
	}
	var applets []string
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" && !strings.Contains(a, "/") {
			applets = append(applets, a)
		}
	}
	sort.Strings(applets)
	return applets, nil
}

// sharedLibraries returns the shared libraries a dynamically linked
// binary loads, by the path it loads them from, as ldd lists them; none
// for a static binary.
func sharedLibraries(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "not a dynamic executable") {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %w: %s", bin, err, out)
	}
	var libs []string
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2]) // libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0]) // the loader: /lib64/ld-linux-x86-64.so.2 (0x...)
		}
	}
	sort.Strings(libs)
	return libs, nil
}

// rootfsLayer returns the gzipped layer and the digest of its uncompressed
// tar: busybox with every applet a hard link to it (as busybox's own image
// has them, so that masking one applet's path masks only that one), the
// shared libraries libs at their host paths, and /etc/passwd and group.
func rootfsLayer(busybox []byte, applets, libs []string) ([]byte, string, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	dirs := []string{"bin", "dev", "etc", "proc", "sys", "tmp", "root", "var"}
	for _, lib := range libs {
		for d := filepath.Dir(strings.TrimPrefix(lib, "/")); d != "."; d = filepath.Dir(d) {
			dirs = append(dirs, d)
		}
	}
	sort.Strings(dirs)
	for i, d := range dirs {
		if i > 0 && dirs[i-1] == d {
			continue
		}
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode, ModTime: epoch}); err != nil {
			return nil, "", err
		}
	}
	if err := writeFile(tw, "bin/busybox", busybox, 0o755); err != nil {
		return nil, "", err
	}
	for _, a := range applets {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeLink, Name: "bin/" + a, Linkname: "bin/busybox", Mode: 0o755, ModTime: epoch}); err != nil {
			return nil, "", err
		}
	}
	for _, lib := range libs {
		b, err := os.ReadFile(lib)
		if err != nil {
			return nil, "", fmt.Errorf("read busybox's library: %w", err)
		}
		if err := writeFile(tw, strings.TrimPrefix(lib, "/"), b, 0o755); err != nil {
			return nil, "", err
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
		"etc/group":  "root:x:0:\nnogroup:x:65534:\n",
	}
	for _, name := range []string{"etc/group", "etc/passwd"} {
		if err := writeFile(tw, name, []byte(files[name]), 0o644); err != nil {
			return nil, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	return gzipLayer(raw.Bytes())
}

// filesLayer returns a gzipped layer holding files, with their modes, and
// their parent directories, and the digest of its uncompressed tar.
func filesLayer(files map[string]string, modes map[string]int64) ([]byte, string, error) {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, strings.TrimPrefix(name, "/"))
	}
	sort.Strings(names)
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	dirs := map[string]bool{}
	for _, name := range names {
		var parents []string
		for d := filepath.Dir(name); d != "." && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch}); err != nil {
				return nil, "", err
			}
		}
		content, ok := files[name]
		if !ok {
			content = files["/"+name]
		}
		mode, ok := modes[name]
		if !ok {
			mode, ok = modes["/"+name]
		}
		if !ok {
			mode = 0o644
		}
		if err := writeFile(tw, name, []byte(content), mode); err != nil {
			return nil, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	return gzipLayer(raw.Bytes())
}

// gzipLayer compresses an uncompressed layer tar and returns it with the
// tar's digest (the layer's diff id).
func gzipLayer(raw []byte) ([]byte, string, error) {
	diffID := digest(raw)
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if err != nil {
		return nil, "", err
	}
	if _, err := zw.Write(raw); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return gz.Bytes(), diffID, nil
}

func writeFile(tw *tar.Writer, name string, data []byte, mode int64) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// entry is one file of an OCI image layout.
type entry struct {
	name string
	data []byte
}

// layout returns the files of the OCI image layout of img with layers:
// oci-layout, index.json (naming the image) and the blobs.
func layout(img Image, layers [][]byte, diffIDs []string) ([]entry, error) {
	imgConfig := map[string]any{
		"Env":        []string{"PATH=/bin"},
		"Entrypoint": img.Entrypoint,
		"Cmd":        img.Cmd,
		"WorkingDir": "/",
	}
	if img.User != "" {
		imgConfig["User"] = img.User
	}
	if len(img.Volumes) > 0 {
		volumes := map[string]struct{}{}
		for _, v := range img.Volumes {
			volumes[v] = struct{}{}
		}
		imgConfig["Volumes"] = volumes
	}
	config, err := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      epoch.Format(time.RFC3339),
		"config":       imgConfig,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	if err != nil {
		return nil, err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: digest(config), Size: int64(len(config))},
		"layers":        layerDescriptors(layers),
	})
	if err != nil {
		return nil, err
	}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []descriptor{{
			MediaType: "application/vnd.oci.image.manifest.v1+json",
			Digest:    digest(manifest),
			Size:      int64(len(manifest)),
			Annotations: map[string]string{
				"io.containerd.image.name":          img.Name,
				"org.opencontainers.image.ref.name": img.Name[strings.LastIndex(img.Name, ":")+1:],
			},
		}},
	})
	if err != nil {
		return nil, err
	}
	entries := []entry{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{blobPath(config), config},
		{blobPath(manifest), manifest},
	}
	for _, layer := range layers {
		entries = append(entries, entry{blobPath(layer), layer})
	}
	return entries, nil
}

// writeLayoutTar writes the layout's entries as a tar (what 'ctr images
// import' reads).
func writeLayoutTar(path string, entries []entry) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "blobs/sha256/", Mode: 0o755, ModTime: epoch}); err != nil {
		return err
	}
	for _, e := range entries {
		if err := writeFile(tw, e.name, e.data, 0o644); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

func layerDescriptors(layers [][]byte) []descriptor {
	descs := make([]descriptor, 0, len(layers))
	for _, layer := range layers {
		descs = append(descs, descriptor{MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Digest: digest(layer), Size: int64(len(layer))})
	}
	return descs
}

func blobPath(b []byte) string {
	return "blobs/sha256/" + strings.TrimPrefix(digest(b), "sha256:")
}

func safeName(ref string) string {
	return strings.NewReplacer("/", "_", ":", "_", "@", "_").Replace(ref)
}

// Import loads an image-layout tar into the k8s.io namespace of the
// containerd at address, unpacked for the overlayfs snapshotter, using ctr.
func Import(ctx context.Context, ctr, address, path string) error {
	cmd := exec.CommandContext(ctx, ctr, "--address", address, "--namespace", "k8s.io",
		"images", "import", "--snapshotter", "overlayfs", path)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ctr images import %s: %w: %s", path, err, out)
	}
	return nil
}
