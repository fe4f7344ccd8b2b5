package unavailable

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apiserver/pkg/endpoints/handlers/responsewriters"
	"k8s.io/apiserver/pkg/storage"
)

var ledgers = schema.GroupResource{Group: "history.example.com", Resource: "ledgers"}

// transportRefused is what the etcd client returns when no member accepts
// a connection: it names the address.
var transportRefused = status.Error(codes.Unavailable,
	`connection error: desc = "transport: Error while dialing: dial tcp 10.0.0.7:2379: connect: connection refused"`)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want Kind
	}{
		{"nil", nil, Other},
		{"kine: the database was not reached", NotApplied(), NotDone},
		{"kine: the database was lost during the request", MaybeApplied(), Unknown},
		// How the etcd client returns them: rpctypes.Error turns a known
		// status into an EtcdError.
		{"etcd: no leader", rpctypes.Error(rpctypes.ErrGRPCNoLeader), Unknown},
		{"etcd: no leader, as a status", rpctypes.ErrGRPCNoLeader, Unknown},
		{"etcd: leader changed", rpctypes.Error(rpctypes.ErrGRPCLeaderChanged), Unknown},
		{"etcd: request timed out", rpctypes.Error(rpctypes.ErrGRPCTimeout), Unknown},
		{"etcd: server stopped", rpctypes.Error(rpctypes.ErrGRPCStopped), Unknown},
		{"etcd: too many requests", rpctypes.Error(rpctypes.ErrGRPCRequestTooManyRequests), NotDone},
		{"etcd: NOSPACE", rpctypes.Error(rpctypes.ErrGRPCNoSpace), NoSpace},
		{"kine: the database is out of space", OutOfSpace(), NoSpace},
		{"etcd client: no member reachable", transportRefused, NotDone},
		{"etcd client: no connection", status.Error(codes.Unavailable, "there is no connection available"), NotDone},
		{"etcd client: connection lost", status.Error(codes.Unavailable, "transport is closing"), Unknown},
		{"gRPC deadline", status.Error(codes.DeadlineExceeded, "context deadline exceeded"), Unknown},
		{"context deadline", context.DeadlineExceeded, Unknown},
		{"wrapped by the store", storage.NewInternalError(fmt.Errorf("reading: %w", NotApplied())), NotDone},
		{"client gone", context.Canceled, Other},
		{"a status already", apierrors.NewNotFound(ledgers, "l0"), Other},
		{"a storage error", storage.NewKeyNotFoundError("/l0", 0), Other},
		{"etcd: compacted", rpctypes.Error(rpctypes.ErrGRPCCompacted), Other},
		{"etcd: request too large", rpctypes.Error(rpctypes.ErrGRPCRequestTooLarge), Other},
		{"another error", errors.New("something else"), Other},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Classify(tc.err); got != tc.want {
				t.Errorf("Classify(%v) = %s, want %s", tc.err, got, tc.want)
			}
		})
	}
}

// answer is the response a client gets for err, as the apiserver writes it.
func answer(t *testing.T, err error) *httptest.ResponseRecorder {
	t.Helper()
	scheme := runtime.NewScheme()
	metav1.AddToGroupVersion(scheme, metav1.SchemeGroupVersion)
	codecs := serializer.NewCodecFactory(scheme)
	req := httptest.NewRequest(http.MethodPost, "/apis/history.example.com/v1/ledgers", nil)
	req.Header.Set("Accept", "application/json")
	w := httptest.NewRecorder()
	responsewriters.ErrorNegotiated(err, codecs, schema.GroupVersion{Group: ledgers.Group, Version: "v1"}, w, req)
	return w
}

func TestConvert(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error
		write      bool
		code       int
		retryAfter string
		says       string
	}{
		{"read, database not reached", NotApplied(), false, 503, "1", "unavailable; try again later"},
		{"write, database not reached", NotApplied(), true, 503, "1", "the write was not applied"},
		{"read, database lost during it", MaybeApplied(), false, 503, "1", "unavailable; try again later"},
		{"write, database lost during it", MaybeApplied(), true, 503, "", "may have been applied"},
		{"read, no etcd member reachable", transportRefused, false, 503, "1", "unavailable"},
		{"write, no etcd member reachable", transportRefused, true, 503, "1", "not applied"},
		{"write, etcd without a leader", rpctypes.Error(rpctypes.ErrGRPCNoLeader), true, 503, "", "may have been applied"},
		{"read, etcd without a leader", rpctypes.Error(rpctypes.ErrGRPCNoLeader), false, 503, "1", "unavailable"},
		{"write, deadline", context.DeadlineExceeded, true, 503, "", "may have been applied"},
		{"write, etcd NOSPACE", rpctypes.Error(rpctypes.ErrGRPCNoSpace), true, 507, "", "out of space"},
		{"write, database out of space", OutOfSpace(), true, 507, "", "out of space"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			converted := Convert(tc.err, ledgers, tc.write)
			if !apierrors.IsServiceUnavailable(converted) && tc.code == 503 {
				t.Errorf("Convert(%v) = %v, not a ServiceUnavailable", tc.err, converted)
			}
			w := answer(t, converted)
			if w.Code != tc.code {
				t.Errorf("code %d, want %d", w.Code, tc.code)
			}
			if got := w.Header().Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, tc.retryAfter)
			}
			body := w.Body.String()
			if !strings.Contains(body, tc.says) || !strings.Contains(body, ledgers.String()) {
				t.Errorf("the answer does not say %q of %s: %s", tc.says, ledgers, body)
			}
			for _, secret := range []string{"10.0.0.7", "2379", "etcdserver", "annex: the store", "deadline"} {
				if strings.Contains(body, secret) {
					t.Errorf("the answer names %q: %s", secret, body)
				}
			}
		})
	}
	// An error of another kind is left as it is.
	notFound := apierrors.NewNotFound(ledgers, "l0")
	if got := Convert(notFound, ledgers, false); got != notFound {
		t.Errorf("Convert(NotFound) = %v", got)
	}
	other := errors.New("something else")
	if got := Convert(other, ledgers, true); got != other {
		t.Errorf("Convert(other) = %v", got)
	}
}

// failing is a storage whose every call fails with err.
type failing struct {
	storage.Interface
	err error
}

func (f failing) Create(context.Context, string, runtime.Object, runtime.Object, uint64) error {
	return f.err
}
func (f failing) Get(context.Context, string, storage.GetOptions, runtime.Object) error { return f.err }
func (f failing) GuaranteedUpdate(context.Context, string, runtime.Object, bool, *storage.Preconditions, storage.UpdateFunc, runtime.Object) error {
	return f.err
}

func TestDecoratedStorage(t *testing.T) {
	s := &converting{Interface: failing{err: MaybeApplied()}, resource: ledgers, log: NewRateLimit(0)}
	ctx := context.Background()
	get := s.Get(ctx, "/l0", storage.GetOptions{}, nil)
	if _, delay := apierrors.SuggestsClientDelay(get); !apierrors.IsServiceUnavailable(get) || !delay {
		t.Errorf("get: %v, want a 503 with Retry-After", get)
	}
	for what, err := range map[string]error{
		"create": s.Create(ctx, "/l0", nil, nil, 0),
		"update": s.GuaranteedUpdate(ctx, "/l0", nil, false, nil, nil, nil),
	} {
		if _, delay := apierrors.SuggestsClientDelay(err); !apierrors.IsServiceUnavailable(err) || delay {
			t.Errorf("%s: %v, want a 503 without Retry-After", what, err)
		}
	}
}

func TestRateLimit(t *testing.T) {
	r := NewRateLimit(1 << 62)
	if n, ok := r.Allow(); !ok || n != 0 {
		t.Fatalf("first: %d, %v", n, ok)
	}
	for range 3 {
		if _, ok := r.Allow(); ok {
			t.Fatal("let through within the interval")
		}
	}
	r.last = r.last.Add(-(1 << 62))
	if n, ok := r.Allow(); !ok || n != 3 {
		t.Fatalf("after the interval: %d, %v; want 3, true", n, ok)
	}
}
