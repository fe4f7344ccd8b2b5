//go:build integration

package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/k3s-io/kine/pkg/server"

	"annex.dev/annex/pkg/storage/postgres/postgrestest"
)

// TestPagedListsAnswerAsKine lists key ranges of a history of creates,
// updates, deletes and re-creates, at the latest revision and at earlier
// ones, whole and in pages of several sizes, from several start keys, with
// and without values, before and after a compaction, and counts them:
// annex's list and count queries must answer exactly what kine's answer,
// the same key-values in the same order, the same counts and the same
// errors.
func TestPagedListsAnswerAsKine(t *testing.T) {
	pg := postgrestest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	wg := &sync.WaitGroup{}
	defer func() { cancel(); wg.Wait() }()
	scheme, source, _ := strings.Cut(pg.DSN, "://")
	backend, err := startKine(ctx, wg, Options{DSN: pg.DSN}, scheme, source)
	if err != nil {
		t.Fatal(err)
	}
	lists, err := newPagedLists(backend, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer lists.db.Close()

	key := func(prefix string, i int) string { return fmt.Sprintf("/registry/%s/ns/obj-%04d", prefix, i) }
	modRev := map[string]int64{}
	var marks []int64
	write := func(k string, round int) {
		value := []byte(fmt.Sprintf("%s round %d", k, round))
		rev, ok := modRev[k]
		if !ok {
			rev, err := backend.Create(ctx, k, value, 0)
			if err != nil {
				t.Fatal(err)
			}
			modRev[k] = rev
			return
		}
		rev, _, updated, err := backend.Update(ctx, k, value, rev, 0)
		if err != nil || !updated {
			t.Fatalf("updating %s: %v %v", k, updated, err)
		}
		modRev[k] = rev
	}
	del := func(k string) {
		if _, _, deleted, err := backend.Delete(ctx, k, modRev[k]); err != nil || !deleted {
			t.Fatalf("deleting %s: %v %v", k, deleted, err)
		}
		delete(modRev, k)
	}
	for round := range 3 {
		for i := range 300 {
			for _, prefix := range []string{"a", "b"} {
				if round == 0 || i%3 != 0 {
					write(key(prefix, i), round)
				}
			}
		}
		for i := round; i < 300; i += 7 {
			if _, ok := modRev[key("a", i)]; ok {
				del(key("a", i))
			}
		}
		rev, err := backend.CurrentRevision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		marks = append(marks, rev)
	}
	for i := 0; i < 300; i += 14 {
		write(key("a", i), 9)
	}

	var errs, kvs int
	compare := func(when string) int {
		checked := 0
		for _, revision := range append([]int64{0, 1}, marks...) {
			for _, r := range [][2]string{
				{"/registry/a/", "/registry/a0"},
				{key("a", 150), "/registry/a0"},
				{key("a", 150) + "\x00", "/registry/a0"},
				{"/registry/", "/registry0"},
				{key("b", 299), "/registry/b0"},
				{"/registry/c/", "/registry/c0"},
			} {
				what := fmt.Sprintf("%s: count of [%q, %q) at %d", when, r[0], r[1], revision)
				wantRev, want, wantErr := backend.Count(ctx, r[0], r[1], revision)
				gotRev, got, gotErr := lists.Count(ctx, r[0], r[1], revision)
				checked++
				switch {
				case !errors.Is(gotErr, wantErr) && (gotErr == nil || wantErr == nil || gotErr.Error() != wantErr.Error()):
					t.Errorf("%s: error %v, kine's %v", what, gotErr, wantErr)
				case wantErr != nil:
					errs++
				case gotRev != wantRev || got != want:
					t.Errorf("%s: %d at revision %d, kine's %d at %d", what, got, gotRev, want, wantRev)
				}
				for _, limit := range []int64{0, 1, 7, 101, 1000} {
					for _, keysOnly := range []bool{false, true} {
						what := fmt.Sprintf("%s: [%q, %q) at %d, limit %d, keys only %v", when, r[0], r[1], revision, limit, keysOnly)
						wantRev, want, wantErr := backend.List(ctx, r[0], r[1], limit, revision, keysOnly)
						gotRev, got, gotErr := lists.List(ctx, r[0], r[1], limit, revision, keysOnly)
						checked++
						if !errors.Is(gotErr, wantErr) && (gotErr == nil || wantErr == nil || gotErr.Error() != wantErr.Error()) {
							t.Errorf("%s: error %v, kine's %v", what, gotErr, wantErr)
							continue
						}
						if wantErr != nil {
							errs++
							continue
						}
						kvs += len(want)
						if len(want) > 0 && gotRev != wantRev {
							t.Errorf("%s: revision %d, kine's %d", what, gotRev, wantRev)
						}
						if len(got) != len(want) {
							t.Errorf("%s: %d key-values, kine's %d", what, len(got), len(want))
							continue
						}
						for i := range want {
							if !sameKV(got[i], want[i]) {
								t.Errorf("%s: key-value %d is %+v, kine's %+v", what, i, *got[i], *want[i])
								break
							}
						}
					}
				}
			}
		}
		return checked
	}
	n := compare("before compaction")
	if _, err := backend.Compact(ctx, marks[1]); err != nil {
		t.Fatalf("compacting: %v", err)
	}
	n += compare("after compaction")
	t.Logf("%d lists compared (%d key-values, %d errors), revisions %v", n, kvs, errs, marks)
	if kvs == 0 || errs == 0 {
		t.Errorf("the lists compared held no key-value or no error: the test checked too little")
	}
}

func sameKV(a, b *server.KeyValue) bool {
	return a.Key == b.Key && a.CreateRevision == b.CreateRevision && a.ModRevision == b.ModRevision &&
		a.Version == b.Version && a.Lease == b.Lease && string(a.Value) == string(b.Value)
}
