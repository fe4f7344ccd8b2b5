package postgres

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/k3s-io/kine/pkg/server"
)

// laggingBackend is kine as one replica sees a database another replica
// writes to: its poll has reached revision polled, the database is at
// database.
type laggingBackend struct {
	server.Backend
	polled, database int64
	objects          map[string]*server.KeyValue
}

func (b *laggingBackend) Get(_ context.Context, key string, _ int64, _ bool) (int64, *server.KeyValue, error) {
	if kv := b.objects[key]; kv != nil {
		return b.database, kv, nil
	}
	return b.polled, nil, nil
}

func (b *laggingBackend) List(_ context.Context, key, _ string, _, _ int64, _ bool) (int64, []*server.KeyValue, error) {
	if kv := b.objects[key]; kv != nil {
		return b.database, []*server.KeyValue{kv}, nil
	}
	return b.polled, nil, nil
}

func (b *laggingBackend) CurrentRevision(context.Context) (int64, error) { return b.polled, nil }

func (b *laggingBackend) Count(_ context.Context, key, end string, _ int64) (int64, int64, error) {
	// As PostgreSQL does.
	if strings.Contains(key+end, "\x00") {
		return 0, 0, errors.New("invalid byte sequence for encoding \"UTF8\": 0x00")
	}
	return b.database, 0, nil
}

// TestEmptyReadsCarryTheDatabaseRevision: a read of the latest revision
// that finds nothing, and a progress notification, carry the database's
// revision, not the poll's; a read at a given revision is left alone.
func TestEmptyReadsCarryTheDatabaseRevision(t *testing.T) {
	lag := &laggingBackend{polled: 30, database: 33, objects: map[string]*server.KeyValue{"/found": {Key: "/found", ModRevision: 20}}}
	b := databaseRevisions{lag}
	ctx := context.Background()
	for _, tc := range []struct {
		what     string
		read     func() (int64, error)
		revision int64
	}{
		{"a get of a missing key", func() (int64, error) { rev, _, err := b.Get(ctx, "/missing", 0, false); return rev, err }, 33},
		{"a list from past a key that finds nothing", func() (int64, error) {
			rev, _, err := b.List(ctx, "/missing\x00", "/missinh", 0, 0, false)
			return rev, err
		}, 33},
		{"a get of a key", func() (int64, error) { rev, _, err := b.Get(ctx, "/found", 0, false); return rev, err }, 33},
		{"a list that finds nothing", func() (int64, error) {
			rev, _, err := b.List(ctx, "/missing", "/missinh", 0, 0, false)
			return rev, err
		}, 33},
		{"a list that finds something", func() (int64, error) { rev, _, err := b.List(ctx, "/found", "/foune", 0, 0, false); return rev, err }, 33},
		{"the revision of a progress notification", func() (int64, error) { return b.CurrentRevision(ctx) }, 33},
		{"a get of a missing key at a revision", func() (int64, error) { rev, _, err := b.Get(ctx, "/missing", 25, false); return rev, err }, 30},
	} {
		rev, err := tc.read()
		if err != nil || rev != tc.revision {
			t.Errorf("%s: revision %d (%v), want %d", tc.what, rev, err, tc.revision)
		}
	}
}

// racedBackend is kine after a delete that lost a race: its Delete answers
// with the key's latest row, deleted or not, and Get with the live state.
type racedBackend struct {
	server.Backend
	latest *server.KeyValue
	live   *server.KeyValue
	gets   int
}

func (b *racedBackend) Delete(context.Context, string, int64) (int64, *server.KeyValue, bool, error) {
	return 12, b.latest, false, nil
}

func (b *racedBackend) Get(context.Context, string, int64, bool) (int64, *server.KeyValue, error) {
	b.gets++
	return 13, b.live, nil
}

// TestALostDeleteOfADeletedKeyFindsNothing: a delete that lost a race to
// another replica's deletion answers that the key is gone, not with the
// deletion's row as the object; one that lost to a write answers with the
// object that write left, as kine does.
func TestALostDeleteOfADeletedKeyFindsNothing(t *testing.T) {
	ctx := context.Background()
	object := &server.KeyValue{Key: "/k", ModRevision: 11, Value: []byte(`{"kind":"Ledger"}`)}
	deletion := &server.KeyValue{Key: "/k", ModRevision: 11}
	for _, tc := range []struct {
		what         string
		latest, live *server.KeyValue
		want         *server.KeyValue
	}{
		{"lost to a deletion", deletion, nil, nil},
		{"lost to a deletion, then a create", deletion, object, object},
		{"lost to an update", object, object, object},
	} {
		b := &racedBackend{latest: tc.latest, live: tc.live}
		_, kv, deleted, err := lostDeletes{b}.Delete(ctx, "/k", 10)
		if err != nil || deleted || kv != tc.want {
			t.Errorf("%s: answered %+v, deleted %v, %v; want %+v, not deleted", tc.what, kv, deleted, err, tc.want)
		}
		if tc.latest == object && b.gets != 0 {
			t.Errorf("%s: the key was read again", tc.what)
		}
	}
}
