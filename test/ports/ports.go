// Package ports hands out loopback TCP ports for the servers that tests start
// as separate processes (etcd, PostgreSQL, annex), which must be told their
// port before they bind it.
//
// Asking the kernel for a free port (listening on port 0) and closing the
// listener leaves a window before the server binds: the kernel hands the same
// port to the next connect() or listen on port 0 on the machine, and tests
// make thousands of connections. Instead, ports are taken from outside the
// kernel's ephemeral range (net.ipv4.ip_local_port_range), which the kernel
// never gives out on its own, and each is reserved for the whole life of the
// test process with a lock that every test process on the machine respects.
// A port handed out here is therefore never handed out again while this
// process lives, and only a program that binds that exact port on purpose can
// take it. On a machine whose ephemeral range leaves no room, ports fall back
// to the kernel's choice.
package ports

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

const (
	// lowest is the first port considered: below it live well-known services.
	lowest = 10000
	// attempts bounds the search for a free, unreserved port.
	attempts = 1000
)

var (
	mu       sync.Mutex
	taken    = map[int]bool{} // handed out by this process
	lockFile *os.File         // holds this process's reservations; never closed
)

// Free returns a TCP port of 127.0.0.1 on which nothing listens, reserved for
// this process until it exits.
func Free() (int, error) {
	ps, err := FreeN(1)
	if err != nil {
		return 0, err
	}
	return ps[0], nil
}

// FreeN returns n distinct ports as Free does.
func FreeN(n int) ([]int, error) {
	mu.Lock()
	defer mu.Unlock()
	lo, hi, ok := outsideEphemeral()
	out := make([]int, 0, n)
	for range attempts {
		if len(out) == n {
			return out, nil
		}
		var port int
		if ok {
			port = lo + rand.IntN(hi-lo+1)
		} else {
			p, err := kernelPort()
			if err != nil {
				return nil, err
			}
			port = p
		}
		if taken[port] || !bindable(port) {
			continue
		}
		reserved, err := reserve(port)
		if err != nil {
			return nil, err
		}
		if !reserved {
			continue
		}
		taken[port] = true
		out = append(out, port)
	}
	if len(out) == n {
		return out, nil
	}
	return nil, fmt.Errorf("no free loopback port found in %d attempts", attempts)
}

// outsideEphemeral returns the widest range of ports at or above lowest that
// the kernel's ephemeral range does not cover, and whether it is usable.
func outsideEphemeral() (lo, hi int, ok bool) {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, false
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return 0, 0, false
	}
	first, err1 := strconv.Atoi(f[0])
	last, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	below, above := first-lowest, 65535-last
	switch {
	case below >= above && below >= 1000:
		return lowest, first - 1, true
	case above >= 1000:
		return last + 1, 65535, true
	}
	return 0, 0, false
}

// bindable reports whether 127.0.0.1:port can be listened on right now.
func bindable(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

func kernelPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// reserve takes the machine-wide lock of port, which is held until this
// process exits; it reports false when another process holds it.
func reserve(port int) (bool, error) {
	if lockFile == nil {
		// A fixed directory, not TMPDIR: test runs with different TMPDIRs
		// on one machine must see each other's reservations.
		base := "/tmp"
		if fi, err := os.Stat(base); err != nil || !fi.IsDir() {
			base = os.TempDir()
		}
		dir := filepath.Join(base, "annex-test-ports")
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return false, err
		}
		// One file for every process: a port is a byte of it, locked with a
		// record lock, which the kernel releases when the process ends, even
		// when it is killed.
		f, err := os.OpenFile(filepath.Join(dir, "locks"), os.O_RDWR|os.O_CREATE, 0o666)
		if err != nil {
			return false, err
		}
		lockFile = f
	}
	ok, err := lockByte(lockFile, int64(port))
	if errors.Is(err, errUnsupported) {
		return true, nil
	}
	return ok, err
}

// Closed returns an address of 127.0.0.1 on which nothing listens and which
// no test server will be given, for tests of what a client does when nothing
// answers.
func Closed() (string, error) {
	p, err := Free()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}
