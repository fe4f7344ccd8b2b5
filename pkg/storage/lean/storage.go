// Package lean keeps a hosted type's objects in memory as their encoding,
// instead of decoded: about a tenth of the memory of the upstream watch
// cache, with the upstream watch cache's own code and semantics.
//
// The upstream watch cache (k8s.io/apiserver/pkg/storage/cacher) is built
// here over Objects: the compact form of an object (its encoding, key,
// name, namespace, resourceVersion, labels and fields). Between the cache
// and the store, a compacting layer turns what the store returns into
// Objects; in front of the cache, Storage turns Objects back into the
// type's objects for its callers. Everything else (watchers, bookmarks,
// progress notifications, consistent reads, snapshots and continue
// tokens, resourceVersion windows, 410s) is the upstream cacher's, and the
// upstream storage suite proves the whole (pkg/storage/suite).
//
// What it costs: a list decodes each object it returns (the upstream cache
// deep-copies it instead), and each watch event is decoded once more
// before it is serialized (shared.go).
package lean

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/storage"
	cacherstorage "k8s.io/apiserver/pkg/storage/cacher"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"annex.dev/annex/pkg/storage/inprocess"
)

// Config configures the lean storage of one resource.
type Config struct {
	// Storage is the store the objects are kept in.
	Storage storage.Interface
	// Codec encodes an object into its compact form and decodes it back:
	// the round trip must give the object again.
	Codec runtime.Codec
	// GroupResource, ResourcePrefix, KeyFunc, GetAttrsFunc, NewFunc and
	// NewListFunc are the resource's, as a storage decorator receives them.
	GroupResource  schema.GroupResource
	ResourcePrefix string
	KeyFunc        func(runtime.Object) (string, error)
	GetAttrsFunc   storage.AttrFunc
	NewFunc        func() runtime.Object
	NewListFunc    func() runtime.Object
	// EventsHistoryWindow is how far back the cache keeps events; the
	// cacher's default when zero.
	EventsHistoryWindow time.Duration
	// Clock is the cache's clock; the real one when nil.
	Clock clock.WithTicker
	// Memo, when set, is the memo whose codec (Memo.Codec) Storage was
	// built with: the cache then takes what a write decoded instead of
	// decoding its event again.
	Memo *WriteMemo
	// Deferral says which objects of the store's watch are kept as the
	// store holds them until read (deferred.go); it needs Memo.
	Deferral Deferral
	// LeaveDeferred leaves deferred objects to their first reads, instead
	// of decoding them in the background once the cache has filled.
	LeaveDeferred bool
}

// Deferral says which objects of the store's watch the lean cache keeps
// as the store holds them until read, instead of decoding them as they
// come.
type Deferral int

const (
	// DeferNone decodes every object as it comes.
	DeferNone Deferral = iota
	// DeferPlaceable defers the objects that the cache can place without
	// decoding them: every object, when the resource's attributes come
	// from its name, namespace and labels; none otherwise.
	DeferPlaceable
	// DeferAll defers every object, decoding for its attributes one the
	// cache cannot place otherwise: more work than DeferNone for such a
	// resource, for tests of the deferred form with any resource.
	DeferAll
)

// Storage is the lean storage of one resource.
type Storage struct {
	config    Config
	raw       storage.Interface
	cacher    *cacherstorage.Cacher
	delegator *cacherstorage.CacheDelegator
	// shared shares the decoding and serializing of watch events between
	// watchers.
	shared *sharedEvents
	// storeCodec is the codec the store decodes with, which decodes
	// deferred objects; attrsFromMetadata says that an object's
	// attributes come from its name, namespace and labels.
	storeCodec        runtime.Codec
	attrsFromMetadata bool
	// warmer decodes deferred objects in the background.
	warmer *warmer
	// packer compresses the objects' encodings, and labelSets shares
	// their labels.
	packer    packer
	labelSets labelSets
	// overBudget, when set, is the answer to creates while the caches hold
	// their budget's worth (budget.go).
	overBudget atomic.Pointer[apierrors.StatusError]
	// received is the highest resourceVersion the cache's watch delivered,
	// and progressing says that a progress notification was asked for;
	// receivedCh is closed when received advances while receivedWaiters
	// gets wait for it (get.go).
	received        atomic.Uint64
	progressing     atomic.Bool
	revisions       revisions
	receivedMu      sync.Mutex
	receivedCh      chan struct{}
	receivedWaiters atomic.Int32
}

var _ storage.Interface = &Storage{}

// New builds the watch cache of a resource over its compacted objects. It
// starts filling at once; Stop stops it.
func New(config Config) (*Storage, error) {
	s := &Storage{config: config, raw: config.Storage, shared: newSharedEvents()}
	s.attrsFromMetadata = attributesFromMetadata(config.NewFunc, config.GetAttrsFunc)
	if config.Deferral == DeferAll || config.Deferral == DeferPlaceable && s.attrsFromMetadata {
		if config.Memo == nil || config.Memo.storeCodec == nil {
			return nil, errors.New("deferred decoding needs the write memo's codec in front of the store's")
		}
		s.storeCodec = config.Memo.storeCodec
		config.Memo.deferring.Store(true)
		if !config.LeaveDeferred {
			s.warmer = newWarmer(config.GroupResource)
		}
	}
	compacted := &compacting{Interface: config.Storage, s: s}
	cacherConfig := cacherstorage.Config{
		Storage:             compacted,
		Versioner:           config.Storage.Versioner(),
		GroupResource:       config.GroupResource,
		EventsHistoryWindow: config.EventsHistoryWindow,
		ResourcePrefix:      config.ResourcePrefix,
		KeyFunc:             objectKey,
		GetAttrsFunc:        objectAttrs,
		NewFunc:             func() runtime.Object { return &Object{} },
		NewListFunc:         func() runtime.Object { return &ObjectList{} },
		Codec:               objectCodec{packer: &s.packer},
		Clock:               config.Clock,
	}
	if cacherConfig.Clock == nil {
		cacherConfig.Clock = clock.RealClock{}
	}
	cacher, err := cacherstorage.NewCacherFromConfig(cacherConfig)
	if err != nil {
		return nil, err
	}
	s.cacher = cacher
	s.delegator = cacherstorage.NewCacheDelegator(cacher, compacted)
	if s.warmer != nil {
		go s.warmer.run(s)
	}
	return s, nil
}

// Stop stops the cache; the store is the caller's to close.
func (s *Storage) Stop() {
	s.delegator.Stop()
	s.cacher.Stop()
	if s.warmer != nil {
		s.warmer.Stop()
	}
}

// Decorator is the storage decorator of the hosted types kept lean: the
// raw store, and the lean cache in front of it. A custom resource's
// compact form is its JSON.
func Decorator(config *storagebackend.ConfigForResource, resourcePrefix string, keyFunc func(runtime.Object) (string, error),
	newFunc, newListFunc func() runtime.Object, getAttrsFunc storage.AttrFunc, _ storage.IndexerFuncs, _ *cache.Indexers) (storage.Interface, factory.DestroyFunc, error) {
	return decorate(config, resourcePrefix, keyFunc, newFunc, newListFunc, getAttrsFunc, "")
}

// decorate is Decorator; the creates and updates of objects of reuse, when
// set, return the object they wrote (WriteMemo.ReuseWritten).
func decorate(config *storagebackend.ConfigForResource, resourcePrefix string, keyFunc func(runtime.Object) (string, error),
	newFunc, newListFunc func() runtime.Object, getAttrsFunc storage.AttrFunc, reuse string) (storage.Interface, factory.DestroyFunc, error) {
	memo := NewWriteMemo()
	if reuse != "" {
		memo.ReuseWritten(reuse, reusedWrites(config.GroupResource))
	}
	memoized := *config
	memoized.Codec = memo.Codec(config.Codec)
	raw, destroyRaw, err := inprocess.NewRawStorage(&memoized, newFunc, newListFunc, resourcePrefix)
	if err != nil {
		return nil, nil, err
	}
	codec := config.Codec
	if _, ok := newFunc().(*unstructured.Unstructured); ok {
		codec = unstructured.UnstructuredJSONScheme
	}
	s, err := New(Config{
		Storage: raw, Codec: codec, GroupResource: config.GroupResource, ResourcePrefix: resourcePrefix,
		KeyFunc: keyFunc, GetAttrsFunc: getAttrsFunc, NewFunc: newFunc, NewListFunc: newListFunc,
		EventsHistoryWindow: config.EventsHistoryWindow, Memo: memo, Deferral: DeferPlaceable,
	})
	if err != nil {
		destroyRaw()
		return nil, nil, err
	}
	var once sync.Once
	return s, func() { once.Do(func() { s.Stop(); destroyRaw() }) }, nil
}

// compact turns an object the store returned into its compact form.
func (s *Storage) compact(obj runtime.Object) (*Object, error) {
	accessor, err := meta.Accessor(obj)
	if err != nil {
		return nil, err
	}
	key, err := s.config.KeyFunc(obj)
	if err != nil {
		return nil, fmt.Errorf("the key of %s/%s: %w", accessor.GetNamespace(), accessor.GetName(), err)
	}
	l, f, err := s.config.GetAttrsFunc(obj)
	if err != nil {
		return nil, err
	}
	buf := buffers.Get().(*bytes.Buffer)
	defer buffers.Put(buf)
	buf.Reset()
	if err := s.config.Codec.Encode(obj, buf); err != nil {
		return nil, fmt.Errorf("encoding %s: %w", key, err)
	}
	o := &Object{key: key, data: s.packer.compress(buf.Bytes()), labels: s.labelSets.share(l), fields: f}
	o.Name, o.Namespace, o.ResourceVersion = accessor.GetName(), accessor.GetNamespace(), accessor.GetResourceVersion()
	return o, nil
}

// decode turns a compact object back into the resource's object, with the
// resourceVersion the cache gave it.
func (s *Storage) decode(o *Object, into runtime.Object) error {
	data := o.data
	if o.stored != nil {
		form := o.stored.form.Load()
		if !form.compact {
			_, err := s.decodeStored(o, form, into)
			return err
		}
		data = form.data
	}
	encoded, release, err := s.packer.expand(data)
	defer release()
	if err != nil {
		return fmt.Errorf("decompressing %s from the lean cache: %w", o.key, err)
	}
	out, _, err := s.config.Codec.Decode(encoded, nil, into)
	if err != nil {
		return fmt.Errorf("decoding %s from the lean cache: %w", o.key, err)
	}
	if out != into {
		return fmt.Errorf("decoding %s from the lean cache gave a %T, not a %T", o.key, out, into)
	}
	return s.setResourceVersion(into, o.ResourceVersion)
}

// setResourceVersion gives obj the resourceVersion the cache holds for it.
func (s *Storage) setResourceVersion(obj runtime.Object, resourceVersion string) error {
	versioner := s.raw.Versioner()
	rv, err := versioner.ParseResourceVersion(resourceVersion)
	if err != nil {
		return err
	}
	return versioner.UpdateObject(obj, rv)
}

// decodeCached turns the cache's copy of an object, which the cache passes
// to the store's writes as a guess of the stored object, back into the
// resource's object.
func (s *Storage) decodeCached(cached runtime.Object) runtime.Object {
	o, ok := cached.(*Object)
	if !ok {
		return cached
	}
	obj := s.config.NewFunc()
	if err := s.decode(o, obj); err != nil {
		// Only a guess: the store reads the object itself.
		return nil
	}
	return obj
}

func objectKey(obj runtime.Object) (string, error) {
	o, ok := obj.(*Object)
	if !ok {
		return "", fmt.Errorf("the lean cache holds its own objects, not %T", obj)
	}
	return o.key, nil
}

func objectAttrs(obj runtime.Object) (labels.Set, fields.Set, error) {
	o, ok := obj.(*Object)
	if !ok {
		return nil, nil, fmt.Errorf("the lean cache holds its own objects, not %T", obj)
	}
	return o.GetLabels(), o.fields, nil
}

// Versioner implements storage.Interface.
func (s *Storage) Versioner() storage.Versioner { return s.raw.Versioner() }

// Create implements storage.Interface.
func (s *Storage) Create(ctx context.Context, key string, obj, out runtime.Object, ttl uint64) error {
	if refusal := s.overBudget.Load(); refusal != nil {
		return refusal
	}
	w := s.config.Memo.begin()
	s.config.Memo.note(w, obj)
	s.config.Memo.returns(ctx, w, out)
	err := s.delegator.Create(ctx, key, obj, out, ttl)
	s.config.Memo.end(w, s, out, err)
	return err
}

// Delete implements storage.Interface.
func (s *Storage) Delete(ctx context.Context, key string, out runtime.Object, preconditions *storage.Preconditions,
	validateDeletion storage.ValidateObjectFunc, cachedExistingObject runtime.Object, opts storage.DeleteOptions) error {
	return s.delegator.Delete(ctx, key, out, preconditions, validateDeletion, cachedExistingObject, opts)
}

// GuaranteedUpdate implements storage.Interface.
func (s *Storage) GuaranteedUpdate(ctx context.Context, key string, destination runtime.Object, ignoreNotFound bool,
	preconditions *storage.Preconditions, tryUpdate storage.UpdateFunc, cachedExistingObject runtime.Object) error {
	w := s.config.Memo.begin()
	if w != nil {
		update := tryUpdate
		tryUpdate = func(input runtime.Object, res storage.ResponseMeta) (runtime.Object, *uint64, error) {
			out, ttl, err := update(input, res)
			if err == nil {
				s.config.Memo.note(w, out)
			}
			return out, ttl, err
		}
		s.config.Memo.returns(ctx, w, destination)
	}
	err := s.delegator.GuaranteedUpdate(ctx, key, destination, ignoreNotFound, preconditions, tryUpdate, cachedExistingObject)
	s.config.Memo.end(w, s, destination, err)
	return err
}

// Get implements storage.Interface.
func (s *Storage) Get(ctx context.Context, key string, opts storage.GetOptions, objPtr runtime.Object) error {
	if opts.ResourceVersion == "" {
		// As the cache does: a get of the latest reads the store.
		return s.raw.Get(ctx, key, opts, objPtr)
	}
	o := &Object{}
	if err := s.delegator.Get(ctx, key, opts, o); err != nil {
		return err
	}
	if o.data == nil && o.stored == nil {
		// Not found, and opts.IgnoreNotFound.
		return runtime.SetZeroValue(objPtr)
	}
	return s.decode(o, objPtr)
}

// GetList implements storage.Interface.
func (s *Storage) GetList(ctx context.Context, key string, opts storage.ListOptions, listObj runtime.Object) error {
	l := &ObjectList{}
	if err := s.delegator.GetList(ctx, key, opts, l); err != nil {
		return err
	}
	items := make([]runtime.Object, len(l.Items))
	if err := inParallel(len(l.Items), func(i int) error {
		items[i] = s.config.NewFunc()
		return s.decode(&l.Items[i], items[i])
	}); err != nil {
		return apierrors.NewInternalError(err)
	}
	if err := meta.SetList(listObj, items); err != nil {
		return err
	}
	listMeta, err := meta.ListAccessor(listObj)
	if err != nil {
		return err
	}
	listMeta.SetResourceVersion(l.ResourceVersion)
	listMeta.SetContinue(l.Continue)
	listMeta.SetRemainingItemCount(l.RemainingItemCount)
	return nil
}

// Watch implements storage.Interface.
func (s *Storage) Watch(ctx context.Context, key string, opts storage.ListOptions) (watch.Interface, error) {
	w, err := s.delegator.Watch(ctx, key, opts)
	if err != nil {
		return nil, err
	}
	return watch.Filter(w, s.expandEvent), nil
}

// expandEvent turns the compact object of an event back into the
// resource's object: for a bookmark a new one, for any other event the
// object shared by every watcher of the event.
func (s *Storage) expandEvent(ev watch.Event) (watch.Event, bool) {
	if ev.Type == watch.Error {
		return ev, true
	}
	obj := ev.Object
	if cacheable, ok := obj.(runtime.CacheableObject); ok {
		obj = cacheable.GetObject()
	}
	o, ok := obj.(*Object)
	if !ok {
		return ev, true
	}
	if ev.Type != watch.Bookmark {
		return watch.Event{Type: ev.Type, Object: s.shared.object(s, ev.Type, o)}, true
	}
	// A bookmark carries a resourceVersion and, at the end of the initial
	// events, an annotation that says so.
	out := s.config.NewFunc()
	if err := s.setResourceVersion(out, o.ResourceVersion); err != nil {
		return errorEvent(err), true
	}
	if len(o.Annotations) > 0 {
		accessor, err := meta.Accessor(out)
		if err != nil {
			return errorEvent(err), true
		}
		accessor.SetAnnotations(o.Annotations)
	}
	return watch.Event{Type: ev.Type, Object: out}, true
}

func errorEvent(err error) watch.Event {
	status := apierrors.NewInternalError(err).Status()
	return watch.Event{Type: watch.Error, Object: &status}
}

// Stats implements storage.Interface.
func (s *Storage) Stats(ctx context.Context) (storage.Stats, error) { return s.delegator.Stats(ctx) }

// ReadinessCheck implements storage.Interface.
func (s *Storage) ReadinessCheck() error { return s.delegator.ReadinessCheck() }

// RequestWatchProgress implements storage.Interface.
func (s *Storage) RequestWatchProgress(ctx context.Context) error {
	return s.delegator.RequestWatchProgress(ctx)
}

// GetCurrentResourceVersion implements storage.Interface.
func (s *Storage) GetCurrentResourceVersion(ctx context.Context) (uint64, error) {
	return s.delegator.GetCurrentResourceVersion(ctx)
}

// EnableResourceSizeEstimation implements storage.Interface.
func (s *Storage) EnableResourceSizeEstimation(keys storage.KeysFunc) error {
	return s.delegator.EnableResourceSizeEstimation(keys)
}

// CompactRevision implements storage.Interface.
func (s *Storage) CompactRevision() int64 { return s.delegator.CompactRevision() }

// compacting is the store as the cache sees it: what it reads is turned
// into Objects; writes pass through with the resource's own objects.
type compacting struct {
	storage.Interface
	s *Storage
}

// GetCurrentResourceVersion is the store's current revision, which the
// cache asks for on each consistent read.
func (c *compacting) GetCurrentResourceVersion(ctx context.Context) (uint64, error) {
	return c.s.currentRevision(ctx)
}

// currentRevision reads the store's current revision with a read of one
// key, the resource's prefix, which no object has: the revision of the
// store's answer is its current one, as for any read. The store's own
// GetCurrentResourceVersion lists the resource's objects with a limit of
// one, and etcd and kine count every key of a list's range to answer it:
// that read costs as much as the resource has objects (about 20 ms of
// etcd's time at 100,000), where this one costs a lookup of one key.
func (s *Storage) currentRevision(ctx context.Context) (uint64, error) {
	list := s.config.NewListFunc()
	opts := storage.ListOptions{Predicate: storage.Everything, Recursive: false}
	if err := s.raw.GetList(ctx, s.config.ResourcePrefix, opts, list); err != nil {
		return 0, err
	}
	accessor, err := meta.ListAccessor(list)
	if err != nil {
		return 0, err
	}
	rv, err := strconv.ParseUint(accessor.GetResourceVersion(), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("the store's current revision %q: %w", accessor.GetResourceVersion(), err)
	}
	if rv == 0 {
		return 0, errors.New("the store's current revision is 0")
	}
	return rv, nil
}

func (c *compacting) Delete(ctx context.Context, key string, out runtime.Object, preconditions *storage.Preconditions,
	validateDeletion storage.ValidateObjectFunc, cachedExistingObject runtime.Object, opts storage.DeleteOptions) error {
	return c.Interface.Delete(ctx, key, out, preconditions, validateDeletion, c.s.decodeCached(cachedExistingObject), opts)
}

func (c *compacting) GuaranteedUpdate(ctx context.Context, key string, destination runtime.Object, ignoreNotFound bool,
	preconditions *storage.Preconditions, tryUpdate storage.UpdateFunc, cachedExistingObject runtime.Object) error {
	return c.Interface.GuaranteedUpdate(ctx, key, destination, ignoreNotFound, preconditions, tryUpdate, c.s.decodeCached(cachedExistingObject))
}

func (c *compacting) Get(ctx context.Context, key string, opts storage.GetOptions, objPtr runtime.Object) error {
	o, ok := objPtr.(*Object)
	if !ok {
		return c.Interface.Get(ctx, key, opts, objPtr)
	}
	obj := c.s.config.NewFunc()
	if err := c.Interface.Get(ctx, key, opts, obj); err != nil {
		return err
	}
	accessor, err := meta.Accessor(obj)
	if err != nil {
		return err
	}
	if accessor.GetResourceVersion() == "" {
		// Not found, and opts.IgnoreNotFound.
		*o = Object{}
		return nil
	}
	compacted, err := c.s.compact(obj)
	if err != nil {
		return err
	}
	*o = *compacted
	return nil
}

// compactingPage is how many objects a list of the whole type reads from
// the store at a time.
const compactingPage = 500

// GetList lists as the store does. A list of more than compactingPage
// objects (the cache's fill, and its periodic consistency check, which
// reads pages of 10,000) reads the store compactingPage objects at a time,
// at the revision of the first, so that no more than that many decoded
// objects are held at once beside the compact ones. It answers what the
// store would: the objects up to the caller's limit, and the continue
// token and remaining count of the last of them. When the cache defers
// decoding, a list that selects nothing out reads the objects as stored,
// deferred (they are not decoded in the background: the consistency
// check, the list's main caller, only reads their metadata).
func (c *compacting) GetList(ctx context.Context, key string, opts storage.ListOptions, listObj runtime.Object) error {
	l, ok := listObj.(*ObjectList)
	if !ok {
		return c.Interface.GetList(ctx, key, opts, listObj)
	}
	limit := opts.Predicate.Limit
	paged := opts.Recursive && (limit == 0 || limit > compactingPage)
	asStored := c.s.storeCodec != nil && opts.Predicate.Label != nil && opts.Predicate.Field != nil && opts.Predicate.Empty()
	l.Items = nil
	for first := true; ; first = false {
		if paged {
			opts.Predicate.Limit = compactingPage
			if left := limit - int64(len(l.Items)); limit > 0 && left < compactingPage {
				opts.Predicate.Limit = left
			}
		}
		var (
			listMeta metav1.ListInterface
			err      error
		)
		if asStored {
			listMeta, err = c.listStored(ctx, key, opts, l)
		} else {
			listMeta, err = c.listDecoded(ctx, key, opts, l)
		}
		if err != nil {
			return err
		}
		if first {
			l.ResourceVersion = listMeta.GetResourceVersion()
		}
		l.Continue, l.RemainingItemCount = listMeta.GetContinue(), listMeta.GetRemainingItemCount()
		if !paged || l.Continue == "" || limit > 0 && int64(len(l.Items)) >= limit {
			return nil
		}
		// The next page, at the first page's revision, which its continue
		// token carries.
		opts.Predicate.Continue, opts.ResourceVersion, opts.ResourceVersionMatch = l.Continue, "", ""
	}
}

// listDecoded reads a page of the store's objects, decoded, and appends
// their compact forms to l.
func (c *compacting) listDecoded(ctx context.Context, key string, opts storage.ListOptions, l *ObjectList) (metav1.ListInterface, error) {
	full := c.s.config.NewListFunc()
	if err := c.Interface.GetList(ctx, key, opts, full); err != nil {
		return nil, err
	}
	listMeta, err := meta.ListAccessor(full)
	if err != nil {
		return nil, err
	}
	return listMeta, meta.EachListItem(full, func(obj runtime.Object) error {
		o, err := c.s.compact(obj)
		if err != nil {
			return err
		}
		l.Items = append(l.Items, *o)
		return nil
	})
}

// listStored reads a page of the store's objects as stored, and appends
// them to l deferred.
func (c *compacting) listStored(ctx context.Context, key string, opts storage.ListOptions, l *ObjectList) (metav1.ListInterface, error) {
	stored := &storedList{}
	if err := c.Interface.GetList(ctx, key, opts, stored); err != nil {
		return nil, err
	}
	for i := range stored.Items {
		o, err := c.s.deferObject(stored.Items[i].data, stored.Items[i].ResourceVersion, false)
		if err != nil {
			return nil, err
		}
		l.Items = append(l.Items, *o)
	}
	return &stored.ListMeta, nil
}

func (c *compacting) Watch(ctx context.Context, key string, opts storage.ListOptions) (watch.Interface, error) {
	w, err := c.Interface.Watch(ctx, key, opts)
	if err != nil {
		return nil, err
	}
	return watch.Filter(w, func(ev watch.Event) (watch.Event, bool) {
		ev, keep := c.compactEvent(ev)
		if ev.Type != watch.Error {
			c.s.receive(ev)
		}
		return ev, keep
	}), nil
}

func (c *compacting) compactEvent(ev watch.Event) (watch.Event, bool) {
	if ev.Type == watch.Error {
		return ev, true
	}
	accessor, err := meta.Accessor(ev.Object)
	if err != nil {
		return errorEvent(err), true
	}
	if hit, ok := ev.Object.(*memoHit); ok {
		o, err := hit.compact(c.s)
		if err != nil {
			return errorEvent(err), true
		}
		return watch.Event{Type: ev.Type, Object: o}, true
	}
	if ev.Type == watch.Bookmark {
		o := &Object{}
		o.ResourceVersion = accessor.GetResourceVersion()
		o.Annotations = accessor.GetAnnotations()
		return watch.Event{Type: ev.Type, Object: o}, true
	}
	o, err := c.s.compact(ev.Object)
	if err != nil {
		return errorEvent(err), true
	}
	return watch.Event{Type: ev.Type, Object: o}, true
}

// Wait waits until the cache has filled, or ctx is done.
func (s *Storage) Wait(ctx context.Context) error { return s.cacher.Wait(ctx) }
