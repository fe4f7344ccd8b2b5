package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	certutil "k8s.io/client-go/util/cert"
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

func TestStorageSecretsDefaultToANamespaceOfTheirOwn(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	o := parsed(t)
	if want := []string{"annex-storage-secrets"}; !slices.Equal(o.StorageSecretNamespaces, want) {
		t.Errorf("--storage-secret-namespaces defaults to %v, want %v", o.StorageSecretNamespaces, want)
	}
	policy, err := o.secretPolicy(nil)
	if err != nil {
		t.Fatal(err)
	}
	if policy.Check(o.APIService.Namespace, "annex-tls") == nil {
		t.Errorf("by default a StorageBackend may name Secrets in annex's own namespace %s", o.APIService.Namespace)
	}
	if policy.Check("annex-storage-secrets", "pg") != nil {
		t.Error("by default a StorageBackend may not name Secrets in annex-storage-secrets")
	}

	o = parsed(t, "--storage-secret-namespaces=team-a,team-b", "--serving-cert-secret=team-a/annex-tls")
	if policy, err = o.secretPolicy(nil); err != nil {
		t.Fatal(err)
	}
	if policy.Check("team-b", "pg") != nil || policy.Check("annex-storage-secrets", "pg") == nil {
		t.Errorf("--storage-secret-namespaces=team-a,team-b: policy %+v", policy)
	}
	if r := policy.Check("team-a", "annex-tls"); r == nil || r.Reason != "ServingSecretNotAllowed" {
		t.Errorf("--serving-cert-secret=team-a/annex-tls: naming it gives %v, want it refused", r)
	}
	if o = parsed(t, "--storage-secret-namespaces="); len(o.StorageSecretNamespaces) != 0 {
		t.Errorf("--storage-secret-namespaces= gives %v, want none", o.StorageSecretNamespaces)
	}

	for _, args := range [][]string{
		{"--serving-cert-secret=annex-tls"},
		{"--serving-cert-secret=Annex/annex-tls"},
		{"--storage-secret-namespaces=Not_A_Namespace"},
	} {
		if err := parsed(t, args...).Validate(); err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(strings.Split(args[0], "=")[0], "--")) {
			t.Errorf("%v: %v, want it refused", args, err)
		}
	}
}

func TestRuntimeDirIsApartFromTheDataDir(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	data := t.TempDir()
	for _, tc := range []struct {
		runtimeDir string
		refused    bool
	}{
		{"", false},
		{t.TempDir(), false},
		{data, true},
		{filepath.Join(data, "run"), true},
		{filepath.Join(data, "..", filepath.Base(data), "run"), true},
		{filepath.Dir(data), true},
		{data + "-run", false},
	} {
		o := NewOptions()
		fs := pflag.NewFlagSet("annex-apiserver", pflag.ContinueOnError)
		o.AddFlags(fs)
		if err := fs.Parse([]string{"--data-dir=" + data, "--runtime-dir=" + tc.runtimeDir}); err != nil {
			t.Fatal(err)
		}
		if err := o.Complete(); err != nil {
			t.Fatal(err)
		}
		err := o.Validate()
		if refused := err != nil && strings.Contains(err.Error(), "--runtime-dir"); refused != tc.refused {
			t.Errorf("--runtime-dir=%q with --data-dir=%q: %v, want refused %v", tc.runtimeDir, data, err, tc.refused)
		}
	}
	// The default is a new directory under the system's temporary one,
	// which must not be in the data directory either.
	t.Setenv("TMPDIR", filepath.Join(data, "tmp"))
	if err := parsed(t).Validate(); err != nil && strings.Contains(err.Error(), "temporary") {
		t.Errorf("with the data directory elsewhere: %v", err)
	}
	o := NewOptions()
	fs := pflag.NewFlagSet("annex-apiserver", pflag.ContinueOnError)
	o.AddFlags(fs)
	if err := fs.Parse([]string{"--data-dir=" + data}); err != nil {
		t.Fatal(err)
	}
	if err := o.Complete(); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "--runtime-dir") {
		t.Errorf("the system's temporary directory inside --data-dir: %v, want it refused", err)
	}
}

func TestPrepareRuntimeDir(t *testing.T) {
	t.Run("default: a new private directory, removed at close", func(t *testing.T) {
		t.Setenv("TMPDIR", t.TempDir())
		var closers []func()
		dir, err := prepareRuntimeDir("", func(remove func()) { closers = append(closers, remove) })
		if err != nil {
			t.Fatal(err)
		}
		if info, err := os.Stat(dir); err != nil || info.Mode().Perm() != 0o700 || filepath.Dir(dir) != os.Getenv("TMPDIR") {
			t.Fatalf("runtime directory %s: %v %v, want a directory of mode 0700 under TMPDIR", dir, info, err)
		}
		for _, c := range closers {
			c()
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("after close, %s: %v, want it removed", dir, err)
		}
	})
	t.Run("given: made private, and emptied of an earlier run's keys and sockets", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "run")
		stale := filepath.Join(dir, "backends", "0123456789ab", "tls", "tls.key")
		if err := os.MkdirAll(filepath.Dir(stale), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(stale, []byte("key"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		other := filepath.Join(dir, "other")
		if err := os.WriteFile(other, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := prepareRuntimeDir(dir, func(func()) { t.Error("a given runtime directory is not annex's to remove") })
		if err != nil || got != dir {
			t.Fatalf("prepareRuntimeDir(%s) = %s, %v", dir, got, err)
		}
		if info, err := os.Stat(dir); err != nil || info.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v, want mode 0700", dir, info, err)
		}
		if _, err := os.Stat(stale); !os.IsNotExist(err) {
			t.Errorf("%s: %v, want it removed", stale, err)
		}
		if _, err := os.Stat(other); err != nil {
			t.Errorf("what annex did not write there is gone: %v", err)
		}
	})
}

// Each install labels its APIServices with a value of its own; with no flag,
// annex keeps the value every install used before, so that a binary run
// outside the chart behaves as it did.
func TestAPIServiceManagedBy(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := certutil.NewSelfSignedCACert(certutil.Config{CommonName: "annex-test-ca"}, key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := certutil.EncodeCertificates(ca)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "annex-apiserver"},
		{[]string{"--apiservice-managed-by=team-a.annex"}, "team-a.annex"},
	} {
		o := parsed(t, append([]string{"--mode=aggregated", "--apiservice-ca-bundle-file=" + caFile}, tc.args...)...)
		if err := o.Validate(); err != nil && strings.Contains(err.Error(), "managed-by") {
			t.Errorf("%v: %v", tc.args, err)
		}
		opts, err := o.controllerOptions(t.Context(), &rest.Config{Host: "https://127.0.0.1:6443"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if opts.APIService == nil || opts.APIService.ManagedBy != tc.want {
			t.Errorf("%v: the apiservice controller's target is %+v, want ManagedBy %q", tc.args, opts.APIService, tc.want)
		}
	}
	for _, bad := range []string{"", "team-a/annex", "-annex", strings.Repeat("a", 64)} {
		if err := parsed(t, "--apiservice-managed-by="+bad).Validate(); err == nil || !strings.Contains(err.Error(), "--apiservice-managed-by") {
			t.Errorf("--apiservice-managed-by=%q: %v, want it refused", bad, err)
		}
	}
}

// The key prefix of new hosted types is the install's own: under
// --etcd-prefix, named by --apiservice-managed-by (unique per install of the
// chart), in both modes, unless --storage-key-prefix gives one.
func TestStorageKeyPrefix(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--mode=standalone"}, "/annex/installs/annex-apiserver"},
		{[]string{"--mode=aggregated", "--apiservice-managed-by=team-a.annex"}, "/annex/installs/team-a.annex"},
		{[]string{"--mode=aggregated", "--apiservice-managed-by=team-b.annex"}, "/annex/installs/team-b.annex"},
		{[]string{"--mode=aggregated", "--apiservice-managed-by=team-a.annex", "--etcd-prefix=/shared/"}, "/shared/installs/team-a.annex"},
		{[]string{"--mode=standalone", "--storage-key-prefix=/ci/run-7"}, "/ci/run-7"},
	} {
		o := parsed(t, tc.args...)
		if err := o.Validate(); err != nil && strings.Contains(err.Error(), "key-prefix") {
			t.Errorf("%v: %v", tc.args, err)
		}
		opts, err := o.controllerOptions(t.Context(), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if opts.StorageKeyPrefix != tc.want {
			t.Errorf("%v: new types get key prefix %q, want %q", tc.args, opts.StorageKeyPrefix, tc.want)
		}
	}
	for _, bad := range []string{"annex", "/annex/", "/annex//a", "/annex/../other", "/./a", "/"} {
		if err := parsed(t, "--storage-key-prefix="+bad).Validate(); err == nil || !strings.Contains(err.Error(), "--storage-key-prefix") {
			t.Errorf("--storage-key-prefix=%q: %v, want it refused", bad, err)
		}
	}
}

// annex's own store is held to the rule of StorageBackends: no plaintext
// over the network unless --storage-insecure says so.
func TestPlaintextStoreNeedsAFlag(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	const password = "s3cret-pw"
	dsnFile := func(dsn string) string {
		path := filepath.Join(t.TempDir(), "dsn")
		if err := os.WriteFile(path, []byte(dsn+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return "--postgres-dsn-file=" + path
	}
	for _, tc := range []struct {
		name    string
		args    []string
		refused string // what the refusal names; empty: accepted
	}{
		{"embedded etcd", nil, ""},
		{"etcd over https", []string{"--etcd-servers=https://etcd.example:2379"}, ""},
		{"etcd over http", []string{"--etcd-servers=http://etcd.example:2379"}, "--etcd-servers: http://etcd.example:2379 is plaintext"},
		{"one of several etcd endpoints over http", []string{"--etcd-servers=https://etcd-0.example:2379,http://etcd-1.example:2379"},
			"http://etcd-1.example:2379 is plaintext"},
		{"etcd over http with TLS files (ignored for http)", []string{"--etcd-servers=http://etcd.example:2379", "--etcd-cafile=/ca.crt"}, "is plaintext"},
		{"etcd over http with a password in the URL", []string{"--etcd-servers=http://root:" + password + "@etcd.example:2379"},
			"http://root:xxxxx@etcd.example:2379 is plaintext"},
		{"etcd without a scheme, without TLS files", []string{"--etcd-servers=etcd.example:2379"}, "etcd.example:2379 is plaintext"},
		{"etcd without a scheme, with TLS files", []string{"--etcd-servers=etcd.example:2379", "--etcd-cafile=/ca.crt"}, ""},
		{"etcd over http on loopback", []string{"--etcd-servers=http://127.0.0.1:2379"}, ""},
		{"etcd over http on IPv6 loopback", []string{"--etcd-servers=http://[::1]:2379"}, ""},
		{"etcd over http on localhost, a name", []string{"--etcd-servers=http://localhost:2379"}, "http://localhost:2379 is plaintext"},
		{"etcd on a unix socket", []string{"--etcd-servers=unix:///var/run/etcd.sock"}, ""},
		{"PostgreSQL with TLS", []string{dsnFile("postgres://annex:" + password + "@db.example:5432/annex?sslmode=verify-full")}, ""},
		{"PostgreSQL without TLS", []string{dsnFile("postgres://annex:" + password + "@db.example:5432/annex?sslmode=disable")},
			"lets annex connect to db.example without TLS"},
		{"PostgreSQL with no sslmode (prefer)", []string{dsnFile("postgres://annex:" + password + "@db.example:5432/annex")},
			"lets annex connect to db.example without TLS"},
		{"PostgreSQL on loopback without TLS", []string{dsnFile("postgres://annex:" + password + "@127.0.0.1:5432/annex?sslmode=disable")}, ""},
		{"PostgreSQL on loopback and elsewhere without TLS",
			[]string{dsnFile("host=127.0.0.1,db.example port=5432,5432 user=annex password=" + password + " dbname=annex sslmode=prefer")},
			"lets annex connect to db.example without TLS"},
		{"PostgreSQL on a unix socket", []string{dsnFile("host=/var/run/postgresql user=annex password=" + password + " dbname=annex sslmode=disable")}, ""},
		{"PostgreSQL, a connection string that does not parse", []string{dsnFile("postgres://annex:" + password + "@db.example:notaport/annex")},
			"does not parse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := parsed(t, tc.args...).Validate()
			if tc.refused == "" {
				if err != nil && (strings.Contains(err.Error(), "plaintext") || strings.Contains(err.Error(), "TLS")) {
					t.Errorf("%v, want it accepted", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.refused) {
				t.Fatalf("%v, want a refusal saying %q", err, tc.refused)
			}
			if !strings.Contains(err.Error(), "--storage-insecure") && !strings.Contains(tc.refused, "does not parse") {
				t.Errorf("%v, want it to name --storage-insecure", err)
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("the refusal shows the password: %v", err)
			}
			if strings.Contains(tc.refused, "does not parse") {
				return // with the flag, left to the store's start
			}
			err = parsed(t, append(tc.args, "--storage-insecure")...).Validate()
			if err != nil && (strings.Contains(err.Error(), "plaintext") || strings.Contains(err.Error(), "without TLS")) {
				t.Errorf("with --storage-insecure: %v, want plaintext allowed", err)
			}
		})
	}
}

func TestStorageCompression(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if o := parsed(t); o.StorageCompression != "S2" {
		t.Errorf("--storage-compression defaults to %q, want S2", o.StorageCompression)
	}
	for _, mode := range []string{"S2", "None"} {
		if err := parsed(t, "--storage-compression="+mode).Validate(); err != nil && strings.Contains(err.Error(), "storage-compression") {
			t.Errorf("--storage-compression=%s: %v", mode, err)
		}
	}
	err := parsed(t, "--storage-compression=gzip").Validate()
	if err == nil || !strings.Contains(err.Error(), `--storage-compression: unknown storage compression "gzip": want one of [S2 None]`) {
		t.Errorf("--storage-compression=gzip: %v, want it refused, naming the modes", err)
	}
}

// --postgres-max-connections bounds each PostgreSQL store's connections:
// 32 by default, reaching every store, and at least 1.
func TestPostgresMaxConnections(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if got := parsed(t).postgres().MaxConnections; got != 32 {
		t.Errorf("by default every PostgreSQL store gets %d connections, want 32", got)
	}
	if got := parsed(t, "--postgres-max-connections=8").postgres().MaxConnections; got != 8 {
		t.Errorf("--postgres-max-connections=8: every PostgreSQL store gets %d connections, want 8", got)
	}
	for _, arg := range []string{"--postgres-max-connections=0", "--postgres-max-connections=-3"} {
		err := parsed(t, arg).Validate()
		if err == nil || !strings.Contains(err.Error(), "--postgres-max-connections must be at least 1") {
			t.Errorf("%s: %v, want an error saying it must be at least 1", arg, err)
		}
	}
}
