// Command reconciler is an example controller for a type that annex hosts: it
// keeps the Compliant condition of reports.example.com PolicyReports, with a
// controller-runtime manager exactly as it would for a CRD.
//
//	go run ./examples/reconciler --kubeconfig=.annex/kubeconfig
package main

import (
	"flag"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"annex.dev/annex/examples/reconciler/controller"
	reportsv1 "annex.dev/annex/examples/reports/api/v1"
)

func main() {
	var (
		leaderElect             bool
		leaderElectionNamespace string
		metricsAddr             string
		probeAddr               string
	)
	// The --kubeconfig flag comes from controller-runtime's config package.
	flag.BoolVar(&leaderElect, "leader-elect", false,
		"Elect a leader through a Lease, so that only one of several replicas reconciles.")
	flag.StringVar(&leaderElectionNamespace, "leader-election-namespace", "",
		"The namespace of the leader election Lease; required outside a cluster.")
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0",
		`The address of the metrics endpoint, for example ":8080"; "0" disables it.`)
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081",
		`The address of the /healthz and /readyz endpoints; "0" disables them.`)
	klog.InitFlags(nil)
	flag.Parse()
	ctrl.SetLogger(klog.NewKlogr())
	log := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(reportsv1.AddToScheme(scheme))

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:  probeAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        controller.Name + "." + reportsv1.GroupName,
		LeaderElectionNamespace: leaderElectionNamespace,
	})
	if err != nil {
		log.Error(err, "Cannot create the manager")
		os.Exit(1)
	}
	if err := controller.SetupWithManager(mgr); err != nil {
		log.Error(err, "Cannot set up the controller")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		log.Error(err, "Cannot add the health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		log.Error(err, "Cannot add the readiness check")
		os.Exit(1)
	}

	log.Info("Starting the manager")
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "The manager stopped")
		os.Exit(1)
	}
}
