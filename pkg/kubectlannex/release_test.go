package kubectlannex

import (
	"bytes"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

func TestReleaseValidate(t *testing.T) {
	for _, tc := range []struct {
		o    ReleaseOptions
		want string
	}{
		{ReleaseOptions{progress: progressAuto}, ""},
		{ReleaseOptions{progress: progressAuto, output: "json", dryRun: true}, ""},
		{ReleaseOptions{progress: progressAuto, output: "yaml"}, "add --dry-run"},
		{ReleaseOptions{progress: progressAuto, output: "table", dryRun: true}, "invalid --output"},
		{ReleaseOptions{progress: "sometimes"}, "invalid --progress"},
	} {
		err := tc.o.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.o, err, tc.want)
		}
	}
}

func TestReleasePatch(t *testing.T) {
	if got := string(releasePatch(true)); got != `{"spec":{"adoption":{"release":true}}}` {
		t.Errorf("releasePatch(true) = %s", got)
	}
	if got := string(releasePatch(false)); got != `{"spec":{"adoption":{"release":false}}}` {
		t.Errorf("releasePatch(false) = %s", got)
	}
}

// TestPrintReleasedNamesTheRecreatedObjects: the objects that got a new uid
// are named, the first of them, and the rest counted.
func TestPrintReleasedNamesTheRecreatedObjects(t *testing.T) {
	start := metav1.NewTime(time.Date(2026, 12, 2, 13, 0, 0, 0, time.UTC))
	end := metav1.NewTime(start.Add(12 * time.Second))
	a := &v1alpha1.AdoptionStatus{
		Phase: v1alpha1.AdoptionReleased, Total: 3010, ReleaseStartTime: &start, ReleasedTime: &end,
		Freeze: &metav1.Duration{Duration: 12300 * time.Millisecond}, Recreated: 3, RecreatedObjects: []string{"ns/a", "ns/b"},
	}
	var out bytes.Buffer
	printReleased(&out, "widgets.example.com", a)
	want := "customresourcedefinition/widgets.example.com released in 12s: 3010 objects written back, writes refused for 12.3s\n" +
		"3 objects were created in the cluster with a new uid and creation time (created while annex served the type, or deleted and created again):\n" +
		"  ns/a\n  ns/b\n  ... and 1 more\n"
	if out.String() != want {
		t.Errorf("printReleased wrote\n%s\nwant\n%s", out.String(), want)
	}

	out.Reset()
	a.Recreated, a.RecreatedObjects = 0, nil
	printReleased(&out, "widgets.example.com", a)
	if strings.Contains(out.String(), "new uid") {
		t.Errorf("with nothing recreated, printReleased wrote %q", out.String())
	}
}
