//go:build !linux

package process

import "syscall"

func childAttrs() *syscall.SysProcAttr { return nil }
