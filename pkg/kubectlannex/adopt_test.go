package kubectlannex

import (
	"bytes"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

func TestAdoptingHostedResourceCopiesTheCRD(t *testing.T) {
	hr := hostedResourceFor("Widget", "widgets", "example.com", apiextensionsv1.NamespaceScoped, []string{"wd"}, "v1", "v1beta1")
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "widgets.example.com"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: hr.Spec.Group, Names: hr.Spec.Names, Scope: hr.Spec.Scope, Versions: hr.Spec.Versions,
			Conversion: &apiextensionsv1.CustomResourceConversion{Strategy: apiextensionsv1.NoneConverter},
		},
	}
	got, err := adoptingHostedResource(crd, "pg", v1alpha1.StorageCacheLean)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != crd.Name || got.Spec.Group != crd.Spec.Group || got.Spec.Scope != crd.Spec.Scope ||
		!equality.Semantic.DeepEqual(got.Spec.Names, crd.Spec.Names) || !equality.Semantic.DeepEqual(got.Spec.Versions, crd.Spec.Versions) ||
		!equality.Semantic.DeepEqual(got.Spec.Conversion, crd.Spec.Conversion) {
		t.Errorf("the HostedResource's spec is not the CRD's: %+v", got.Spec)
	}
	if got.Spec.Adoption == nil || got.Spec.Adoption.CustomResourceDefinition != crd.Name ||
		got.Spec.Storage.Backend != "pg" || got.Spec.Storage.Cache != v1alpha1.StorageCacheLean {
		t.Errorf("adoption %+v, storage %+v: want the CRD adopted on backend pg, cache Lean", got.Spec.Adoption, got.Spec.Storage)
	}

	crd.Spec.PreserveUnknownFields = true
	if _, err := adoptingHostedResource(crd, "", ""); err == nil || !strings.Contains(err.Error(), "preserveUnknownFields") {
		t.Errorf("a CRD with preserveUnknownFields: %v, want it refused naming the field", err)
	}
}

func TestAdoptConfirmNeedsATerminalOrYes(t *testing.T) {
	var out bytes.Buffer
	ok, err := confirm(strings.NewReader("y\n"), &out, "Adopt?")
	if ok || err == nil || !strings.Contains(err.Error(), "--yes") {
		t.Errorf("confirm from a pipe = %v, %v; want an error pointing at --yes", ok, err)
	}
}

func TestAdoptValidate(t *testing.T) {
	for _, tc := range []struct {
		o    AdoptOptions
		want string
	}{
		{AdoptOptions{progress: progressAuto}, ""},
		{AdoptOptions{progress: progressAuto, output: "yaml"}, "add --dry-run"},
		{AdoptOptions{progress: progressAuto, output: "table", dryRun: true}, "invalid --output"},
		{AdoptOptions{progress: progressAuto, cache: "Big"}, "invalid --cache"},
		{AdoptOptions{progress: "sometimes"}, "invalid --progress"},
	} {
		err := tc.o.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.o, err, tc.want)
		}
	}
}

func TestAdoptOfAGivenBackTypeSaysWhatToDo(t *testing.T) {
	for _, tc := range []struct {
		phase v1alpha1.AdoptionPhase
		want  string
	}{
		{v1alpha1.AdoptionRollingBack, "kubectl annex release policyreports.example.com` follows the release"},
		{v1alpha1.AdoptionReleased, "deletes HostedResource policyreports.example.com, and the CRD can then be adopted again"},
	} {
		err := givenBack("policyreports.example.com", &v1alpha1.AdoptionStatus{Phase: tc.phase})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error saying %q", tc.phase, err, tc.want)
		}
	}
	for _, phase := range []v1alpha1.AdoptionPhase{"", v1alpha1.AdoptionCopying, v1alpha1.AdoptionFrozen, v1alpha1.AdoptionSwitched, v1alpha1.AdoptionAdopted, v1alpha1.AdoptionFailed} {
		if err := givenBack("policyreports.example.com", &v1alpha1.AdoptionStatus{Phase: phase}); err != nil {
			t.Errorf("phase %q: %v, want nothing to stop the adoption's command", phase, err)
		}
	}
	if err := givenBack("policyreports.example.com", nil); err != nil {
		t.Errorf("no status yet: %v", err)
	}
}
