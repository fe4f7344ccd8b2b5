package lean

import (
	"errors"
	"io"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Object is an object as the lean cache keeps it: its encoding, and what
// the watch cache needs to place and select it (key, name, namespace,
// resourceVersion, labels and fields). It is what the upstream watch cache
// holds in place of the decoded object.
type Object struct {
	// ObjectMeta holds only the name, namespace and resourceVersion (and,
	// on a bookmark, the annotations the watch cache sets).
	metav1.ObjectMeta

	key    string
	data   []byte
	labels labels.Set
	fields fields.Set
}

// GetObjectKind implements runtime.Object; an Object has no kind of its own.
func (o *Object) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject implements runtime.Object. The encoding, labels and
// fields are never changed once made, so the copy shares them.
func (o *Object) DeepCopyObject() runtime.Object {
	c := *o
	o.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	return &c
}

// ObjectList is a list of Objects, the list type the lean cache's watch
// cache is built with.
type ObjectList struct {
	metav1.ListMeta
	Items []Object
}

// GetObjectKind implements runtime.Object.
func (l *ObjectList) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject implements runtime.Object.
func (l *ObjectList) DeepCopyObject() runtime.Object {
	c := &ObjectList{Items: make([]Object, len(l.Items))}
	l.ListMeta.DeepCopyInto(&c.ListMeta)
	for i := range l.Items {
		c.Items[i] = *l.Items[i].DeepCopyObject().(*Object)
	}
	return c
}

// objectCodec writes an Object's encoding. The watch cache checks that its
// codec can encode the objects it holds; nothing decodes into an Object.
type objectCodec struct{}

func (objectCodec) Encode(obj runtime.Object, w io.Writer) error {
	o, ok := obj.(*Object)
	if !ok {
		return errors.New("the lean cache's codec encodes only its own objects")
	}
	_, err := w.Write(o.data)
	return err
}

func (objectCodec) Decode([]byte, *schema.GroupVersionKind, runtime.Object) (runtime.Object, *schema.GroupVersionKind, error) {
	return nil, nil, errors.New("the lean cache's objects are made from decoded objects, never decoded")
}

func (objectCodec) Identifier() runtime.Identifier { return "annex-lean-object" }
