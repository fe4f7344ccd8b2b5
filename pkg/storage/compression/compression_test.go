package compression

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/storage/value"
)

// report is a hosted object as the store's codec writes it: JSON that
// repeats its field names.
var report = []byte(`{"apiVersion":"wgpolicyk8s.io/v1alpha2","kind":"PolicyReport","metadata":{"name":"r-1","namespace":"team-a",` +
	`"uid":"5b0c3a52-1b7e-4c39-9d0c-3f1d2b9a7e61","creationTimestamp":"2026-12-01T10:00:00Z","labels":{"app":"web"}},` +
	`"results":[` + strings.Repeat(`{"policy":"require-labels","rule":"check-team","result":"pass","severity":"medium","source":"kyverno"},`, 15) +
	`{"policy":"last","rule":"last","result":"fail"}],"summary":{"pass":15,"fail":1}}`)

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	key := value.DefaultContext("/annex/installs/x/wgpolicyk8s.io/policyreports/team-a/r-1")
	for _, tc := range []struct {
		name       string
		compress   bool
		wantPrefix bool
	}{
		{"S2", true, true},
		{"None", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := Transformer(nil, tc.compress)
			stored, err := tr.TransformToStorage(ctx, report, key)
			if err != nil {
				t.Fatal(err)
			}
			if got := bytes.HasPrefix(stored, []byte(Prefix)); got != tc.wantPrefix {
				t.Fatalf("stored value starts with %s: %v, want %v", Prefix, got, tc.wantPrefix)
			}
			if tc.compress && len(stored) > len(report)/2 {
				t.Errorf("a report of %d bytes is stored in %d: compression should keep less than half", len(report), len(stored))
			}
			read, stale, err := tr.TransformFromStorage(ctx, stored, key)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(read, report) {
				t.Fatalf("read back %q, want the object as written", read)
			}
			if stale {
				t.Error("a value in the form writes use is reported stale")
			}
		})
	}
}

// TestReadsEitherForm: values written with the other setting are read, and
// reported stale, so that the etcd3 store rewrites them on their next
// update.
func TestReadsEitherForm(t *testing.T) {
	ctx := context.Background()
	key := value.DefaultContext("/k")
	compressed, err := Transformer(nil, true).TransformToStorage(ctx, report, key)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		writer bool
		stored []byte
	}{
		{"plain value, compressing", true, report},
		{"compressed value, not compressing", false, compressed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			read, stale, err := Transformer(nil, tc.writer).TransformFromStorage(ctx, tc.stored, key)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(read, report) {
				t.Fatalf("read %q, want the object", read)
			}
			if !stale {
				t.Error("a value in the other form is not reported stale")
			}
		})
	}
}

func TestCorruptValue(t *testing.T) {
	stored := append([]byte(Prefix), "not s2 at all"...)
	_, _, err := Transformer(nil, true).TransformFromStorage(context.Background(), stored, value.DefaultContext("/k"))
	if err == nil || !strings.Contains(err.Error(), "not valid "+Prefix) {
		t.Fatalf("reading a corrupt value: %v, want an error naming the form", err)
	}
}

// TestEncryptedDataIsRefused: without an encryption configuration, an
// encrypted value is refused as the etcd3 store's default transformer
// refuses it, not decoded as garbage.
func TestEncryptedDataIsRefused(t *testing.T) {
	_, _, err := Transformer(nil, true).TransformFromStorage(context.Background(), []byte("k8s:enc:aescbc:v1:key1:xxxx"), value.DefaultContext("/k"))
	if err == nil {
		t.Fatal("an encrypted value was read without an encryption configuration")
	}
}

// marker is an encryption at rest stand-in: it marks what it stores.
type marker struct{}

func (marker) TransformFromStorage(_ context.Context, data []byte, _ value.Context) ([]byte, bool, error) {
	out, ok := bytes.CutPrefix(data, []byte("enc:"))
	if !ok {
		return data, true, nil
	}
	return out, false, nil
}

func (marker) TransformToStorage(_ context.Context, data []byte, _ value.Context) ([]byte, error) {
	return append([]byte("enc:"), data...), nil
}

type markers struct{}

func (markers) TransformerForResource(schema.GroupResource) value.Transformer { return marker{} }

// TestNotWithEncryption: with encryption at rest, values are encrypted and
// not compressed, and compressed values written before are still read.
func TestNotWithEncryption(t *testing.T) {
	ctx := context.Background()
	key := value.DefaultContext("/k")
	tr := ResourceTransformers(markers{}, S2).TransformerForResource(schema.GroupResource{Group: "g", Resource: "r"})
	stored, err := tr.TransformToStorage(ctx, report, key)
	if err != nil {
		t.Fatal(err)
	}
	if want := append([]byte("enc:"), report...); !bytes.Equal(stored, want) {
		t.Fatalf("stored %q, want the object encrypted and not compressed", stored)
	}
	old := append([]byte("enc:"), Compress(report)...)
	read, stale, err := tr.TransformFromStorage(ctx, old, key)
	if err != nil || !bytes.Equal(read, report) {
		t.Fatalf("reading a value compressed before encryption was configured: %q, %v", read, err)
	}
	if !stale {
		t.Error("a compressed value is not reported stale where writes do not compress")
	}
}

func TestModes(t *testing.T) {
	for _, m := range Modes {
		if err := m.Valid(); err != nil {
			t.Errorf("%s: %v", m, err)
		}
	}
	if err := Mode("gzip").Valid(); err == nil || !strings.Contains(err.Error(), `"gzip"`) {
		t.Errorf("an unknown mode: %v, want an error naming it", err)
	}
	if tr := ResourceTransformers(nil, None).TransformerForResource(schema.GroupResource{}); tr.(*transformer).compress {
		t.Error("None compresses")
	}
}
