package storefill

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"annex.dev/annex/pkg/storage/compression"
)

func TestTemplate(t *testing.T) {
	const uid = "0b6f1a2c-3d4e-4f50-8a6b-7c8d9e0f1a2b"
	value := []byte(`{"apiVersion":"g/v1","kind":"K","metadata":{"name":"obj-0000000","namespace":"ns","uid":"` + uid +
		`","labels":{"a":"b"}},"spec":{"scope":{"name":"web-0"}}}` + "\n")
	tmpl, err := NewTemplate("/annex/g/ks/ns/obj-0000000", value, "obj-0000000", uid)
	if err != nil {
		t.Fatal(err)
	}
	key, got := tmpl.Variant("obj-0000042", "11111111-2222-4333-8444-555555555555")
	if key != "/annex/g/ks/ns/obj-0000042" {
		t.Errorf("key %q", key)
	}
	want := strings.NewReplacer("obj-0000000", "obj-0000042", uid, "11111111-2222-4333-8444-555555555555").Replace(string(value))
	if string(got) != want {
		t.Errorf("variant\n%s\nwant\n%s", got, want)
	}
	// The same with the uid before the name.
	swapped := []byte(`{"metadata":{"uid":"` + uid + `","name":"obj-0000000"}}`)
	tmpl, err = NewTemplate("/p/obj-0000000", swapped, "obj-0000000", uid)
	if err != nil {
		t.Fatal(err)
	}
	if _, got := tmpl.Variant("obj-1", "u"); string(got) != `{"metadata":{"uid":"u","name":"obj-1"}}` {
		t.Errorf("swapped variant %s", got)
	}

	for _, tc := range []struct {
		name, key string
		value     string
	}{
		{"name twice", "/p/obj-0000000", `{"name":"obj-0000000","uid":"` + uid + `","other":"obj-0000000"}`},
		{"no uid", "/p/obj-0000000", `{"name":"obj-0000000"}`},
		{"key of another name", "/p/obj-1", `{"name":"obj-0000000","uid":"` + uid + `"}`},
	} {
		if _, err := NewTemplate(tc.key, []byte(tc.value), "obj-0000000", uid); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

func TestSnapshotIndex(t *testing.T) {
	dir := t.TempDir()
	snap := filepath.Join(dir, "data", "member", "snap")
	if got := snapshotIndex(dir); got != 0 {
		t.Errorf("no snapshot: %d", got)
	}
	if err := os.MkdirAll(snap, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"0000000000000002-0000000000002711.snap", "0000000000000002-0000000000004e22.snap", "db"} {
		if err := os.WriteFile(filepath.Join(snap, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := snapshotIndex(dir); got != 0x4e22 {
		t.Errorf("got %d, want %d", got, 0x4e22)
	}
}

// The fill of an embedded etcd: the template is read back from what annex
// would have stored, compressed, and every variant is stored as annex
// stores it, once: a second fill over the same names fails. Settle moves
// etcd's snapshot past the fill.
func TestFillEmbedded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "etcd")
	s, err := OpenEmbedded(ctx, dir, 1<<30, os.Stderr, 64, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}()

	const prefix = "/annex/reports.example.com/reports/team-a/"
	name := func(i int) string { return fmt.Sprintf("r-%05d", i) }
	stored := func(name, uid string) string {
		return `{"apiVersion":"reports.example.com/v1","kind":"Report","metadata":{"creationTimestamp":"2026-01-02T03:04:05Z",` +
			`"managedFields":[{"manager":"test"}],"name":"` + name + `","namespace":"team-a","uid":"` + uid + `"},"spec":{"size":1}}` + "\n"
	}
	if _, err := s.Client.Put(ctx, prefix+name(0), string(compression.Compress([]byte(stored(name(0), "uid-0"))))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadTemplate(ctx, "team-a", name(0), "reports.example.com/v2"); err == nil {
		t.Error("a template of another apiVersion than the one stored was read")
	}
	tmpl, err := s.ReadTemplate(ctx, "team-a", name(0), "reports.example.com/v1")
	if err != nil {
		t.Fatal(err)
	}
	if f := tmpl.Facts(); f.Key != prefix+name(0) || f.ValueBytes != len(stored(name(0), "uid-0")) ||
		strings.Join(f.MetadataFields, ",") != "creationTimestamp,managedFields,name,namespace,uid" {
		t.Errorf("facts %+v", f)
	}

	const n = 500
	var done atomic.Int64
	r := s.Fill(ctx, tmpl, name, 1, n, time.Minute, &done)
	if r.Err != nil || r.TimedOut || r.Objects != n-1 || done.Load() != n-1 {
		t.Fatalf("fill: %+v, %d counted", r, done.Load())
	}
	got, err := s.Client.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Kvs) != n {
		t.Fatalf("the store holds %d objects, want %d", len(got.Kvs), n)
	}
	uids := map[string]bool{}
	for i, kv := range got.Kvs {
		value, compressed, err := compression.Decompress(kv.Value)
		if err != nil || !compressed {
			t.Fatalf("%s: compressed %v, %v", kv.Key, compressed, err)
		}
		if string(kv.Key) != prefix+name(i) {
			t.Fatalf("key %d is %s, want %s", i, kv.Key, prefix+name(i))
		}
		_, uid, _ := strings.Cut(string(value), `"uid":"`)
		uid, _, _ = strings.Cut(uid, `"`)
		if string(value) != stored(name(i), uid) || uids[uid] {
			t.Fatalf("%s holds %s", kv.Key, value)
		}
		uids[uid] = true
	}

	if r := s.Fill(ctx, tmpl, name, n-10, n+10, time.Minute, nil); r.Err == nil || r.Objects >= 20 {
		t.Errorf("a fill over existing objects: %+v", r)
	}

	what, err := s.Settle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	status, err := s.Client.Status(ctx, s.Client.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	if idx := snapshotIndex(dir); idx == 0 || idx > status.RaftIndex {
		t.Errorf("after settling (%s), etcd's snapshot is at raft index %d, its last entry %d", what, idx, status.RaftIndex)
	}
}
