// Package standalone holds the admission annex runs when there is no
// cluster to delegate admission to.
package standalone

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/admission/plugin/namespace/lifecycle"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// NewNamespaceLifecycle returns the upstream NamespaceLifecycle plugin
// reading namespaces from the server cfg points at (annex's loopback client):
// it rejects objects created in a namespace that does not exist or is being
// deleted, and the deletion of default, kube-system and kube-public. The
// returned function starts its namespace informer; call it once the server
// serves (from a post-start hook). Until the informer has synced the plugin
// waits for it, then refuses requests.
func NewNamespaceLifecycle(cfg *rest.Config) (admission.Interface, func(ctx context.Context), error) {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	plugin, err := newNamespaceLifecycle(client, factory)
	if err != nil {
		return nil, nil, err
	}
	return plugin, func(ctx context.Context) { factory.Start(ctx.Done()) }, nil
}

func newNamespaceLifecycle(client kubernetes.Interface, factory informers.SharedInformerFactory) (admission.Interface, error) {
	plugin, err := lifecycle.NewLifecycle(sets.New(metav1.NamespaceDefault, metav1.NamespaceSystem, metav1.NamespacePublic))
	if err != nil {
		return nil, err
	}
	plugin.SetExternalKubeClientSet(client)
	plugin.SetExternalKubeInformerFactory(factory)
	if err := plugin.ValidateInitialization(); err != nil {
		return nil, fmt.Errorf("initializing %s: %w", lifecycle.PluginName, err)
	}
	return plugin, nil
}
