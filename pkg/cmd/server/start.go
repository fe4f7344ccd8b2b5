package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/rest"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/component-base/cli/globalflag"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"

	"annex.dev/annex/pkg/certs"
	"annex.dev/annex/pkg/cmd/uninstall"
	"annex.dev/annex/pkg/controllers"
	"annex.dev/annex/pkg/controllers/apiservice"
	namespacecontroller "annex.dev/annex/pkg/controllers/namespace"
	"annex.dev/annex/pkg/controllers/storagebackend"
	"annex.dev/annex/pkg/controllers/warmup"
	"annex.dev/annex/pkg/storage/embedded"
	"annex.dev/annex/pkg/storage/postgres"
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

// Run starts the embedded etcd if there is no external one, then serves until
// ctx is done, and shuts down gracefully: the API server first, etcd last.
func Run(ctx context.Context, o *Options) error {
	logger := klog.FromContext(ctx)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	// Before the store starts: starting it fills in --etcd-servers.
	store := o.defaultStore()
	o.runsEmbeddedEtcd = store == storagebackend.StoreEmbeddedEtcd
	if o.embeddedEtcd() {
		etcd, err := embedded.Start(ctx, embedded.Options{
			DataDir:           filepath.Join(o.DataDir, "etcd"),
			QuotaBackendBytes: o.EmbeddedEtcdQuotaBytes,
			LogLevel:          o.EmbeddedEtcdLogLevel,
		})
		if err != nil {
			return err
		}
		defer etcd.Close()
		go func() {
			select {
			case err := <-etcd.Err():
				logger.Error(err, "Embedded etcd failed; shutting down")
				cancel(fmt.Errorf("embedded etcd failed: %w", err))
			case <-ctx.Done():
			}
		}()
		transport := &o.RecommendedOptions.Etcd.StorageConfig.Transport
		transport.ServerList = []string{etcd.ClientURL}
		transport.TrustedCAFile, transport.CertFile, transport.KeyFile = etcd.CAFile, etcd.CertFile, etcd.KeyFile
	}

	if o.PostgresDSNFile != "" {
		dsn, err := os.ReadFile(o.PostgresDSNFile)
		if err != nil {
			return fmt.Errorf("reading --postgres-dsn-file: %w", err)
		}
		pg, err := postgres.Start(ctx, postgres.Options{
			DSN:               strings.TrimSpace(string(dsn)),
			SocketDir:         filepath.Join(o.DataDir, "kine"),
			CompactInterval:   o.PostgresCompactInterval,
			NotifyInterval:    5 * time.Second,
			MetricsRegisterer: legacyregistry.Registerer(),
		})
		if err != nil {
			return err
		}
		defer pg.Close()
		o.RecommendedOptions.Etcd.StorageConfig.Transport.ServerList = []string{pg.Endpoint}
	}

	var ca *certs.CA
	var admin certs.Pair
	if o.Mode == ModeStandalone {
		var err error
		if ca, admin, err = o.standaloneCertificates(); err != nil {
			return fmt.Errorf("issuing standalone certificates in %s: %w", o.pkiDir(), err)
		}
	}

	config, err := o.Config()
	if err != nil {
		return err
	}
	// After the server has stopped, before the stores close.
	defer config.Router.Close()
	if o.Mode == ModeStandalone {
		addr := config.GenericConfig.SecureServing.Listener.Addr()
		if err := writeAdminKubeconfig(o.AdminKubeconfig, ca, admin, addr); err != nil {
			return fmt.Errorf("writing the admin kubeconfig: %w", err)
		}
		logger.Info("Standalone mode: point kubectl at annex", "kubeconfig", o.AdminKubeconfig, "address", addr.String())
	}
	server, err := config.Complete().New(genericapiserver.NewEmptyDelegate())
	if err != nil {
		return err
	}
	controllerOptions, err := o.controllerOptions(ctx, config.GenericConfig.ClientConfig, store)
	if err != nil {
		return err
	}
	if tracker := config.GenericConfig.StorageObjectCountTracker; tracker != nil {
		controllerOptions.ObjectStats = tracker.Get
	}
	mgr, err := controllers.NewManager(server.GenericAPIServer.LoopbackClientConfig, controllerOptions)
	if err != nil {
		return err
	}
	// The controllers reach annex through its loopback client, so they start
	// once it serves; a manager that fails takes annex down with it rather
	// than leaving hosted types unreconciled.
	server.GenericAPIServer.AddPostStartHookOrDie("start-annex-controllers", func(hookCtx genericapiserver.PostStartHookContext) error {
		go func() {
			if err := mgr.Start(hookCtx.Context); err != nil {
				logger.Error(err, "The controllers stopped")
				cancel(fmt.Errorf("controllers: %w", err))
			}
		}()
		return nil
	})
	if o.Mode == ModeStandalone {
		// Without a cluster, annex finalizes its own namespaces.
		server.GenericAPIServer.AddPostStartHookOrDie("start-namespace-controller", func(hookCtx genericapiserver.PostStartHookContext) error {
			go func() {
				if err := namespacecontroller.Run(hookCtx.Context, server.GenericAPIServer.LoopbackClientConfig, 2); err != nil {
					logger.Error(err, "The namespace controller stopped")
					cancel(fmt.Errorf("namespace controller: %w", err))
				}
			}()
			return nil
		})
	}
	// Every replica, leader or not, opens the storage of each hosted type up
	// front, and reports ready only once those of the types it found at start are open.
	warmer, err := warmup.New(server.GenericAPIServer.LoopbackClientConfig)
	if err != nil {
		return err
	}
	warmer.Available = func(group, resource string) error { return config.Router.Check(group, resource, true) }
	if err := server.GenericAPIServer.AddReadyzChecks(warmer); err != nil {
		return err
	}
	server.GenericAPIServer.AddPostStartHookOrDie("warm-hosted-type-storage", func(hookCtx genericapiserver.PostStartHookContext) error {
		go warmer.Run(hookCtx.Context)
		return nil
	})
	if err := server.PrepareRun().RunWithContext(ctx); err != nil {
		return err
	}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// defaultStore is what annex keeps its own data in. Call it before Run
// points --etcd-servers at the store it starts.
func (o *Options) defaultStore() storagebackend.Store {
	switch {
	case o.PostgresDSNFile != "":
		return storagebackend.StorePostgres
	case o.embeddedEtcd():
		return storagebackend.StoreEmbeddedEtcd
	}
	return storagebackend.StoreEtcd
}

// controllerOptions turns on the cluster-facing controllers in aggregated mode.
func (o *Options) controllerOptions(ctx context.Context, cluster *rest.Config, store storagebackend.Store) (controllers.Options, error) {
	opts := controllers.Options{DefaultStore: store, ProbeInterval: o.StorageBackendProbeInterval}
	opts.Retention = o.Retention
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
	}
	return opts, nil
}
