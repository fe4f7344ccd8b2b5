// Package unavailable answers a request that its store could not serve, the
// store being down, unreachable, leaderless or out of space, with a status
// a client can act on, and that names nothing of the store.
//
// Without it the upstream etcd3 store returns the store client's error as it
// is, and the request chain answers it with a 500 carrying the error's text:
// for PostgreSQL (through kine) the driver's "failed to connect to
// `user=... database=...`: host:port ...", for an etcd that cannot be
// reached the gRPC transport's "dial tcp host:port: connect: connection
// refused". The client learns the database's user, name and address, and
// not that it may try again.
//
// Decorate wraps a resource's storage so that such an error becomes:
//
//   - 503 ServiceUnavailable with Retry-After (RetryAfterSeconds) when
//     sending the request again is safe: every read, and a write the store
//     refused before doing anything (no connection to the database, a
//     connection refused, etcd's "too many requests"). client-go resends such
//     requests by itself (up to 10 times), as it does a 429;
//   - 503 ServiceUnavailable without Retry-After for a write whose outcome is
//     unknown (the connection to the database was lost during the write,
//     etcd timed out or lost its leader while proposing it): it may have
//     been applied, and client-go would resend it blindly, so that a create
//     applied the first time would come back AlreadyExists and an update
//     Conflict. The message says the write may have been applied;
//   - 507 Insufficient Storage, without Retry-After, for etcd's NOSPACE
//     alarm (writes are refused until an operator frees space: compaction,
//     defragmentation, disarming the alarm; reads go on) and for a write
//     PostgreSQL refused with disk_full.
//
// The message names the resource and says what happened, never the store's
// address, user or database; the store's own error is logged, at most once
// a second for each resource (RateLimit), with the count of those not
// logged. The PostgreSQL store classifies the driver's errors where they are
// produced, in kine's backend (package postgres), and sends the statuses
// NotApplied, MaybeApplied and OutOfSpace, which Decorate recognizes.
package unavailable

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// RetryAfterSeconds is the Retry-After of a request that is safe to send
// again.
const RetryAfterSeconds = 1

// StatusInsufficientStorage is the code of a write refused for want of
// space (RFC 4918).
const StatusInsufficientStorage = http.StatusInsufficientStorage

// StatusReasonInsufficientStorage is the reason of a 507.
const StatusReasonInsufficientStorage metav1.StatusReason = "InsufficientStorage"

// The descriptions of the gRPC statuses by which a store served through the
// etcd API (kine) says that it could not reach its database, before or
// during a request.
const (
	notAppliedDesc   = "annex: the store is unavailable; the request was not applied"
	maybeAppliedDesc = "annex: the store failed during the request; a write may have been applied"
	outOfSpaceDesc   = "annex: the store is out of space; the write was not applied"
)

// NotApplied is the error a store served through the etcd API returns when
// it could not reach its database before it did anything: the request may
// be sent again.
//
// Its code is Unknown, not Unavailable: the etcd client resends a read
// answered Unavailable by itself, 100 times 25 ms apart, which would hold
// every read for 2.5 s before the client is told; the client's own resend,
// after Retry-After, is enough.
func NotApplied() error { return status.Error(codes.Unknown, notAppliedDesc) }

// MaybeApplied is the error a store served through the etcd API returns when
// it lost its database during a request: a write may have been applied. Its
// code is Unknown, as NotApplied's.
func MaybeApplied() error { return status.Error(codes.Unknown, maybeAppliedDesc) }

// OutOfSpace is the error a store served through the etcd API returns when
// its database refused a write for want of space.
func OutOfSpace() error { return status.Error(codes.ResourceExhausted, outOfSpaceDesc) }

// Kind is what a store's error says about the store.
type Kind int

const (
	// Other is an error of another kind: it is left as it is.
	Other Kind = iota
	// NotDone: the store was unavailable and did nothing.
	NotDone
	// Unknown: the store became unavailable during the request, or did not
	// answer in time; a write may have been applied.
	Unknown
	// NoSpace: the store refuses writes for want of space.
	NoSpace
)

func (k Kind) String() string {
	switch k {
	case NotDone:
		return "unavailable, nothing done"
	case Unknown:
		return "unavailable during the request"
	case NoSpace:
		return "out of space"
	}
	return "other"
}

// Classify says what err, returned by a store's client, says about the
// store.
func Classify(err error) Kind {
	if err == nil {
		return Other
	}
	var apiStatus apierrors.APIStatus
	if errors.As(err, &apiStatus) {
		return Other
	}
	var storageErr *storage.StorageError
	if errors.As(err, &storageErr) {
		return Other
	}
	if errors.Is(err, context.Canceled) {
		// The client went away; it does not read the answer.
		return Other
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return Unknown
	}
	code, desc, ok := grpcStatus(err)
	if !ok {
		return Other
	}
	switch desc {
	case notAppliedDesc:
		return NotDone
	case maybeAppliedDesc:
		return Unknown
	case rpctypes.ErrorDesc(rpctypes.ErrGRPCNoSpace), outOfSpaceDesc:
		return NoSpace
	case rpctypes.ErrorDesc(rpctypes.ErrGRPCRequestTooManyRequests):
		// etcd refuses it before proposing it.
		return NotDone
	}
	switch code {
	case codes.DeadlineExceeded:
		return Unknown
	case codes.Unavailable:
		if strings.HasPrefix(desc, "etcdserver: ") {
			// No leader, leader changed, request timed out, server stopped:
			// a proposal may have been made.
			return Unknown
		}
		// The transport's: the client has no connection to any member.
		for _, s := range []string{"connection refused", "there is no address available", "there is no connection available",
			"Error while dialing", "no such file or directory"} {
			if strings.Contains(desc, s) {
				return NotDone
			}
		}
		return Unknown
	}
	return Other
}

// grpcStatus finds the gRPC code and description of err: an etcd client's
// error (rpctypes.EtcdError) or a gRPC status, wrapped or not.
func grpcStatus(err error) (codes.Code, string, bool) {
	var etcdErr rpctypes.EtcdError
	if errors.As(err, &etcdErr) {
		return etcdErr.Code(), etcdErr.Error(), true
	}
	var grpcErr interface{ GRPCStatus() *status.Status }
	if errors.As(err, &grpcErr) {
		if s := grpcErr.GRPCStatus(); s != nil {
			return s.Code(), s.Message(), true
		}
	}
	return codes.OK, "", false
}

// Convert returns the status a client gets for err, returned by the store of
// resource for a read (write false) or a write; err itself when it says
// nothing of the store's availability.
func Convert(err error, resource schema.GroupResource, write bool) error {
	return convert(Classify(err), err, resource, write)
}

func convert(kind Kind, err error, resource schema.GroupResource, write bool) error {
	details := &metav1.StatusDetails{Group: resource.Group, Kind: resource.Resource}
	status := metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusServiceUnavailable,
		Reason:  metav1.StatusReasonServiceUnavailable,
		Details: details,
	}
	switch {
	case kind == NoSpace && write:
		status.Code, status.Reason = StatusInsufficientStorage, StatusReasonInsufficientStorage
		status.Message = fmt.Sprintf("the store of %s is out of space: writes are refused until space is freed", resource)
	case kind == NoSpace, kind == NotDone, kind == Unknown && !write:
		details.RetryAfterSeconds = RetryAfterSeconds
		if write {
			status.Message = fmt.Sprintf("the store of %s is unavailable: the write was not applied; try again later", resource)
		} else {
			status.Message = fmt.Sprintf("the store of %s is unavailable; try again later", resource)
		}
	case kind == Unknown:
		status.Message = fmt.Sprintf("the store of %s became unavailable during the write, which may have been applied: "+
			"read the object before writing it again", resource)
	default:
		return err
	}
	return &apierrors.StatusError{ErrStatus: status}
}

// Decorate returns decorator with the errors of the storage it makes
// converted (Convert), and logged (RateLimit). A nil decorator is
// generic.UndecoratedStorage.
func Decorate(decorator generic.StorageDecorator) generic.StorageDecorator {
	if decorator == nil {
		decorator = generic.UndecoratedStorage
	}
	return func(config *storagebackend.ConfigForResource, resourcePrefix string, keyFunc func(runtime.Object) (string, error),
		newFunc, newListFunc func() runtime.Object, getAttrsFunc storage.AttrFunc, triggerFuncs storage.IndexerFuncs,
		indexers *cache.Indexers) (storage.Interface, factory.DestroyFunc, error) {
		s, destroy, err := decorator(config, resourcePrefix, keyFunc, newFunc, newListFunc, getAttrsFunc, triggerFuncs, indexers)
		if err != nil {
			return s, destroy, err
		}
		return &converting{Interface: s, resource: config.GroupResource, log: NewRateLimit(time.Second)}, destroy, nil
	}
}

// RESTOptionsGetter returns getter with the storage of every resource it
// configures decorated with Decorate.
func RESTOptionsGetter(getter generic.RESTOptionsGetter) generic.RESTOptionsGetter {
	return restOptionsGetter{getter}
}

type restOptionsGetter struct{ generic.RESTOptionsGetter }

func (g restOptionsGetter) GetRESTOptions(resource schema.GroupResource, example runtime.Object) (generic.RESTOptions, error) {
	opts, err := g.RESTOptionsGetter.GetRESTOptions(resource, example)
	if err != nil {
		return opts, err
	}
	opts.Decorator = Decorate(opts.Decorator)
	return opts, nil
}

// converting is a resource's storage whose errors are converted.
type converting struct {
	storage.Interface
	resource schema.GroupResource
	log      *RateLimit
}

func (s *converting) convert(ctx context.Context, op string, write bool, err error) error {
	kind := Classify(err)
	if kind == Other {
		return err
	}
	if n, ok := s.log.Allow(); ok {
		klog.FromContext(ctx).Error(err, "The store failed a request", "resource", s.resource, "operation", op,
			"what", kind.String(), "notLoggedSince", n)
	}
	return convert(kind, err, s.resource, write)
}

func (s *converting) Create(ctx context.Context, key string, obj, out runtime.Object, ttl uint64) error {
	return s.convert(ctx, "create", true, s.Interface.Create(ctx, key, obj, out, ttl))
}

func (s *converting) Delete(ctx context.Context, key string, out runtime.Object, preconditions *storage.Preconditions,
	validateDeletion storage.ValidateObjectFunc, cachedExistingObject runtime.Object, opts storage.DeleteOptions) error {
	return s.convert(ctx, "delete", true, s.Interface.Delete(ctx, key, out, preconditions, validateDeletion, cachedExistingObject, opts))
}

func (s *converting) GuaranteedUpdate(ctx context.Context, key string, destination runtime.Object, ignoreNotFound bool,
	preconditions *storage.Preconditions, tryUpdate storage.UpdateFunc, cachedExistingObject runtime.Object) error {
	return s.convert(ctx, "update", true,
		s.Interface.GuaranteedUpdate(ctx, key, destination, ignoreNotFound, preconditions, tryUpdate, cachedExistingObject))
}

func (s *converting) Get(ctx context.Context, key string, opts storage.GetOptions, objPtr runtime.Object) error {
	return s.convert(ctx, "get", false, s.Interface.Get(ctx, key, opts, objPtr))
}

func (s *converting) GetList(ctx context.Context, key string, opts storage.ListOptions, listObj runtime.Object) error {
	return s.convert(ctx, "list", false, s.Interface.GetList(ctx, key, opts, listObj))
}

func (s *converting) Watch(ctx context.Context, key string, opts storage.ListOptions) (watch.Interface, error) {
	w, err := s.Interface.Watch(ctx, key, opts)
	return w, s.convert(ctx, "watch", false, err)
}

func (s *converting) Stats(ctx context.Context) (storage.Stats, error) {
	stats, err := s.Interface.Stats(ctx)
	return stats, s.convert(ctx, "stats", false, err)
}

func (s *converting) GetCurrentResourceVersion(ctx context.Context) (uint64, error) {
	rv, err := s.Interface.GetCurrentResourceVersion(ctx)
	return rv, s.convert(ctx, "current resourceVersion", false, err)
}

// RateLimit lets through at most one event an interval, and counts the
// others.
type RateLimit struct {
	interval time.Duration

	mu      sync.Mutex
	last    time.Time
	dropped int
}

// NewRateLimit returns a RateLimit of one event an interval.
func NewRateLimit(interval time.Duration) *RateLimit { return &RateLimit{interval: interval} }

// Allow says whether an event may be let through now and, if so, how many
// were not since the last one.
func (r *RateLimit) Allow() (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if !r.last.IsZero() && now.Sub(r.last) < r.interval {
		r.dropped++
		return 0, false
	}
	n := r.dropped
	r.last, r.dropped = now, 0
	return n, true
}
