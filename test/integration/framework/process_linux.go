//go:build integration && linux

package framework

import "syscall"

// childAttrs makes the kernel kill the child when the test binary dies, so
// that a test timeout or a Ctrl-C never leaves annex running.
func childAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
