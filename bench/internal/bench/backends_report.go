package bench

import (
	"fmt"
	"math"
	"strings"
)

func pair(s *watchStats) string {
	if s == nil || s.Latency.N == 0 {
		return "–"
	}
	return num(s.Latency.P50) + " / " + num(s.Latency.P99)
}

// backendsTable is the table of the section, also printed at the end of a run.
func backendsTable(r *backendsResults) string {
	var sb strings.Builder
	sb.WriteString("| store | creates/s | create p50 ms | create p99 ms | watch, same replica: p50 / p99 ms | watch, other replica: p50 / p99 ms | others' CPU during the creates |\n")
	sb.WriteString("|---|---:|---:|---:|---:|---:|---:|\n")
	for _, b := range r.Backends {
		cross := pair(b.Cross)
		if b.Cross == nil {
			cross = "– (one replica only)"
		}
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s | %s | %s |\n", b.Name, num(b.Create.PerSecond), num(b.Create.Latency.P50),
			num(b.Create.Latency.P99), pair(&b.Same), cross, percent(b.OthersCPU))
	}
	return sb.String()
}

// backendsSection renders the section, markers included.
func backendsSection(r *backendsResults) string {
	var sb strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	backendsSec.head(w, "Storage backends", r.Mode)
	w("annex alone, in standalone mode (no kube-apiserver; requests go straight to annex with its admin\n")
	w("certificate), on each of its stores in turn on one machine: its **embedded etcd** (in annex's\n")
	w("process), an **external etcd** (one member, a process of its own) and **PostgreSQL** through kine\n")
	w("(kine runs in annex's process). Every store syncs each write to disk: both etcds fsync their WAL,\n")
	w("PostgreSQL runs with its defaults (`fsync` and `synchronous_commit` on); all use the same disk and\n")
	w("the same 2 cores as annex and the load driver.\n\n")
	backendsSec.reproduce(w, r.runInfo)
	w("%s\n", backendsTable(r))

	w("- **Creates**: %d objects of the report shape of section 1 (about %d bytes of JSON) through one\n", r.Plan.Creates, jsonSize(shapeReport))
	w("  annex replica by %d concurrent clients on one HTTP/2 connection, after %d warm-up creates.\n", r.Plan.Clients, 2*r.Plan.Clients)
	w("- **Watch**: one watch on the replica that writes (annex-1) and, on the shared stores, one on a\n")
	w("  second replica started on the same store (annex-2) with its own data directory, certificates and\n")
	w("  watch cache; %d objects are created one at a time at %.0f/s through annex-1. The latency runs from\n", r.Plan.WatchEvents, r.Plan.WatchRate)
	w("  each create's response to the watcher receiving the ADDED event; an event that arrives before the\n")
	w("  response counts as 0 ms. The embedded etcd belongs to one annex process: it has no second replica.\n")
	var pg *backendResult
	for i := range r.Backends {
		if strings.HasPrefix(r.Backends[i].Name, "PostgreSQL") {
			pg = &r.Backends[i]
		}
	}
	kine := r.Versions["kine (in annex)"]
	if kine == "" {
		kine = "as linked into annex"
	}
	w("- **Why PostgreSQL's other-replica figure is what it is**: kine (%s) learns of rows that another\n", kine)
	w("  process wrote only by polling. Its poll loop (`pkg/logstructured/sqllog/sql.go`, a\n")
	w("  `time.NewTicker(time.Second)`) reads the rows after the last revision it has seen once a second.\n")
	w("  A write through the kine of the same process also sends the new revision on an in-process channel\n")
	w("  (`notify`, from `Append`) that wakes the loop at once: hence the same-replica figure, close to\n")
	w("  etcd's. That channel does not leave the process, and kine uses no PostgreSQL `LISTEN`/`NOTIFY`, so\n")
	w("  on annex-2 an event written through annex-1 waits for the next tick of annex-2's poll: uniformly\n")
	w("  0 to 1 s after the write, a p50 near 500 ms and a p99 near 990 ms, plus the delivery through the\n")
	w("  watch cache")
	if pg != nil && pg.Cross != nil && pg.Cross.Latency.N > 0 {
		w(" (measured: p50 %s ms, p99 %s ms, max %s ms)", num(pg.Cross.Latency.P50), num(pg.Cross.Latency.P99), num(pg.Cross.Latency.Max))
	}
	w(". (A read that reaches kine and sees a newer\n")
	w("  revision wakes the loop too; here the watch cache serves the reads.) An etcd pushes every write to\n")
	w("  every watcher, whoever wrote it, so on the external etcd the other replica sees an event about as\n")
	w("  soon as the writing one.\n")
	var early, missed []string
	for _, b := range r.Backends {
		for _, s := range []struct {
			where string
			st    *watchStats
		}{{"same replica", &b.Same}, {"other replica", b.Cross}} {
			if s.st == nil {
				continue
			}
			if s.st.Early > 0 {
				early = append(early, fmt.Sprintf("%s, %s: %d of %d", b.Name, s.where, s.st.Early, s.st.Events))
			}
			if s.st.Missed > 0 {
				missed = append(missed, fmt.Sprintf("%s, %s: %d of %d", b.Name, s.where, s.st.Missed, s.st.Events))
			}
		}
		if b.Create.TimedOut {
			w("- %s: the creates stopped at their time limit (%s) after %d objects.\n", b.Name, r.Plan.CreateLimit, b.Create.Ops)
		}
	}
	if len(early) > 0 {
		w("- Events that arrived before the create's response (counted as 0 ms): %s. The event and the\n", strings.Join(early, "; "))
		w("  response race: the store tells every watching annex of the write as it answers the writer, and\n")
		w("  annex sends the event on while it encodes and sends the response; a p50 of 0 means that most\n")
		w("  events won.\n")
	}
	if len(missed) > 0 {
		w("- Events never received within %s of the last create: %s.\n", r.Plan.EventWait, strings.Join(missed, "; "))
	}
	if pg != nil && len(pg.Postgres) > 0 {
		m := pg.Postgres
		w("- annex's PostgreSQL metrics after the creates: database %s, kine's table %s, revision %s, compaction\n",
			mib(m["annex_postgres_database_size_bytes"]), mib(m["annex_postgres_table_size_bytes"]), intOrDash(m["annex_postgres_current_revision"]))
		w("  lag %s revisions (annex compacts every 5 minutes by default; this run is shorter).\n", intOrDash(m["annex_postgres_compaction_lag_revisions"]))
	}
	w("- Machine: %s. Load average (1, 5, 15 min) before the run\n", r.Machine.describe())
	w("  %s, after it %s. The last column is the share of the machine's CPU that processes outside\n", r.LoadBefore, r.LoadAfter)
	w("  this run (other users' builds and tests) used while the creates ran, from `/proc`.\n")
	w("- Versions: %s.\n", versionList(r.Versions))
	w("- Started %s UTC; the run took %.0f s. The raw results (`backends.json`) and every process's log are\n", r.Started.Format("2006-01-02 15:04"), r.Seconds)
	w("  in the output directory (`bench/out/backends/` for `make bench-backends`).\n")
	w("%s", backendsSec.end())
	return sb.String()
}

func percent(x float64) string {
	if math.IsNaN(x) {
		return "–"
	}
	return fmt.Sprintf("%.0f%%", 100*x)
}

func intOrDash(x float64) string {
	if math.IsNaN(x) {
		return "–"
	}
	return fmt.Sprintf("%.0f", x)
}
