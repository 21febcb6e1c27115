package kubelet

import (
	"bufio"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The PLEG metrics kubelet exports (pkg/kubelet/metrics).
const (
	PLEGRelistDuration = "kubelet_pleg_relist_duration_seconds"
	PLEGRelistInterval = "kubelet_pleg_relist_interval_seconds"
	PLEGLastSeen       = "kubelet_pleg_last_seen_seconds"
)

// Sample is one line of the Prometheus text format.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Metrics are the samples of one scrape, by metric name.
type Metrics map[string][]Sample

// ParseMetrics reads the Prometheus text exposition format (comments,
// names, labels and values; timestamps are ignored).
func ParseMetrics(text string) (Metrics, error) {
	m := Metrics{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			return nil, fmt.Errorf("kubelet: metrics line %d: %w", n, err)
		}
		m[s.Name] = append(m[s.Name], s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kubelet: read metrics: %w", err)
	}
	return m, nil
}

func parseSample(line string) (Sample, error) {
	s := Sample{Labels: map[string]string{}}
	rest := line
	if i := strings.IndexAny(line, "{ "); i < 0 {
		return s, fmt.Errorf("no value in %q", line)
	} else {
		s.Name, rest = line[:i], line[i:]
	}
	if strings.HasPrefix(rest, "{") {
		var err error
		if rest, err = parseLabels(rest[1:], s.Labels); err != nil {
			return s, fmt.Errorf("%w in %q", err, line)
		}
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return s, fmt.Errorf("no value in %q", line)
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return s, fmt.Errorf("bad value in %q: %w", line, err)
	}
	s.Value = v
	return s, nil
}

// parseLabels reads `a="x",b="y"}` into labels and returns what follows.
func parseLabels(s string, labels map[string]string) (string, error) {
	for {
		s = strings.TrimLeft(s, " ,")
		if strings.HasPrefix(s, "}") {
			return s[1:], nil
		}
		eq := strings.Index(s, `="`)
		if eq < 0 {
			return "", fmt.Errorf("bad labels")
		}
		name := strings.TrimSpace(s[:eq])
		s = s[eq+2:]
		var val strings.Builder
		i := 0
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					val.WriteByte('\n')
				default:
					val.WriteByte(s[i])
				}
				continue
			}
			val.WriteByte(s[i])
		}
		if i == len(s) {
			return "", fmt.Errorf("unterminated label value")
		}
		labels[name] = val.String()
		s = s[i+1:]
	}
}

// Value returns the value of the first sample of name, or false.
func (m Metrics) Value(name string) (float64, bool) {
	if s := m[name]; len(s) > 0 {
		return s[0].Value, true
	}
	return 0, false
}

// LastSeen is kubelet_pleg_last_seen_seconds: when PLEG last finished a
// relist (zero when absent).
func (m Metrics) LastSeen() time.Time {
	v, ok := m.Value(PLEGLastSeen)
	if !ok || v <= 0 {
		return time.Time{}
	}
	sec, frac := math.Modf(v)
	return time.Unix(int64(sec), int64(frac*1e9))
}

// Bucket is one cumulative histogram bucket: Count observations <= Le.
type Bucket struct {
	Le    float64
	Count float64
}

// Histogram is a Prometheus histogram without labels other than le.
type Histogram struct {
	Buckets []Bucket // sorted by Le; the last is +Inf
	Sum     float64
	Count   float64
}

// Histogram returns the histogram called name (samples name_bucket,
// name_sum and name_count), or false when absent.
func (m Metrics) Histogram(name string) (Histogram, bool) {
	var h Histogram
	for _, s := range m[name+"_bucket"] {
		le, err := strconv.ParseFloat(s.Labels["le"], 64)
		if err != nil {
			continue
		}
		h.Buckets = append(h.Buckets, Bucket{Le: le, Count: s.Value})
	}
	if len(h.Buckets) == 0 {
		return h, false
	}
	sort.Slice(h.Buckets, func(i, j int) bool { return h.Buckets[i].Le < h.Buckets[j].Le })
	h.Sum, _ = m.Value(name + "_sum")
	h.Count, _ = m.Value(name + "_count")
	return h, true
}

// Sub returns the observations made between an earlier scrape and h.
func (h Histogram) Sub(earlier Histogram) Histogram {
	d := Histogram{Sum: h.Sum - earlier.Sum, Count: h.Count - earlier.Count}
	prev := map[float64]float64{}
	for _, b := range earlier.Buckets {
		prev[b.Le] = b.Count
	}
	for _, b := range h.Buckets {
		d.Buckets = append(d.Buckets, Bucket{Le: b.Le, Count: b.Count - prev[b.Le]})
	}
	return d
}

// Above counts the observations greater than the smallest bucket bound
// that is >= limit (the histogram cannot tell finer).
func (h Histogram) Above(limit float64) float64 {
	for _, b := range h.Buckets {
		if b.Le >= limit {
			return h.Count - b.Count
		}
	}
	return 0
}

// MaxBound is the upper bound of the highest non-empty bucket: the longest
// observation was at most this (+Inf when past the last finite bucket).
func (h Histogram) MaxBound() float64 {
	var prev float64
	bound := 0.0
	for _, b := range h.Buckets {
		if b.Count > prev {
			bound = b.Le
		}
		prev = b.Count
	}
	return bound
}

// Mean is Sum/Count, zero for an empty histogram.
func (h Histogram) Mean() float64 {
	if h.Count == 0 {
		return 0
	}
	return h.Sum / h.Count
}
