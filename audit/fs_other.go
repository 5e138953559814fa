//go:build !linux

package audit

import (
	"errors"
	"os"
)

// exchange is not available: the caller renames.
func exchange(a, b string) error { return errors.ErrUnsupported }

// lockFile opens name without a lock: one writer per log directory is
// the operator's to ensure on this system.
func lockFile(name string) (*os.File, error) {
	return os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
}

// datasync syncs f.
func datasync(f *os.File) error { return f.Sync() }

// startWriteback does nothing: each file's fsync writes it.
func startWriteback(f *os.File) {}

// rename is os.Rename.
func rename(oldpath, newpath string) error { return os.Rename(oldpath, newpath) }
