package lean

import (
	"context"
	"errors"
	"io"
	"strconv"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/storage"
)

// EncodedObject is one object read from the lean cache as its encoding, to
// be written without decoding it.
type EncodedObject struct {
	object Object
	s      *Storage
}

var _ runtime.Object = &EncodedObject{}

// GetEncoded reads the object at key from the cache as a get of the latest
// reads it from the store: a state at least as new as every write
// acknowledged before the call. It asks the store for its current
// revision, as the cache's consistent lists do, and answers from the cache
// only once the cache's watch has brought it that revision (an event or a
// progress notification). A cache behind it is asked for a progress
// notification, and waited for up to wait: a store that moves on through
// writes of other keys, or of other types, is a few milliseconds ahead of
// the cache's watch at any time. When the cache does not catch up within
// wait, and when it does not hold the object, GetEncoded returns nil, and
// stale in the first case: the caller reads the store as before.
func (s *Storage) GetEncoded(ctx context.Context, key string, wait time.Duration) (obj *EncodedObject, stale bool, err error) {
	current, err := s.revisions.current(ctx, s.currentRevision)
	if err != nil {
		return nil, false, err
	}
	if s.received.Load() < current {
		s.requestProgress()
		if !s.awaitReceived(ctx, current, wait) {
			return nil, true, nil
		}
	}
	l := &ObjectList{}
	opts := storage.ListOptions{
		ResourceVersion:      strconv.FormatUint(current, 10),
		ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan,
		Predicate:            s.Predicate(labels.Everything(), fields.Everything()),
	}
	if err := s.cacher.GetList(ctx, key, opts, l); err != nil {
		// A cache that is not ready: the store answers.
		return nil, false, nil
	}
	if len(l.Items) != 1 {
		return nil, false, nil
	}
	if err := s.decodeDeferred(l.Items); err != nil {
		return nil, false, err
	}
	return &EncodedObject{object: l.Items[0], s: s}, false, nil
}

// receive notes the resourceVersion of an event or progress notification
// the cache's watch delivered.
func (s *Storage) receive(ev watch.Event) {
	accessor, err := meta.Accessor(ev.Object)
	if err != nil {
		return
	}
	rv, err := strconv.ParseUint(accessor.GetResourceVersion(), 10, 64)
	if err != nil {
		return
	}
	for {
		seen := s.received.Load()
		if rv <= seen {
			return
		}
		if s.received.CompareAndSwap(seen, rv) {
			break
		}
	}
	if s.receivedWaiters.Load() > 0 {
		s.receivedMu.Lock()
		if s.receivedCh != nil {
			close(s.receivedCh)
			s.receivedCh = nil
		}
		s.receivedMu.Unlock()
	}
}

// awaitReceived waits, up to wait, until the cache's watch has delivered
// revision rev, and says whether it has.
func (s *Storage) awaitReceived(ctx context.Context, rev uint64, wait time.Duration) bool {
	if wait <= 0 {
		return false
	}
	s.receivedWaiters.Add(1)
	defer s.receivedWaiters.Add(-1)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		// The channel is taken before received is read: receive advances
		// received, then closes the channel of those who wait.
		s.receivedMu.Lock()
		if s.receivedCh == nil {
			s.receivedCh = make(chan struct{})
		}
		advanced := s.receivedCh
		s.receivedMu.Unlock()
		if s.received.Load() >= rev {
			return true
		}
		select {
		case <-advanced:
			// Not far enough yet: a progress notification asked for
			// before rev was read may have brought less than rev.
			s.requestProgress()
		case <-timer.C:
			return s.received.Load() >= rev
		case <-ctx.Done():
			return false
		}
	}
}

// requestProgress asks the store, at most once at a time, for a progress
// notification on the cache's watch.
func (s *Storage) requestProgress() {
	if !s.progressing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.progressing.Store(false)
		_ = s.raw.RequestWatchProgress(context.Background())
	}()
}

// writeJSON writes the object as the apiserver's JSON serializer writes it:
// its encoding, and a newline.
func (o *EncodedObject) writeJSON(w io.Writer) error {
	if err := o.object.writeJSON(o.s, w); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

// GetObjectKind implements runtime.Object.
func (o *EncodedObject) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject implements runtime.Object. The encoding is never changed,
// so the copy shares it.
func (o *EncodedObject) DeepCopyObject() runtime.Object {
	return &EncodedObject{object: o.object, s: o.s}
}

var errNotEncoded = errors.New("the lean cache's JSON encoder writes only its own lists and objects")

// encodeEncoded writes obj, an *EncodedList or an *EncodedObject.
func encodeEncoded(obj runtime.Object, w io.Writer) error {
	switch obj := obj.(type) {
	case *EncodedList:
		return obj.writeJSON(w)
	case *EncodedObject:
		return obj.writeJSON(w)
	}
	return errNotEncoded
}

// ResourceVersion is the object's resourceVersion.
func (o *EncodedObject) ResourceVersion() string { return o.object.ResourceVersion }

// revisions shares the reads of the store's current revision between the
// gets that need one at the same time. A get must have a read that started
// after it did (an earlier one may miss a write acknowledged before the
// get); so a get joins the next read, which starts once the read in flight,
// if any, has returned, and which every get that comes meanwhile joins too.
// At most one read is in flight, and the gets of a busy type share them.
type revisions struct {
	// mu guards next, the read not started yet.
	mu   sync.Mutex
	next *revisionRead
	// reading is held by the read in flight.
	reading sync.Mutex
}

type revisionRead struct {
	done chan struct{}
	rv   uint64
	err  error
}

// revisionReadTimeout bounds a shared read, which no one caller's context
// bounds.
const revisionReadTimeout = 30 * time.Second

// current returns the store's current revision, read by read after the
// call.
func (r *revisions) current(ctx context.Context, read func(context.Context) (uint64, error)) (uint64, error) {
	r.mu.Lock()
	next := r.next
	if next == nil {
		next = &revisionRead{done: make(chan struct{})}
		r.next = next
		go r.run(next, read)
	}
	r.mu.Unlock()
	select {
	case <-next.done:
		return next.rv, next.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// run reads for next once the read in flight has returned; the gets that
// joined next until then all called before this read starts.
func (r *revisions) run(next *revisionRead, read func(context.Context) (uint64, error)) {
	r.reading.Lock()
	defer r.reading.Unlock()
	r.mu.Lock()
	r.next = nil
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), revisionReadTimeout)
	defer cancel()
	next.rv, next.err = read(ctx)
	close(next.done)
}
