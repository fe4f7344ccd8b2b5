package fuzzcheck

import (
	"bytes"
	"testing"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/diff"
	"k8s.io/apiserver/pkg/registry/rest"
)

// Typed runs request bodies through the create and update paths of one
// kind of a built-in API group (annex.dev), as the API server does up to
// storage: the body is decoded as JSON into the versioned type, defaulted,
// converted to the internal type, and handed to the registry's strategy.
type Typed struct {
	// Scheme holds the group's types, conversions and defaults.
	Scheme *runtime.Scheme
	// Kind is the versioned kind that requests send.
	Kind schema.GroupVersionKind
	// Strategy is the registry strategy of the kind's main resource.
	Strategy rest.RESTCreateUpdateStrategy

	json   *json.Serializer
	codecs serializer.CodecFactory
	old    runtime.Object
}

// NewTyped returns the create and update paths of kind; stored, a body the
// create path must accept, is the object that updates change.
func NewTyped(t testing.TB, scheme *runtime.Scheme, kind schema.GroupVersionKind, strategy rest.RESTCreateUpdateStrategy, stored []byte) *Typed {
	t.Helper()
	k := &Typed{
		Scheme:   scheme,
		Kind:     kind,
		Strategy: strategy,
		json:     json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme, json.SerializerOptions{}),
		codecs:   serializer.NewCodecFactory(scheme),
	}
	versioned := k.decode(stored)
	if versioned == nil {
		t.Fatalf("the stored object does not decode as a %s: %s", kind, stored)
	}
	k.Scheme.Default(versioned)
	old := k.internal(t, versioned)
	if !Create(t, Context(strategy.NamespaceScoped()), strategy, old) {
		t.Fatalf("the stored object is refused: %s", stored)
	}
	accessor, _ := meta.Accessor(old)
	accessor.SetResourceVersion("1")
	k.old = old
	return k
}

// decode reads body as the API server reads a request's JSON body for
// Kind, or returns nil where the server refuses the body before validating
// it (with a 400: not JSON, not an object of Kind).
func (k *Typed) decode(body []byte) runtime.Object {
	obj, gvk, err := k.json.Decode(body, &k.Kind, nil)
	if err != nil || gvk == nil || *gvk != k.Kind {
		return nil
	}
	return obj
}

func (k *Typed) internal(t testing.TB, versioned runtime.Object) runtime.Object {
	t.Helper()
	out, err := k.Scheme.New(k.Kind.GroupKind().WithVersion(runtime.APIVersionInternal))
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Scheme.Convert(versioned, out, nil); err != nil {
		t.Fatalf("converting a decoded %s to the internal version: %v", k.Kind, err)
	}
	return out
}

// Check runs body through the create path, and, as an update of the stored
// object, through the update path, and fails t when the answer is not nil
// or a 4xx whose errors each name a field (Create, Update). Where the create
// is accepted, defaulting the decoded object again must change nothing, and
// the stored object must read back as it was written.
func (k *Typed) Check(t *testing.T, body []byte) {
	versioned := k.decode(body)
	if versioned == nil {
		return
	}
	k.Scheme.Default(versioned)
	defaulted := versioned.DeepCopyObject()
	obj := k.internal(t, versioned)
	update := obj.DeepCopyObject()

	ctx := Context(k.Strategy.NamespaceScoped())
	if Create(t, ctx, k.Strategy, obj) {
		again := defaulted.DeepCopyObject()
		k.Scheme.Default(again)
		if !apiequality.Semantic.DeepEqual(again, defaulted) {
			t.Errorf("defaulting twice is not defaulting once:\n%s", diff.Diff(defaulted, again))
		}
		k.readBack(t, obj)
	}

	// The update of the stored object, under its name as the request's
	// URL names it (a body naming another object gets a 400), at its
	// resourceVersion as the store sets it for an unconditional update (a
	// conditional one at another version gets a 409).
	oldAccessor, _ := meta.Accessor(k.old)
	accessor, err := meta.Accessor(update)
	if err != nil {
		t.Fatal(err)
	}
	accessor.SetName(oldAccessor.GetName())
	accessor.SetResourceVersion(oldAccessor.GetResourceVersion())
	Update(t, ctx, k.Strategy, update, k.old.DeepCopyObject())
}

// readBack encodes obj as storage does, decodes it as a read does
// (decoding, defaulting, conversion), and fails t unless the two encode the
// same.
func (k *Typed) readBack(t *testing.T, obj runtime.Object) {
	t.Helper()
	encoder := k.codecs.LegacyCodec(k.Kind.GroupVersion())
	written, err := runtime.Encode(encoder, obj)
	if err != nil {
		t.Fatalf("encoding an accepted object: %v", err)
	}
	read, err := runtime.Decode(k.codecs.UniversalDecoder(), written)
	if err != nil {
		t.Fatalf("decoding a stored object: %v\n%s", err, written)
	}
	again, err := runtime.Encode(encoder, read)
	if err != nil {
		t.Fatalf("encoding a stored object read back: %v", err)
	}
	if !bytes.Equal(written, again) {
		t.Errorf("a stored object reads back changed:\nwritten %s\n   read %s", written, again)
	}
}
