package incident

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestLatencies(t *testing.T) {
	var d []time.Duration
	for i := 1000; i >= 1; i-- { // unsorted on purpose
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	l := latencies(d, 3)
	assert.Equal(t, Latencies{N: 1000, Errors: 3, P50: 500 * time.Millisecond, P99: 990 * time.Millisecond,
		P999: 999 * time.Millisecond, Max: time.Second}, l)
	assert.Equal(t, Latencies{Errors: 1}, latencies(nil, 1))
}

func TestMemoryPerContainer(t *testing.T) {
	r := MemoryResult{Samples: []MemorySample{
		{Containers: 0, RSS: 100 << 20, HeapAlloc: 20 << 20},
		{Containers: 100, RSS: 100<<20 + 100*30<<10, HeapAlloc: 20<<20 + 100*10<<10},
		{Containers: 200, RSS: 100<<20 + 200*30<<10, HeapAlloc: 20<<20 + 200*10<<10},
	}}
	rss, heap := r.PerContainer()
	assert.InDelta(t, 30<<10, rss, 1e-6, "30 KiB of RSS a container")
	assert.InDelta(t, 10<<10, heap, 1e-6, "10 KiB of heap a container")
}

func TestContentionMemory(t *testing.T) {
	r := ContentionResult{Build: "fork", Empty: MemorySample{HeapAlloc: 1 << 20}, Steps: []ContentionStep{
		{Containers: 50, Memory: MemorySample{Containers: 50, HeapAlloc: 1<<20 + 50*2<<10}},
		{Containers: 200, Memory: MemorySample{Containers: 200, HeapAlloc: 1<<20 + 200*2<<10}},
	}}
	m := r.Memory()
	assert.Equal(t, "fork", m.Build)
	assert.Equal(t, []int{0, 50, 200}, []int{m.Samples[0].Containers, m.Samples[1].Containers, m.Samples[2].Containers})
	_, heap := m.PerContainer()
	assert.InDelta(t, 2<<10, heap, 1e-6, "2 KiB of heap a container, the empty node included")
}

func TestParseCPUTime(t *testing.T) {
	dir := t.TempDir()
	rows := []struct {
		name, stat string
		want       time.Duration
		err        bool
	}{
		{name: "plain", stat: "42 (containerd) S 1 42 42 0 -1 4194560 100 0 0 0 250 130 0 0 20 0 12 0 100 1000 200", want: 3800 * time.Millisecond},
		{name: "spaces in the name", stat: "42 (a) b) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 12 0 100 1000 200", want: 30 * time.Millisecond},
		{name: "truncated", stat: "42 (containerd) S 1 42", err: true},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			path := filepath.Join(dir, row.name)
			require.NoError(t, os.WriteFile(path, []byte(row.stat), 0o644))
			got, err := parseCPUTime(path)
			if row.err {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, row.want, got)
		})
	}
	self, err := cpuTimeOf(os.Getpid())
	require.NoError(t, err)
	assert.GreaterOrEqual(t, self, time.Duration(0))
}

func TestParseMemStats(t *testing.T) {
	trailer := `heap profile: 1: 2 [3: 4] @ heap/1048576
1: 2 [3: 4] @ 0x1
#	0x1	main.f+0x1	/x.go:1

# runtime.MemStats
# Alloc = 100
# HeapAlloc = 100
# Sys = 900
# HeapInuse = 200
# HeapReleased = 300
# Stack = 40 / 50
# NumGC = 7
`
	stats, err := parseMemStats(strings.NewReader(trailer))
	require.NoError(t, err)
	assert.Equal(t, map[string]int64{"Alloc": 100, "HeapAlloc": 100, "Sys": 900, "HeapInuse": 200, "HeapReleased": 300, "Stack": 40, "NumGC": 7}, stats)

	_, err = parseMemStats(strings.NewReader("# HeapAlloc = 1\n"))
	assert.ErrorContains(t, err, "no HeapInuse line")
}

func TestDropCache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "containerd")
	require.NoError(t, os.WriteFile(path, make([]byte, 4<<20), 0o755))
	require.Greater(t, residentPages(t, path), 0, "a file just written is in the page cache")
	require.NoError(t, dropCache(path))
	assert.Equal(t, 0, residentPages(t, path))
	assert.ErrorContains(t, Build{Name: "fork", BinDir: t.TempDir()}.DropCache(), "fork")
}

// residentPages counts the pages of path in the page cache (mincore).
func residentPages(t *testing.T, path string) int {
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	st, err := f.Stat()
	require.NoError(t, err)
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	require.NoError(t, err)
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0])))
	require.Zero(t, errno, "mincore")
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

func TestVolatileExitRatio(t *testing.T) {
	for _, tc := range []struct {
		plain, volatile time.Duration
		want            float64
	}{
		{plain: 3 * time.Second, volatile: 500 * time.Millisecond, want: 6},
		{plain: 0, volatile: time.Second, want: 0},
		{plain: time.Second, volatile: 0, want: 0},
	} {
		r := VolatileExitResult{Plain: VolatileExitRun{KillToCleaned: tc.plain}, Volatile: VolatileExitRun{KillToCleaned: tc.volatile}}
		assert.InDelta(t, tc.want, r.Ratio(), 1e-9, "%s / %s", tc.plain, tc.volatile)
	}
}
