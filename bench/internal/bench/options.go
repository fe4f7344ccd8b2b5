package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Options are the flags of one command beyond those every command takes.
type Options interface {
	// AddFlags adds the command's flags to fs.
	AddFlags(fs *flag.FlagSet)
	// Complete reads the flags once parsed.
	Complete() error
}

// Main runs the command bench/cmd/<name>: it parses the command line, the
// flags of every command and opts', and runs run. report says that the
// command writes a report (--doc) and has a quick run (--quick). It exits 2
// on a usage error and 1 if the run fails.
func Main[O Options](name string, report bool, opts O, run func(ctx context.Context, f Flags, opts O) error) {
	f := Flags{Log: os.Stdout}
	fs := flag.CommandLine
	fs.StringVar(&f.Out, "out", "", "directory for the raw results, logs and profiles (required)")
	fs.StringVar(&f.Command, "command", "", "the command that reproduces this run, for the report")
	if report {
		fs.StringVar(&f.Doc, "doc", "", "where to write the Markdown report (default <out>/benchmarks.md)")
		fs.BoolVar(&f.Quick, "quick", false, "tiny counts, a few minutes at most: proves the harness end to end, measures nothing worth reading")
	}
	opts.AddFlags(fs)
	flag.Parse()
	err := complete(name, &f, opts)
	if err == nil {
		ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err = run(ctx, f, opts)
		cancel()
	}
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
	if errors.As(err, new(usageError)) {
		os.Exit(2)
	}
	os.Exit(1)
}

// complete checks and completes the flags of the command name.
func complete(name string, f *Flags, opts Options) error {
	if f.Out == "" {
		return usageError{errors.New("--out is required")}
	}
	if err := opts.Complete(); err != nil {
		return usageError{err}
	}
	abs, err := filepath.Abs(f.Out)
	if err != nil {
		return err
	}
	f.Out = abs
	if f.Doc == "" {
		f.Doc = filepath.Join(f.Out, "benchmarks.md")
	}
	if f.Command == "" {
		f.Command = "cd bench && go run -tags integration ./cmd/" + name + " " + strings.Join(os.Args[1:], " ")
	}
	return nil
}

// usageError is an error in the flags a command was given.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// parseCounts reads --count: object counts, comma-separated, "_" allowed
// between digits; none if empty.
func parseCounts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(strings.ReplaceAll(f, "_", ""))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("--count: %q is not a positive object count", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// parseCount reads a --count of one object count, 0 if empty.
func parseCount(s string) (int, error) {
	counts, err := parseCounts(s)
	switch {
	case err != nil || len(counts) == 0:
		return 0, err
	case len(counts) > 1:
		return 0, fmt.Errorf("--count: one object count, not %d", len(counts))
	}
	return counts[0], nil
}

// fsyncFlag adds --cluster-etcd-fsync.
func fsyncFlag(fs *flag.FlagSet, p *bool) {
	fs.BoolVar(p, "cluster-etcd-fsync", true, "run the cluster's etcd with fsync, as in production and as annex's embedded etcd runs (envtest turns fsync off)")
}

// consistencyChecksFlag adds --consistency-checks.
func consistencyChecksFlag(fs *flag.FlagSet, p *bool) {
	fs.BoolVar(p, "consistency-checks", false, "leave on the periodic consistency checks of the servers' caches (DetectCacheInconsistency), which land in whichever phase runs when they do")
}

// annexFlagsFlag adds --annex-flags, for the commands that start annex
// behind a kube-apiserver.
func annexFlagsFlag(fs *flag.FlagSet) {
	fs.StringVar(&annexFlags, "annex-flags", "", "further flags for the annex behind the kube-apiserver (B and C), whitespace-separated, for example --storage-compression=None")
}

// CompareOptions are the flags of the compare command.
type CompareOptions struct {
	// Plots is the directory for the PNG plots (default Flags.Out).
	Plots string
	// ClusterEtcdFsync runs the cluster's etcd with fsync.
	ClusterEtcdFsync bool
	// HostedCache is spec.storage.cache of the HostedResources of B and C.
	HostedCache string
	// ConsistencyChecks leaves the servers' periodic consistency checks on.
	ConsistencyChecks bool
	// Phases are the phases run, in the plan's order: ladder, watch, crud.
	Phases []string
	phases string
}

func (o *CompareOptions) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Plots, "plots", "", "directory for the PNG plots (default <out>)")
	fsyncFlag(fs, &o.ClusterEtcdFsync)
	consistencyChecksFlag(fs, &o.ConsistencyChecks)
	fs.StringVar(&o.HostedCache, "hosted-cache", "", "spec.storage.cache of the HostedResources of B and C: Lean (the default), WatchCache or None")
	fs.StringVar(&o.phases, "phases", strings.Join(comparePhases, ","), "the phases to run, comma-separated: a part of the report, for measuring one figure while working on it")
	annexFlagsFlag(fs)
}

// comparePhases are the phases of the compare command, in the order they
// run.
var comparePhases = []string{"ladder", "watch", "crud"}

func (o *CompareOptions) Complete() error {
	o.Phases = nil
	for ph := range strings.SplitSeq(o.phases, ",") {
		ph = strings.TrimSpace(ph)
		if !slices.Contains(comparePhases, ph) {
			return fmt.Errorf("--phases: %q is not one of %s", ph, strings.Join(comparePhases, ", "))
		}
		o.Phases = append(o.Phases, ph)
	}
	return nil
}

// BackendsOptions are the flags of the backends command: none of its own.
type BackendsOptions struct{}

func (o *BackendsOptions) AddFlags(*flag.FlagSet) {}
func (o *BackendsOptions) Complete() error        { return nil }

// CapacityOptions are the flags of the capacity command.
type CapacityOptions struct {
	// Count overrides the plan's object count when positive.
	Count int
	// Stores are the slugs of the stores to measure, in order.
	Stores []string
	// WaitCheck waits for a consistency check of the full cache.
	WaitCheck bool
	// MemoryLimit is GOMEMLIMIT for annex; empty for none.
	MemoryLimit string

	count, stores string
}

func (o *CapacityOptions) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.count, "count", "", "the number of objects of the type (default 1,000,000, 2,000 with --quick)")
	fs.StringVar(&o.stores, "stores", "embedded-etcd,postgres", "the stores to fill and measure, in order")
	fs.BoolVar(&o.WaitCheck, "wait-consistency-check", false, "wait for a periodic consistency check of the full cache against the store "+
		"and measure it (5 to 7.5 minutes, plus about twice the time the cache took to fill, per store)")
	fs.StringVar(&o.MemoryLimit, "annex-memory-limit", "", "GOMEMLIMIT for annex (for example 3GiB), as a container's memory limit sets it "+
		"with annex's --memory-limit-ratio; none when empty")
}

// memoryLimitPattern is what GOMEMLIMIT accepts: a byte count with an
// optional unit.
var memoryLimitPattern = regexp.MustCompile(`^[0-9]+(B|KiB|MiB|GiB|TiB)?$`)

func (o *CapacityOptions) Complete() (err error) {
	if o.MemoryLimit != "" && !memoryLimitPattern.MatchString(o.MemoryLimit) {
		return fmt.Errorf("--annex-memory-limit: %q is not a size such as 3GiB or 3221225472", o.MemoryLimit)
	}
	o.Stores = strings.Split(o.stores, ",")
	o.Count, err = parseCount(o.count)
	return err
}

// AdoptionOptions are the flags of the adoption command.
type AdoptionOptions struct {
	// Counts override the plan's when set.
	Counts           []int
	ClusterEtcdFsync bool

	counts string
}

func (o *AdoptionOptions) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.counts, "count", "", "the object counts to adopt at, comma-separated, each in a control plane of its own "+
		"(default 10000,100000, 200 with --quick)")
	fsyncFlag(fs, &o.ClusterEtcdFsync)
	annexFlagsFlag(fs)
}

func (o *AdoptionOptions) Complete() (err error) {
	o.Counts, err = parseCounts(o.counts)
	return err
}

// CRUDOptions are the flags of the crud command.
type CRUDOptions struct {
	// Count is the number of objects each target creates, updates and gets.
	Count int `json:"count"`
	// Targets are the targets measured, in order: A, B and C.
	Targets []string `json:"targets"`
	// Prefill is the number of report objects created in A and B first,
	// so that the servers hold a cache of that size while the phases run.
	Prefill int `json:"prefill"`
	// ProfileSeconds, when not zero, is the length of the CPU profiles of
	// create and update phases, of the servers each target goes through:
	// the kube-apiserver for A, annex for B, both for C.
	ProfileSeconds int `json:"profileSeconds"`
	// ConsistencyChecks leaves the servers' periodic consistency checks on.
	ConsistencyChecks bool `json:"consistencyChecks"`

	count, targets string
}

func (o *CRUDOptions) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.count, "count", "", "the objects each target creates, updates and gets (default 3,000)")
	fs.StringVar(&o.targets, "targets", "A,B", "the targets measured, in order (A, B, C)")
	fs.IntVar(&o.Prefill, "prefill", 0, "report objects created in A and B before the phases")
	consistencyChecksFlag(fs, &o.ConsistencyChecks)
	fs.IntVar(&o.ProfileSeconds, "profile-seconds", 0, "profile the servers each target goes through (A: the kube-apiserver, B: annex, C: both) during its create and update, for this many seconds")
	annexFlagsFlag(fs)
}

func (o *CRUDOptions) Complete() (err error) {
	o.Targets = strings.Split(o.targets, ",")
	o.Count, err = parseCount(o.count)
	return err
}
