package apiserver

import (
	"crypto/x509"
	"errors"
	"net"
	"reflect"
	"sync"
	"testing"
	"time"

	"k8s.io/apiserver/pkg/server/dynamiccertificates"
)

// fakeCA is a CA provider whose content the test sets, as the cluster's
// ConfigMap arrives.
type fakeCA struct {
	name string
	mu   sync.Mutex
	pem  []byte
}

func (f *fakeCA) Name() string { return f.name }

func (f *fakeCA) CurrentCABundleContent() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pem
}

func (f *fakeCA) VerifyOptions() (x509.VerifyOptions, bool) {
	return x509.VerifyOptions{}, len(f.CurrentCABundleContent()) > 0
}

func (f *fakeCA) AddListener(dynamiccertificates.Listener) {}

func (f *fakeCA) load(pem string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pem = []byte(pem)
}

func TestAuthenticationCAsMissing(t *testing.T) {
	const clientMissing, requestHeaderMissing = "the client CA (client-ca,request-header)", "the requestheader CA (request-header)"
	for _, tc := range []struct {
		name          string
		client, rh    string // the content loaded; "" for none
		noClient      bool   // the serving CA is the requestheader CA alone
		noRH          bool   // no request-header authentication (standalone)
		want          []string
		wantReadyzErr bool
	}{
		{name: "nothing loaded", want: []string{requestHeaderMissing, clientMissing}, wantReadyzErr: true},
		{name: "the client CA only", client: "client PEM", want: []string{requestHeaderMissing}, wantReadyzErr: true},
		{name: "the requestheader CA only", rh: "front-proxy PEM", want: []string{clientMissing}},
		{name: "both", client: "client PEM", rh: "front-proxy PEM"},
		{name: "both the same CA", client: "one PEM\n", rh: "one PEM"},
		{name: "no client CA, the requestheader CA loaded", noClient: true, rh: "front-proxy PEM"},
		{name: "no client CA, nothing loaded", noClient: true, want: []string{requestHeaderMissing}, wantReadyzErr: true},
		{name: "standalone, the client CA from a file", noRH: true, client: "client PEM"},
		{name: "standalone, the client CA empty", noRH: true, want: []string{"the client CA (client-ca)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, rh := &fakeCA{name: "client-ca"}, &fakeCA{name: "request-header"}
			client.load(tc.client)
			rh.load(tc.rh)
			var cas authenticationCAs
			switch {
			case tc.noRH:
				cas.serving = client
			case tc.noClient:
				cas.serving, cas.requestHeader = rh, rh
			default:
				// As the delegated authentication options build it.
				cas.serving, cas.requestHeader = dynamiccertificates.NewUnionCAContentProvider(client, rh), rh
			}
			if got := cas.missing(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("missing() = %q, want %q", got, tc.want)
			}
			if err := cas.requestHeaderCheck().Check(nil); (err != nil) != tc.wantReadyzErr {
				t.Errorf("the readyz check says %v, want an error: %v", err, tc.wantReadyzErr)
			}
		})
	}
}

// accept runs l.Accept in the background.
func accept(l net.Listener) <-chan error {
	done := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if conn != nil {
			conn.Close()
		}
		done <- err
	}()
	return done
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// dial connects to l in the background: the connection waits in the listen
// queue until accepted.
func dial(t *testing.T, l net.Listener) {
	t.Helper()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
}

func TestCAGatedListener(t *testing.T) {
	t.Run("accepts once the CAs are loaded", func(t *testing.T) {
		var mu sync.Mutex
		missing := []string{"the requestheader CA"}
		l := newCAGatedListener(listen(t), func() []string {
			mu.Lock()
			defer mu.Unlock()
			return missing
		}, time.Hour, time.Millisecond)
		done := accept(l)
		dial(t, l)
		select {
		case err := <-done:
			t.Fatalf("a connection was accepted (%v) before the CAs were loaded", err)
		case <-time.After(200 * time.Millisecond):
		}
		mu.Lock()
		missing = nil
		mu.Unlock()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("accepting once the CAs are loaded: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no connection accepted after the CAs were loaded")
		}
		// Later connections are accepted at once.
		done = accept(l)
		dial(t, l)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
	t.Run("accepts after the timeout", func(t *testing.T) {
		l := newCAGatedListener(listen(t), func() []string { return []string{"the client CA"} }, 100*time.Millisecond, time.Millisecond)
		done := accept(l)
		dial(t, l)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("accepting after the timeout: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no connection accepted after the timeout")
		}
	})
	t.Run("closing ends the wait", func(t *testing.T) {
		l := newCAGatedListener(listen(t), func() []string { return []string{"the client CA"} }, time.Hour, time.Millisecond)
		done := accept(l)
		time.Sleep(50 * time.Millisecond)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Accept on a closed listener: %v, want net.ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Accept still waits after Close")
		}
		if err := l.Close(); err == nil {
			t.Error("closing twice: no error from the listener")
		}
	})
}
