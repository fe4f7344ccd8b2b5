package apiserver

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/apiserver/pkg/server/healthz"
	"k8s.io/klog/v2"
)

// Behind a cluster, annex verifies client certificates against two CAs read
// from the cluster's extension-apiserver-authentication ConfigMap: the
// client CA, and the requestheader CA that vouches for the aggregator's
// front-proxy certificate (and so for the user it names in X-Remote-User).
// Each is read by an informer that starts only once the server serves, and
// until that informer has synced the CA is empty: a client certificate is
// then not verified at all, and a request the aggregator proxies for an
// admin is taken as system:anonymous and refused with 403. annex accepts no
// connection until both are loaded (caGatedListener); a client meanwhile
// waits in the listen queue, as before the port is served, instead of
// being refused as someone else.

const (
	// caLoadTimeout bounds the wait for the CAs: past it annex serves
	// anyway (a cluster may publish no client CA), not ready until the
	// requestheader CA is loaded.
	caLoadTimeout = 10 * time.Second
	// caLoadPoll is how often the wait looks at the CAs.
	caLoadPoll = 10 * time.Millisecond
)

// authenticationCAs are the CAs client certificates are verified against.
type authenticationCAs struct {
	// serving is the union that the TLS listener asks clients for: the
	// client CA, then the requestheader CA (or either alone).
	serving dynamiccertificates.CAContentProvider
	// requestHeader is the requestheader CA: nil without request-header
	// authentication (standalone mode).
	requestHeader dynamiccertificates.CAContentProvider
}

// missing names the CAs that have no content yet.
func (a authenticationCAs) missing() []string {
	var missing []string
	var requestHeader []byte
	if a.requestHeader != nil {
		requestHeader = bytes.TrimSpace(a.requestHeader.CurrentCABundleContent())
		if len(requestHeader) == 0 {
			missing = append(missing, "the requestheader CA ("+a.requestHeader.Name()+")")
		}
	}
	if a.serving == nil || (a.requestHeader != nil && a.serving.Name() == a.requestHeader.Name()) {
		return missing
	}
	// The union joins the content of its members; the client CA has none
	// while the union holds nothing besides the requestheader CA's.
	if bytes.Equal(bytes.TrimSpace(a.serving.CurrentCABundleContent()), requestHeader) {
		missing = append(missing, "the client CA ("+a.serving.Name()+")")
	}
	return missing
}

// requestHeaderCheck fails /readyz while the requestheader CA is empty:
// whatever the aggregator proxies would be anonymous. It matters only when
// the CAs took longer than caLoadTimeout to load.
func (a authenticationCAs) requestHeaderCheck() healthz.HealthChecker {
	return healthz.NamedCheck("requestheader-client-ca", func(*http.Request) error {
		if a.requestHeader != nil && len(bytes.TrimSpace(a.requestHeader.CurrentCABundleContent())) == 0 {
			return errors.New("the requestheader CA is not loaded yet: requests from the cluster's aggregator cannot be authenticated")
		}
		return nil
	})
}

// caGatedListener accepts no connection until missing reports nothing, or
// until timeout has passed since the first Accept (the server starts the CA
// informers as it starts serving), or until it is closed.
type caGatedListener struct {
	net.Listener
	missing func() []string
	timeout time.Duration
	poll    time.Duration

	wait      sync.Once
	closed    chan struct{}
	closeOnce sync.Once
}

func newCAGatedListener(l net.Listener, missing func() []string, timeout, poll time.Duration) *caGatedListener {
	return &caGatedListener{Listener: l, missing: missing, timeout: timeout, poll: poll, closed: make(chan struct{})}
}

// Accept waits for the CAs the first time, then accepts.
func (l *caGatedListener) Accept() (net.Conn, error) {
	l.wait.Do(l.waitForCAs)
	return l.Listener.Accept()
}

// Close closes the listener, ending a wait for the CAs.
func (l *caGatedListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

func (l *caGatedListener) waitForCAs() {
	logger := klog.Background()
	start := time.Now()
	timeout := time.NewTimer(l.timeout)
	defer timeout.Stop()
	ticker := time.NewTicker(l.poll)
	defer ticker.Stop()
	for {
		missing := l.missing()
		if len(missing) == 0 {
			logger.Info("The CAs of client certificates are loaded; accepting connections", "waited", time.Since(start).Round(time.Millisecond))
			return
		}
		select {
		case <-l.closed:
			return
		case <-timeout.C:
			logger.Info(fmt.Sprintf("Warning: %s still not loaded after %s; accepting connections anyway: until it is, "+
				"a client certificate is not verified and its requests are anonymous", strings.Join(missing, " and "), l.timeout))
			return
		case <-ticker.C:
		}
	}
}
