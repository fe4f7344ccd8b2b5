package backend

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apiextensionsoptions "k8s.io/apiextensions-apiserver/pkg/cmd/server/options"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apiserver/pkg/storage/storagebackend"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/storage/postgres"
)

// spec is a StorageBackend with the Secrets it names read and checked:
// what both a probe and the backend's storage connect with. Exactly one of
// etcd and postgres is set, or neither for the embedded etcd.
type spec struct {
	name     string
	etcd     *etcdSpec
	postgres *postgresSpec
	// connection is how annex reaches the store.
	connection *Connection
}

type etcdSpec struct {
	endpoints []string
	// tls is what a probe connects with; nil for plain http endpoints.
	tls *tls.Config
	// files are the PEM files of the storage's client, by Secret key
	// (ca.crt, tls.crt, tls.key): the apiserver's etcd client reads files.
	files map[string][]byte
}

type postgresSpec struct {
	dsn string
	// source says where the DSN came from, for messages that must not
	// carry the DSN itself.
	source string
}

// resolve reads and checks what sb names, or says why it cannot be used.
// A store that annex would reach without TLS is used only when sb's spec
// allows it (insecure); the result says how annex reaches the store
// whenever it got as far as knowing.
func (f *Factory) resolve(ctx context.Context, sb *v1alpha1.StorageBackend) (*spec, *Result) {
	s := &spec{name: sb.Name}
	switch sb.Spec.Type {
	case v1alpha1.StorageBackendEmbedded:
		if f.opts.DefaultStore != StoreEmbeddedEtcd {
			return nil, failed(ReasonNotRunning, "annex runs on %s; an Embedded backend is only served by an annex that keeps its data in its embedded etcd",
				f.opts.DefaultStore.Describe())
		}
		s.connection = &Connection{Message: "annex reaches its embedded etcd on loopback, over TLS with a client certificate"}
	case v1alpha1.StorageBackendEtcd:
		if sb.Spec.Etcd == nil {
			return nil, failed(ReasonUnknownType, "spec.etcd is missing")
		}
		e, connection, failure := f.resolveEtcd(ctx, sb.Spec.Etcd)
		if failure != nil {
			failure.Connection = connection
			return nil, failure
		}
		s.etcd, s.connection = e, connection
	case v1alpha1.StorageBackendPostgres:
		if sb.Spec.Postgres == nil {
			return nil, failed(ReasonUnknownType, "spec.postgres is missing")
		}
		p, connection, failure := f.resolvePostgres(ctx, sb.Spec.Postgres)
		if failure != nil {
			failure.Connection = connection
			return nil, failure
		}
		s.postgres, s.connection = p, connection
	default:
		return nil, failed(ReasonUnknownType, "annex does not know the backend type %q", sb.Spec.Type)
	}
	return s, nil
}

// resolveEtcd reads and checks what an etcd backend names, and says how
// annex reaches it (known from the endpoints alone, whatever else fails).
func (f *Factory) resolveEtcd(ctx context.Context, etcd *v1alpha1.EtcdStorage) (*etcdSpec, *Connection, *Result) {
	e := &etcdSpec{endpoints: append([]string(nil), etcd.Endpoints...)}
	var plaintext []string
	for _, ep := range e.endpoints {
		if u, err := url.Parse(ep); err != nil || u.Scheme != "https" {
			plaintext = append(plaintext, ep)
		}
	}
	connection := &Connection{Message: "annex reaches every endpoint over TLS"}
	if len(plaintext) > 0 {
		list := strings.Join(plaintext, ", ")
		if !etcd.Insecure {
			// Validation refuses such a spec; this one was written before it did.
			return nil, &Connection{Plaintext: true, Message: "annex would reach " + list + " without TLS"}, failed(ReasonPlaintextNotAllowed,
				"annex would reach %s without TLS, sending the objects and etcd's credentials unencrypted: use https:// endpoints, "+
					"or set spec.etcd.insecure: true to allow plaintext", list)
		}
		connection = &Connection{Plaintext: true, Message: "spec.etcd.insecure allows plaintext: annex reaches " + list + " without TLS, unencrypted"}
	}
	if ref := etcd.TLSSecretRef; ref != nil {
		secret, failure := f.secret(ctx, ref.Namespace, ref.Name)
		if failure != nil {
			return nil, connection, failure
		}
		var err error
		if e.tls, err = etcdTLS(secret.Data); err != nil {
			return nil, connection, failed(ReasonInvalidTLS, "Secret %s/%s: %v", ref.Namespace, ref.Name, err)
		}
		e.files = map[string][]byte{}
		for _, key := range []string{"ca.crt", corev1.TLSCertKey, corev1.TLSPrivateKeyKey} {
			if data := secret.Data[key]; len(data) > 0 {
				e.files[key] = data
			}
		}
	}
	for _, ep := range e.endpoints {
		if strings.HasPrefix(ep, "https://") && e.tls == nil {
			// No Secret: verify the server against the system's roots.
			e.tls = &tls.Config{MinVersion: tls.VersionTLS12}
		}
	}
	return e, connection, nil
}

// resolvePostgres reads and checks the connection string of a PostgreSQL
// backend, and says how annex reaches the database once it has read it. The
// connection string is in a Secret, which StorageBackend's validation cannot
// read: a string that lets the connection go without TLS is refused here,
// where both the probe and the opening of the backend pass.
func (f *Factory) resolvePostgres(ctx context.Context, pg *v1alpha1.PostgresStorage) (*postgresSpec, *Connection, *Result) {
	ref := &pg.DSNSecretRef
	secret, failure := f.secret(ctx, ref.Namespace, ref.Name)
	if failure != nil {
		return nil, nil, failure
	}
	dsn := strings.TrimSpace(string(secret.Data[ref.Key]))
	if dsn == "" {
		return nil, nil, failed(ReasonInvalidSecret, "Secret %s/%s has no key %q with a connection string", ref.Namespace, ref.Name, ref.Key)
	}
	p := &postgresSpec{dsn: dsn, source: fmt.Sprintf("the connection string in Secret %s/%s key %s", ref.Namespace, ref.Name, ref.Key)}
	plaintext, err := postgres.Plaintext(dsn)
	if err != nil {
		// A string that does not parse: the probe and kine's start say so.
		return p, nil, nil
	}
	if !plaintext {
		return p, &Connection{Message: p.source + " requires TLS"}, nil
	}
	if !pg.Insecure {
		return nil, &Connection{Plaintext: true, Message: p.source + " lets annex connect without TLS"}, failed(ReasonPlaintextNotAllowed,
			"%s lets annex connect without TLS (its sslmode is disable, allow or prefer, or none, which is prefer), where anyone on the "+
				"path could read and change the objects: require TLS (sslmode=verify-full), or set spec.postgres.insecure: true to allow plaintext", p.source)
	}
	return p, &Connection{Plaintext: true, Message: "spec.postgres.insecure allows plaintext: " + p.source + " lets annex connect without TLS, unencrypted"}, nil
}

// secret reads a Secret of the cluster, or says why it cannot. It is the
// one place where annex reads the Secrets that StorageBackends name: the
// reference is checked against the policy before the read, so that annex
// never asks for a Secret it may not use, and the Secret after it.
func (f *Factory) secret(ctx context.Context, namespace, name string) (*corev1.Secret, *Result) {
	if refused := f.opts.SecretPolicy.Check(namespace, name); refused != nil {
		return nil, failed(refused.Reason, "%s", refused.Message)
	}
	if f.opts.Secrets == nil {
		return nil, failed(ReasonSecretsNeedACluster, "the backend's credentials are in Secret %s/%s, and standalone annex has no cluster to read Secrets from; "+
			"run annex aggregated into a cluster to use this backend", namespace, name)
	}
	ctx, cancel := context.WithTimeout(ctx, f.probeTimeout())
	defer cancel()
	secret, err := f.opts.Secrets(ctx, namespace, name)
	switch {
	case apierrors.IsNotFound(err):
		return nil, failed(ReasonSecretNotFound, "Secret %s/%s does not exist in the cluster", namespace, name)
	case err != nil:
		return nil, failed(ReasonSecretUnreadable, "cannot read Secret %s/%s from the cluster: %v", namespace, name, err)
	}
	if refused := f.opts.SecretPolicy.CheckSecret(namespace, name, secret); refused != nil {
		return nil, failed(refused.Reason, "%s", refused.Message)
	}
	return secret, nil
}

func (f *Factory) probe(ctx context.Context, s *spec) Result {
	var r Result
	switch {
	case s.etcd != nil:
		r = probeEtcd(ctx, s.etcd, f.probeTimeout())
	case s.postgres != nil:
		r = probePostgresDSN(ctx, s.postgres.dsn, f.probeTimeout(), s.postgres.source)
	default:
		r = Result{Ready: true, Reason: ReasonRunning, Message: "annex keeps its data in its embedded etcd, which is running"}
	}
	r.Connection = s.connection
	return r
}

// openEtcd configures a client of an external etcd cluster like the
// command-line store's, with the cluster's endpoints and the client
// certificates of its Secret written to files only annex reads, in the
// runtime directory; closing the backend removes them.
func (f *Factory) openEtcd(s *spec) (Backend, error) {
	transport := f.opts.Etcd.StorageConfig.Transport
	transport.ServerList = s.etcd.endpoints
	transport.CertFile, transport.KeyFile, transport.TrustedCAFile = "", "", ""
	var remove func()
	if len(s.etcd.files) > 0 {
		dir := filepath.Join(f.dir(s.name), "tls")
		paths, err := writePrivateFiles(dir, s.etcd.files)
		if err != nil {
			return nil, fmt.Errorf("StorageBackend %q: writing the etcd client's certificates: %w", s.name, err)
		}
		transport.TrustedCAFile, transport.CertFile, transport.KeyFile = paths["ca.crt"], paths[corev1.TLSCertKey], paths[corev1.TLSPrivateKeyKey]
		remove = func() { _ = os.RemoveAll(dir) }
	}
	return f.running(s, transport, remove), nil
}

// writePrivateFiles writes each of files, by name, into dir, which only
// annex may enter (0700), each file readable by annex alone (0600) whatever
// was there before, and returns their paths.
func writePrivateFiles(dir string, files map[string][]byte) (map[string]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// MkdirAll keeps the mode of a directory that exists.
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	paths := map[string]string{}
	for name, data := range files {
		path := filepath.Join(dir, name)
		// A new file, 0600 from its creation, replaces whatever was
		// there: os.WriteFile would keep the mode of an existing file.
		tmp, err := os.CreateTemp(dir, "."+name+"-")
		if err != nil {
			return nil, err
		}
		_, err = tmp.Write(data)
		if closeErr := tmp.Close(); err == nil {
			err = closeErr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), path)
		}
		if err != nil {
			_ = os.Remove(tmp.Name())
			return nil, err
		}
		paths[name] = path
	}
	return paths, nil
}

// openPostgres runs a kine for the backend, on a unix socket of its own.
func (f *Factory) openPostgres(ctx context.Context, s *spec) (Backend, error) {
	pg, err := f.opts.Postgres.Start(ctx, s.name, s.postgres.dsn, filepath.Join(f.dir(s.name), "kine"))
	if err != nil {
		return nil, fmt.Errorf("StorageBackend %q: %w", s.name, err)
	}
	transport := f.opts.Etcd.StorageConfig.Transport
	transport.ServerList = []string{pg.Endpoint}
	transport.CertFile, transport.KeyFile, transport.TrustedCAFile = "", "", ""
	return f.running(s, transport, pg.Close), nil
}

// running is the opened backend of s: storage configured like the
// command-line store's, over transport, probed as s is.
func (f *Factory) running(s *spec, transport storagebackend.TransportConfig, close func()) *running {
	etcdOptions := f.opts.Etcd
	etcdOptions.StorageConfig.Transport = transport
	return &running{
		RESTOptionsGetter: apiextensionsoptions.NewCRDRESTOptionsGetter(etcdOptions, f.opts.ResourceTransformers, f.opts.Tracker),
		probe:             func(ctx context.Context) Result { return f.probe(ctx, s) },
		close:             close,
	}
}
