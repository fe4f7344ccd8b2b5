package bench

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// objects is the number of objects the store held when annex started on it.
func (s capacityStore) objects() int { return s.Fill.Objects + 1 }

func seconds(s float64) string {
	if s == 0 {
		return "–"
	}
	return (time.Duration(s * float64(time.Second))).Round(100 * time.Millisecond).String()
}

// capacityTables are the tables of the section, also printed at the end of
// a run.
func capacityTables(r *capacityResults) string {
	var sb strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	w("| store | objects | fill (not timed) | start → /readyz | start → full cache | LIST page of %d: p50 / p99 ms | watch, %d watchers: p50 / p99 ms |\n",
		r.Plan.PageLimit, r.Plan.Watchers)
	w("|---|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range r.Stores {
		w("| %s | %s | %s (%s/s) | %s | %s | %s / %s | %s |\n", s.Name, thousands(s.objects()), seconds(s.Fill.Seconds), num(s.Fill.PerSecond),
			seconds(s.ReadySeconds), seconds(s.CacheSeconds), num(s.Paged.P50), num(s.Paged.P99), pair(&s.Watch))
	}
	w("\n| store | RSS: full cache → end | anonymous | file-backed (of which the bbolt file) | VmHWM (peak) | live heap | heap per object | store on disk |\n")
	w("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range r.Stores {
		m, e := s.Full, s.End
		bolt := ""
		if m.Bolt > 0 {
			bolt = " (" + mib(m.Bolt) + " → " + mib(e.Bolt) + ")"
		}
		w("| %s | %s → %s | %s → %s | %s → %s%s | %s | %s | %.0f B | %s |\n", s.Name, mib(m.VmRSS), mib(e.VmRSS), mib(m.RssAnon), mib(e.RssAnon),
			mib(m.RssFile), mib(e.RssFile), bolt, mib(s.HWM), mib(m.HeapLive), s.HeapPerObject, mib(s.Disk.Bytes))
	}
	return sb.String()
}

// storesRun names the stores of the run, each with where it runs.
func storesRun(stores []capacityStore) string {
	var names []string
	for _, s := range stores {
		switch s.Name {
		case "embedded etcd":
			names = append(names, "its **embedded etcd** (inside annex's process)")
		case "PostgreSQL":
			names = append(names, "**PostgreSQL** (through kine, inside annex's process; PostgreSQL is a process of its own)")
		default:
			names = append(names, s.Name)
		}
	}
	return strings.Join(names, " and on ")
}

// capacitySection renders the section, markers included.
func capacitySection(r *capacityResults) string {
	var sb strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	// eachStore writes one(s) for each store, after a space, the stores
	// separated by semicolons.
	eachStore := func(one func(s capacityStore)) {
		for i, s := range r.Stores {
			if i > 0 {
				w(";")
			}
			w(" ")
			one(s)
		}
	}
	pl := r.Plan
	capacitySec.head(w, "Capacity: one type with "+thousands(pl.Count)+" objects", r.Mode)
	w("annex alone, in standalone mode, serving one hosted type of the report shape (section 1) from its default\n")
	w("lean cache, filled with %s objects on %s. annex is restarted on the filled\n", thousands(pl.Count), storesRun(r.Stores))
	w("store and measured from its start. The issue's goals at 1,000,000 objects: RSS at most 4 GiB, ready within\n")
	w("2 minutes.")
	if pl.MemoryLimit != "" {
		w(" annex ran with `GOMEMLIMIT=%s`, the soft limit of its Go heap that a container's memory limit\n", pl.MemoryLimit)
		w("gives it through `--memory-limit-ratio`: the collector works harder as the heap nears it. The lean caches'\n")
		w("budget, by default half that limit, was off (`--lean-cache-budget=0`), so that the creates of the watch figure\n")
		w("were not refused.")
	} else {
		w(" annex ran without a memory limit: the Go collector's default headroom.")
	}
	w("\n\n")
	capacitySec.reproduce(w, r.runInfo)
	w("%s\n", capacityTables(r))

	w("**Verdicts**")
	if pl.Count != defaultCapacityCount {
		w(" (at %s objects; the goals are set at 1,000,000)", thousands(pl.Count))
	}
	w(":\n\n")
	for _, s := range r.Stores {
		w("- %s: peak RSS (VmHWM) %s, RSS at the end %s (%s of it anonymous): %s; `/readyz` after %s, a full cache after\n",
			s.Name, gib(s.HWM), gib(s.End.VmRSS), gib(s.End.RssAnon), verdict(s.HWM <= goalRSS, "within 4 GiB", "over 4 GiB"),
			seconds(s.ReadySeconds))
		w("  %s: %s.\n", seconds(s.CacheSeconds), verdict(s.CacheSeconds <= goalReady.Seconds(), "within 2 minutes", "over 2 minutes"))
	}
	w("\n")

	w("How it was measured:\n\n")
	w("- **Fill, through the store** (not timed; its duration is the table's fill column). annex creates the type and\n")
	w("  one object through its API, then stops. The driver opens annex's store with annex's own code and reads\n")
	w("  what annex wrote:\n")
	for _, s := range r.Stores {
		t := s.Template
		stored := ""
		if t.StoredBytes > 0 && t.StoredBytes != t.ValueBytes {
			stored = fmt.Sprintf(" (%d bytes stored, compressed)", t.StoredBytes)
		}
		w("  - %s: key `%s`, a value of %d bytes of JSON%s with apiVersion `%s` and metadata fields %s (no\n",
			s.Name, t.Key, t.ValueBytes, stored, t.APIVersion, backticked(t.MetadataFields))
		w("    resourceVersion). Written: %s; %d clients. Then: %s.\n", s.Fill.Method, s.Fill.Clients, s.Fill.Settle)
	}
	w("  Every other object is that value with another name and a new uid, byte for byte otherwise (the same\n")
	w("  creationTimestamp, managedFields, labels and content), under the same key prefix. On the embedded etcd the\n")
	w("  objects of one transaction share a revision (etcd numbers them with sub-revisions), so their\n")
	w("  resourceVersions come in runs of %d; annex's own writes give each object a revision of its own. Nothing\n", pl.EtcdBatch)
	w("  measured here depends on that. Through kine each object has its own revision, as through annex.\n")
	w("- **Check**: after the restart, %d filled objects (the last one and random ones) are read with GET, from the\n", pl.Samples)
	w("  store and with `resourceVersion=0` from the cache; each must be byte for byte the API-created object's\n")
	w("  answer once the name, uid and resourceVersion are set aside.")
	for _, s := range r.Stores {
		w(" %s: %d of %d.", s.Name, s.Verified, pl.Samples)
	}
	w("\n")
	w("- **Start → /readyz** runs from the start of annex's process to `/readyz` answering 200. annex's readiness\n")
	w("  waits until the storage of every hosted type is open and its watch cache started (`hosted-type-storage`),\n")
	w("  not until the cache is full. **Start → full cache** runs to the first LIST with `resourceVersion=0` and\n")
	w("  `fieldSelector=metadata.name=%s` answered 200: while a type's watch cache fills, annex answers such a\n", objectName(0))
	w("  LIST (and a watch) 429 with Retry-After. A LIST with a limit and no selector it sends to the store\n")
	w("  instead, whatever its resourceVersion, so that one succeeds from the start. The metric that tells a user\n")
	w("  the cache is full is `apiserver_watch_cache_initializations_total{group,resource}` reaching 1")
	for _, s := range r.Stores {
		w("; %s: %s", s.Name, num(s.CacheInitializations))
	}
	w(" when the LIST first succeeded. annex's CPU time (user and system, from `/proc/<pid>/stat`) from its start\n")
	w("  to a full cache:")
	eachStore(func(s capacityStore) { w("%s %.0f s of CPU in %.0f s", s.Name, s.StartCPUSeconds, s.CacheSeconds) })
	w(" on %d cores. Its CPU profile from `/readyz` on (%d s) is at the end of this section.\n", r.Machine.CPUs, pl.ProfileSeconds)
	w("- **Per object**:")
	eachStore(func(s capacityStore) {
		n := float64(s.objects())
		w("%s: %.2f ms of annex's CPU to fill the cache, %.0f bytes of live heap, %.1f KiB of store on disk", s.Name,
			1000*s.StartCPUSeconds/n, s.HeapPerObject, s.Disk.Bytes/n/1024)
		if b := s.Disk.Detail["bbolt file"]; b > 0 {
			w(" (%.1f KiB in the bbolt file)", b/n/1024)
		}
	})
	w(".\n")
	w("- **Memory**, once the cache is full and again at the end of the measurements: RSS, its anonymous and\n")
	w("  file-backed parts and the peak (VmHWM, from annex's start on the filled store to the end of the run) from\n")
	w("  `/proc/<pid>/status`; the live heap after a forced GC (`/debug/pprof/heap?gc=1`, then\n")
	w("  `go_gc_heap_live_bytes`, the least of %d reads %s apart). Heap per object is the growth of the live heap\n", pl.MemSamples, pl.MemGap)
	w("  over annex holding the type and its one object before the fill.\n")
	w("  The embedded etcd runs inside annex's process (`pkg/storage/embedded` uses etcd's `embed`), so its memory\n")
	w("  counts in annex's RSS: its in-memory key index is anonymous memory, and its bbolt file is mapped into the\n")
	w("  process, so the pages of it that etcd touched count as file-backed RSS (from `/proc/<pid>/smaps`): page\n")
	w("  cache that the kernel may drop and read again, not heap. kine runs in annex's process too; PostgreSQL's\n")
	w("  own memory is not in these figures.\n")
	w("- **Consistency check**: every 5 to 7.5 minutes the upstream cache compares itself with the store\n")
	w("  (`DetectCacheInconsistency`, on by default since 1.34): it lists the whole type from the cache and again\n")
	w("  from the store, which annex decodes and compacts as it does to fill the cache. The first comes 5 to 7.5\n")
	w("  minutes after the type's storage opened (at `/readyz`); one that finds the cache still filling ends in an\n")
	w("  error, and the next comes as long after. `apiserver_storage_consistency_checks_total` of the type, when the\n")
	w("  cache was full → at the end of the measurements, and annex's CPU time in between:")
	eachStore(func(s capacityStore) {
		w("%s %s → %s, %.0f s", s.Name, checkCounts(s.ChecksAtFull), checkCounts(s.ChecksAtEnd), s.AfterCPUSeconds)
	})
	w(".")
	for _, s := range r.Stores {
		c := s.Check
		switch {
		case c == nil:
		case c.Status == "":
			w(" %s: no check of the full cache came while the run waited.", s.Name)
		default:
			w(" %s, waited for: the check of the full cache ended (%s) %.0f s after the cache was full, annex used %.0f s of CPU\n"+
				"  meanwhile, then RSS %s, live heap %s (the VmHWM column includes it).", s.Name, c.Status, c.Seconds, c.CPUSeconds,
				mib(c.After.VmRSS), mib(c.After.HeapLive))
		}
	}
	w("\n")
	w("- **Paged LIST**: a walk of %d pages of %d objects (JSON, the first page without resourceVersion, then the\n", pl.Pages, pl.PageLimit)
	w("  continue tokens), each page timed to its last byte.\n")
	w("- **Watch**: %d watches of an empty namespace of the filled type; %d objects created there one at a time at\n", pl.Watchers, pl.WatchEvents)
	w("  %.0f/s through the API; the latency runs from each create's response to each watcher's ADDED event (an\n", pl.WatchRate)
	w("  event that arrives first counts as 0 ms).\n")
	w("- **Store size**:")
	for _, s := range r.Stores {
		w(" %s %s", s.Name, mib(s.Disk.Bytes))
		var parts []string
		keys := make([]string, 0, len(s.Disk.Detail))
		for k := range s.Disk.Detail {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			v := s.Disk.Detail[k]
			if k == "rows" {
				parts = append(parts, fmt.Sprintf("%.0f rows", v))
				continue
			}
			parts = append(parts, k+" "+mib(v))
		}
		w(" (%s);", strings.Join(parts, ", "))
	}
	w(" the embedded etcd's quota (annex's default `--embedded-etcd-quota-backend-bytes`) is %s.\n", gib(capacityQuota))
	for _, s := range r.Stores {
		for _, n := range s.Notes {
			w("- %s: %s\n", s.Name, n)
		}
		if s.Postgres != nil {
			m := s.Postgres
			w("- %s: annex's metrics once the cache was full: database %s, kine's table %s, revision %s, compacted to %s.\n", s.Name,
				mib(m["annex_postgres_database_size_bytes"]), mib(m["annex_postgres_table_size_bytes"]),
				intOrDash(m["annex_postgres_current_revision"]), intOrDash(m["annex_postgres_compacted_revision"]))
		}
	}
	w("- Machine: %s. Load average (1, 5, 15 min) before the run\n", r.Machine.describe())
	w("  %s, after it %s.\n", r.LoadBefore, r.LoadAfter)
	w("- Versions: %s.\n", versionList(r.Versions))
	w("- Started %s UTC; the run took %.0f s. The raw results (`capacity.json`), heap profiles and every process's\n", r.Started.Format("2006-01-02 15:04"), r.Seconds)
	w("  log are in the output directory (`bench/out/capacity/` for `make bench-capacity`).\n\n")
	for _, s := range r.Stores {
		if s.StartProfile != "" {
			w("<details><summary>annex's CPU on %s from /readyz on, while its cache fills (%d s, top 15)</summary>\n\n```\n%s\n```\n\n</details>\n\n",
				s.Name, pl.ProfileSeconds, trimPprof(s.StartProfile))
		}
		if s.HeapProfile == "" {
			continue
		}
		w("<details><summary>annex's heap on %s holding %s objects (in use, top 12)</summary>\n\n```\n%s\n```\n\n</details>\n\n",
			s.Name, thousands(s.objects()), trimPprof(s.HeapProfile))
	}
	w("%s", capacitySec.end())
	return sb.String()
}

// checkCounts writes consistency check counts as "success 1, error 1", or
// "none".
func checkCounts(m map[string]float64) string {
	var parts []string
	for _, status := range []string{"success", "failure", "error"} {
		if m[status] > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f", status, m[status]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func verdict(ok bool, yes, no string) string {
	if ok {
		return "**" + yes + "**"
	}
	return "**" + no + "**"
}

func backticked(s []string) string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = "`" + v + "`"
	}
	return strings.Join(out, ", ")
}

// thousands writes n with commas between groups of three digits.
func thousands(n int) string {
	s := fmt.Sprintf("%d", n)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
