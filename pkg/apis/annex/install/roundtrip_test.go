package install

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/apitesting/roundtrip"

	"annex.dev/annex/pkg/apis/annex/fuzzer"
)

// TestRoundTripTypes converts random objects internal -> v1alpha1 -> JSON and
// back, and fails when anything is lost on the way.
func TestRoundTripTypes(t *testing.T) {
	roundtrip.RoundTripTestForAPIGroup(t, Install, fuzzer.Funcs)
}
