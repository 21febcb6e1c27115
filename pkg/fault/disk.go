package fault

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// MountSmallFS mounts a tmpfs of size bytes at dir, a filesystem that fills
// up: containerd's root and state live on it in the disk-full scenario. The
// caller unmounts it with UnmountSmallFS once nothing uses it.
func MountSmallFS(dir string, size int64) error {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d,mode=0711", size)); err != nil {
		return fmt.Errorf("mount a %d-byte tmpfs at %s: %w", size, dir, err)
	}
	return nil
}

// UnmountSmallFS unmounts what MountSmallFS mounted at dir.
func UnmountSmallFS(dir string) error {
	if err := syscall.Unmount(dir, 0); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	return nil
}

// Filler is a file that takes the free space of a filesystem.
type Filler struct {
	Path  string
	Bytes int64 // how much it took
}

// Fill writes a file in dir until its filesystem has no space left, and
// returns it. Any other write error is returned.
func Fill(dir string) (*Filler, error) {
	f, err := os.CreateTemp(dir, "filler-*")
	if err != nil {
		return nil, fmt.Errorf("fill %s: %w", dir, err)
	}
	defer f.Close()
	fl := &Filler{Path: f.Name()}
	buf := make([]byte, 1<<20)
	for {
		n, err := f.Write(buf)
		fl.Bytes += int64(n)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			_ = os.Remove(fl.Path)
			return nil, fmt.Errorf("fill %s: %w", dir, err)
		}
	}
	// The last partial megabyte: single bytes until nothing fits.
	one := []byte{0}
	for {
		if _, err := f.Write(one); err != nil {
			break
		}
		fl.Bytes++
	}
	return fl, nil
}

// Free removes the filler, giving its space back.
func (f *Filler) Free() error {
	if err := os.Remove(f.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("free %s: %w", filepath.Base(f.Path), err)
	}
	return nil
}
