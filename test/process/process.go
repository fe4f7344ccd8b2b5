// Package process starts the servers that tests and benchmarks run as child
// processes (annex, etcd, PostgreSQL, the kube-controller-manager) and
// watches them: an exit is seen at once, so that a wait fails fast when its
// server dies, and a child never outlives the test binary on Linux.
package process

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// killWait bounds the wait for a process to be gone after SIGKILL.
const killWait = 10 * time.Second

// Process is a child process whose exit is observed in the background.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}

	mu  sync.Mutex
	err error // the result of Wait, valid once done is closed
}

// Start starts bin with args in dir, its stdout and stderr to out, with the
// environment env, or the caller's when env is nil.
func Start(bin string, args, env []string, dir string, out io.Writer) (*Process, error) {
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

// Pid is the process's id, for signals and for its figures under /proc.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has ended, and how; an exit with
// status 0 is reported as an error too, since the servers run here are
// not meant to end on their own.
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

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// Stop asks the process to terminate and kills it if it has not within
// timeout. A process that already died on its own is reported as an error.
func (p *Process) Stop(timeout time.Duration) error {
	if exited, err := p.Exited(); exited {
		return fmt.Errorf("it had already exited: %v", err)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
	}
	if err := p.Kill(); err != nil {
		return err
	}
	return fmt.Errorf("it did not stop within %s of SIGTERM and was killed", timeout)
}

// Kill ends the process with SIGKILL, as a crash or the OOM killer would,
// and waits until it is gone. Killing a process that has exited does
// nothing.
func (p *Process) Kill() error {
	if exited, _ := p.Exited(); exited {
		return nil
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("process %d still running %s after SIGKILL", p.Pid(), killWait)
	}
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

// Tail returns the last n lines of log, formatted to be appended to an
// error message under the heading name, or "" when log is empty.
func Tail(name, log string, n int) string {
	log = strings.TrimRight(log, "\n")
	if log == "" {
		return ""
	}
	lines := strings.Split(log, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprintf("\n--- last %d lines of %s ---\n%s\n---", len(lines), name, strings.Join(lines, "\n"))
}

// FileTail is Tail of the file at path, or "" when it cannot be read.
func FileTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return Tail(path, string(data), n)
}
