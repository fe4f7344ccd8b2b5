package lean

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// objectMeta is the metadata an Object keeps: what the watch cache reads
// and sets on the objects it holds (name, namespace and resourceVersion;
// annotations on a bookmark). It implements metav1.Object for the cache's
// accessors in a fifth of metav1.ObjectMeta's size; the fields it does not
// keep read as empty, and setting them does nothing.
type objectMeta struct {
	Name            string
	Namespace       string
	ResourceVersion string
	Annotations     map[string]string
}

var _ metav1.Object = &objectMeta{}

func (m *objectMeta) GetNamespace() string                          { return m.Namespace }
func (m *objectMeta) SetNamespace(namespace string)                 { m.Namespace = namespace }
func (m *objectMeta) GetName() string                               { return m.Name }
func (m *objectMeta) SetName(name string)                           { m.Name = name }
func (m *objectMeta) GetResourceVersion() string                    { return m.ResourceVersion }
func (m *objectMeta) SetResourceVersion(version string)             { m.ResourceVersion = version }
func (m *objectMeta) GetAnnotations() map[string]string             { return m.Annotations }
func (m *objectMeta) SetAnnotations(a map[string]string)            { m.Annotations = a }
func (m *objectMeta) GetGenerateName() string                       { return "" }
func (m *objectMeta) SetGenerateName(string)                        {}
func (m *objectMeta) GetUID() types.UID                             { return "" }
func (m *objectMeta) SetUID(types.UID)                              {}
func (m *objectMeta) GetGeneration() int64                          { return 0 }
func (m *objectMeta) SetGeneration(int64)                           {}
func (m *objectMeta) GetSelfLink() string                           { return "" }
func (m *objectMeta) SetSelfLink(string)                            {}
func (m *objectMeta) GetCreationTimestamp() metav1.Time             { return metav1.Time{} }
func (m *objectMeta) SetCreationTimestamp(metav1.Time)              {}
func (m *objectMeta) GetDeletionTimestamp() *metav1.Time            { return nil }
func (m *objectMeta) SetDeletionTimestamp(*metav1.Time)             {}
func (m *objectMeta) GetDeletionGracePeriodSeconds() *int64         { return nil }
func (m *objectMeta) SetDeletionGracePeriodSeconds(*int64)          {}
func (m *objectMeta) GetLabels() map[string]string                  { return nil }
func (m *objectMeta) SetLabels(map[string]string)                   {}
func (m *objectMeta) GetFinalizers() []string                       { return nil }
func (m *objectMeta) SetFinalizers([]string)                        {}
func (m *objectMeta) GetOwnerReferences() []metav1.OwnerReference   { return nil }
func (m *objectMeta) SetOwnerReferences([]metav1.OwnerReference)    {}
func (m *objectMeta) GetManagedFields() []metav1.ManagedFieldsEntry { return nil }
func (m *objectMeta) SetManagedFields([]metav1.ManagedFieldsEntry)  {}
