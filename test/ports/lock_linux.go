package ports

import (
	"errors"
	"io"
	"os"
	"syscall"
)

var errUnsupported = errors.New("record locks are not supported")

// lockByte takes a write lock on byte off of f without waiting, and reports
// false when another process holds it.
func lockByte(f *os.File, off int64) (bool, error) {
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: io.SeekStart, Start: off, Len: 1}
	err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EACCES):
		return false, nil
	}
	return false, err
}
