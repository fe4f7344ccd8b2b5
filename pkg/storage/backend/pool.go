package backend

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/storage/postgres"
)

// ErrStarting marks a backend that is still opening: the condition passes
// by itself.
var ErrStarting = errors.New("starting")

// DefaultRetryInterval is how long a backend that failed to open is
// reported as failed before the next attempt; the wait doubles with each
// failure in a row, up to maxRetryInterval.
const DefaultRetryInterval = 10 * time.Second

// maxRetryInterval bounds the wait between two attempts to open a backend
// (unless the first wait is already longer).
const maxRetryInterval = 2 * time.Minute

// Pool keeps the backends of StorageBackends, by name. Get never waits: it
// opens a backend in the background on first use and says it is starting.
// A backend that cannot be opened fails on its own (Get returns the reason)
// and is tried again after a wait that doubles with each failure; nothing
// about it may take the process down.
type Pool struct {
	factory *Factory
	retry   time.Duration
	// lookup reads the StorageBackend of a name when it is opened.
	lookup func(name string) (*v1alpha1.StorageBackend, error)

	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	entries map[string]*entry
}

// OpenError says why a backend could not be opened, for operators: Err may
// name hosts, users, databases and Secrets.
type OpenError struct {
	Name string
	Err  error
	// Failures counts the failed attempts in a row, this one included,
	// made until At; the next comes RetryAfter after it.
	Failures   int
	At         time.Time
	RetryAfter time.Duration
}

func (e *OpenError) Error() string {
	return fmt.Sprintf("%v (failed attempt %d in a row, at %s; annex tries again %s later)", e.Err, e.Failures,
		e.At.UTC().Format(time.RFC3339), e.RetryAfter)
}

func (e *OpenError) Unwrap() error { return e.Err }

// Unreachable says whether opening failed because the store did not answer
// (rather than, say, because its Secret is wrong).
func (e *OpenError) Unreachable() bool { return errors.Is(e.Err, postgres.ErrUnavailable) }

// entry is an opened (or opening, or failed) backend.
type entry struct {
	// Set once, when opening ends.
	done    chan struct{}
	backend Backend
	err     error
	ended   time.Time
	// failures counts the failed attempts in a row, this one included;
	// retryAfter is the wait before the next.
	failures   int
	retryAfter time.Duration
}

func (e *entry) state() (opening bool, opened Backend, err error) {
	select {
	case <-e.done:
		return false, e.backend, e.err
	default:
		return true, nil, nil
	}
}

// NewPool returns a Pool that opens backends with factory, the
// StorageBackend of each read by lookup. retryInterval is the first wait
// after a failure; DefaultRetryInterval when zero.
func NewPool(factory *Factory, retryInterval time.Duration, lookup func(name string) (*v1alpha1.StorageBackend, error)) *Pool {
	ctx, cancel := context.WithCancel(context.Background())
	return &Pool{factory: factory, retry: retryInterval, lookup: lookup, ctx: ctx, cancel: cancel, entries: map[string]*entry{}}
}

// Get returns the opened backend of name, or starts opening it and returns
// an error wrapping ErrStarting, or returns why it could not be opened.
func (p *Pool) Get(name string) (Backend, error) {
	opening, opened, err := p.entry(name).state()
	switch {
	case opening:
		return nil, fmt.Errorf("annex is connecting to StorageBackend %q (%w)", name, ErrStarting)
	case err != nil:
		return nil, err
	}
	return opened, nil
}

// Close closes every backend the Pool opened. One still opening is left to
// the process's exit: a database that does not answer can hold kine's start
// for minutes.
func (p *Pool) Close() {
	p.cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.entries {
		if opening, opened, _ := e.state(); !opening && opened != nil {
			opened.Close()
		}
	}
}

// entry returns the backend's entry, opening it if it never was or if it
// failed long enough ago.
func (p *Pool) entry(name string) *entry {
	p.mu.Lock()
	defer p.mu.Unlock()
	failures := 0
	if e, ok := p.entries[name]; ok {
		opening, _, err := e.state()
		if opening || err == nil || time.Since(e.ended) < e.retryAfter {
			return e
		}
		failures = e.failures
	}
	e := &entry{done: make(chan struct{})}
	p.entries[name] = e
	go func() {
		defer close(e.done)
		e.backend, e.err = p.openSafely(name)
		e.ended = time.Now()
		logger := klog.FromContext(p.ctx)
		if e.err != nil {
			e.failures = failures + 1
			e.retryAfter = p.retryInterval(e.failures)
			logger.Error(e.err, "Cannot start a storage backend", "storageBackend", name, "failures", e.failures, "retryAfter", e.retryAfter)
			e.err = &OpenError{Name: name, Err: e.err, Failures: e.failures, At: e.ended, RetryAfter: e.retryAfter}
		} else {
			logger.Info("Started a storage backend", "storageBackend", name)
		}
	}()
	return e
}

// retryInterval is the wait after the given number of failures in a row.
func (p *Pool) retryInterval(failures int) time.Duration {
	base := p.retry
	if base <= 0 {
		base = DefaultRetryInterval
	}
	limit := max(maxRetryInterval, base)
	d := base
	for i := 1; i < failures && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// openSafely opens a backend, with a panic while opening turned into the
// backend's failure: the storage libraries annex embeds run their start in
// this goroutine, and a backend must not take annex down.
func (p *Pool) openSafely(name string) (opened Backend, err error) {
	defer func() {
		if r := recover(); r != nil {
			opened = nil
			err = fmt.Errorf("StorageBackend %q: starting its storage failed: %v", name, r)
		}
	}()
	sb, err := p.lookup(name)
	if err != nil {
		return nil, err
	}
	return p.factory.Open(p.ctx, sb)
}
