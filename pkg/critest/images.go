// Package critest runs cri-tools' CRI validation suite (critest) against
// one containerd build and reads its ginkgo JSON report; it also knows
// the images the suite pulls, built offline from busybox so that each spec
// that uses one can pass, and compares two builds' reports spec by spec.
package critest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/containerd-steady/containerd-steady/pkg/image"
	"github.com/containerd-steady/containerd-steady/pkg/line"
)

// The registries and repositories of cri-tools v1.37.0's test images
// (pkg/validate/consts.go, pkg/framework/test_context.go).
const (
	e2e     = "registry.k8s.io/e2e-test-images/"
	staging = "gcr.io/k8s-staging-cri-tools/"
)

// DigestImage is the one image the suite names by a registry digest: no
// image built here can have that digest, so the specs that pull it fail on
// every build, and the report says so.
const DigestImage = staging + "test-image-digest@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf"

// SandboxImage is the pod sandbox image of the suite's daemons, served by
// the same registry: the pause program (pkg/critest/pause).
const SandboxImage = "docker.io/steady/critest-pause:1"

// TestImage is one image and every reference it is pushed as (Refs[0] is
// Image.Name): several tags of one image share its digest.
type TestImage struct {
	Image image.Image
	Refs  []string
}

// passwd and group hold the users the suite expects in its images: www-data
// (the image-user specs) and nobody (RunAsUsername).
const (
	passwd = "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\nnobody:x:65534:65534:nobody:/:/bin/false\n"
	group  = "root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n"
)

// pgrep and ipcs stand in for the procps and util-linux commands the
// specs run and Debian's busybox-static lacks: the pids of the processes
// of a name, and the System V shared memory segments in the container's
// IPC namespace.
const (
	pgrep = `#!/bin/sh
# pgrep NAME: the pids of the processes whose name is NAME; status 1 if none.
found=1
for d in /proc/[0-9]*; do
	if [ "$(cat "$d/comm" 2>/dev/null)" = "$1" ]; then
		echo "${d#/proc/}"
		found=0
	fi
done
exit $found
`
	ipcs = `#!/bin/sh
# ipcs -m: the System V shared memory segments, from /proc/sysvipc/shm.
echo "------ Shared Memory Segments --------"
echo "key        shmid      owner      perms      bytes      nattch"
awk 'NR > 1 { printf "0x%08x %-10s %-10s %-10s %-10s %s\n", $1, $2, $8, $3, $4, $7 }' /proc/sysvipc/shm
`
)

// base returns the files every suite image adds to busybox: the users and
// the stand-in commands, with their modes.
func base() (map[string]string, map[string]int64) {
	return map[string]string{"etc/passwd": passwd, "etc/group": group, "bin/pgrep": pgrep, "bin/ipcs": ipcs},
		map[string]int64{"bin/pgrep": 0o755, "bin/ipcs": 0o755}
}

// marked is a busybox image with a file naming it, so that images of
// different names differ in content (and so in ID).
func marked(name, user string) TestImage {
	files, modes := base()
	files["test-image/name"] = name + "\n"
	return TestImage{Image: image.Image{Name: name, Cmd: []string{"sh"}, Files: files, Modes: modes, User: user}, Refs: []string{name}}
}

// webServer is an image whose entrypoint serves /www on port with the
// webserver program installed at bin, started as argv0.
func webServer(name, bin, argv0 string, port int, prog []byte) TestImage {
	files, modes := base()
	files["www/index.html"] = "<html><body>steady</body></html>\n"
	files[bin] = string(prog)
	modes[bin] = 0o755
	cmd := fmt.Sprintf("exec -a '%s' /%s -port %d -root /www -pidfile /var/run/%s.pid", argv0, bin, port, filepath.Base(bin))
	return TestImage{Image: image.Image{
		Name:       name,
		Entrypoint: []string{"sh", "-c", cmd},
		Files:      files,
		Modes:      modes,
	}, Refs: []string{name}}
}

// Programs are the suite images' own programs, built from this repository.
type Programs struct {
	NoNewPrivs []byte // pkg/critest/nonewprivs
	WebServer  []byte // pkg/critest/webserver
	Pause      []byte // pkg/critest/pause
}

// Images returns the suite's images.
func Images(progs Programs) []TestImage {
	busybox := marked(e2e+"busybox:1.29-2", "")
	nnp := TestImage{Image: image.Image{
		Name:       e2e + "nonewprivs:1.3",
		Entrypoint: []string{"/usr/local/bin/nonewprivs"},
		Files:      map[string]string{"usr/local/bin/nonewprivs": string(progs.NoNewPrivs)},
		Modes:      map[string]int64{"usr/local/bin/nonewprivs": 0o4755},
	}, Refs: []string{e2e + "nonewprivs:1.3"}}

	files, modes := base()
	files["etc/passwd"] = passwd + "default-user:x:1000:1000::/home/default-user:/bin/sh\n"
	files["etc/group"] = group + "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"
	predefined := TestImage{Image: image.Image{
		Name: staging + "test-image-predefined-group:latest", Cmd: []string{"sh"},
		Files: files, Modes: modes, User: "1000",
	}, Refs: []string{staging + "test-image-predefined-group:latest"}}

	tags := marked(staging+"test-image-tags:1", "")
	tags.Refs = append(tags.Refs, staging+"test-image-tags:2", staging+"test-image-tags:3")
	pause := marked("registry.k8s.io/pause:3.9", "")
	pause.Refs = append(pause.Refs, "k8s.gcr.io/pause:3.9")

	const nginx = "nginx: master process nginx -g daemon off;"
	sandbox := TestImage{Image: image.Image{
		Name:       SandboxImage,
		Entrypoint: []string{"/pause"},
		Files:      map[string]string{"pause": string(progs.Pause)},
		Modes:      map[string]int64{"pause": 0o755},
	}, Refs: []string{SandboxImage}}
	return []TestImage{
		sandbox,
		busybox,
		webServer(e2e+"nginx:1.14-2", "usr/sbin/nginx", nginx, 80, progs.WebServer),
		webServer(staging+"hostnet-nginx-amd64:latest", "usr/sbin/nginx", nginx, 12003, progs.WebServer),
		webServer(e2e+"httpd:2.4.39-4", "usr/local/apache2/bin/httpd", "httpd -DFOREGROUND", 80, progs.WebServer),
		nnp,
		marked(staging+"test-image-user-uid:latest", "1002"),
		marked(staging+"test-image-user-username:latest", "www-data"),
		marked(staging+"test-image-user-uid-group:latest", "1003:1003"),
		marked(staging+"test-image-user-username-group:latest", "www-data:www-data"),
		predefined,
		marked(staging+"test-image-latest:latest", ""),
		marked(staging+"test-image-tag:test", ""),
		marked(staging+"test-image-tag:all", ""),
		marked(staging+"test-image-1:latest", ""),
		marked(staging+"test-image-2:latest", ""),
		marked(staging+"test-image-3:latest", ""),
		tags,
		pause,
	}
}

// BuildPrograms builds the suite images' programs as static binaries in
// dir and returns them.
func BuildPrograms(ctx context.Context, dir string) (Programs, error) {
	var p Programs
	for _, prog := range []struct {
		pkg string
		out *[]byte
	}{{"nonewprivs", &p.NoNewPrivs}, {"webserver", &p.WebServer}, {"pause", &p.Pause}} {
		b, err := buildProgram(ctx, dir, prog.pkg)
		if err != nil {
			return Programs{}, err
		}
		*prog.out = b
	}
	return p, nil
}

func buildProgram(ctx context.Context, dir, name string) ([]byte, error) {
	out := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, "./pkg/critest/"+name)
	cmd.Dir = line.RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build %s: %w: %s", name, err, b)
	}
	return os.ReadFile(out)
}
