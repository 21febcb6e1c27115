package daemon

import (
	"context"
	"fmt"
	"os"
)

// CheckStart starts a daemon with opts in a private directory under /tmp
// (short enough for its sockets) and returns why it did not start. A
// daemon that starts is stopped and cleaned up at once, its directory
// removed, and nil returned: to check that a configuration starts, or that
// containerd refuses it.
func CheckStart(ctx context.Context, opts Options) error {
	dir, err := os.MkdirTemp("/tmp", "sc")
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	defer os.RemoveAll(dir)
	d, err := Start(ctx, dir, opts)
	if err != nil {
		return err
	}
	if err := d.Cleanup(ctx); err != nil {
		return fmt.Errorf("daemon: started, but its clean-up failed: %w", err)
	}
	return nil
}
