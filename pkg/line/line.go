// Package line reads the description of a release line of containerd-steady
// from patches/<line>/UPSTREAM: the upstream pin, and what the harness, the
// tests, the demo and the bench need to know about the line (configuration
// version, CRI plugin table, runc, kubelet and critest versions). It is the
// one place where the lines differ; script/lib.sh reads the same file.
package line

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// Default is the line used when none is named.
const Default = "v2.3"

// Line is one release line: a pinned upstream release and its series.
type Line struct {
	Name    string // "v2.3"
	Root    string // the repository's top directory
	Module  string // upstream module path
	Version string // upstream release, e.g. v2.3.7
	Steady  string // our release counter on that base
	// ConfigVersion is containerd's configuration version (2 for 1.x, 3 for 2.x).
	ConfigVersion int
	// CRIRuntimeTable is the TOML table holding the CRI runtime handlers.
	CRIRuntimeTable string
	Runc            string // runc version the line is tested with
	Kubelet         string // kubelet version of the line's generation
	Critest         string // cri-tools version of the same minor
	Status          string // "lts" or "legacy"
}

// fields lists the UPSTREAM fields every line must have.
var fields = []string{"module", "version", "sum", "steady", "config", "cri-runtime-table", "runc", "kubelet", "critest", "status"}

// Load reads patches/<name>/UPSTREAM below root.
func Load(root, name string) (Line, error) {
	path := filepath.Join(root, "patches", name, "UPSTREAM")
	kv, err := readFields(path)
	if err != nil {
		return Line{}, fmt.Errorf("line %s: %w", name, err)
	}
	for _, f := range fields {
		if kv[f] == "" {
			return Line{}, fmt.Errorf("line %s: %s has no %q field", name, path, f)
		}
	}
	cv, err := strconv.Atoi(kv["config"])
	if err != nil || (cv != 2 && cv != 3) {
		return Line{}, fmt.Errorf("line %s: %s: config %q is not 2 or 3", name, path, kv["config"])
	}
	return Line{
		Name: name, Root: root,
		Module: kv["module"], Version: kv["version"], Steady: kv["steady"],
		ConfigVersion:   cv,
		CRIRuntimeTable: kv["cri-runtime-table"],
		Runc:            kv["runc"], Kubelet: kv["kubelet"], Critest: kv["critest"],
		Status: kv["status"],
	}, nil
}

// FromEnv loads the line named by STEADY_LINE (Default when unset) from
// this repository.
func FromEnv() (Line, error) {
	name := os.Getenv("STEADY_LINE")
	if name == "" {
		name = Default
	}
	return Load(RepoRoot(), name)
}

// RepoRoot is the repository this package was built from.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func readFields(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	kv := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, ok := strings.Cut(l, " ")
		if !ok {
			return nil, fmt.Errorf("%s: line %q has no value", path, l)
		}
		kv[k] = strings.TrimSpace(v)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(kv) == 0 {
		return nil, errors.New(path + " is empty")
	}
	return kv, nil
}

// ForkVersion is the fork's version string, e.g. v2.3.7+steady.1.
func (l Line) ForkVersion() string { return l.Version + "+steady." + l.Steady }

// BuildDir holds the line's trees and binaries (build/<line>).
func (l Line) BuildDir() string { return filepath.Join(l.Root, "build", l.Name) }

// ForkBin holds the fork's containerd, shim and ctr.
func (l Line) ForkBin() string { return filepath.Join(l.BuildDir(), "bin") }

// UpstreamBin holds the pristine upstream's containerd, shim and ctr.
func (l Line) UpstreamBin() string { return filepath.Join(l.BuildDir(), "upstream", "bin") }

// DefaultConfig is the line's shipped /etc/containerd/config.toml.
func (l Line) DefaultConfig() string {
	return filepath.Join(l.Root, "contrib", "config", l.Name+".toml")
}

// RuncPath is the line's runc, as script/runc.sh builds it.
func (l Line) RuncPath() string { return filepath.Join(l.Root, "build", "runc", l.Runc, "runc") }

// KubeletPath is a kubelet of version v as script/kubelet.sh builds it
// (the line's own kubelet when v is empty).
func (l Line) KubeletPath(v string) string {
	if v == "" {
		v = l.Kubelet
	}
	return filepath.Join(l.Root, "build", "kubelet", v, "kubelet")
}

// CRIRuntimePlugin is the ID of the CRI plugin whose configuration holds
// CRIRuntimeTable, e.g. io.containerd.cri.v1.runtime; its containerd table
// is the plugin's key "containerd".
func (l Line) CRIRuntimePlugin() string {
	id := strings.TrimSuffix(strings.TrimPrefix(l.CRIRuntimeTable, "plugins."), ".containerd")
	return strings.Trim(id, `'"`)
}

// RuntimeTable is the TOML table of CRI runtime handler name.
func (l Line) RuntimeTable(handler string) string {
	return l.CRIRuntimeTable + ".runtimes." + handler
}
