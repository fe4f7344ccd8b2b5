package kubectlannex

import (
	"context"
	"fmt"
	"net/http"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	aggregatorclient "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	annexclient "annex.dev/annex/pkg/generated/clientset/versioned"
)

// annexAPIService is the APIService through which the cluster serves
// annex's own API.
const annexAPIService = "v1alpha1.annex.dev"

// installHint tells a user without annex how to install it.
const installHint = "install it with `helm install annex charts/annex --namespace annex-system --create-namespace` " +
	"from a clone of https://github.com/annex-dev/annex (its README has the other ways)"

// clients are what the commands talk to the cluster with.
type clients struct {
	config     *rest.Config
	annex      annexclient.Interface
	dynamic    dynamic.Interface
	aggregator aggregatorclient.Interface
	namespace  string
	// explicitNamespace is true when --namespace was given.
	explicitNamespace bool
}

// newClients builds the clients from kubectl's flags (--kubeconfig,
// --context, --namespace, ...).
func newClients(flags *genericclioptions.ConfigFlags) (*clients, error) {
	config, err := flags.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	// export and import send one request per page or object, many in a
	// row: leave the pace to the server's API Priority and Fairness rather
	// than client-go's default of 5 requests a second.
	config.QPS, config.Burst = -1, 0
	config.Wrap(func(rt http.RoundTripper) http.RoundTripper { return retryNotSent{rt: rt, wait: notSentWait} })
	ns, explicit, err := flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, err
	}
	c := &clients{config: config, namespace: ns, explicitNamespace: explicit}
	if c.annex, err = annexclient.NewForConfig(config); err != nil {
		return nil, err
	}
	if c.dynamic, err = dynamic.NewForConfig(config); err != nil {
		return nil, err
	}
	if c.aggregator, err = aggregatorclient.NewForConfig(config); err != nil {
		return nil, err
	}
	return c, nil
}

// hostedResources lists the HostedResources, turning the errors of a
// cluster without annex, or with annex down, into ones that say so.
func (c *clients) hostedResources(ctx context.Context) ([]v1alpha1.HostedResource, error) {
	list, err := c.annex.AnnexV1alpha1().HostedResources().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, c.annexError(ctx, err)
	}
	return list.Items, nil
}

// annexError explains an error of a request for annex's own API.
func (c *clients) annexError(ctx context.Context, err error) error {
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("annex is not installed in this cluster: the server does not serve %s; %s", v1alpha1.SchemeGroupVersion, installHint)
	case apierrors.IsServiceUnavailable(err):
		svc, getErr := c.aggregator.ApiregistrationV1().APIServices().Get(ctx, annexAPIService, metav1.GetOptions{})
		if getErr != nil {
			return fmt.Errorf("annex is installed but does not answer: %w", err)
		}
		return fmt.Errorf("annex is installed but does not answer: APIService %s is %s", annexAPIService, describeCondition(availableCondition(svc)))
	}
	return err
}

// availableCondition returns the Available condition of an APIService as
// a metav1.Condition; its status is Unknown when there is none.
func availableCondition(svc *apiregistrationv1.APIService) metav1.Condition {
	for _, c := range svc.Status.Conditions {
		if c.Type == apiregistrationv1.Available {
			return metav1.Condition{Type: string(c.Type), Status: metav1.ConditionStatus(c.Status), Reason: c.Reason, Message: c.Message}
		}
	}
	return metav1.Condition{Type: string(apiregistrationv1.Available), Status: metav1.ConditionUnknown, Reason: "NoCondition", Message: "the cluster has not checked it yet"}
}

// describeCondition is a condition in a sentence's words: "Available=False
// (FailedDiscoveryCheck): ...".
func describeCondition(c metav1.Condition) string {
	s := fmt.Sprintf("%s=%s", c.Type, c.Status)
	if c.Reason != "" {
		s += " (" + c.Reason + ")"
	}
	if c.Message != "" {
		s += ": " + c.Message
	}
	return s
}
