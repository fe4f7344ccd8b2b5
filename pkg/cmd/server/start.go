package server

import (
	"context"
	"fmt"
	"os"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/spf13/cobra"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/rest"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/component-base/cli/globalflag"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"

	"annex.dev/annex/pkg/cmd/uninstall"
	"annex.dev/annex/pkg/controllers"
	"annex.dev/annex/pkg/controllers/apiservice"
	"annex.dev/annex/pkg/storage/backend"
	"annex.dev/annex/pkg/version"
)

// NewCommand returns the annex-apiserver command.
func NewCommand(ctx context.Context) *cobra.Command {
	o := NewOptions()
	var printVersion string
	cmd := &cobra.Command{
		Use:   "annex-apiserver",
		Short: "An aggregated Kubernetes API server that hosts custom resources outside the cluster's etcd",
		Long: `annex-apiserver serves custom resource types declared with HostedResource from its own
storage, with the API semantics of the kube-apiserver. Behind a cluster's aggregation layer it
delegates authentication, authorization and admission to the cluster; with no cluster
(standalone mode) it issues its own certificates and writes an admin kubeconfig.`,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch printVersion {
			case "":
			case "true":
				fmt.Fprintln(cmd.OutOrStdout(), version.String())
				return nil
			case "json":
				fmt.Fprintln(cmd.OutOrStdout(), version.JSON())
				return nil
			default:
				return fmt.Errorf("--version takes no value or 'json', not %q", printVersion)
			}
			klog.FromContext(cmd.Context()).Info("Starting annex-apiserver", "version", version.Get().GitVersion, "commit", version.Get().GitCommit)
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			if _, err := setMemoryLimit(cmd.Context(), o.MemoryLimitRatio, memlimit.FromCgroup); err != nil {
				klog.FromContext(cmd.Context()).Info("Cannot read the container's memory limit; the Go runtime keeps its own", "err", err)
			}
			return Run(cmd.Context(), o)
		},
	}
	cmd.SetContext(ctx)
	fs := cmd.Flags()
	o.AddFlags(fs)
	fs.StringVar(&printVersion, "version", "", "Print the version and exit; --version=json prints what GET /version answers.")
	fs.Lookup("version").NoOptDefVal = "true"
	globalflag.AddGlobalFlags(fs, cmd.Name())
	cmd.AddCommand(uninstall.NewCommand())
	return cmd
}

// Run serves until ctx is done, then shuts down gracefully: the API server
// first, annex's own store last.
func Run(ctx context.Context, o *Options) error {
	config, err := o.Config(ctx)
	if err != nil {
		return err
	}
	server, err := config.Complete().New(genericapiserver.NewEmptyDelegate())
	if err != nil {
		config.Router.Close()
		config.Stores.Close()
		return err
	}
	return server.Run(ctx)
}

// postgres configures the kine of every PostgreSQL store: the command-line
// store's and those of StorageBackends.
func (o *Options) postgres() backend.Postgres {
	return backend.Postgres{
		CompactInterval:   o.PostgresCompactInterval,
		ConnectTimeout:    o.PostgresConnectTimeout,
		StartTimeout:      o.PostgresStartTimeout,
		MaxConnections:    o.PostgresMaxConnections,
		MetricsRegisterer: legacyregistry.Registerer(),
	}
}

// controllerOptions turns on the cluster-facing controllers in aggregated mode.
func (o *Options) controllerOptions(ctx context.Context, cluster *rest.Config, backends *backend.Factory) (controllers.Options, error) {
	opts := controllers.Options{Backends: backends, ProbeInterval: o.StorageBackendProbeInterval, StorageKeyPrefix: o.storageKeyPrefix()}
	opts.Retention = o.Retention
	opts.AdoptionFreezeSettle = o.AdoptionFreezeSettle
	opts.AdoptionDeleteBatch = o.AdoptionDeleteBatch
	opts.AdoptionReleaseStallTimeout = o.AdoptionReleaseStallTimeout
	if o.Mode != ModeAggregated || cluster == nil {
		return opts, nil
	}
	opts.Cluster, opts.LeaderElection = cluster, o.LeaderElect
	if o.APIService.CABundleFile == "" {
		klog.FromContext(ctx).Info("Warning: no --apiservice-ca-bundle-file, so hosted groups are not registered with the cluster's aggregation layer")
		return opts, nil
	}
	caBundle, err := os.ReadFile(o.APIService.CABundleFile)
	if err != nil {
		return opts, fmt.Errorf("reading --apiservice-ca-bundle-file: %w", err)
	}
	if _, err := certutil.ParseCertsPEM(caBundle); err != nil {
		return opts, fmt.Errorf("--apiservice-ca-bundle-file %s holds no PEM certificate: %w", o.APIService.CABundleFile, err)
	}
	opts.APIService = &apiservice.Target{
		Namespace: o.APIService.Namespace, Name: o.APIService.Name, Port: o.APIService.Port, CABundle: caBundle,
		ManagedBy: o.APIService.ManagedBy,
	}
	return opts, nil
}
