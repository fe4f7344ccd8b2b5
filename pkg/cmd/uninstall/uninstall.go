// Package uninstall holds `annex-apiserver delete-hosted-apiservices`, which
// the Helm chart's post-delete hook runs, so that the hook needs no image but
// annex's own.
package uninstall

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	aggregatorclient "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/clustergroups"
)

// NewCommand returns the delete-hosted-apiservices command.
func NewCommand() *cobra.Command {
	var kubeconfig string
	timeout := 2 * time.Minute
	install := Install{ManagedBy: v1alpha1.DefaultManagedByValue}
	cmd := &cobra.Command{
		Use:   "delete-hosted-apiservices",
		Short: "Delete the APIServices annex registered for hosted groups, and wait until they are gone",
		Long: `delete-hosted-apiservices deletes the APIServices of one install of annex and waits until the
cluster has removed them: those labelled ` + v1alpha1.ManagedByLabel + `=<--apiservice-managed-by>
and, with --apiservice-namespace and --apiservice-service-name, pointing at that Service, and those
pointing at that Service labelled with the value from before installs had their own
(` + v1alpha1.DefaultManagedByValue + `). The Helm chart runs it after ` + "`helm uninstall`" + `:
left behind, such an APIService points at a Service that no longer exists, and an unavailable
APIService breaks discovery, garbage collection and namespace deletion for the whole cluster.
It reaches the cluster through --kubeconfig, $KUBECONFIG, or the pod's ServiceAccount.`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := install.validate(); err != nil {
				return err
			}
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
			return Delete(ctx, client, install, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", kubeconfig, "Path to a kubeconfig; empty: $KUBECONFIG, then the in-cluster configuration.")
	cmd.Flags().DurationVar(&timeout, "timeout", timeout, "How long to try before giving up.")
	cmd.Flags().StringVar(&install.ManagedBy, "apiservice-managed-by", install.ManagedBy, "The install's value of the label "+v1alpha1.ManagedByLabel+
		", as annex-apiserver's --apiservice-managed-by.")
	cmd.Flags().StringVar(&install.Namespace, "apiservice-namespace", install.Namespace, "Namespace of the install's Service; with --apiservice-service-name, "+
		"only the APIServices pointing at that Service are deleted.")
	cmd.Flags().StringVar(&install.Name, "apiservice-service-name", install.Name, "Name of the install's Service.")
	return cmd
}

// Install names the install whose APIServices are deleted.
type Install struct {
	// ManagedBy is the install's value of v1alpha1.ManagedByLabel.
	ManagedBy string
	// Namespace and Name are the install's Service; empty: any Service.
	Namespace, Name string
}

func (i Install) validate() error {
	if i.ManagedBy == "" {
		return fmt.Errorf("--apiservice-managed-by must not be empty")
	}
	if msgs := validation.IsValidLabelValue(i.ManagedBy); len(msgs) > 0 {
		return fmt.Errorf("--apiservice-managed-by=%s is not a label value: %s", i.ManagedBy, strings.Join(msgs, "; "))
	}
	if (i.Namespace == "") != (i.Name == "") {
		return fmt.Errorf("give both --apiservice-namespace and --apiservice-service-name, or neither")
	}
	return nil
}

// owns says whether apiService is the install's, as its apiservice
// controller decides (clustergroups.Install.Owns); with no Service given, by
// the label alone.
func (i Install) owns(apiService *apiregistrationv1.APIService) bool {
	if i.Namespace == "" && i.Name == "" {
		return apiService.Labels[v1alpha1.ManagedByLabel] == i.ManagedBy
	}
	return clustergroups.Install{Namespace: i.Namespace, Name: i.Name, ManagedBy: i.ManagedBy}.Owns(apiService)
}

// Delete deletes the APIServices of install, reporting each on out, and
// waits until the cluster no longer has them.
func Delete(ctx context.Context, client aggregatorclient.Interface, install Install, out io.Writer) error {
	apiServices := client.ApiregistrationV1().APIServices()
	selector := fmt.Sprintf("%s in (%s,%s)", v1alpha1.ManagedByLabel, install.ManagedBy, v1alpha1.DefaultManagedByValue)
	all, err := apiServices.List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return fmt.Errorf("listing APIServices %s: %w", selector, err)
	}
	var list []apiregistrationv1.APIService
	for _, a := range all.Items {
		if install.owns(&a) {
			list = append(list, a)
		}
	}
	if len(list) == 0 {
		fmt.Fprintf(out, "No APIServices of this install (labelled %s=%s%s)\n", v1alpha1.ManagedByLabel, install.ManagedBy, install.service())
		return nil
	}
	for _, a := range list {
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
		for _, a := range list {
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

func (i Install) service() string {
	if i.Namespace == "" && i.Name == "" {
		return ""
	}
	return fmt.Sprintf(", or %s, pointing at Service %s/%s", v1alpha1.DefaultManagedByValue, i.Namespace, i.Name)
}
