//go:build !linux

package ports

import (
	"errors"
	"os"
)

var errUnsupported = errors.New("record locks are not supported")

// lockByte is a no-op where record locks are not implemented here: ports are
// then only unique within one process.
func lockByte(*os.File, int64) (bool, error) { return false, errUnsupported }
