//go:build integration

package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"annex.dev/annex/pkg/storage/postgres/postgrestest"
)

// The type whose objects fill the disk: large objects of names the history's
// clients never use, in a type of their own so that the clients' lists do
// not see them.
var ballasts = schema.GroupVersionResource{Group: "history.example.com", Version: "v1", Resource: "ballasts"}

// ballastBytes is the size of a ballast's data.
const ballastBytes = 256 << 10

// ballastData is the data of the ballast named name: ballastBytes drawn at
// random from 64 letters, with the name as the seed. It does not compress
// (PostgreSQL compresses the values it stores, when it can).
func ballastData(name string) string {
	h := fnv.New64a()
	h.Write([]byte(name))
	rng := rand.New(rand.NewPCG(h.Sum64(), 0))
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	b := make([]byte, ballastBytes)
	for i := range b {
		b[i] = letters[rng.IntN(len(letters))]
	}
	return string(b)
}

func ballast(name string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "history.example.com/v1", "kind": "Ballast",
		"metadata": map[string]any{"name": name},
		"spec":     map[string]any{"data": ballastData(name)},
	}}
}

// declareBallasts declares the ballasts' type and waits until it is served.
func declareBallasts(t *testing.T, cfg *rest.Config) {
	t.Helper()
	declareType(t, cfg, ballasts, clusterType(ballasts, "Ballast", "data"))
}

// mountTmpfs mounts a tmpfs of size bytes on a new directory, which
// PostgreSQL's user may enter, unmounted when the test ends (after annex and
// PostgreSQL have stopped: cleanups run last first), and skips the test
// where mounting is not permitted.
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "annex-tmpfs-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0755", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		os.Remove(dir)
		t.Skipf("a full disk needs a tmpfs of its own, and mounting one is not permitted here (run as root): %v: %s",
			err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("unmounting the tmpfs %s: %v: %s", dir, err, out)
			_ = exec.Command("umount", "-l", dir).Run()
		}
		os.Remove(dir)
	})
	return dir
}

// freeBytes is the space left on the filesystem of dir.
func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// placeFiller takes all but leave bytes of the space left on dir's
// filesystem with a file, which freeing the space removes.
func placeFiller(t *testing.T, dir string, leave int64) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	size := freeBytes(t, dir) - leave
	if size <= 0 {
		t.Fatalf("%s has %d bytes left, less than the %d the test leaves", dir, freeBytes(t, dir), leave)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		t.Fatalf("allocating the filler: %v", err)
	}
	return path
}

// refusal is a write the store did not take.
type refusal struct {
	code       int32
	reason     metav1.StatusReason
	retryAfter int32
	message    string
	took       time.Duration
}

func (r refusal) String() string {
	if r.code == 0 {
		return fmt.Sprintf("no answer after %s: %s", r.took.Round(time.Millisecond), r.message)
	}
	return fmt.Sprintf("%d %s (Retry-After %d) after %s: %s", r.code, r.reason, r.retryAfter, r.took.Round(time.Millisecond), r.message)
}

// filling is what writing ballasts until the store refused gave.
type filling struct {
	// acked are the ballasts whose create was acknowledged.
	acked []string
	// refusals are the writes that failed, in order.
	refusals []refusal
	// exited is set when annex exited meanwhile.
	exited bool
	took   time.Duration
}

// log logs what the filling took, with what else the test saw, and each
// refusal.
func (f filling) log(t *testing.T, saw string) {
	t.Helper()
	t.Logf("%d ballasts of %d KiB acknowledged in %s (%s); %d writes refused; annex exited: %v",
		len(f.acked), ballastBytes>>10, f.took.Round(time.Millisecond), saw, len(f.refusals), f.exited)
	for _, ref := range f.refusals {
		t.Logf("refused: %s", ref)
	}
}

// writeTarget is where fill sends its writes: annex itself, or the
// kube-apiserver that proxies to it.
type writeTarget struct {
	config *rest.Config
	host   string
	// exited says whether annex has exited, and log where to read why.
	exited func() (bool, error)
	log    func() string
}

// target is the writeTarget of annex itself.
func (a *annex) target() writeTarget {
	return writeTarget{
		config: a.restConfig(),
		host:   fmt.Sprintf("https://127.0.0.1:%d", a.Port),
		exited: a.Process().Exited,
		log:    a.Log,
	}
}

// fill creates ballasts, one after the other, until refusals writes in a row
// have failed, annex has exited, or budget has passed. Each write is sent
// once, with a plain HTTP client and 10 s to be answered: client-go would
// resend a write answered with Retry-After by itself, and the test wants
// each answer as annex gave it.
func fill(t *testing.T, to writeTarget, first, refusals int, budget time.Duration) filling {
	t.Helper()
	cfg, host := to.config, to.host
	path := "/apis/" + ballasts.Group + "/" + ballasts.Version + "/" + ballasts.Resource
	var f filling
	started := time.Now()
	inRow := 0
	for i := first; inRow < refusals && time.Since(started) < budget; i++ {
		name := fmt.Sprintf("b-%05d", i)
		body, err := json.Marshal(ballast(name).Object)
		if err != nil {
			t.Fatal(err)
		}
		res := probe{what: "create " + name, method: http.MethodPost, path: path, body: string(body)}.send(cfg, host, 10*time.Second)
		if res.err == nil && res.code == http.StatusCreated {
			f.acked = append(f.acked, name)
			inRow = 0
			continue
		}
		inRow++
		r := refusal{took: res.took}
		if res.err != nil {
			r.message = res.err.Error()
		} else {
			r.code, r.message = int32(res.code), res.body
			var s metav1.Status
			if json.Unmarshal([]byte(res.body), &s) == nil && s.Kind == "Status" {
				r.reason, r.message = s.Reason, s.Message
				if s.Details != nil {
					r.retryAfter = s.Details.RetryAfterSeconds
				}
			}
			if res.retryAfter != "" && r.retryAfter == 0 {
				r.message += " (Retry-After header " + res.retryAfter + ")"
			}
		}
		f.refusals = append(f.refusals, r)
		if exited, _ := to.exited(); exited {
			f.exited = true
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	f.took = time.Since(started)
	return f
}

// readBack reads every ballast in names and says which are missing or
// differ.
func readBack(t *testing.T, cfg *rest.Config, names []string) (lost []string) {
	t.Helper()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		got, err := dyn.Resource(ballasts).Get(ctx, name, metav1.GetOptions{})
		cancel()
		if err != nil {
			lost = append(lost, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		if data, _, _ := unstructured.NestedString(got.Object, "spec", "data"); data != ballastData(name) {
			lost = append(lost, fmt.Sprintf("%s: its data differs (%d bytes)", name, len(data)))
		}
	}
	return lost
}

// TestFullDisk fills the disk under annex's embedded etcd with the objects of
// a hosted type, while the history's clients write, read and watch another:
// its data directory is on a tmpfs of its own, most of it taken by a filler
// file. The writes must stop being acknowledged without hanging, with a 5xx
// status, or with annex exiting; every write acknowledged before must read
// back; reads must go on while annex runs; and once the filler is removed,
// annex (started again on its data if it exited) must take writes again.
// The history must check across all of it.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a full disk needs a tmpfs of its own, which only root may mount")
	}
	// etcd preallocates its write-ahead log in segments of 64 MiB, and one
	// more ahead: 128 MiB before any data.
	const size, leave = 192 << 20, 16 << 20
	between := pause()
	tmpfs := mountTmpfs(t, size)
	a := startAnnex(t, "--data-dir="+filepath.Join(tmpfs, "data"))
	cfg := a.restConfig()
	declareLedgers(t, cfg)
	declareBallasts(t, cfg)
	filler := placeFiller(t, tmpfs, leave)
	t.Logf("tmpfs of %d MiB, %.1f MiB left after the filler", size>>20, float64(freeBytes(t, tmpfs))/(1<<20))

	r := startRun(t, 10*time.Second, cfg)
	time.Sleep(between)
	r.fault("filling the disk (%.1f MiB left) with ballasts of %d KiB", float64(freeBytes(t, tmpfs))/(1<<20), ballastBytes>>10)
	f := fill(t, a.target(), 0, 3, 60*time.Second)
	f.log(t, fmt.Sprintf("%.1f MiB left", float64(freeBytes(t, tmpfs))/(1<<20)))
	if len(f.refusals) == 0 {
		t.Fatalf("the disk did not fill: %d ballasts acknowledged in %s", len(f.acked), f.took)
	}
	for _, ref := range f.refusals {
		if ref.took >= 10*time.Second {
			t.Errorf("a write hung until its client gave up: %s", ref)
		}
		if !f.exited && ref.code < 500 {
			t.Errorf("a write was refused other than with a 5xx status while annex ran: %s", ref)
		}
	}
	if f.exited {
		// etcd ends the process when it cannot write (a finding, recorded
		// in docs/reliability.md): say why, as its log does.
		exited, err := a.Process().Exited()
		t.Logf("annex exited (%v, %v)%s", exited, err, a.LogTail(25))
	} else {
		// Reads go on while writes are refused.
		if lost := readBack(t, cfg, f.acked); len(lost) > 0 {
			t.Errorf("with the disk full, %d acknowledged ballasts do not read back: %v", len(lost), lost)
		}
	}

	// Free the space; start annex again if it exited.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if f.exited {
		took, err := a.start()
		if err != nil {
			t.Fatalf("annex did not start again on its data once space was freed: %v", err)
		}
		r.recovered("space freed, annex ready again %s after its start", took.Round(time.Millisecond))
		t.Logf("space freed: annex ready again %s after its start", took.Round(time.Millisecond))
	} else {
		r.recovered("space freed")
	}
	if lost := readBack(t, cfg, f.acked); len(lost) > 0 {
		t.Errorf("%d of %d acknowledged ballasts do not read back once space was freed: %v", len(lost), len(f.acked), lost)
	}
	took, err := r.servesWrites(60 * time.Second)
	if err != nil {
		t.Fatalf("once space was freed: %v", err)
	}
	t.Logf("space freed: a write acknowledged %s later", took.Round(time.Millisecond))
	again := fill(t, a.target(), len(f.acked)+len(f.refusals), 1, 2*time.Second)
	if len(again.acked) == 0 {
		t.Errorf("no ballast was acknowledged once space was freed: %v", again.refusals)
	}
	r.finish(between, "the embedded etcd's disk filled and freed")
	if lost := readBack(t, cfg, append(f.acked, again.acked...)); len(lost) > 0 {
		t.Errorf("%d acknowledged ballasts do not read back at the end: %v", len(lost), lost)
	}
}

// TestEtcdQuota fills annex's embedded etcd up to its backend quota
// (--embedded-etcd-quota-backend-bytes) with the objects of a hosted type,
// while the history's clients write, read and watch another: etcd raises
// its NOSPACE alarm and refuses writes. Writes must then be refused with a
// 507 that says the store is out of space, at once; annex must keep running
// and serving reads; every write acknowledged before must read back. Once
// half the objects are deleted, annex must end the alarm by itself (a
// compaction, a defragmentation, the alarm disarmed) and take creates
// again. The history must check across all of it.
func TestEtcdQuota(t *testing.T) {
	a := startAnnex(t, "--embedded-etcd-quota-backend-bytes="+strconv.Itoa(quotaBytes))
	fillToQuota(t, a.target(), "annex's embedded etcd filled to its quota and freed")
}

// TestEtcdQuotaThroughTheAggregator is TestEtcdQuota with every client on a
// real kube-apiserver, whose aggregator proxies the hosted types to annex:
// a cluster's users must get annex's 507 as annex gave it. It starts a
// control plane of its own, so it runs in the long version only.
func TestEtcdQuotaThroughTheAggregator(t *testing.T) {
	longOnly(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env := startCluster(ctx, t, "--embedded-etcd-quota-backend-bytes="+strconv.Itoa(quotaBytes))
	fillToQuota(t, writeTarget{
		config: env.Config,
		host:   strings.TrimSuffix(env.Config.Host, "/"),
		exited: annexExited(env),
		log:    func() string { return "annex's log is " + env.AnnexLog },
	}, "annex's embedded etcd filled to its quota and freed, behind the aggregator")
}

// pause is how long the full-disk tests let the history's clients run
// before the fault and after it.
func pause() time.Duration {
	if long() {
		return 15 * time.Second
	}
	return 4 * time.Second
}

// quotaBytes is the embedded etcd's quota in the quota tests: a few
// seconds of ballasts.
const quotaBytes = 24 << 20

// fillToQuota is the schedule of TestEtcdQuota, through to.
func fillToQuota(t *testing.T, to writeTarget, what string) {
	t.Helper()
	between := pause()
	cfg := to.config
	declareLedgers(t, cfg)
	declareBallasts(t, cfg)
	r := startRun(t, 10*time.Second, cfg)
	time.Sleep(between)
	r.fault("filling the embedded etcd to its quota (%d MiB) with ballasts of %d KiB", quotaBytes>>20, ballastBytes>>10)
	f := fill(t, to, 0, 3, 60*time.Second)
	f.log(t, fmt.Sprintf("quota %d MiB", quotaBytes>>20))
	if f.exited {
		t.Fatalf("annex exited at its quota:\n%s", to.log())
	}
	if len(f.refusals) == 0 {
		t.Fatalf("the quota was not reached: %d ballasts acknowledged in %s", len(f.acked), f.took)
	}
	for _, ref := range f.refusals {
		if ref.code != 507 || ref.reason != "InsufficientStorage" || ref.retryAfter != 0 || !strings.Contains(ref.message, "out of space") {
			t.Errorf("a write at the quota was not refused with a 507 without Retry-After that says the store is out of space: %s", ref)
		}
		if ref.took >= 5*time.Second {
			t.Errorf("a write at the quota took %s to be refused", ref.took)
		}
	}
	if lost := readBack(t, cfg, f.acked); len(lost) > 0 {
		t.Errorf("at the quota, %d of %d acknowledged ballasts do not read back: %v", len(lost), len(f.acked), lost)
	}
	// What freeing objects does: deletes are taken under the alarm, writes
	// are still refused.
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	deleted := 0
	for _, name := range f.acked[len(f.acked)/2:] {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := dyn.Resource(ballasts).Delete(ctx, name, metav1.DeleteOptions{})
		cancel()
		if err != nil {
			t.Logf("at the quota, deleting %s: %v", name, err)
			continue
		}
		deleted++
	}
	// annex compacts and defragments its store and ends the alarm: creates
	// are taken again, until the quota is reached again.
	next, freed := len(f.acked)+len(f.refusals), time.Now()
	var after filling
	for len(after.acked) == 0 && time.Since(freed) < time.Minute {
		if after = fill(t, to, next, 1, 20*time.Second); len(after.acked) == 0 {
			time.Sleep(time.Second)
		}
	}
	t.Logf("at the quota, %d of %d deletes taken; creates taken again %s after them: %d acknowledged, then refused: %v",
		deleted, len(f.acked)-len(f.acked)/2, time.Since(freed).Round(100*time.Millisecond), len(after.acked), after.refusals)
	if exited, err := to.exited(); exited {
		t.Fatalf("annex exited (%v):\n%s", err, to.log())
	}
	if len(after.acked) == 0 {
		t.Fatalf("a minute after %d deletes freed half the store, creates are still refused: %v", deleted, after.refusals)
	}
	r.recovered("%d ballasts deleted; creates taken again", deleted)
	if lost := readBack(t, cfg, append(f.acked[:len(f.acked)/2], after.acked...)); len(lost) > 0 {
		t.Errorf("after the store's space was recovered, %d acknowledged ballasts do not read back: %v", len(lost), lost)
	}
	r.finish(between, what)
}

// TestFullDiskPostgres fills the disk under the PostgreSQL database of an
// annex that keeps its data there (--postgres-dsn-file): the database's data
// directory is on a tmpfs of its own, most of it taken by a filler file.
// Writes must stop being acknowledged without hanging and without a status
// that names the database; annex must keep running; every write
// acknowledged before must read back; and once the filler is removed (and
// PostgreSQL started again if it stopped), annex must take writes again
// without being restarted itself. Meanwhile the history's clients write,
// read and watch another type, and the history must check.
func TestFullDiskPostgres(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a full disk needs a tmpfs of its own, which only root may mount")
	}
	const size, leave = 192 << 20, 16 << 20
	tmpfs := mountTmpfs(t, size)
	pg := postgrestest.StartIn(t, tmpfs)
	dsnFile := writeDSNFile(t, pg)
	a := startAnnex(t, "--postgres-dsn-file="+dsnFile)
	cfg := a.restConfig()
	declareBallasts(t, cfg)
	declareLedgers(t, cfg)
	filler := placeFiller(t, tmpfs, leave)
	t.Logf("tmpfs of %d MiB, %.1f MiB left after the filler", size>>20, float64(freeBytes(t, tmpfs))/(1<<20))

	between := pause()
	r := startRun(t, 10*time.Second, cfg)
	time.Sleep(between)
	r.fault("filling PostgreSQL's disk (%.1f MiB left) with ballasts of %d KiB", float64(freeBytes(t, tmpfs))/(1<<20), ballastBytes>>10)
	f := fill(t, a.target(), 0, 3, 60*time.Second)
	f.log(t, fmt.Sprintf("%.1f MiB left; PostgreSQL runs: %v", float64(freeBytes(t, tmpfs))/(1<<20), pg.Running()))
	if f.exited {
		t.Fatalf("annex exited when PostgreSQL's disk filled:\n%s", a.Log())
	}
	if len(f.refusals) == 0 {
		t.Fatalf("the disk did not fill: %d ballasts acknowledged in %s", len(f.acked), f.took)
	}
	secrets := []string{"user=", "database=", "127.0.0.1", strconv.Itoa(pg.Port), tmpfs}
	for _, ref := range f.refusals {
		if ref.took >= 10*time.Second {
			t.Errorf("a write hung until its client gave up: %s", ref)
		}
		if ref.code < 500 {
			t.Errorf("a write was refused other than with a 5xx status: %s", ref)
		}
		for _, s := range secrets {
			if strings.Contains(ref.message, s) {
				t.Errorf("a refusal names %q: %s", s, ref)
			}
		}
	}
	if pg.Running() {
		if lost := readBack(t, cfg, f.acked); len(lost) > 0 {
			t.Logf("with the disk full, %d acknowledged ballasts do not read back: %v", len(lost), lost)
		}
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if !pg.Running() {
		started := time.Now()
		pg.Restart(t)
		t.Logf("space freed: PostgreSQL had stopped, ready again %s after its start", time.Since(started).Round(time.Millisecond))
	}
	deadline := time.Now().Add(60 * time.Second)
	var again filling
	for {
		again = fill(t, a.target(), len(f.acked)+len(f.refusals)+len(again.acked)+len(again.refusals), 1, time.Second)
		if len(again.acked) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(again.acked) == 0 {
		t.Fatalf("no ballast was acknowledged within 60s once space was freed: %v", again.refusals)
	}
	r.recovered("space freed: a ballast acknowledged")
	if lost := readBack(t, cfg, append(f.acked, again.acked...)); len(lost) > 0 {
		t.Errorf("%d acknowledged ballasts do not read back once space was freed: %v", len(lost), lost)
	}
	if exited, err := a.Process().Exited(); exited {
		t.Fatalf("annex exited: %v", err)
	}
	r.finish(between, "PostgreSQL's disk filled and freed")
}

// TestFullTablespacePostgres fills the disk under the tables of an annex
// that keeps its data in PostgreSQL while PostgreSQL's write-ahead log still
// has room: the database is a tablespace on a tmpfs of its own, most of it
// taken by a filler file. PostgreSQL then refuses each write that would
// extend a table's file with disk_full, and keeps running. Each such write
// must be answered at once with 507 InsufficientStorage, naming nothing of
// the database; annex and PostgreSQL must keep running; every write
// acknowledged before must read back while the disk is full; and once the
// filler is removed, annex must take writes again without anything being
// restarted. Meanwhile the history's clients write, read and watch another
// type, and the history must check.
func TestFullTablespacePostgres(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a full disk needs a tmpfs of its own, which only root may mount")
	}
	const size, leave = 64 << 20, 8 << 20
	tmpfs := mountTmpfs(t, size)
	pg := postgrestest.Start(t)
	pg.MoveDatabaseTo(t, filepath.Join(tmpfs, "tablespace"))
	dsnFile := writeDSNFile(t, pg)
	a := startAnnex(t, "--postgres-dsn-file="+dsnFile)
	cfg := a.restConfig()
	declareBallasts(t, cfg)
	declareLedgers(t, cfg)
	delivered := watchBallasts(t, cfg)
	filler := placeFiller(t, tmpfs, leave)
	t.Logf("tmpfs of %d MiB for the tables, %.1f MiB left after the filler", size>>20, float64(freeBytes(t, tmpfs))/(1<<20))

	between := pause()
	r := startRun(t, 10*time.Second, cfg)
	time.Sleep(between)
	r.fault("filling the disk under PostgreSQL's tables (%.1f MiB left) with ballasts of %d KiB", float64(freeBytes(t, tmpfs))/(1<<20), ballastBytes>>10)
	f := fill(t, a.target(), 0, 3, 60*time.Second)
	f.log(t, fmt.Sprintf("%.1f MiB left; PostgreSQL runs: %v", float64(freeBytes(t, tmpfs))/(1<<20), pg.Running()))
	if f.exited {
		t.Fatalf("annex exited when the disk under its tables filled:\n%s", a.Log())
	}
	if len(f.refusals) == 0 {
		t.Fatalf("the disk did not fill: %d ballasts acknowledged in %s", len(f.acked), f.took)
	}
	if !pg.Running() {
		t.Fatalf("PostgreSQL stopped when the disk under its tables filled; the test wants its write-ahead log to have room")
	}
	secrets := []string{"user=", "database=", "127.0.0.1", strconv.Itoa(pg.Port), tmpfs}
	for _, ref := range f.refusals {
		if ref.code != http.StatusInsufficientStorage || ref.reason != "InsufficientStorage" {
			t.Errorf("a write refused for want of space was not answered 507 InsufficientStorage: %s", ref)
		}
		if ref.took >= 5*time.Second {
			t.Errorf("a refusal took %s: %s", ref.took.Round(time.Millisecond), ref)
		}
		for _, s := range secrets {
			if strings.Contains(ref.message, s) {
				t.Errorf("a refusal names %q: %s", s, ref)
			}
		}
	}
	if lost := readBack(t, cfg, f.acked); len(lost) > 0 {
		t.Errorf("with the disk full, %d acknowledged ballasts do not read back: %v", len(lost), lost)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	var again filling
	for {
		again = fill(t, a.target(), len(f.acked)+len(f.refusals)+len(again.acked)+len(again.refusals), 1, time.Second)
		if len(again.acked) > 0 || time.Since(freed) > 30*time.Second {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(again.acked) == 0 {
		t.Fatalf("no ballast was acknowledged within 30 s once space was freed: %v", again.refusals)
	}
	r.recovered("space freed: a ballast acknowledged")
	t.Logf("space freed: writes acknowledged again %s later", time.Since(freed).Round(time.Millisecond))
	if lost := readBack(t, cfg, append(f.acked, again.acked...)); len(lost) > 0 {
		t.Errorf("%d acknowledged ballasts do not read back once space was freed: %v", len(lost), lost)
	}
	// The watch opened before the disk filled goes on, and delivers every
	// acknowledged create.
	acked := append(f.acked, again.acked...)
	var missing []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		got, err := delivered()
		if err != nil {
			t.Fatalf("the watch of ballasts opened before the disk filled ended: %v", err)
		}
		missing = missing[:0]
		for _, name := range acked {
			if !got[name] {
				missing = append(missing, name)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(missing) > 0 {
		t.Errorf("the watch of ballasts opened before the disk filled did not deliver %d of %d acknowledged creates: %v",
			len(missing), len(acked), missing)
	}
	if exited, err := a.Process().Exited(); exited {
		t.Fatalf("annex exited: %v", err)
	}
	if !pg.Running() {
		t.Fatalf("PostgreSQL stopped")
	}
	r.finish(between, "the disk under PostgreSQL's tables filled and freed")
}

// watchBallasts watches the ballasts from now until the test ends. What it
// returns gives the names of the ballasts the watch delivered as added so
// far, or why the watch ended.
func watchBallasts(t *testing.T, cfg *rest.Config) func() (map[string]bool, error) {
	t.Helper()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	list, err := dyn.Resource(ballasts).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := dyn.Resource(ballasts).Watch(ctx, metav1.ListOptions{ResourceVersion: list.GetResourceVersion()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	var (
		mu    sync.Mutex
		added = map[string]bool{}
		ended error
	)
	go func() {
		for e := range w.ResultChan() {
			mu.Lock()
			switch e.Type {
			case watch.Added:
				if obj, ok := e.Object.(*unstructured.Unstructured); ok {
					added[obj.GetName()] = true
				}
			case watch.Error:
				ended = fmt.Errorf("an error event: %v", e.Object)
			}
			mu.Unlock()
		}
		mu.Lock()
		if ended == nil && ctx.Err() == nil {
			ended = errors.New("the server closed it")
		}
		mu.Unlock()
	}()
	return func() (map[string]bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(added), ended
	}
}
