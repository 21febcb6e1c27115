package incident

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// MemorySample is containerd's memory with Containers running: its RSS,
// split into anonymous and file-backed pages, and the Go runtime's view
// after a forced GC, read from the debug server's heap profile.
type MemorySample struct {
	Containers int
	RSS        int64 // bytes
	RSSAnon    int64 // bytes of RSS not backed by a file (heap, stacks)
	RSSFile    int64 // bytes of RSS backed by files (the binary's pages)
	HeapAlloc  int64 // bytes of live heap objects after a GC
	// HeapInuse, HeapReleased, StackInuse and Sys are the runtime's
	// MemStats of those names.
	HeapInuse, HeapReleased, StackInuse, Sys int64
}

// MemoryResult holds one build's samples.
type MemoryResult struct {
	Build   string
	Samples []MemorySample
}

// PerContainer is the least-squares slope of RSS and of the live heap over
// the container count, in bytes per container.
func (r MemoryResult) PerContainer() (rss, heap float64) {
	x := make([]float64, len(r.Samples))
	m, h := make([]float64, len(x)), make([]float64, len(x))
	for i, s := range r.Samples {
		x[i], m[i], h[i] = float64(s.Containers), float64(s.RSS), float64(s.HeapAlloc)
	}
	return slope(x, m), slope(x, h)
}

func memorySample(node *Node, containers int) (MemorySample, error) {
	s := MemorySample{Containers: containers}
	stats, err := memStats(node.Daemon.Debug)
	if err != nil {
		return s, err
	}
	s.HeapAlloc, s.HeapInuse, s.HeapReleased = stats["HeapAlloc"], stats["HeapInuse"], stats["HeapReleased"]
	s.StackInuse, s.Sys = stats["Stack"], stats["Sys"]
	status, err := procStatus(node.Daemon.PID(), "VmRSS", "RssAnon", "RssFile")
	if err != nil {
		return s, err
	}
	s.RSS, s.RSSAnon, s.RSSFile = status["VmRSS"], status["RssAnon"], status["RssFile"]
	return s, nil
}

// debugGet fetches path from containerd's debug server at the unix socket.
func debugGet(sock, path string) (io.ReadCloser, error) {
	client := http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}},
	}
	resp, err := client.Get("http://containerd" + path)
	if err != nil {
		return nil, fmt.Errorf("debug %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("debug %s: %s", path, resp.Status)
	}
	return resp.Body, nil
}

// memStats forces a GC in containerd (pprof's gc=1) and reads the
// runtime.MemStats trailer of its heap profile: "# Name = value" lines,
// and "# Stack = inuse / sys".
func memStats(sock string) (map[string]int64, error) {
	body, err := debugGet(sock, "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return nil, err
	}
	defer body.Close()
	stats, err := parseMemStats(body)
	if err != nil {
		return nil, fmt.Errorf("heap profile: %w", err)
	}
	return stats, nil
}

func parseMemStats(r io.Reader) (map[string]int64, error) {
	stats := map[string]int64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "# "), " = ")
		if !ok || !strings.HasPrefix(sc.Text(), "# ") {
			continue
		}
		value, _, _ = strings.Cut(value, " ") // "inuse / sys"
		if n, err := strconv.ParseInt(value, 10, 64); err == nil {
			stats[name] = n
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, name := range []string{"HeapAlloc", "HeapInuse", "HeapReleased", "Stack", "Sys"} {
		if _, ok := stats[name]; !ok {
			return nil, fmt.Errorf("no %s line", name)
		}
	}
	return stats, nil
}

// saveHeapProfile writes containerd's heap profile (after a GC) to path.
func saveHeapProfile(sock, path string) error {
	body, err := debugGet(sock, "/debug/pprof/heap?gc=1")
	if err != nil {
		return err
	}
	defer body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, body); err != nil {
		f.Close()
		return fmt.Errorf("save heap profile: %w", err)
	}
	return f.Close()
}
