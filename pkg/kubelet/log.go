package kubelet

import (
	"bufio"
	"strconv"
	"strings"
	"time"
)

// LogLine is one klog line of kubelet's log.
type LogLine struct {
	Time     time.Time
	Severity byte   // I, W, E or F
	Source   string // file:line
	Msg      string // the message as logged, e.g. `"GenericPLEG: Relisting"`
	KV       map[string]string
}

// Message is the structured log message without its quotes.
func (l LogLine) Message() string {
	if s, err := strconv.QuotedPrefix(l.Msg); err == nil {
		if u, err := strconv.Unquote(s); err == nil {
			return u
		}
	}
	return l.Msg
}

// ParseLog parses klog lines ("I1122 23:15:04.123456    1234 file.go:12] msg").
// klog's header has no year: it is taken from now, and a time more than a
// day after now is moved a year back. Lines that are not klog headers
// (continuations, Go panics) are skipped.
func ParseLog(text string, now time.Time) []LogLine {
	var lines []LogLine
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		if l, ok := parseLogLine(sc.Text(), now); ok {
			lines = append(lines, l)
		}
	}
	return lines
}

func parseLogLine(s string, now time.Time) (LogLine, bool) {
	// Lmmdd hh:mm:ss.uuuuuu
	if len(s) < 22 || !strings.ContainsRune("IWEF", rune(s[0])) || s[5] != ' ' {
		return LogLine{}, false
	}
	t, err := time.ParseInLocation("0102 15:04:05.000000", s[1:21], now.Location())
	if err != nil {
		return LogLine{}, false
	}
	t = t.AddDate(now.Year(), 0, 0)
	if t.After(now.Add(24 * time.Hour)) {
		t = t.AddDate(-1, 0, 0)
	}
	rest := strings.TrimLeft(s[21:], " ")
	// thread id, then file:line]
	_, rest, ok := strings.Cut(rest, " ")
	if !ok {
		return LogLine{}, false
	}
	src, msg, ok := strings.Cut(rest, "] ")
	if !ok {
		return LogLine{}, false
	}
	return LogLine{Time: t, Severity: s[0], Source: src, Msg: msg, KV: parseKV(msg)}, true
}

// parseKV reads the key="value" and key=value pairs after a structured
// message.
func parseKV(msg string) map[string]string {
	kv := map[string]string{}
	rest := msg
	if q, err := strconv.QuotedPrefix(rest); err == nil {
		rest = rest[len(q):]
	}
	for {
		rest = strings.TrimLeft(rest, " ")
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 || strings.ContainsAny(rest[:eq], " \"") {
			return kv
		}
		key := rest[:eq]
		rest = rest[eq+1:]
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return kv
			}
			kv[key], _ = strconv.Unquote(q)
			rest = rest[len(q):]
			continue
		}
		end := strings.IndexByte(rest, ' ')
		if end < 0 {
			end = len(rest)
		}
		kv[key] = rest[:end]
		rest = rest[end:]
	}
}

// Times returns the times of the lines whose message is msg.
func Times(lines []LogLine, msg string) []time.Time {
	var ts []time.Time
	for _, l := range lines {
		if l.Message() == msg {
			ts = append(ts, l.Time)
		}
	}
	return ts
}

// RelistMessage is what generic PLEG logs at -v=5 before each relist, and
// RelistFailedMessage what it logs when the runtime did not answer.
const (
	RelistMessage       = "GenericPLEG: Relisting"
	RelistFailedMessage = "GenericPLEG: Unable to retrieve pods"
)

// PLEGStaleness returns the longest time within [from, to] that kubelet's
// PLEG health check saw since the start of the last successful relist (it
// compares that to its 3 min threshold; a failed relist does not count).
// A relist is taken to end when the next one starts (within kubelet's 1 s
// period, so this errs long by at most that); the last relist of the log
// is taken to be still running at to.
func PLEGStaleness(lines []LogLine, from, to time.Time) time.Duration {
	type relist struct {
		start time.Time
		ok    bool
	}
	var rs []relist
	for _, l := range lines {
		switch l.Message() {
		case RelistMessage:
			rs = append(rs, relist{start: l.Time, ok: true})
		case RelistFailedMessage:
			if len(rs) > 0 {
				rs[len(rs)-1].ok = false
			}
		}
	}
	var longest time.Duration
	var lastOK time.Time // start of the last successful relist that has ended
	for i, r := range rs {
		if i+1 == len(rs) {
			break // still running at to
		}
		end := rs[i+1].start
		if end.After(to) {
			break
		}
		if r.ok {
			if !lastOK.IsZero() && !end.Before(from) {
				longest = max(longest, end.Sub(lastOK))
			}
			lastOK = r.start
		}
	}
	if !lastOK.IsZero() {
		longest = max(longest, to.Sub(lastOK))
	}
	return longest
}

// MaxGap returns the longest interval without an event that overlaps
// [from, to], and when it started. times must be sorted. An interval still
// open at to counts up to to, so a relist stuck at the end shows.
func MaxGap(times []time.Time, from, to time.Time) (time.Duration, time.Time) {
	var longest time.Duration
	var at time.Time
	prev := time.Time{}
	for _, t := range times {
		if t.After(to) {
			if !prev.IsZero() && prev.Before(to) && t.Sub(prev) > longest {
				longest, at = t.Sub(prev), prev
			}
			return longest, at
		}
		if !prev.IsZero() && t.After(from) && t.Sub(prev) > longest {
			longest, at = t.Sub(prev), prev
		}
		prev = t
	}
	if !prev.IsZero() && to.Sub(prev) > longest {
		longest, at = to.Sub(prev), prev
	}
	return longest, at
}

// Count counts the lines in [from, to] with message msg whose key-value
// pairs include every pair of match.
func Count(lines []LogLine, msg string, match map[string]string, from, to time.Time) int {
	n := 0
	for _, l := range Select(lines, msg, match) {
		if !l.Time.Before(from) && !l.Time.After(to) {
			n++
		}
	}
	return n
}

// Select returns the lines with message msg whose key-value pairs include
// every pair of match.
func Select(lines []LogLine, msg string, match map[string]string) []LogLine {
	var out []LogLine
next:
	for _, l := range lines {
		if l.Message() != msg {
			continue
		}
		for k, v := range match {
			if l.KV[k] != v {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}
