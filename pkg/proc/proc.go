// Package proc runs the long-lived child processes of the harness
// (containerd, kubelet): output appended to a log file, their own process
// group, reaped in the background, and stopped with SIGTERM then SIGKILL.
package proc

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Proc is a started child process.
type Proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start starts cmd with its stdout and stderr appended to logPath, in its
// own process group, so a signal meant for the test does not reach it.
func Start(cmd *exec.Cmd, logPath string) (*Proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	p := &Proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Done is closed when the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the process's wait error; valid once Done is closed.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Exited reports whether the process has exited. A nil Proc has.
func (p *Proc) Exited() bool {
	if p == nil {
		return true
	}
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// PID returns the process id, or 0 once it has exited.
func (p *Proc) PID() int {
	if p.Exited() {
		return 0
	}
	return p.cmd.Process.Pid
}

// Stop sends SIGTERM, waits up to grace (or until ctx ends), then sends
// SIGKILL and waits up to 10 s more. It only signals this process, by pid.
func (p *Proc) Stop(ctx context.Context, grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	case <-ctx.Done():
	}
	return p.Kill()
}

// Kill sends SIGKILL, as the OOM killer or a watchdog would, and waits up
// to 10 s for the process to exit. It only signals this process, by pid.
func (p *Proc) Kill() error {
	if p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("pid %d did not exit after SIGKILL", p.cmd.Process.Pid)
	}
}

// Tail returns the last n lines of the file at path, or the error reading it.
func Tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
