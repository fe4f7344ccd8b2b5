package kubectlannex

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// run runs kubectl annex with args as kubectl would, without a cluster.
func run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	streams := genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
	err = Run(context.Background(), streams, args)
	return out.String(), errOut.String(), err
}

// TestHelpReadsLikeKubectls checks each command's help for what kubectl's
// own help has: a one-line summary, a description, examples indented by
// two spaces, each a comment and a kubectl annex command line, the usage
// line and the pointer to the global options.
func TestHelpReadsLikeKubectls(t *testing.T) {
	annex := NewCommand(genericiooptions.NewTestIOStreamsDiscard())
	cmds := append([]*cobra.Command{annex}, annex.Commands()...)
	for _, cmd := range cmds {
		name := cmd.CommandPath()
		if !strings.HasPrefix(name, "kubectl annex") {
			t.Errorf("command path %q does not start with kubectl annex", name)
		}
		if cmd.Short == "" || strings.HasSuffix(cmd.Short, ".") || cmd.Short[0] != strings.ToUpper(cmd.Short[:1])[0] {
			t.Errorf("%s: Short %q: want a capitalised phrase without a final period", name, cmd.Short)
		}
		if cmd.Long == "" || cmd.Example == "" {
			t.Errorf("%s: want Long and Example", name)
			continue
		}
		for _, line := range strings.Split(cmd.Example, "\n") {
			if strings.TrimSpace(line) == "" {
				continue
			}
			if !strings.HasPrefix(line, "  # ") && !strings.HasPrefix(line, "  kubectl annex ") {
				t.Errorf("%s: example line %q: want two spaces, then a comment or a kubectl annex command", name, line)
			}
		}
		if cmd.Name() == "options" {
			// Its help is the list of global options, as kubectl's is.
			continue
		}
		args := append(strings.Fields(strings.TrimPrefix(name, "kubectl annex")), "--help")
		out, _, err := run(t, args...)
		if err != nil {
			t.Errorf("%s --help: %v", name, err)
			continue
		}
		for _, want := range []string{"Examples:\n  # ", "Usage:\n  " + name, `Use "kubectl annex options" for a list of global command-line options (applies to all commands).`} {
			if !strings.Contains(out, want) {
				t.Errorf("%s --help lacks %q:\n%s", name, want, out)
			}
		}
		// The connection flags are kubectl's, listed by options only.
		if strings.Contains(out, "--kubeconfig") {
			t.Errorf("%s --help lists the global flag --kubeconfig:\n%s", name, out)
		}
	}
	out, _, _ := run(t, "--help")
	for _, want := range []string{"Available Commands:\n", "  export ", "  import ", "  status ", `Use "kubectl annex <command> --help" for more information about a given command.`} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl annex --help lacks %q:\n%s", want, out)
		}
	}
	out, _, _ = run(t, "options")
	for _, want := range []string{"--kubeconfig=", "--context=", "-n, --namespace="} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl annex options lacks %q:\n%s", want, out)
		}
	}
}

func TestBadCommandLines(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, `unknown command "bogus" for "kubectl annex"`},
		{[]string{"status", "--bogus"}, "unknown flag: --bogus\nSee 'kubectl annex status --help' for usage."},
		{[]string{"status", "-o", "name"}, `output format "name", allowed formats are: json,wide,yaml`},
		{[]string{"export"}, "accepts 1 arg(s), received 0"},
		{[]string{"export", "widgets", "-o", "table"}, `output format "table", allowed formats are: json,yaml`},
		{[]string{"export", "widgets", "--chunk-size", "0"}, "--chunk-size must be greater than 0"},
		{[]string{"import"}, "must specify -f FILENAME"},
		{[]string{"import", "-f", "x.yaml", "--on-error", "ignore"}, `invalid --on-error "ignore": one of continue, stop`},
		{[]string{"import", "-f", "x.yaml", "--progress", "sometimes"}, `invalid --progress "sometimes"`},
		{[]string{"import", "-f", "x.yaml", "--parallel", "0"}, "--parallel must be at least 1"},
	} {
		_, _, err := run(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("kubectl annex %s: error %v, want %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}

func TestRootArgs(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "annex"},
		{"status -o yaml", "annex status -o yaml"},
		{"__complete export po", "__complete annex export po"},
		{"__completeNoDesc ", "__completeNoDesc annex"},
	} {
		if got := strings.Join(rootArgs(strings.Fields(tc.in)), " "); got != tc.want {
			t.Errorf("rootArgs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
