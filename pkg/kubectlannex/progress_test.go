package kubectlannex

import (
	"bytes"
	"strings"
	"testing"
)

func TestProgress(t *testing.T) {
	for mode, want := range map[string]string{
		progressAlways: "(3/3, ",
		// A buffer is no terminal.
		progressAuto:  "",
		progressNever: "",
	} {
		var out bytes.Buffer
		p := newProgress(&out, mode, "exporting", 3)
		for range 3 {
			p.add(1)
		}
		p.finish(true)
		if want == "" && out.Len() != 0 {
			t.Errorf("--progress=%s wrote %q, want nothing", mode, out.String())
		}
		if want != "" && (!strings.Contains(out.String(), want) || !strings.HasSuffix(out.String(), "\n")) {
			t.Errorf("--progress=%s wrote %q, want the full bar %q and a newline", mode, out.String(), want)
		}
		if p.done != 3 {
			t.Errorf("--progress=%s counted %d, want 3", mode, p.done)
		}
	}
	// A job of unknown size shows a spinner with the count.
	var out bytes.Buffer
	p := newProgress(&out, progressAlways, "exporting", -1)
	p.add(2)
	p.finish(true)
	if !strings.Contains(out.String(), "2 objects") && !strings.Contains(out.String(), "(2/") {
		t.Errorf("progress of unknown size wrote %q, want the count 2", out.String())
	}
}
