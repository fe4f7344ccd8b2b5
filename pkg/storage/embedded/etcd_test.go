package embedded

import (
	"bytes"
	"context"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
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
