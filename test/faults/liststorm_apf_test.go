//go:build integration

package faults

import (
	"bytes"
	"context"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"

	"annex.dev/annex/test/integration/framework"
)

// stormListerShares is the lister's share of a server's seats, in a
// priority level of its own. Beside the default levels' 245 shares, and
// with a server's 600 seats (--max-requests-inflight 400 plus
// --max-mutating-requests-inflight 200, the kube-apiserver's defaults and
// annex's), it is 24 seats, ceil(600 × 10 / 255), in each server. The
// kube-apiserver counts a LIST of an aggregated type as one seat (it keeps
// no count of the type's objects), so it lets the twenty LISTs through to
// annex; annex counts each LIST its cache answers at 10 seats (the most
// k8s.io/apiserver's estimate gives such a LIST, for any type over 1 MB),
// so it runs two at once and refuses the others.
const stormListerShares = 10

// TestListStormAgainstALevelThatCannotBorrow is
// TestListStormThroughTheAggregator with the lister put, by a FlowSchema of
// its own, in a priority level of its own, as an operator confines a client
// that lists in full: a small share of the seats, none lent or borrowed,
// and no queue (a request beyond the seats is refused at once with 429).
// The other clients stay in the default FlowSchemas. It checks what an
// operator notices: at least one LIST is refused with 429 and Retry-After,
// and by annex; every other is served in full; the other clients get no
// error and their p99 stays under the bound of the storm through the
// aggregator; the peak resident memory of annex and of the kube-apiserver
// stays under theirs; annex still runs; nothing is lost. Unlike
// TestListStormThroughTheAggregator it runs in make test-integration too,
// at 15,000 reports: about 35 s, since annex serves only a few LISTs.
func TestListStormAgainstALevelThatCannotBorrow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	c := startStormCluster(ctx, t)
	// The cluster is the test's own: the level and the schema go with it.
	if _, err := framework.CreateRejectingLevel(ctx, c.cs, stormLister, stormLister, stormListerShares); err != nil {
		t.Fatal(err)
	}
	before := waitFlowSchema(ctx, t, c, stormLister)

	target := c.target
	target.mustRefuse = true
	refused := runStorm(ctx, t, target, c.objects)

	after, err := levelFlowControl(ctx, c, stormLister)
	if err != nil {
		t.Fatal(err)
	}
	byAnnex, byAPIServer := after.annex.minus(before.annex), after.kubeAPIServer.minus(before.kubeAPIServer)
	t.Logf("the storm's %d LISTs in priority level %s: annex (%.0f seats) dispatched %.0f and refused %.0f, at %.1f seats each; "+
		"the kube-apiserver (%.0f seats) dispatched %.0f and refused %.0f, at %.1f seats each; %d refused with 429 and Retry-After at the lister",
		stormLists, stormLister, after.annex.nominalSeats, byAnnex.dispatched, byAnnex.rejected, byAnnex.seatsPerRequest(),
		after.kubeAPIServer.nominalSeats, byAPIServer.dispatched, byAPIServer.rejected, byAPIServer.seatsPerRequest(), refused)
	if byAnnex.rejected < 1 {
		t.Errorf("annex refused none of the storm's LISTs in priority level %s (%d refused at the lister, %.0f by the kube-apiserver)",
			stormLister, refused, byAPIServer.rejected)
	}
	logFlowControl(ctx, t, c.env)
}

// levelFigures are what a server's API Priority and Fairness did with the
// requests of a flow schema in the priority level of the same name, and
// that level's nominal seats.
type levelFigures struct {
	flowFigures
	nominalSeats float64
}

func (l levelFigures) minus(o levelFigures) flowFigures {
	return flowFigures{dispatched: l.dispatched - o.dispatched, rejected: l.rejected - o.rejected, seats: l.seats - o.seats}
}

// serversFlowControl are the figures of one flow schema and priority
// level in annex and in the kube-apiserver.
type serversFlowControl struct {
	annex, kubeAPIServer levelFigures
}

// levelFlowControl reads, from annex's /metrics and the kube-apiserver's,
// the figures of flow schema name in the priority level name.
func levelFlowControl(ctx context.Context, c *stormCluster, name string) (serversFlowControl, error) {
	annex, err := c.env.AnnexMetrics(ctx)
	if err != nil {
		return serversFlowControl{}, err
	}
	raw, err := c.cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return serversFlowControl{}, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	apiServer, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		return serversFlowControl{}, err
	}
	of := func(families map[string]*dto.MetricFamily) levelFigures {
		var l levelFigures
		if f := flowControlFigures(families)[name+" (priority level "+name+")"]; f != nil {
			l.flowFigures = *f
		}
		for _, m := range families["apiserver_flowcontrol_nominal_limit_seats"].GetMetric() {
			for _, label := range m.GetLabel() {
				if label.GetName() == "priority_level" && label.GetValue() == name {
					l.nominalSeats = m.GetGauge().GetValue()
				}
			}
		}
		return l
	}
	return serversFlowControl{annex: of(annex), kubeAPIServer: of(apiServer)}, nil
}

// waitFlowSchema waits until annex and the kube-apiserver both put the
// lister's requests in flow schema name: it gets a report as the lister
// until each counts one dispatched there. It returns the figures then.
func waitFlowSchema(ctx context.Context, t *testing.T, c *stormCluster, name string) serversFlowControl {
	t.Helper()
	dyn, err := dynamic.NewForConfig(c.target.lists)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var (
		got  serversFlowControl
		last error
	)
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if _, last = dyn.Resource(stormReports).Namespace(stormNamespace).Get(ctx, stormReportName(0), metav1.GetOptions{}); last != nil {
			return false, nil
		}
		if got, last = levelFlowControl(ctx, c, name); last != nil {
			return false, nil
		}
		return got.annex.dispatched > 0 && got.kubeAPIServer.dispatched > 0, nil
	})
	if err != nil {
		t.Fatalf("annex and the kube-apiserver did not both apply flow schema %s: %v; last error: %v; dispatched there: %.0f by annex, %.0f by the kube-apiserver",
			name, err, last, got.annex.dispatched, got.kubeAPIServer.dispatched)
	}
	t.Logf("flow schema %s applied by annex and the kube-apiserver %s after its creation; its priority level has %.0f seats in annex, %.0f in the kube-apiserver",
		name, time.Since(start).Round(time.Millisecond), got.annex.nominalSeats, got.kubeAPIServer.nominalSeats)
	return got
}
