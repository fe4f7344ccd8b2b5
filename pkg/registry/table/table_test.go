package table

import (
	"testing"

	"k8s.io/utils/ptr"
)

func TestCountAndBytes(t *testing.T) {
	if got := Count(nil); got != "" {
		t.Errorf("Count(nil) = %q, want empty", got)
	}
	if got := Count(ptr.To[int64](1234)); got != "1234" {
		t.Errorf("Count(1234) = %q", got)
	}
	for n, want := range map[int64]string{0: "0", 512: "512", 1536: "1.5Ki", 25 << 20: "25.0Mi", 3 << 30: "3.0Gi"} {
		if got := Bytes(&n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
	if got := Bytes(nil); got != "" {
		t.Errorf("Bytes(nil) = %q, want empty", got)
	}
}
