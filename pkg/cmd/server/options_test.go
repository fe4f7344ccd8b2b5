package server

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// parsed returns options completed from args, as the command completes them.
func parsed(t *testing.T, args ...string) *Options {
	t.Helper()
	o := NewOptions()
	fs := pflag.NewFlagSet("annex-apiserver", pflag.ContinueOnError)
	o.AddFlags(fs)
	if err := fs.Parse(append([]string{"--data-dir=" + t.TempDir()}, args...)); err != nil {
		t.Fatal(err)
	}
	if err := o.Complete(); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestStandaloneListensOnLoopbackUnlessToldOtherwise(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"standalone, no --bind-address", []string{"--mode=standalone"}, "127.0.0.1"},
		{"auto without a cluster is standalone", nil, "127.0.0.1"},
		{"standalone, --bind-address given", []string{"--mode=standalone", "--bind-address=0.0.0.0"}, "0.0.0.0"},
		{"aggregated keeps the default", []string{"--mode=aggregated"}, "0.0.0.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := parsed(t, tc.args...)
			if got := o.RecommendedOptions.SecureServing.BindAddress.String(); got != tc.want {
				t.Errorf("bind address %s, want %s", got, tc.want)
			}
		})
	}
}

func TestStandaloneInAPodNeedsAFlag(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
	err := parsed(t, "--mode=standalone").Validate()
	if err == nil || !strings.Contains(err.Error(), "--standalone-in-pod") {
		t.Errorf("--mode=standalone in a pod: got %v, want a refusal naming --standalone-in-pod", err)
	}
	if err := parsed(t, "--mode=standalone", "--standalone-in-pod").Validate(); err != nil && strings.Contains(err.Error(), "standalone-in-pod") {
		t.Errorf("with --standalone-in-pod: %v", err)
	}
	if o := parsed(t); o.Mode != ModeAggregated {
		t.Errorf("--mode=auto in a pod chose %s, want aggregated", o.Mode)
	}
}

// The etcd options are checked with the others, before any store starts,
// whichever store annex runs on.
func TestValidateChecksTheEtcdOptionsOfEveryStore(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	for _, store := range [][]string{nil, {"--etcd-servers=https://127.0.0.1:2379"}} {
		if err := parsed(t, store...).Validate(); err != nil && strings.Contains(err.Error(), "etcd") {
			t.Errorf("store %v: %v, want no complaint about etcd", store, err)
		}
		err := parsed(t, append(store, "--storage-media-type=application/bogus")...).Validate()
		if err == nil || !strings.Contains(err.Error(), "--storage-media-type") {
			t.Errorf("store %v with a bad --storage-media-type: %v, want it refused", store, err)
		}
	}
}
