// Package uninstall holds `annex-apiserver delete-hosted-apiservices`, which
// the Helm chart's post-delete hook runs, so that the hook needs no image but
// annex's own.
package uninstall

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	aggregatorclient "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

// NewCommand returns the delete-hosted-apiservices command.
func NewCommand() *cobra.Command {
	var kubeconfig string
	timeout := 2 * time.Minute
	cmd := &cobra.Command{
		Use:   "delete-hosted-apiservices",
		Short: "Delete the APIServices annex registered for hosted groups, and wait until they are gone",
		Long: `delete-hosted-apiservices deletes every APIService labelled ` + v1alpha1.ManagedBySelector + `
and waits until the cluster has removed them. The Helm chart runs it after ` + "`helm uninstall`" + `:
left behind, such an APIService points at a Service that no longer exists, and an unavailable
APIService breaks discovery, garbage collection and namespace deletion for the whole cluster.
It reaches the cluster through --kubeconfig, $KUBECONFIG, or the pod's ServiceAccount.`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rules := clientcmd.NewDefaultClientConfigLoadingRules()
			rules.ExplicitPath = kubeconfig
			// With no kubeconfig at all this is the in-cluster configuration.
			config, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
			if err != nil {
				return fmt.Errorf("configuring the client: %w", err)
			}
			client, err := aggregatorclient.NewForConfig(config)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return Delete(ctx, client, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", kubeconfig, "Path to a kubeconfig; empty: $KUBECONFIG, then the in-cluster configuration.")
	cmd.Flags().DurationVar(&timeout, "timeout", timeout, "How long to try before giving up.")
	return cmd
}

// Delete deletes the APIServices annex manages, reporting each on out, and
// waits until the cluster no longer has them.
func Delete(ctx context.Context, client aggregatorclient.Interface, out io.Writer) error {
	apiServices := client.ApiregistrationV1().APIServices()
	list, err := apiServices.List(ctx, metav1.ListOptions{LabelSelector: v1alpha1.ManagedBySelector})
	if err != nil {
		return fmt.Errorf("listing APIServices %s: %w", v1alpha1.ManagedBySelector, err)
	}
	if len(list.Items) == 0 {
		fmt.Fprintf(out, "No APIServices labelled %s\n", v1alpha1.ManagedBySelector)
		return nil
	}
	for _, a := range list.Items {
		// The UID precondition keeps an APIService re-created meanwhile (by
		// someone else, under the same name) out of it.
		err := apiServices.Delete(ctx, a.Name, metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(a.UID))})
		switch {
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		case err != nil:
			return fmt.Errorf("deleting APIService %s: %w", a.Name, err)
		default:
			fmt.Fprintf(out, "apiservice.apiregistration.k8s.io %q deleted\n", a.Name)
		}
	}
	var remaining []string
	err = wait.PollUntilContextCancel(ctx, 500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		remaining = remaining[:0]
		for _, a := range list.Items {
			current, err := apiServices.Get(ctx, a.Name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
			case err != nil:
				return false, nil // retried until the timeout
			case current.UID == a.UID:
				remaining = append(remaining, a.Name)
			}
		}
		return len(remaining) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for APIServices %v to be gone: %w", remaining, err)
	}
	return nil
}
