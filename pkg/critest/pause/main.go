// Command pause is the process of the conformance suite's pod sandbox
// image, as Kubernetes' pause: it sleeps until SIGINT or SIGTERM, and, as
// the pid 1 of the pod's shared PID namespace, reaps the orphans that
// fall to it. Its name matters: specs look for their own processes by
// name in that namespace, and find the sandbox's alongside.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		reap()
	}
}

// reap collects every exited child without blocking.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
