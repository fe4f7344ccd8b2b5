//go:build linux

package process

import "syscall"

// childAttrs makes the kernel kill the child when the test binary dies, so
// that a test timeout or a Ctrl-C never leaves a server running.
func childAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
