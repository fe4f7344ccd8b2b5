// Package controllers assembles annex's in-process controllers into one
// controller-runtime manager that talks to annex through its loopback client.
package controllers

import (
	"fmt"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/controllers/hostedresource"
)

// Scheme holds the types annex's controllers read and write.
var Scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(v1alpha1.AddToScheme(Scheme))
	utilruntime.Must(apiextensionsv1.AddToScheme(Scheme))
}

// NewManager returns a manager with every controller registered. loopback
// reaches annex itself.
func NewManager(loopback *rest.Config) (ctrl.Manager, error) {
	mgr, err := ctrl.NewManager(loopback, ctrl.Options{
		Scheme: Scheme,
		Logger: klog.Background().WithName("controllers"),
		// annex serves its own /metrics and /readyz; the manager must not open ports.
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		return nil, fmt.Errorf("creating the controller manager: %w", err)
	}
	if err := (&hostedresource.Reconciler{Client: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the hostedresource controller: %w", err)
	}
	return mgr, nil
}
