//go:build integration

package bench

import (
	"flag"
	"slices"
	"strings"
	"testing"
)

func TestComparePhases(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
		err  string
	}{
		{want: []string{"ladder", "watch", "crud"}},
		{args: []string{"--phases=watch"}, want: []string{"watch"}},
		{args: []string{"--phases=ladder, crud"}, want: []string{"ladder", "crud"}},
		{args: []string{"--phases=watch,lists"}, err: `--phases: "lists" is not one of ladder, watch, crud`},
		{args: []string{"--phases="}, err: `--phases: "" is not one of`},
	} {
		var o CompareOptions
		fs := flag.NewFlagSet("compare", flag.ContinueOnError)
		o.AddFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		err := o.Complete()
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%v: error %v, want one with %q", tc.args, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%v: %v", tc.args, err)
		case tc.err == "" && !slices.Equal(o.Phases, tc.want):
			t.Errorf("%v: phases %v, want %v", tc.args, o.Phases, tc.want)
		}
	}
}

func TestCapacityMemoryLimit(t *testing.T) {
	for limit, ok := range map[string]bool{"": true, "3GiB": true, "2560MiB": true, "3221225472": true, "3G": false, "3 GiB": false, "-1": false} {
		var o CapacityOptions
		fs := flag.NewFlagSet("capacity", flag.ContinueOnError)
		o.AddFlags(fs)
		if err := fs.Parse([]string{"--annex-memory-limit=" + limit}); err != nil {
			t.Fatal(err)
		}
		err := o.Complete()
		if (err == nil) != ok {
			t.Errorf("--annex-memory-limit=%q: error %v, want accepted: %v", limit, err, ok)
		}
		if ok && o.MemoryLimit != limit {
			t.Errorf("--annex-memory-limit=%q: MemoryLimit %q", limit, o.MemoryLimit)
		}
	}
}
