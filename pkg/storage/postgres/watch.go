package postgres

import (
	"context"
	"database/sql"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/k3s-io/kine/pkg/server"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"
)

// watchServer serves the etcd Watch API from kine's backend in place of
// kine v0.16's own, whose progress notifications could overtake events.
//
// A progress notification at revision r tells a watch that it has received
// every event up to r. The apiserver's watch cache takes it as such: it
// answers a consistent read (a list or a get of the latest state) once its
// watch has reached the store's current revision through events or a
// notification. kine counted a watch as caught up when the watch's
// goroutine was idle, while events of the revisions it then announced were
// still on their way to it, through the channels between kine's poll and
// the watch; and it rewrote a notification's revision to the highest one
// any watch of the stream had sent. Under writes the caches then answered
// lists and gets older than a write acknowledged before them
// (TestProgressNeverOvertakesEvents: 2 runs of 3).
//
// Here each watch reads every event of the store, of all keys, in order,
// and sends those of its key range: so the revision it has passed, the
// last of every batch it has read, is known at any time. A notification
// at revision r is sent only when every watch it goes to has passed the
// last write at or below r (lastWrite asks the database: the revisions
// above it are unused ids kine filled, which no watch sees), and never
// with a revision below one a watch was already sent.
//
// The cost is that each watch reads the events of every key, and drops
// those of other keys: a few channel operations per event and watch.
type watchServer struct {
	backend        server.Backend
	notifyInterval time.Duration
	// lastWrite returns the revision of the last write at or below rev.
	lastWrite func(ctx context.Context, rev int64) (int64, error)
	logger    klog.Logger
}

// progressWait bounds how long a progress request waits for kine's poll
// and then the watches to pass the current revision; one that is not
// answered is dropped, as etcd drops one while its watches are not synced.
// The apiserver asks again every 100 ms while it waits. kine polls for
// other replicas' writes once a second: the bound leaves room for that.
const progressWait = 5 * time.Second

// kine keeps the apiserver's compaction key under another name and gives
// it back under its own in what it answers (kine's get.go and kv.go).
const (
	compactRevKey = "compact_rev_key"
	compactRevAPI = "compact_rev_key_apiserver"
)

// Watch implements etcdserverpb.WatchServer.
func (s *watchServer) Watch(ws etcdserverpb.Watch_WatchServer) error {
	ctx, cancel := context.WithCancel(ws.Context())
	st := &stream{server: s, ws: ws, ctx: ctx, watches: map[int64]*watch{}, advanced: make(chan struct{})}
	defer func() {
		cancel()
		st.wg.Wait()
	}()
	if s.notifyInterval > 0 {
		st.wg.Go(st.notifyPeriodically)
	}
	for {
		msg, err := ws.Recv()
		if err != nil {
			return err
		}
		switch {
		case msg.GetCreateRequest() != nil:
			st.create(msg.GetCreateRequest())
		case msg.GetCancelRequest() != nil:
			st.end(msg.GetCancelRequest().WatchId, 0, 0, nil)
		case msg.GetProgressRequest() != nil:
			st.requestProgress()
		}
	}
}

// stream is one Watch stream and its watches.
type stream struct {
	server *watchServer
	ws     etcdserverpb.Watch_WatchServer
	ctx    context.Context
	wg     sync.WaitGroup
	// nextID numbers the stream's watches from 0, as etcd does; only the
	// receiving goroutine uses it.
	nextID int64

	// mu guards what follows, and every Send: the stream's messages go
	// out one at a time, in the order their state was decided.
	mu      sync.Mutex
	watches map[int64]*watch
	// advanced is closed, and replaced, whenever a watch passes a
	// revision.
	advanced chan struct{}
	// progressWanted is set by a progress request; progressing while a
	// goroutine answers them.
	progressWanted, progressing bool
}

// watch is one watch of a stream.
type watch struct {
	id             int64
	key, end       string
	start          int64
	progressNotify bool
	cancel         context.CancelFunc

	// Guarded by the stream's mu. passed is the revision up to which the
	// watch has sent every event of its range; sent is the highest
	// revision in a message sent to it, and sentWrite the last write at
	// or below sent.
	passed, sent, sentWrite int64
}

// matches says whether key is in the watch's range, as etcd reads a range:
// no end is the key alone, an end of "\x00" every key from key on.
func (w *watch) matches(key string) bool {
	switch w.end {
	case "":
		return key == w.key
	case "\x00":
		return key >= w.key
	}
	return key >= w.key && key < w.end
}

func (st *stream) send(resp *etcdserverpb.WatchResponse) error {
	err := st.ws.Send(resp)
	if err != nil && !clientv3.IsConnCanceled(err) && !errors.Is(err, context.Canceled) {
		st.server.logger.V(2).Info("Could not send on a watch stream", "err", err)
	}
	return err
}

// create starts a watch. Its Created answer goes out before anything else
// is received: the client pairs them with its requests in order.
func (st *stream) create(r *etcdserverpb.WatchCreateRequest) {
	current, currentErr := st.server.backend.CurrentRevision(st.ctx)
	var invalid error
	switch {
	case r.WatchId != clientv3.AutoWatchID:
		invalid = errors.New("the server assigns watch ids")
	case r.StartRevision < 0:
		invalid = server.ErrCompacted
	}
	if invalid != nil {
		st.mu.Lock()
		defer st.mu.Unlock()
		_ = st.send(&etcdserverpb.WatchResponse{
			Header:       &etcdserverpb.ResponseHeader{Revision: current},
			WatchId:      clientv3.InvalidWatchID,
			Created:      true,
			Canceled:     true,
			CancelReason: invalid.Error(),
		})
		return
	}
	key, end := string(r.Key), string(r.RangeEnd)
	if key == compactRevKey && end == "" {
		key = compactRevAPI
	}
	start := r.StartRevision
	if start == 0 {
		// From now on, as etcd.
		start = current + 1
	}
	ctx, cancel := context.WithCancel(st.ctx)
	w := &watch{id: st.nextID, key: key, end: end, start: start, progressNotify: r.ProgressNotify, cancel: cancel, passed: start - 1}
	st.nextID++

	st.mu.Lock()
	st.watches[w.id] = w
	err := st.send(&etcdserverpb.WatchResponse{Header: &etcdserverpb.ResponseHeader{Revision: current}, WatchId: w.id, Created: true})
	st.mu.Unlock()
	if err != nil {
		cancel()
	}
	if currentErr != nil && r.StartRevision == 0 {
		// "Now" is not known: the watch ends, and its client starts another.
		st.end(w.id, 0, 0, currentErr)
		return
	}
	st.wg.Go(func() { st.run(ctx, w) })
}

// run sends the watch's events until it ends.
func (st *stream) run(ctx context.Context, w *watch) {
	wr := st.server.backend.Watch(ctx, "", "", w.start)
	if wr.CompactRevision != 0 {
		st.end(w.id, wr.CurrentRevision, wr.CompactRevision, server.ErrCompacted)
		return
	}
	for batch := range wr.Events {
		// Take what else is there, to send it in one message. kine may
		// share a batch's array between watches: a merge copies.
		for more := true; more; {
			select {
			case next, ok := <-wr.Events:
				batch = append(batch[:len(batch):len(batch)], next...)
				more = ok
			default:
				more = false
			}
		}
		st.deliver(w, batch)
	}
	var err error
	select {
	case err = <-wr.Errorc:
	default:
	}
	st.end(w.id, 0, 0, err)
}

// deliver sends the events of batch in the watch's range, and notes that
// the watch has passed the batch's last revision.
func (st *stream) deliver(w *watch, batch []*server.Event) {
	if len(batch) == 0 {
		return
	}
	last := batch[len(batch)-1].KV.ModRevision
	var events []*mvccpb.Event
	for _, e := range batch {
		if e.KV.ModRevision >= w.start && w.matches(e.KV.Key) {
			events = append(events, toEvent(e))
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.watches[w.id] != w {
		return
	}
	if len(events) > 0 {
		if err := st.send(&etcdserverpb.WatchResponse{Header: &etcdserverpb.ResponseHeader{Revision: last}, WatchId: w.id, Events: events}); err != nil {
			w.cancel()
			return
		}
		w.sent, w.sentWrite = last, last
	}
	w.passed = max(w.passed, last)
	close(st.advanced)
	st.advanced = make(chan struct{})
}

// end removes a watch and tells the client, once.
func (st *stream) end(id, revision, compactRevision int64, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	w, ok := st.watches[id]
	if !ok {
		return
	}
	delete(st.watches, id)
	w.cancel()
	reason := ""
	if err != nil {
		reason = err.Error()
	}
	_ = st.send(&etcdserverpb.WatchResponse{
		Header:          &etcdserverpb.ResponseHeader{Revision: revision},
		WatchId:         id,
		Canceled:        true,
		CancelReason:    reason,
		CompactRevision: compactRevision,
	})
}

// requestProgress answers a progress request from a goroutine of its own,
// which also answers those that come meanwhile.
func (st *stream) requestProgress() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.progressWanted = true
	if st.progressing {
		return
	}
	st.progressing = true
	st.wg.Go(func() {
		for {
			st.mu.Lock()
			if !st.progressWanted || st.ctx.Err() != nil {
				st.progressing = false
				st.mu.Unlock()
				return
			}
			st.progressWanted = false
			st.mu.Unlock()
			st.progressAll()
		}
	})
}

// current returns the store's current revision once kine's poll has
// passed it, and the last write at or below it.
func (st *stream) current(ctx context.Context) (rev, write int64, err error) {
	rev, err = st.server.backend.CurrentRevision(ctx)
	if err != nil {
		return 0, 0, err
	}
	synced := make(chan struct{})
	go func() {
		// kine's wait has no context: it ends when the poll passes rev.
		st.server.backend.WaitForSyncTo(rev)
		close(synced)
	}()
	select {
	case <-synced:
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	write, err = st.server.lastWrite(ctx, rev)
	return rev, write, err
}

// progressAll sends a progress notification to every watch of the stream
// (watch id -1), once they have all passed the store's current revision.
func (st *stream) progressAll() {
	ctx, cancel := context.WithTimeout(st.ctx, progressWait)
	defer cancel()
	rev, write, err := st.current(ctx)
	if err != nil {
		st.server.logger.V(4).Info("A watch progress request was not answered", "err", err)
		return
	}
	for {
		st.mu.Lock()
		// Never below a revision a watch was sent.
		header, target := rev, write
		for _, w := range st.watches {
			if w.sent > header {
				header, target = w.sent, w.sentWrite
			}
		}
		synced := true
		for _, w := range st.watches {
			synced = synced && w.passed >= target
		}
		if synced {
			if st.send(&etcdserverpb.WatchResponse{Header: &etcdserverpb.ResponseHeader{Revision: header}, WatchId: clientv3.InvalidWatchID}) == nil {
				for _, w := range st.watches {
					w.sent, w.sentWrite = header, target
				}
			}
			st.mu.Unlock()
			return
		}
		advanced := st.advanced
		st.mu.Unlock()
		select {
		case <-advanced:
		case <-ctx.Done():
			st.server.logger.V(4).Info("A watch progress request was not answered: the watches did not catch up", "revision", rev)
			return
		}
	}
}

// notifyPeriodically sends each watch that asked for them a progress
// notification every notifyInterval (and a jitter of up to a tenth), when
// it has passed the store's current revision.
func (st *stream) notifyPeriodically() {
	for {
		jitter := time.Duration(rand.Int64N(int64(st.server.notifyInterval)/10 + 1))
		timer := time.NewTimer(st.server.notifyInterval + jitter)
		select {
		case <-st.ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		ctx, cancel := context.WithTimeout(st.ctx, progressWait)
		rev, write, err := st.current(ctx)
		cancel()
		if err != nil {
			continue
		}
		st.mu.Lock()
		for _, w := range st.watches {
			if !w.progressNotify {
				continue
			}
			header, target := rev, write
			if w.sent > header {
				header, target = w.sent, w.sentWrite
			}
			if w.passed < target {
				continue
			}
			if st.send(&etcdserverpb.WatchResponse{Header: &etcdserverpb.ResponseHeader{Revision: header}, WatchId: w.id}) != nil {
				break
			}
			w.sent, w.sentWrite = header, target
		}
		st.mu.Unlock()
	}
}

func toEvent(e *server.Event) *mvccpb.Event {
	ev := &mvccpb.Event{Kv: toKV(e.KV)}
	if !e.Create {
		ev.PrevKv = toKV(e.PrevKV)
	}
	if e.Delete {
		ev.Type = mvccpb.DELETE
	}
	return ev
}

func toKV(kv *server.KeyValue) *mvccpb.KeyValue {
	if kv == nil {
		return nil
	}
	out := &mvccpb.KeyValue{
		Key:            []byte(kv.Key),
		Value:          kv.Value,
		Version:        kv.Version,
		Lease:          kv.Lease,
		CreateRevision: kv.CreateRevision,
		ModRevision:    kv.ModRevision,
	}
	if kv.Key == compactRevAPI {
		out.Key = []byte(compactRevKey)
		out.Version, out.Value = server.DecodeVersion(kv.Value)
	}
	return out
}

// lastWriteSQL is the highest id at or below $1 of a row that is not one
// of the rows kine (or the gap filler) writes into an unused id: the last
// write a watch can see. It reads the primary key backwards from $1 and
// stops at the first such row. kine's compaction keeps the latest 1000
// revisions, so the rows it removes are far behind any watch.
const lastWriteSQL = `SELECT COALESCE(MAX(id), 0) FROM kine WHERE id <= $1 AND name NOT LIKE 'gap-%'`

// watchProgressName is the application_name of the connection that
// reads the last write for watch progress notifications.
const watchProgressName = "annex-watch-progress"

// lastWriteReader reads the last write on a connection of its own.
type lastWriteReader struct{ db *sql.DB }

func (r lastWriteReader) lastWrite(ctx context.Context, rev int64) (int64, error) {
	var id int64
	err := r.db.QueryRowContext(ctx, lastWriteSQL, rev).Scan(&id)
	return id, err
}
