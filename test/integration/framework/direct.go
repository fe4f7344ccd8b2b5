//go:build integration

package framework

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// AnnexAdminConfig provisions a system:masters user named name with a client
// certificate issued by the cluster's client CA, and returns a configuration
// that sends its requests straight to annex, bypassing the aggregator. annex
// trusts the cluster's client CA (from the extension-apiserver-authentication
// ConfigMap) and asks the cluster to authorize, so the user has the same
// rights on annex as through the cluster.
func (e *Environment) AnnexAdminConfig(name string) (*rest.Config, error) {
	user, err := e.env.AddUser(envtest.User{Name: name, Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, fmt.Errorf("provisioning user %q: %w", name, err)
	}
	cfg := rest.CopyConfig(user.Config())
	cfg.Host = "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(e.AnnexPort))
	cfg.CAData = append([]byte(nil), e.annexCA...)
	cfg.CAFile = ""
	return cfg, nil
}

// AnnexDataDir is where annex keeps its embedded etcd's data.
func (e *Environment) AnnexDataDir() string { return filepath.Join(e.Dir, "annex-data") }
