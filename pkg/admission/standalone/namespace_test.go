package standalone

import (
	"context"
	"net/http"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
)

// newPlugin returns the plugin over a fake annex holding the given
// namespaces, with its informer synced.
func newPlugin(t *testing.T, namespaces ...runtime.Object) admission.MutationInterface {
	t.Helper()
	client := fake.NewClientset(namespaces...)
	factory := informers.NewSharedInformerFactory(client, 0)
	plugin, err := newNamespaceLifecycle(client, factory)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	return plugin.(admission.MutationInterface)
}

func namespace(name string, phase corev1.NamespacePhase) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NamespaceStatus{Phase: phase}}
}

func createIn(t *testing.T, p admission.MutationInterface, ns string) error {
	t.Helper()
	obj := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "one"}}
	a := admission.NewAttributesRecord(obj, nil, corev1.SchemeGroupVersion.WithKind("ConfigMap"), ns, obj.Name,
		corev1.SchemeGroupVersion.WithResource("configmaps"), "", admission.Create, &metav1.CreateOptions{}, false, nil)
	return p.Admit(context.Background(), a, nil)
}

func wantCode(t *testing.T, err error, code int32, message string) {
	t.Helper()
	status, ok := err.(apierrors.APIStatus)
	if !ok || status.Status().Code != code || !strings.Contains(err.Error(), message) {
		t.Errorf("err = %v, want %d saying %q", err, code, message)
	}
}

func TestNamespaceLifecycle(t *testing.T) {
	p := newPlugin(t,
		namespace("a", corev1.NamespaceActive),
		namespace("leaving", corev1.NamespaceTerminating),
		namespace(metav1.NamespaceDefault, corev1.NamespaceActive),
	)
	if err := createIn(t, p, "a"); err != nil {
		t.Errorf("creating an object in an active namespace: %v", err)
	}
	wantCode(t, createIn(t, p, "missing"), http.StatusNotFound, `namespaces "missing" not found`)
	wantCode(t, createIn(t, p, "leaving"), http.StatusForbidden, "because it is being terminated")

	for _, tc := range []struct {
		name      string
		protected bool
	}{
		{metav1.NamespaceDefault, true},
		{metav1.NamespaceSystem, true},
		{metav1.NamespacePublic, true},
		{"a", false},
	} {
		a := admission.NewAttributesRecord(nil, nil, corev1.SchemeGroupVersion.WithKind("Namespace"), "", tc.name,
			corev1.SchemeGroupVersion.WithResource("namespaces"), "", admission.Delete, &metav1.DeleteOptions{}, false, nil)
		err := p.Admit(context.Background(), a, nil)
		if tc.protected {
			wantCode(t, err, http.StatusForbidden, "may not be deleted")
		} else if err != nil {
			t.Errorf("deleting namespace %s: %v, want it allowed", tc.name, err)
		}
	}
}

func TestNewNamespaceLifecycle(t *testing.T) {
	plugin, start, err := NewNamespaceLifecycle(&rest.Config{Host: "https://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if plugin == nil || start == nil {
		t.Fatal("NewNamespaceLifecycle returned no plugin, or no function to start it")
	}
	if !plugin.Handles(admission.Create) || !plugin.Handles(admission.Delete) {
		t.Error("the plugin does not handle creations and deletions")
	}
}
