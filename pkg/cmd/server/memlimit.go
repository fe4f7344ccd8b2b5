package server

import (
	"context"
	"log/slog"
	"math"
	"runtime/debug"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
)

// defaultMemoryLimitRatio leaves a tenth of the container's memory to what
// the Go runtime does not count in its limit: the embedded etcd's memory
// map, thread stacks, buffers of the C library.
const defaultMemoryLimitRatio = 0.9

// memoryLimitRefresh is how often the container's limit is read again: a
// pod's resources can change in place.
const memoryLimitRefresh = time.Minute

// setMemoryLimit gives the Go runtime a soft memory limit of ratio times the
// limit provider reports (the container's cgroup), and keeps it up to date
// until ctx ends. Without it the collector lets the heap grow to twice what
// is live before it collects, and a cache of a million objects outgrows a
// limit that fits it. A GOMEMLIMIT in the environment wins, a ratio of 0
// leaves the runtime's limit alone, and no limit to read is no error. It
// returns the limit the runtime has.
func setMemoryLimit(ctx context.Context, ratio float64, provider memlimit.Provider) (int64, error) {
	if ratio == 0 {
		return debug.SetMemoryLimit(-1), nil
	}
	logger := klog.FromContext(ctx)
	limit, err := memlimit.Set(
		memlimit.WithRatio(ratio),
		memlimit.WithProvider(provider),
		memlimit.WithLogger(slog.New(logr.ToSlogHandler(logger))),
		memlimit.WithRefreshInterval(ctx, memoryLimitRefresh),
	)
	if err != nil {
		return limit, err
	}
	if limit != math.MaxInt64 {
		logger.Info("Keeping the Go heap under the container's memory limit", "goMemoryLimitBytes", limit, "ratio", ratio)
	}
	return limit, nil
}
