// Package deb reads and unpacks Debian binary packages with Debian's own
// tools (dpkg-deb, dpkg), and checks systemd units with systemd-analyze.
package deb

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Field returns one field of the package's control file.
func Field(pkg, name string) (string, error) {
	out, err := run("dpkg-deb", "--field", pkg, name)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(out), nil
}

// Conffiles returns the files the package marks as conffiles.
func Conffiles(pkg string) ([]string, error) {
	out, err := run("dpkg-deb", "--info", pkg, "conffiles")
	if err != nil {
		return nil, err
	}
	return strings.Fields(out), nil
}

// Contents returns the paths of the package's files and directories,
// without their leading "./".
func Contents(pkg string) ([]string, error) {
	out, err := run("dpkg-deb", "--fsys-tarfile", pkg)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("tar", "-tf", "-")
	cmd.Stdin = strings.NewReader(out)
	list, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", pkg, err)
	}
	var paths []string
	for _, p := range strings.Fields(string(list)) {
		if p = strings.TrimSuffix(strings.TrimPrefix(p, "./"), "/"); p != "" {
			paths = append(paths, p)
		}
	}
	return paths, nil
}

// Extract unpacks the package's files into root, as 'dpkg -x' does: no
// maintainer scripts run and no package database is touched.
func Extract(pkg, root string) error {
	if _, err := run("dpkg", "-x", pkg, root); err != nil {
		return err
	}
	return nil
}

// VersionGreater reports whether Debian orders version a after b.
func VersionGreater(a, b string) (bool, error) {
	err := exec.Command("dpkg", "--compare-versions", a, "gt", b).Run()
	if err == nil {
		return true, nil
	}
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 1 {
		return false, nil
	}
	return false, fmt.Errorf("dpkg --compare-versions %s gt %s: %w", a, b, err)
}

// VerifyUnit runs 'systemd-analyze verify' on the unit named name below
// root, with the host's own units copied in so that the targets it names
// resolve (systemd-analyze looks for them in root too). It returns what
// systemd-analyze printed when it fails.
func VerifyUnit(root, name string) error {
	hostUnits := "/usr/lib/systemd/system"
	dst := filepath.Join(root, "usr", "lib", "systemd")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dst, "system", "sysinit.target")); err != nil {
		if _, err := run("cp", "-a", hostUnits, dst); err != nil {
			return err
		}
	}
	if _, err := run("systemd-analyze", "verify", "--root="+root, name); err != nil {
		return err
	}
	return nil
}

// run runs a command and returns its standard output; its error carries
// what the command printed on standard error.
func run(name string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
