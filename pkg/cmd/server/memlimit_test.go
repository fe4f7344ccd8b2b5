package server

import (
	"context"
	"math"
	"os"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// The Go runtime keeps the heap under the given fraction of the container's
// limit; a GOMEMLIMIT of the operator's, a ratio of 0 and a container
// without a limit leave the runtime's own.
func TestSetMemoryLimit(t *testing.T) {
	const containerLimit = 4 << 30
	for _, tc := range []struct {
		name      string
		ratio     float64
		env       string
		provider  memlimit.Provider
		wantLimit int64
	}{
		{name: "90% of the container's", ratio: 0.9, provider: memlimit.Limit(containerLimit), wantLimit: containerLimit * 9 / 10},
		{name: "half", ratio: 0.5, provider: memlimit.Limit(containerLimit), wantLimit: containerLimit / 2},
		{name: "off", ratio: 0, provider: memlimit.Limit(containerLimit), wantLimit: math.MaxInt64},
		{name: "GOMEMLIMIT wins", ratio: 0.9, env: "1GiB", provider: memlimit.Limit(containerLimit), wantLimit: math.MaxInt64},
		{name: "no limit", ratio: 0.9, provider: func() (uint64, error) { return 0, memlimit.ErrNoLimit }, wantLimit: math.MaxInt64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetMemoryLimit(math.MaxInt64)
			t.Cleanup(func() { debug.SetMemoryLimit(math.MaxInt64) })
			t.Setenv("GOMEMLIMIT", tc.env)
			unsetenv(t, "AUTOMEMLIMIT")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			got, err := setMemoryLimit(ctx, tc.ratio, tc.provider)
			if err != nil {
				t.Fatal(err)
			}
			if runtimeLimit := debug.SetMemoryLimit(-1); got != tc.wantLimit || runtimeLimit != tc.wantLimit {
				t.Errorf("memory limit %d, the runtime's %d; want %d", got, runtimeLimit, tc.wantLimit)
			}
		})
	}
}

// A limit that cannot be read is an error the caller logs; the runtime
// keeps its own.
func TestSetMemoryLimitUnreadable(t *testing.T) {
	debug.SetMemoryLimit(math.MaxInt64)
	t.Setenv("GOMEMLIMIT", "")
	unsetenv(t, "AUTOMEMLIMIT")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	broken := func() (uint64, error) { return 0, context.DeadlineExceeded }
	if _, err := setMemoryLimit(ctx, 0.9, broken); err == nil {
		t.Error("an unreadable limit gave no error")
	}
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("the runtime's limit is %d after an unreadable limit, want its own", got)
	}
}

// unsetenv unsets an environment variable for the test.
func unsetenv(t *testing.T, name string) {
	t.Setenv(name, "")
	if err := os.Unsetenv(name); err != nil {
		t.Fatal(err)
	}
}

func TestMemoryLimitRatioIsAFraction(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	for _, ratio := range []string{"-0.1", "1.5"} {
		err := parsed(t, "--memory-limit-ratio="+ratio).Validate()
		if err == nil || !strings.Contains(err.Error(), "--memory-limit-ratio must be between 0 (off) and 1") {
			t.Errorf("--memory-limit-ratio=%s: %v, want it refused", ratio, err)
		}
	}
	for _, ratio := range []string{"0", "0.75", "1"} {
		if err := parsed(t, "--memory-limit-ratio="+ratio).Validate(); err != nil && strings.Contains(err.Error(), "memory-limit-ratio") {
			t.Errorf("--memory-limit-ratio=%s: %v", ratio, err)
		}
	}
	if o := parsed(t); o.MemoryLimitRatio != 0.9 {
		t.Errorf("--memory-limit-ratio defaults to %g, want 0.9", o.MemoryLimitRatio)
	}
}
