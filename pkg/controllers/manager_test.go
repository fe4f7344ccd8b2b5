package controllers

import (
	"strings"
	"testing"

	"k8s.io/client-go/rest"

	"annex.dev/annex/pkg/controllers/apiservice"
)

var loopback = &rest.Config{Host: "https://127.0.0.1:1"}

func TestNewManager(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		err  string
	}{
		{name: "standalone", opts: Options{}},
		{
			name: "aggregated",
			opts: Options{Cluster: loopback, APIService: &apiservice.Target{Namespace: "annex-system", Name: "annex", Port: 443}, LeaderElection: true},
		},
		{
			name: "leader election without a cluster",
			opts: Options{LeaderElection: true, APIService: &apiservice.Target{Namespace: "annex-system"}},
			err:  "leader election needs a cluster and the namespace of annex's Service",
		},
		{
			name: "leader election without annex's Service",
			opts: Options{LeaderElection: true, Cluster: loopback},
			err:  "leader election needs a cluster and the namespace of annex's Service",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mgr, err := NewManager(loopback, tc.opts)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || mgr == nil {
				t.Fatalf("NewManager: %v", err)
			}
		})
	}
}
