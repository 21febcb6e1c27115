// Package fault injects delays into the system calls of a running process
// with strace, the way the incidents were reproduced by hand, and detaches
// reliably afterwards.
package fault

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Delay is an strace attached to one process, delaying some of its calls.
type Delay struct {
	PID      int
	Syscalls []string
	Log      string
	cmd      *exec.Cmd
	done     chan struct{}
}

// DelaySyscalls attaches strace to pid and every thread it has or creates
// and delays the entry of each named syscall by d. Children that exec (runc)
// are let go. It returns once every thread of pid is traced, so a caller
// can trigger the fault right after. The trace is written to logPath.
func DelaySyscalls(ctx context.Context, pid int, syscalls []string, d time.Duration, logPath string) (*Delay, error) {
	if len(syscalls) == 0 {
		return nil, errors.New("fault: no syscalls to delay")
	}
	strace, err := exec.LookPath("strace")
	if err != nil {
		return nil, fmt.Errorf("fault: strace not found (install Debian's strace): %w", err)
	}
	list := strings.Join(syscalls, ",")
	cmd := exec.Command(strace, "-f", "--detach-on=execve", "-ttt", "-T", "-qq",
		"-p", strconv.Itoa(pid),
		"-e", "trace="+list,
		"-e", fmt.Sprintf("inject=%s:delay_enter=%dus", list, d.Microseconds()),
		"-o", logPath)
	stderr, err := os.Create(logPath + ".stderr")
	if err != nil {
		return nil, fmt.Errorf("fault: %w", err)
	}
	defer stderr.Close()
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("fault: start strace: %w", err)
	}
	f := &Delay{PID: pid, Syscalls: syscalls, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(f.done)
	}()
	if err := f.waitAttached(ctx, 10*time.Second); err != nil {
		_ = f.Detach()
		return nil, err
	}
	return f, nil
}

// waitAttached waits until every thread of the target has strace as tracer.
func (f *Delay) waitAttached(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		untraced, err := untracedThreads(f.PID, f.cmd.Process.Pid)
		if err != nil {
			return fmt.Errorf("fault: %w", err)
		}
		if untraced == 0 {
			return nil
		}
		select {
		case <-f.done:
			b, _ := os.ReadFile(f.Log + ".stderr")
			return fmt.Errorf("fault: strace exited before attaching to %d: %s", f.PID, b)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fault: %d threads of pid %d still untraced after %s", untraced, f.PID, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func untracedThreads(pid, tracer int) (int, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, fmt.Errorf("list threads of %d: %w", pid, err)
	}
	n := 0
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "task", t.Name(), "status"))
		if err != nil {
			continue // the thread exited
		}
		if tracerPID(string(b)) != tracer {
			n++
		}
	}
	return n, nil
}

func tracerPID(status string) int {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "TracerPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// Detach stops strace (SIGINT makes it detach cleanly, letting a delayed
// call go on) and waits for it; SIGKILL after 10 s. Safe to call twice.
func (f *Delay) Detach() error {
	select {
	case <-f.done:
		return nil
	default:
	}
	_ = f.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-f.done:
		return nil
	case <-time.After(10 * time.Second):
	}
	_ = f.cmd.Process.Kill()
	select {
	case <-f.done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("fault: strace %d did not exit", f.cmd.Process.Pid)
	}
}

// Call is one traced system call.
type Call struct {
	PID     int
	Syscall string
	Args    string
	Start   time.Time
	End     time.Time // Start plus the time spent in the call, delay included
	Result  string
}

// callLine matches strace -f -ttt -T output such as
// 1234 1700000000.123456 umount2("/x", 0) = 0 (DELAYED) <20.004071>
var callLine = regexp.MustCompile(`^(\d+)\s+(\d+\.\d+)\s+(\w+)\((.*)\)\s+=\s+(.*?)\s+<(\d+\.\d+)>$`)

// Calls parses the finished calls recorded so far. Calls interrupted by
// other threads' output (unfinished/resumed pairs) are joined.
func (f *Delay) Calls() ([]Call, error) {
	file, err := os.Open(f.Log)
	if err != nil {
		return nil, fmt.Errorf("fault: %w", err)
	}
	defer file.Close()
	var calls []Call
	pending := map[string]string{} // pid -> unfinished prefix
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.SplitN(line, " ", 2)
		if len(fields) != 2 {
			continue
		}
		pid := fields[0]
		if i := strings.Index(line, " <unfinished ...>"); i > 0 {
			pending[pid] = line[:i]
			continue
		}
		if i := strings.Index(line, "resumed>"); i > 0 && pending[pid] != "" {
			line = pending[pid] + strings.TrimPrefix(line[i+len("resumed>"):], " ")
			delete(pending, pid)
		}
		if c, ok := parseCall(line); ok {
			calls = append(calls, c)
		}
	}
	return calls, sc.Err()
}

func parseCall(line string) (Call, bool) {
	m := callLine.FindStringSubmatch(line)
	if m == nil {
		return Call{}, false
	}
	pid, _ := strconv.Atoi(m[1])
	start, err1 := strconv.ParseFloat(m[2], 64)
	dur, err2 := strconv.ParseFloat(m[6], 64)
	if err1 != nil || err2 != nil {
		return Call{}, false
	}
	st := time.Unix(0, int64(start*1e9))
	return Call{PID: pid, Syscall: m[3], Args: m[4], Result: m[5], Start: st, End: st.Add(time.Duration(dur * 1e9))}, true
}

// LastEnd returns when the last finished call of the given syscall ended.
func (f *Delay) LastEnd(syscallName string) (time.Time, error) {
	calls, err := f.Calls()
	if err != nil {
		return time.Time{}, err
	}
	var last time.Time
	for _, c := range calls {
		if c.Syscall == syscallName && c.End.After(last) {
			last = c.End
		}
	}
	if last.IsZero() {
		return last, fmt.Errorf("fault: no finished %s call of pid %d in %s", syscallName, f.PID, f.Log)
	}
	return last, nil
}

// Entered counts the calls of syscallName that have started, finished or not.
func (f *Delay) Entered(syscallName string) (int, error) {
	b, err := os.ReadFile(f.Log)
	if err != nil {
		return 0, fmt.Errorf("fault: %w", err)
	}
	return strings.Count(string(b), " "+syscallName+"("), nil
}

// WaitEntered waits until at least n calls of syscallName have started.
func (f *Delay) WaitEntered(ctx context.Context, syscallName string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		got, err := f.Entered(syscallName)
		if err != nil {
			return err
		}
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fault: %d of %d %s calls of pid %d after %s", got, n, syscallName, f.PID, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Settled reports whether at least one call of syscallName has finished,
// every call of it that started has finished, and the last one ended at
// least quiet ago: the traced process is done with that syscall for now
// (a shim's delete unmounts a rootfs with back-to-back umount2 calls).
func (f *Delay) Settled(syscallName string, quiet time.Duration) (bool, error) {
	entered, err := f.Entered(syscallName)
	if err != nil {
		return false, err
	}
	calls, err := f.Calls()
	if err != nil {
		return false, err
	}
	finished := 0
	var last time.Time
	for _, c := range calls {
		if c.Syscall == syscallName {
			finished++
			if c.End.After(last) {
				last = c.End
			}
		}
	}
	return finished > 0 && finished >= entered && time.Since(last) >= quiet, nil
}

// AllSettled reports whether every delay is Settled for syscallName.
func AllSettled(delays []*Delay, syscallName string, quiet time.Duration) bool {
	for _, d := range delays {
		if ok, err := d.Settled(syscallName, quiet); err != nil || !ok {
			return false
		}
	}
	return true
}
