// Package objectsize holds every store annex offers to one limit on the size
// of an object, checked before the write: an object is accepted, or refused
// with the same 413 and message, whichever backend keeps it.
//
// Without it each store refused at its own limit and in its own words: etcd
// answers a request over its --max-request-bytes with "etcdserver: request is
// too large", which reaches the client as a 500, while kine took objects
// etcd refuses, up to its gRPC message limit.
//
// The check sits where the stored size is known without encoding the object
// again: the value transformer of the resource's storage configuration, which
// the upstream etcd3 store calls with the encoded object on every write
// (create, update, patch, apply, a subresource's write, a deletion that writes
// first) and never on a read. The store wraps the transformer's error in a
// storage.InternalError, which would reach the client as a 500; the storage
// that Decorate returns turns it back into the 413.
//
// Reads never check the size, so objects a store took before the limit
// existed can still be read, listed, watched, cached and deleted; a write of
// one must bring it under the limit.
package objectsize

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/apiserver/pkg/storage/value"
	"k8s.io/apiserver/pkg/storage/value/encrypt/identity"
	"k8s.io/client-go/tools/cache"
)

// MaxBytes is the largest object annex stores, in bytes of its encoding in
// the store (a hosted object's JSON, as the store's codec writes it, before
// compression or encryption at rest).
//
// It is what every store annex offers can take. etcd refuses a request larger
// than its --max-request-bytes: 1.5 MiB by default, which is also what annex
// gives its embedded etcd (embed's default). kine takes gRPC messages of up to
// 2 MiB. A write's request carries more than the value: the key three times
// (the transaction's comparison, its put, and the read on failure; a key is
// at most about 600 bytes), a header, and, with encryption at rest, the
// envelope the transformer adds to the value (up to about 34 KiB for KMS v2:
// key ID, encrypted key and annotations). 64 KiB under etcd's default leaves
// room for all of that.
const MaxBytes = 1536<<10 - 64<<10

// Decorate returns decorator with every write of an object larger than
// MaxBytes refused with a 413 before it reaches the store. A nil decorator
// is generic.UndecoratedStorage.
func Decorate(decorator generic.StorageDecorator) generic.StorageDecorator {
	return decorate(decorator, MaxBytes)
}

func decorate(decorator generic.StorageDecorator, limit int) generic.StorageDecorator {
	if decorator == nil {
		decorator = generic.UndecoratedStorage
	}
	return func(config *storagebackend.ConfigForResource, resourcePrefix string, keyFunc func(runtime.Object) (string, error),
		newFunc, newListFunc func() runtime.Object, getAttrsFunc storage.AttrFunc, triggerFuncs storage.IndexerFuncs,
		indexers *cache.Indexers) (storage.Interface, factory.DestroyFunc, error) {
		inner := config.Transformer
		if inner == nil {
			// What the etcd3 store uses when it is given none.
			inner = identity.NewEncryptCheckTransformer()
		}
		limited := *config
		limited.Transformer = transformer{Transformer: inner, limit: limit}
		s, destroy, err := decorator(&limited, resourcePrefix, keyFunc, newFunc, newListFunc, getAttrsFunc, triggerFuncs, indexers)
		if err != nil {
			return s, destroy, err
		}
		return refusing{s}, destroy, nil
	}
}

// RESTOptionsGetter returns getter with the storage of every resource it
// configures held to MaxBytes.
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

// TooLargeError is the refusal of an object over the limit.
type TooLargeError struct {
	// Size is the object's encoded size, Limit the largest allowed, in bytes.
	Size, Limit int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("the object is %d bytes encoded, and annex stores objects of at most %d bytes", e.Size, e.Limit)
}

// Status is the refusal as the client gets it: 413 Request Entity Too Large.
func (e *TooLargeError) Status() *apierrors.StatusError {
	return apierrors.NewRequestEntityTooLargeError(e.Error())
}

// Check is the 413 of a write of an object whose encoding in the store is
// size bytes, when that is over MaxBytes, and nil otherwise. Writes that
// never reach the store (dry runs) are checked with it, so that they are
// refused as the real write would be.
func Check(size int) error {
	if size > MaxBytes {
		return (&TooLargeError{Size: size, Limit: MaxBytes}).Status()
	}
	return nil
}

// transformer refuses to store a value over limit; it transforms what it
// stores, and everything it reads, as its Transformer does.
type transformer struct {
	value.Transformer
	limit int
}

func (t transformer) TransformToStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, error) {
	if len(data) > t.limit {
		return nil, &TooLargeError{Size: len(data), Limit: t.limit}
	}
	return t.Transformer.TransformToStorage(ctx, data, dataCtx)
}

// refusing answers a write its store refused as too large with the 413.
type refusing struct{ storage.Interface }

func (s refusing) Create(ctx context.Context, key string, obj, out runtime.Object, ttl uint64) error {
	return refusal(s.Interface.Create(ctx, key, obj, out, ttl))
}

func (s refusing) GuaranteedUpdate(ctx context.Context, key string, destination runtime.Object, ignoreNotFound bool,
	preconditions *storage.Preconditions, tryUpdate storage.UpdateFunc, cachedExistingObject runtime.Object) error {
	return refusal(s.Interface.GuaranteedUpdate(ctx, key, destination, ignoreNotFound, preconditions, tryUpdate, cachedExistingObject))
}

// refusal is err, or the 413 when err is (or wraps, as the etcd3 store's
// storage.InternalError does) a TooLargeError.
func refusal(err error) error {
	var tooLarge *TooLargeError
	if errors.As(err, &tooLarge) {
		return tooLarge.Status()
	}
	return err
}
