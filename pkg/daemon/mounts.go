package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Mount is the visible mount at a path, as /proc/self/mountinfo shows it.
type Mount struct {
	Target, FSType string
	Super          []string // super block options
}

// ErrNoMount is what LookupMount returns, wrapped, when nothing is mounted
// at its target.
var ErrNoMount = errors.New("no mount")

// LookupMount returns the visible (last) mount at target.
func LookupMount(target string) (Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return Mount{}, err
	}
	defer f.Close()
	var (
		m     Mount
		found bool
	)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(tail) < 3 || unescapeMountPath(fields[4]) != target {
			continue
		}
		m, found = Mount{Target: target, FSType: tail[0], Super: strings.Split(tail[2], ",")}, true
	}
	if err := sc.Err(); err != nil {
		return m, err
	}
	if !found {
		return m, fmt.Errorf("%w at %s", ErrNoMount, target)
	}
	return m, nil
}

// Volatile reports whether an overlay mount has the "volatile" option
// (shown as "fsync=volatile" by newer kernels).
func (m Mount) Volatile() bool {
	for _, o := range m.Super {
		if o == "volatile" || o == "fsync=volatile" {
			return true
		}
	}
	return false
}
