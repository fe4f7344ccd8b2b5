package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// syncBuffer is a bytes.Buffer safe for etcd's concurrent loggers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestStartServesAndStopsQuietly starts two embedded etcds at once, each on a
// port the kernel chose as it bound it, writes through each, and stops them:
// a clean stop logs no error.
func TestStartServesAndStopsQuietly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var logs [2]syncBuffer
	var etcds [2]*Etcd
	for i := range etcds {
		e, err := Start(ctx, Options{DataDir: t.TempDir(), LogOutput: &logs[i]})
		if err != nil {
			t.Fatal(err)
		}
		etcds[i] = e
		u, err := url.Parse(e.ClientURL)
		if err != nil {
			t.Fatal(err)
		}
		if u.Hostname() != "127.0.0.1" || u.Port() == "" || u.Port() == "0" {
			t.Fatalf("client URL %s: want 127.0.0.1 and the port etcd listens on", e.ClientURL)
		}
	}
	if etcds[0].ClientURL == etcds[1].ClientURL {
		t.Fatalf("both etcds report %s", etcds[0].ClientURL)
	}
	for i, e := range etcds {
		tlsConfig, err := e.ClientTLS()
		if err != nil {
			t.Fatal(err)
		}
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{e.ClientURL}, TLS: tlsConfig, DialTimeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Put(ctx, "/k", e.ClientURL); err != nil {
			t.Fatalf("etcd %d: put: %v", i, err)
		}
		got, err := c.Get(ctx, "/k")
		if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != e.ClientURL {
			t.Fatalf("etcd %d: get: %v %v", i, got, err)
		}
		c.Close()
	}
	for i, e := range etcds {
		e.Close()
		for _, line := range strings.Split(logs[i].String(), "\n") {
			if strings.Contains(line, `"level":"error"`) {
				t.Errorf("etcd %d logged an error at a clean stop: %s", i, line)
			}
		}
	}
}

// TestSpaceIsRecoveredAfterDeletes fills an embedded etcd to its quota: it
// raises its NOSPACE alarm and refuses puts. Deleting keys frees no space
// by itself, and etcd keeps refusing puts until the alarm is disarmed;
// annex compacts, defragments and disarms it, and a put is taken again.
// Deleting too little keeps the alarm, with the keys left readable.
func TestSpaceIsRecoveredAfterDeletes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const quota = 4 << 20
	e, err := Start(ctx, Options{DataDir: t.TempDir(), QuotaBackendBytes: quota, SpaceCheckInterval: 100 * time.Millisecond, LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	tlsConfig, err := e.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{e.ClientURL}, TLS: tlsConfig, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	value := strings.Repeat("x", 64<<10)
	var keys []string
	for i := 0; ; i++ {
		if i > 1000 {
			t.Fatalf("%d puts of 64 KiB did not reach a quota of %d bytes", i, quota)
		}
		key := fmt.Sprintf("/k/%04d", i)
		_, err := c.Put(ctx, key, value)
		if errors.Is(err, rpctypes.ErrNoSpace) {
			break
		}
		if err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		keys = append(keys, key)
	}
	t.Logf("NOSPACE after %d puts of 64 KiB", len(keys))
	putAgain := func(within time.Duration) error {
		var err error
		deadline := time.Now().Add(within)
		for time.Now().Before(deadline) {
			if _, err = c.Put(ctx, "/after", "1"); err == nil {
				return nil
			}
			time.Sleep(100 * time.Millisecond)
		}
		return err
	}

	// One key deleted: not enough room; the alarm stays.
	if _, err := c.Delete(ctx, keys[0]); err != nil {
		t.Fatalf("a delete under the alarm: %v", err)
	}
	if err := putAgain(2 * time.Second); !errors.Is(err, rpctypes.ErrNoSpace) {
		t.Errorf("after one key of %d was deleted, a put: %v, want NOSPACE still", len(keys), err)
	}
	// Half of them deleted: the alarm ends.
	for _, key := range keys[1 : len(keys)/2] {
		if _, err := c.Delete(ctx, key); err != nil {
			t.Fatalf("a delete under the alarm: %v", err)
		}
	}
	if err := putAgain(10 * time.Second); err != nil {
		t.Fatalf("after half the keys were deleted, a put is still refused: %v", err)
	}
	for _, key := range keys[len(keys)/2:] {
		got, err := c.Get(ctx, key)
		if err != nil || len(got.Kvs) != 1 || len(got.Kvs[0].Value) != len(value) {
			t.Fatalf("%s after the recovery: %v, %v", key, got, err)
		}
	}
}

func TestSpaceShortfall(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		free, db, quota, want int64
	}{
		{free: 10_000 * mib, db: 0, quota: 8192 * mib, want: 0},
		{free: 8192 * mib, db: 0, quota: 8192 * mib, want: 128 * mib},
		// The database on the volume already holds part of the quota.
		{free: 8000 * mib, db: 1000 * mib, quota: 8192 * mib, want: 0},
		{free: 64 * mib, db: 0, quota: 24 * mib, want: 88 * mib},
		{free: 0, db: 10 * mib, quota: 8 * mib, want: 126 * mib},
	} {
		if got := spaceShortfall(tc.free, tc.db, tc.quota); got != tc.want {
			t.Errorf("spaceShortfall(free %d MiB, db %d MiB, quota %d MiB) = %d MiB, want %d MiB", tc.free/mib, tc.db/mib, tc.quota/mib, got/mib, tc.want/mib)
		}
	}
}
