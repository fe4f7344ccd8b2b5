//go:build integration

package framework

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Process is a child process whose exit is observed in the background, so
// that a wait can fail fast when the child dies.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}

	mu  sync.Mutex
	err error // the result of Wait, valid once done is closed
}

// StartProcess starts bin with args in dir, its output to out.
func StartProcess(bin string, args []string, dir string, out io.Writer) (*Process, error) {
	return startProcess(bin, args, nil, dir, out)
}

// startProcess starts bin with args in dir, its output to out, with the
// environment env, or the test's when env is nil.
func startProcess(bin string, args, env []string, dir string, out io.Writer) (*Process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = childAttrs()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// LogBuffer holds a process's output; it may be read while the process
// writes to it.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Len returns how many bytes were written so far.
func (b *LogBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

// String returns what was written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Pid is the process's id, for reading its figures under /proc.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.err == nil {
			return true, errors.New("exit status 0")
		}
		return true, p.err
	default:
		return false, nil
	}
}

// Stop asks the process to terminate and kills it if it has not within
// timeout. A process that already died on its own is reported as an error,
// since annex must keep running for the whole test binary.
func (p *Process) Stop(timeout time.Duration) error {
	if exited, err := p.Exited(); exited {
		return fmt.Errorf("it had already exited: %v", err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-p.done
	return fmt.Errorf("it did not stop within %s of SIGTERM and was killed", timeout)
}

// Kill ends the process with SIGKILL, as a crash or the OOM killer would,
// and waits until it is gone.
func (p *Process) Kill() error { return p.kill() }
