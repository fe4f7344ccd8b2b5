//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"annex.dev/annex/pkg/storage/objectsize"
	"annex.dev/annex/pkg/storage/postgres/postgrestest"
	"annex.dev/annex/test/integration/framework"
)

const storageBackendsPath = "/apis/" + framework.Group + "/" + framework.Version + "/storagebackends"

// maxRequestBodyBytes is the generic API server's limit on a request body.
const maxRequestBodyBytes = 3 << 20

// TestBadInput checks that each kind of bad request gets its proper status
// and stores nothing.
func TestBadInput(t *testing.T) {
	jsonHeader := http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json"}}

	t.Run("malformed JSON is 400", func(t *testing.T) {
		name := uniqueName("malformed")
		body := `{"apiVersion":"annex.dev/v1alpha1","kind":"StorageBackend","metadata":{"name":"` + name + `"},"spec":{"type":"Embedded"`
		resp := doRaw(t, http.MethodPost, storageBackendsPath, jsonHeader, []byte(body))
		expectStatus(t, resp, http.StatusBadRequest)
		expectAbsent(t, framework.StorageBackends, name)
	})

	t.Run("an invalid spec is 422 naming each bad field", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			obj    *unstructured.Unstructured
			fields []string
		}{{
			name: "wrong members and a name that is not a DNS label",
			obj: func() *unstructured.Unstructured {
				// type Etcd requires spec.etcd and forbids spec.postgres.
				obj := storageBackend(uniqueName("invalid")+".dotted", "Postgres", nil)
				_ = unstructured.SetNestedField(obj.Object, "Etcd", "spec", "type")
				return obj
			}(),
			fields: []string{"metadata.name", "spec.etcd", "spec.postgres"},
		}, {
			name: "a plaintext etcd endpoint without insecure: true",
			obj: func() *unstructured.Unstructured {
				obj := storageBackend(uniqueName("plaintext"), "Etcd", nil)
				_ = unstructured.SetNestedStringSlice(obj.Object, []string{"https://127.0.0.1:2379", "http://127.0.0.1:2379"}, "spec", "etcd", "endpoints")
				return obj
			}(),
			fields: []string{"spec.etcd.endpoints[1]"},
		}, {
			name:   "an unsupported type",
			obj:    storageBackend(uniqueName("invalid"), "Mysql", nil),
			fields: []string{"spec.type"},
		}, {
			name: "no type",
			obj: func() *unstructured.Unstructured {
				obj := storageBackend(uniqueName("invalid"), "Embedded", nil)
				unstructured.RemoveNestedField(obj.Object, "spec", "type")
				return obj
			}(),
			fields: []string{"spec.type"},
		}} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := storageBackends(t).Create(testContext(t), tc.obj, metav1.CreateOptions{})
				if err == nil {
					deleteIfExists(t, framework.StorageBackends, tc.obj.GetName())
					t.Fatalf("creating %v succeeded, want 422", tc.obj.Object["spec"])
				}
				if !apierrors.IsInvalid(err) {
					t.Fatalf("want 422 Invalid, got %d: %v", statusCode(err), err)
				}
				expectCauses(t, causeFields(err), tc.fields...)
				expectAbsent(t, framework.StorageBackends, tc.obj.GetName())
			})
		}
	})

	t.Run("a body over 3 MiB is 413", func(t *testing.T) {
		name := uniqueName("huge")
		obj := storageBackend(name, "Embedded", nil)
		obj.SetAnnotations(map[string]string{"example.com/padding": strings.Repeat("x", maxRequestBodyBytes)})
		body, err := json.Marshal(obj.Object)
		if err != nil {
			t.Fatal(err)
		}
		resp := doRaw(t, http.MethodPost, storageBackendsPath, jsonHeader, body)
		expectStatus(t, resp, http.StatusRequestEntityTooLarge)
		expectAbsent(t, framework.StorageBackends, name)
	})

	t.Run("an object over annex's size limit is 413", func(t *testing.T) {
		name := uniqueName("oversized")
		obj := oversizedStorageBackend(t, name)
		_, err := storageBackends(t).Create(testContext(t), obj, metav1.CreateOptions{})
		if size := refusedSize(t, err); size <= objectsize.MaxBytes {
			t.Errorf("the 413 gives the object's size as %d bytes, under the limit", size)
		}
		expectAbsent(t, framework.StorageBackends, name)
	})

	t.Run("an unknown field with strict field validation is 400", func(t *testing.T) {
		name := uniqueName("strict")
		obj := storageBackend(name, "Embedded", nil)
		_ = unstructured.SetNestedField(obj.Object, "surprise", "spec", "bogusField")
		_, err := storageBackends(t).Create(testContext(t), obj, metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict})
		if err == nil {
			deleteIfExists(t, framework.StorageBackends, name)
			t.Fatalf("creating with an unknown field under fieldValidation=Strict succeeded, want 400")
		}
		if !apierrors.IsBadRequest(err) {
			t.Fatalf("want 400 BadRequest, got %d: %v", statusCode(err), err)
		}
		if !strings.Contains(err.Error(), "bogusField") {
			t.Errorf("the 400 does not name the unknown field spec.bogusField: %v", err)
		}
		expectAbsent(t, framework.StorageBackends, name)
	})
}

// expectStatus fails unless resp has code and its body is a Status saying so.
func expectStatus(t *testing.T, resp rawResponse, code int) {
	t.Helper()
	if resp.Code != code {
		t.Fatalf("got HTTP %d, want %d; body: %.500s", resp.Code, code, resp.Body)
	}
	var status metav1.Status
	if err := json.Unmarshal(resp.Body, &status); err != nil || status.Kind != "Status" || int(status.Code) != code {
		t.Errorf("the %d response body is not a Status with code %d: %.500s", code, code, resp.Body)
	}
}

// sizeRefusal is annex's answer to an object over its size limit.
var sizeRefusal = regexp.MustCompile(`^Request entity too large: the object is (\d+) bytes encoded, and annex stores objects of at most (\d+) bytes$`)

// refusedSize fails unless err is annex's 413 for an object over
// objectsize.MaxBytes, and returns the object's size it gives.
func refusedSize(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		t.Fatalf("the write succeeded, want 413 for an object over annex's limit of %d bytes", objectsize.MaxBytes)
	}
	status, ok := err.(apierrors.APIStatus)
	if !ok || status.Status().Code != http.StatusRequestEntityTooLarge || status.Status().Reason != metav1.StatusReasonRequestEntityTooLarge {
		t.Fatalf("want 413 RequestEntityTooLarge, got %d: %v", statusCode(err), err)
	}
	m := sizeRefusal.FindStringSubmatch(status.Status().Message)
	if m == nil || m[2] != strconv.Itoa(objectsize.MaxBytes) {
		t.Fatalf("the 413 says %q, want %q", status.Status().Message, sizeRefusal)
	}
	size, _ := strconv.Atoi(m[1])
	return size
}

// parcelsType is a namespaced type with a string to pad its objects with,
// in the spec and in the status subresource.
func parcelsType(t *testing.T, group string) *unstructured.Unstructured {
	t.Helper()
	const data = "type: object\nproperties:\n  data: {type: string}\n"
	return namespacedType(t, group, "parcels", "{kind: Parcel, plural: parcels}", data, data)
}

func parcel(gvr schema.GroupVersionResource, name string, data int) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": gvr.GroupVersion().String(), "kind": "Parcel",
		"metadata": map[string]any{"name": name},
		"spec":     map[string]any{"data": strings.Repeat("x", data)},
	}}
}

// oversizedStorageBackend is a StorageBackend with about 1.6 MB of valid
// endpoints: under the 3 MiB body limit, over annex's object size limit.
func oversizedStorageBackend(t *testing.T, name string) *unstructured.Unstructured {
	t.Helper()
	obj := storageBackend(name, "Etcd", nil)
	endpoints := make([]string, 50000)
	for i := range endpoints {
		endpoints[i] = fmt.Sprintf("https://etcd-%05d.example:2379", i)
	}
	if err := unstructured.SetNestedStringSlice(obj.Object, endpoints, "spec", "etcd", "endpoints"); err != nil {
		t.Fatal(err)
	}
	return obj
}

// parcelOverhead is what a parcel is besides its data, as stored, learnt
// from a real create's refusal of one certainly over the limit. Every
// parcel's name has the same length, so that it is the same for all.
func parcelOverhead(t *testing.T, ctx context.Context, parcels dynamic.ResourceInterface, gvr schema.GroupVersionResource) int {
	t.Helper()
	_, err := parcels.Create(ctx, parcel(gvr, "p0", objectsize.MaxBytes), metav1.CreateOptions{})
	return refusedSize(t, err) - objectsize.MaxBytes
}

// expectNoParcel checks that the parcel name is not stored; after says
// after what, for the message.
func expectNoParcel(t *testing.T, ctx context.Context, parcels dynamic.ResourceInterface, name, after string) {
	t.Helper()
	if got, err := parcels.Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("parcel %s after %s: %v (resourceVersion %s), want 404", name, after, err, got.GetResourceVersion())
	}
}

// growingWrites are the ways of writing the parcel p1, read back as atLimit,
// one byte larger (or with a status): an update, a merge patch, a JSON
// patch, a server-side apply and a write of the status; each is a dry run
// when given dryRun ([]string{metav1.DryRunAll}), a real write when given nil.
func growingWrites(t *testing.T, ctx context.Context, parcels dynamic.ResourceInterface, gvr schema.GroupVersionResource, atLimit *unstructured.Unstructured) map[string]func(dryRun []string) error {
	t.Helper()
	grown := nestedString(atLimit, "spec", "data") + "x"
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"data": grown}})
	if err != nil {
		t.Fatal(err)
	}
	jsonPatch, err := json.Marshal([]map[string]any{{"op": "replace", "path": "/spec/data", "value": grown}})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]func(dryRun []string) error{
		"an update": func(dryRun []string) error {
			obj := atLimit.DeepCopy()
			_ = unstructured.SetNestedField(obj.Object, grown, "spec", "data")
			_, err := parcels.Update(ctx, obj, metav1.UpdateOptions{DryRun: dryRun})
			return err
		},
		"a merge patch": func(dryRun []string) error {
			_, err := parcels.Patch(ctx, "p1", types.MergePatchType, patch, metav1.PatchOptions{DryRun: dryRun})
			return err
		},
		"a JSON patch": func(dryRun []string) error {
			_, err := parcels.Patch(ctx, "p1", types.JSONPatchType, jsonPatch, metav1.PatchOptions{DryRun: dryRun})
			return err
		},
		"a server-side apply": func(dryRun []string) error {
			obj := parcel(gvr, "p1", 0)
			_ = unstructured.SetNestedField(obj.Object, grown, "spec", "data")
			_, err := parcels.Apply(ctx, "p1", obj, metav1.ApplyOptions{FieldManager: "size-test", Force: true, DryRun: dryRun})
			return err
		},
		"a write of the status": func(dryRun []string) error {
			obj := atLimit.DeepCopy()
			_ = unstructured.SetNestedField(obj.Object, "x", "status", "data")
			_, err := parcels.UpdateStatus(ctx, obj, metav1.UpdateOptions{DryRun: dryRun})
			return err
		},
	}
}

// etcdClusterBackend starts an external etcd cluster of one member, serving
// over TLS with client certificates, and names it in a StorageBackend.
func etcdClusterBackend(t *testing.T) string {
	t.Helper()
	name := uniqueName("etcd")
	createEtcdBackend(t, framework.StartEtcdCluster(t, 1), name)
	return name
}

// postgresBackend starts a PostgreSQL server and names it in a
// StorageBackend (plaintext on loopback: insecure).
func postgresBackend(t *testing.T) string {
	t.Helper()
	name := uniqueName("pg")
	createPostgresBackend(t, postgrestest.Start(t), name)
	return name
}

// TestObjectSizeLimit checks, through the cluster, that every backend holds
// a hosted type's objects to one size limit: an object of exactly
// objectsize.MaxBytes is stored and read back, one byte more (or far more,
// past etcd's or kine's own limits) is refused with the same 413 giving the
// object's size and the limit, by a create, an update, each kind of patch,
// an apply and a write of the status, and nothing is stored; annex serves on.
func TestObjectSizeLimit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		backend func(t *testing.T) string
	}{
		{"embedded etcd", func(*testing.T) string { return "" }},
		{"external etcd", etcdClusterBackend},
		{"PostgreSQL", postgresBackend},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backend := tc.backend(t)
			ns := createNamespace(t, "size")
			gvr := serveHostedResource(t, parcelsType(t, uniqueName("size")+".example.com"), ns, backend)
			parcels := adminClient(t).Resource(gvr).Namespace(ns)
			ctx := testContext(t)
			absent := func(name string) {
				t.Helper()
				expectNoParcel(t, ctx, parcels, name, "the refused create")
			}
			overhead := parcelOverhead(t, ctx, parcels, gvr)
			absent("p0")
			t.Logf("a parcel is %d bytes besides its data", overhead)

			// At the limit: stored and read back.
			if _, err := parcels.Create(ctx, parcel(gvr, "p1", objectsize.MaxBytes-overhead), metav1.CreateOptions{}); err != nil {
				t.Fatalf("creating an object of exactly %d bytes: %v", objectsize.MaxBytes, err)
			}
			atLimit, err := parcels.Get(ctx, "p1", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if data := nestedString(atLimit, "spec", "data"); len(data) != objectsize.MaxBytes-overhead {
				t.Fatalf("the object at the limit reads back with %d bytes of data, want %d", len(data), objectsize.MaxBytes-overhead)
			}

			// One byte over, and far over (past etcd's 1.5 MiB and kine's
			// 2 MiB): the same 413, with the exact size; nothing stored.
			for name, size := range map[string]int{"p2": objectsize.MaxBytes + 1, "p3": 1_600_000, "p4": 2_500_000} {
				_, err := parcels.Create(ctx, parcel(gvr, name, size-overhead), metav1.CreateOptions{})
				if got := refusedSize(t, err); got != size {
					t.Errorf("creating an object of %d bytes: the 413 says %d", size, got)
				}
				absent(name)
			}

			// Every way of writing the object at the limit one byte (or a
			// status) larger.
			for what, write := range growingWrites(t, ctx, parcels, gvr, atLimit) {
				if size := refusedSize(t, write(nil)); size <= objectsize.MaxBytes {
					t.Errorf("%s: the 413 gives the object's size as %d bytes, not over the limit", what, size)
				}
			}
			if got, err := parcels.Get(ctx, "p1", metav1.GetOptions{}); err != nil || got.GetResourceVersion() != atLimit.GetResourceVersion() {
				t.Errorf("after the refused writes the object at the limit is %v (resourceVersion %s), want it unchanged at %s",
					err, got.GetResourceVersion(), atLimit.GetResourceVersion())
			}

			// annex serves on.
			if _, err := parcels.Create(ctx, parcel(gvr, "p5", 10), metav1.CreateOptions{}); err != nil {
				t.Fatalf("creating a small object after the refusals: %v", err)
			}
			list, err := parcels.List(ctx, metav1.ListOptions{})
			if err != nil || len(list.Items) != 2 {
				t.Errorf("listing after the refusals: %v, %d items, want p1 and p5", err, len(list.Items))
			}
		})
	}
}

// TestObjectSizeLimitDryRun checks, through a real kube-apiserver, that a
// dry run (?dryRun=All) is held to annex's object size limit as the real
// write is: an object at the limit passes, one over it gets the same 413,
// giving the same size, from a create, an update, a merge patch, a JSON
// patch, a server-side apply and a write of the status; and nothing is
// stored. Dry runs never reach the store, so one backend is enough.
func TestObjectSizeLimitDryRun(t *testing.T) {
	ns := createNamespace(t, "dryrun-size")
	gvr := serveHostedResource(t, parcelsType(t, uniqueName("dryrun")+".example.com"), ns, "")
	parcels := adminClient(t).Resource(gvr).Namespace(ns)
	ctx := testContext(t)
	dryRun := []string{metav1.DryRunAll}
	absent := func(name string) {
		t.Helper()
		expectNoParcel(t, ctx, parcels, name, "a dry run")
	}
	overhead := parcelOverhead(t, ctx, parcels, gvr)

	// Creates: at the limit passes, over it is refused at the size the
	// real create is refused at; none is stored.
	if _, err := parcels.Create(ctx, parcel(gvr, "p1", objectsize.MaxBytes-overhead), metav1.CreateOptions{DryRun: dryRun}); err != nil {
		t.Fatalf("a dry-run create of an object of exactly %d bytes: %v", objectsize.MaxBytes, err)
	}
	absent("p1")
	for name, size := range map[string]int{"p2": objectsize.MaxBytes + 1, "p3": 2_500_000} {
		_, err := parcels.Create(ctx, parcel(gvr, name, size-overhead), metav1.CreateOptions{DryRun: dryRun})
		if got := refusedSize(t, err); got != size {
			t.Errorf("a dry-run create of an object of %d bytes: the 413 says %d", size, got)
		}
		absent(name)
	}

	// Every way of writing an object at the limit one byte (or a status)
	// larger: the dry run is refused as the real write is, at the same size.
	atLimit, err := parcels.Create(ctx, parcel(gvr, "p1", objectsize.MaxBytes-overhead), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating an object of exactly %d bytes: %v", objectsize.MaxBytes, err)
	}
	for what, write := range growingWrites(t, ctx, parcels, gvr, atLimit) {
		dry := refusedSize(t, write(dryRun))
		if written := refusedSize(t, write(nil)); dry != written {
			t.Errorf("%s: the dry run's 413 gives the object's size as %d bytes, the real write's as %d", what, dry, written)
		}
	}
	// A dry run that writes the object as it is passes.
	if _, err := parcels.Update(ctx, atLimit, metav1.UpdateOptions{DryRun: dryRun}); err != nil {
		t.Errorf("a dry-run update of the object at the limit, unchanged: %v", err)
	}
	if got, err := parcels.Get(ctx, "p1", metav1.GetOptions{}); err != nil || got.GetResourceVersion() != atLimit.GetResourceVersion() {
		t.Errorf("after the writes the object at the limit is %v (resourceVersion %s), want it unchanged at %s",
			err, got.GetResourceVersion(), atLimit.GetResourceVersion())
	}

	// annex's own types: a StorageBackend of about 1.6 MB.
	name := uniqueName("oversized")
	obj := oversizedStorageBackend(t, name)
	_, err = storageBackends(t).Create(ctx, obj, metav1.CreateOptions{DryRun: dryRun})
	dry := refusedSize(t, err)
	_, err = storageBackends(t).Create(ctx, obj, metav1.CreateOptions{})
	if written := refusedSize(t, err); dry != written {
		t.Errorf("a StorageBackend: the dry run's 413 gives its size as %d bytes, the real create's as %d", dry, written)
	}
	expectAbsent(t, framework.StorageBackends, name)
}
