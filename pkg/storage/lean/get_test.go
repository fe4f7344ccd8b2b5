package lean

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A get shares a read of the store's revision with the gets that call at
// the same time, but never takes a read that started before it called:
// that read could miss a write acknowledged before the get.
func TestRevisionReadsAreSharedButNeverEarlier(t *testing.T) {
	var (
		r     revisions
		clock atomic.Uint64
		reads atomic.Int64
	)
	read := func(context.Context) (uint64, error) {
		reads.Add(1)
		started := clock.Add(1)
		time.Sleep(5 * time.Millisecond)
		return started, nil
	}
	const callers = 50
	var wg sync.WaitGroup
	errs := make(chan string, callers)
	for range callers {
		wg.Go(func() {
			called := clock.Add(1)
			started, err := r.current(context.Background(), read)
			if err != nil {
				errs <- err.Error()
			} else if started < called {
				errs <- "a caller took a read that started before it called"
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := reads.Load(); n > callers/2 {
		t.Errorf("%d callers at once made %d reads: they were not shared", callers, n)
	} else {
		t.Logf("%d callers at once made %d reads", callers, n)
	}
}

// A caller whose context ends stops waiting; the read goes on for the
// others.
func TestRevisionReadOutlivesACaller(t *testing.T) {
	var r revisions
	release := make(chan struct{})
	read := func(context.Context) (uint64, error) {
		<-release
		return 7, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.current(ctx, read); err == nil {
		t.Fatal("a caller whose context ended got an answer")
	}
	done := make(chan uint64)
	go func() {
		rv, _ := r.current(context.Background(), read)
		done <- rv
	}()
	close(release)
	if rv := <-done; rv != 7 {
		t.Fatalf("got revision %d, want 7", rv)
	}
}
