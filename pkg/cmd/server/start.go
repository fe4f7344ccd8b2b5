package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/rest"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/component-base/cli/globalflag"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"

	"annex.dev/annex/pkg/certs"
	"annex.dev/annex/pkg/cmd/uninstall"
	"annex.dev/annex/pkg/controllers"
	"annex.dev/annex/pkg/controllers/apiservice"
	namespacecontroller "annex.dev/annex/pkg/controllers/namespace"
	"annex.dev/annex/pkg/controllers/warmup"
	"annex.dev/annex/pkg/storage/backend"
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

// controllersStopTimeout bounds how long shutdown waits for the controllers.
const controllersStopTimeout = 20 * time.Second

// Run starts the embedded etcd if there is no external one, then serves until
// ctx is done, and shuts down gracefully: the API server first, etcd last.
func Run(ctx context.Context, o *Options) error {
	logger := klog.FromContext(ctx)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	// Before the store starts: starting it fills in --etcd-servers.
	if o.store == backend.StoreEmbeddedEtcd {
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
		pg, err := startPostgres(ctx, o.postgres(), strings.TrimSpace(string(dsn)), filepath.Join(o.DataDir, "kine"))
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
	controllerOptions, err := o.controllerOptions(ctx, config.GenericConfig.ClientConfig, config.Backends)
	if err != nil {
		return err
	}
	if tracker := config.GenericConfig.StorageObjectCountTracker; tracker != nil {
		controllerOptions.ObjectStats = tracker.Get
	}
	controllersLoopback := finishOnShutdown(server.GenericAPIServer.LoopbackClientConfig)
	newManager := func() (ctrl.Manager, error) { return controllers.NewManager(controllersLoopback, controllerOptions) }
	// The first one is built here, so that a configuration error stops annex
	// at start.
	mgr, err := newManager()
	if err != nil {
		return err
	}
	// The controllers reach annex through its loopback client, so they start
	// once it serves, and stop before it stops serving: at shutdown their
	// requests in flight finish instead of being cut off (and logged as
	// errors by both sides). A manager that stops on its own is replaced
	// (runManager); another controller that fails takes annex down with it
	// rather than leaving its work undone.
	controllersCtx, stopControllers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopControllers()
	var controllersRunning sync.WaitGroup
	runController := func(name string, run func(context.Context) error) {
		controllersRunning.Go(func() {
			if err := run(controllersCtx); err != nil {
				logger.Error(err, "A controller stopped", "controller", name)
				cancel(fmt.Errorf("%s: %w", name, err))
			}
		})
	}
	server.GenericAPIServer.AddPostStartHookOrDie("start-annex-controllers", func(genericapiserver.PostStartHookContext) error {
		runController("controllers", func(ctx context.Context) error { return runManager(ctx, mgr, newManager) })
		if o.Mode == ModeStandalone {
			// Without a cluster, annex finalizes its own namespaces.
			runController("namespace controller", func(ctx context.Context) error {
				return namespacecontroller.Run(ctx, controllersLoopback, 2)
			})
		}
		return nil
	})
	server.GenericAPIServer.AddPreShutdownHookOrDie("stop-annex-controllers", func() error {
		stopControllers()
		stopped := make(chan struct{})
		go func() { controllersRunning.Wait(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(controllersStopTimeout):
			logger.Info("Warning: the controllers did not stop in time; shutting down the server anyway", "timeout", controllersStopTimeout)
		}
		return nil
	})
	// Every replica, leader or not, opens the storage of each hosted type up
	// front, and reports ready only once those of the types it found at start are open.
	warmer, err := warmup.New(controllersLoopback)
	if err != nil {
		return err
	}
	warmer.Available = func(group, resource string) error { return config.Router.Check(group, resource, true) }
	if err := server.GenericAPIServer.AddReadyzChecks(warmer); err != nil {
		return err
	}
	server.GenericAPIServer.AddPostStartHookOrDie("warm-hosted-type-storage", func(genericapiserver.PostStartHookContext) error {
		// Stopped with the controllers, for the same reason.
		controllersRunning.Go(func() { warmer.Run(controllersCtx) })
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

// finishOnShutdown returns a copy of the loopback config whose requests are
// not cut off when the context of the controller sending them is cancelled:
// the controllers stop (stop-annex-controllers) while annex still serves, so
// a request in flight then completes, bounded by the config's timeout,
// instead of being aborted and logged as an error by both sides. A watch
// still ends when its reader stops: closing the body closes the stream.
func finishOnShutdown(loopback *rest.Config) *rest.Config {
	cfg := rest.CopyConfig(loopback)
	if cfg.Timeout == 0 {
		cfg.Timeout = controllersStopTimeout
	}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			if req.URL.Query().Get("watch") == "true" {
				return rt.RoundTrip(req)
			}
			return rt.RoundTrip(req.WithContext(context.WithoutCancel(req.Context())))
		})
	})
	return cfg
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// runManager runs the controllers until ctx is done. A manager that stops
// on its own (it lost its lease because the cluster did not answer for
// longer than the lease lasts, say) cannot start again: it is replaced by a
// new one, after a wait that doubles up to a minute. Only the controllers
// stop meanwhile; annex keeps serving.
func runManager(ctx context.Context, mgr ctrl.Manager, newManager func() (ctrl.Manager, error)) error {
	logger := klog.FromContext(ctx)
	delay := time.Second
	for {
		err := mgr.Start(ctx)
		if ctx.Err() != nil {
			return nil
		}
		logger.Error(err, "The controllers stopped; annex keeps serving, and starts them again", "retryAfter", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Minute)
		if mgr, err = newManager(); err != nil {
			return err
		}
	}
}

// startPostgres starts annex's own store on PostgreSQL, trying again with
// backoff while the database is unavailable, until ctx is done: annex has
// nothing to serve without it, and waits rather than exits.
func startPostgres(ctx context.Context, pgOptions backend.Postgres, dsn, socketDir string) (*postgres.Server, error) {
	logger := klog.FromContext(ctx)
	delay := time.Second
	for {
		pg, err := pgOptions.Start(ctx, "", dsn, socketDir)
		if err == nil || !errors.Is(err, postgres.ErrUnavailable) || ctx.Err() != nil {
			return pg, err
		}
		logger.Error(err, "Cannot start annex's store on PostgreSQL; trying again", "retryAfter", delay)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// postgres configures the kine of every PostgreSQL store: the command-line
// store's and those of StorageBackends.
func (o *Options) postgres() backend.Postgres {
	return backend.Postgres{
		CompactInterval:   o.PostgresCompactInterval,
		ConnectTimeout:    o.PostgresConnectTimeout,
		StartTimeout:      o.PostgresStartTimeout,
		MetricsRegisterer: legacyregistry.Registerer(),
	}
}

// controllerOptions turns on the cluster-facing controllers in aggregated mode.
func (o *Options) controllerOptions(ctx context.Context, cluster *rest.Config, backends *backend.Factory) (controllers.Options, error) {
	opts := controllers.Options{Backends: backends, ProbeInterval: o.StorageBackendProbeInterval}
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
