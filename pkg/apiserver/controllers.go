package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"

	"annex.dev/annex/pkg/controllers"
	namespacecontroller "annex.dev/annex/pkg/controllers/namespace"
	"annex.dev/annex/pkg/controllers/warmup"
	"annex.dev/annex/pkg/storage/routing"
)

// controllersStopTimeout bounds how long shutdown waits for the controllers.
const controllersStopTimeout = 20 * time.Second

// installControllers runs annex's controllers, and the warmup of the hosted
// types' storage, on the server's loopback client. They start once the
// server serves, and stop before it stops serving: at shutdown their
// requests in flight finish instead of being cut off (and logged as errors
// by both sides). A manager that stops on its own is replaced (runManager);
// another controller that fails calls fail, which stops annex rather than
// leaving the controller's work undone.
func installControllers(server *genericapiserver.GenericAPIServer, opts controllers.Options, standalone bool, router *routing.Router, fail func(error)) error {
	logger := klog.Background()
	loopback := finishOnShutdown(server.LoopbackClientConfig)
	newManager := func() (ctrl.Manager, error) { return controllers.NewManager(loopback, opts) }
	// The first one is built here, so that a configuration error stops annex
	// at start.
	mgr, err := newManager()
	if err != nil {
		return err
	}
	// Every replica, leader or not, opens the storage of each hosted type up
	// front, and reports ready only once those of the types it found at
	// start are open.
	warmer, err := warmup.New(loopback)
	if err != nil {
		return err
	}
	warmer.Available = func(group, resource string) error { return router.Check(group, resource, true) }
	if err := server.AddReadyzChecks(warmer); err != nil {
		return err
	}

	ctx, stop := context.WithCancel(context.Background())
	var running sync.WaitGroup
	run := func(name string, run func(context.Context) error) {
		running.Go(func() {
			if err := run(ctx); err != nil {
				logger.Error(err, "A controller stopped", "controller", name)
				fail(fmt.Errorf("%s: %w", name, err))
			}
		})
	}
	if err := server.AddPostStartHook("start-annex-controllers", func(genericapiserver.PostStartHookContext) error {
		run("controllers", func(ctx context.Context) error { return runManager(ctx, mgr, newManager) })
		if standalone {
			// Without a cluster, annex finalizes its own namespaces.
			run("namespace controller", func(ctx context.Context) error { return namespacecontroller.Run(ctx, loopback, 2) })
		}
		return nil
	}); err != nil {
		stop()
		return err
	}
	if err := server.AddPostStartHook("warm-hosted-type-storage", func(genericapiserver.PostStartHookContext) error {
		running.Go(func() { warmer.Run(ctx) })
		return nil
	}); err != nil {
		stop()
		return err
	}
	return server.AddPreShutdownHook("stop-annex-controllers", func() error {
		stop()
		stopped := make(chan struct{})
		go func() { running.Wait(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(controllersStopTimeout):
			logger.Info("Warning: the controllers did not stop in time; shutting down the server anyway", "timeout", controllersStopTimeout)
		}
		return nil
	})
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
