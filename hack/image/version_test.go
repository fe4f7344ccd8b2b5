package main

import "testing"

func TestTagAgrees(t *testing.T) {
	for _, c := range []struct {
		tag, appVersion string
		ok              bool
	}{
		{"v0.1.0", "v0.1.0", true},
		{"v0.1.0-dirty", "v0.1.0", true},
		{"v0.1.0-dev-g0123abcd4567", "v0.1.0", true},
		{"v0.1.0-dev-g0123abcd4567-dirty", "v0.1.0", true},
		{"v0.1.0-3-g0123abcd", "v0.1.0", true},
		{"v0.1.0-3-g0123abcd", "v0.2.0", true},
		{"v0.2.0", "v0.1.0", false}, // tagged without bumping the chart
		{"v0.1.0", "v0.2.0", false}, // a release the chart does not run
		{"v0.1.0-dev-g0123abcd", "v0.2.0", false},
		{"v0.3.0-1-g0123abcd", "v0.2.0", false},
		{"latest", "v0.1.0", false},
		{"v0.1.0", "0.1.0", false}, // appVersion without the v of the tags
	} {
		err := tagAgrees(c.tag, c.appVersion)
		if (err == nil) != c.ok {
			t.Errorf("tagAgrees(%q, %q) = %v, want ok=%v", c.tag, c.appVersion, err, c.ok)
		}
	}
}
