package bench

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestNormalizeServed(t *testing.T) {
	a := `{"metadata":{"name":"obj-0000000","uid":"u1","resourceVersion":"7","generation":1},"spec":{"name":"web-0"}}`
	b := `{"metadata":{"name":"obj-0000009","uid":"u2","resourceVersion":"99","generation":1},"spec":{"name":"web-0"}}`
	c := `{"metadata":{"name":"obj-0000009","uid":"u2","resourceVersion":"99","generation":2},"spec":{"name":"web-0"}}`
	na, err := normalizeServed([]byte(a))
	if err != nil {
		t.Fatal(err)
	}
	nb, _ := normalizeServed([]byte(b))
	nc, _ := normalizeServed([]byte(c))
	if na != nb || na == nc {
		t.Errorf("normalized:\n%s\n%s\n%s", na, nb, nc)
	}
	if _, err := normalizeServed([]byte(`{"metadata":{"name":"x"}}`)); err == nil {
		t.Error("an object without uid and resourceVersion was accepted")
	}
}

func TestProcMemory(t *testing.T) {
	before, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for start := time.Now(); time.Since(start) < 100*time.Millisecond; {
	}
	if after, err := processCPU(os.Getpid()); err != nil || after <= before {
		t.Errorf("CPU time before %v, after 100 ms of work %v (%v)", before, after, err)
	}

	// A file mapped and read counts in mappedRSS.
	file := filepath.Join(t.TempDir(), "db")
	const size = 4 << 20
	if err := os.WriteFile(file, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(data)
	sum := 0
	for i := 0; i < size; i += 4096 {
		sum += int(data[i])
	}
	got, err := mappedRSS(os.Getpid(), file)
	if err != nil {
		t.Fatal(err)
	}
	if got != size || sum != 0 {
		t.Errorf("mappedRSS = %v, want %v", got, size)
	}
	if got, _ := mappedRSS(os.Getpid(), file+".missing"); got != 0 {
		t.Errorf("mappedRSS of a file not mapped = %v", got)
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 20000: "20,000", 1000000: "1,000,000"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestCapacitySection(t *testing.T) {
	pl, err := capacityPlanFor(Flags{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	mem := func(rss float64) procMemory {
		return procMemory{memory: memory{HeapLive: rss / 3}, VmRSS: rss, RssAnon: rss / 2, RssFile: rss / 2}
	}
	r := &capacityResults{runInfo: runInfo{Mode: "capacity", Command: "make bench-capacity", Versions: map[string]string{"annex": "v0"}}, Plan: pl,
		Stores: []capacityStore{
			{Name: "small", Fill: fillStats{Objects: pl.Count - 1}, ReadySeconds: 10, CacheSeconds: 100, Full: mem(3 << 30), End: mem(3 << 30), HWM: 3.5 * (1 << 30)},
			{Name: "large", Fill: fillStats{Objects: pl.Count - 1}, ReadySeconds: 10, CacheSeconds: 700, Full: mem(5 << 30), End: mem(5 << 30), HWM: 6 << 30},
		}}
	got := capacitySection(r)
	if testing.Verbose() {
		t.Log(got)
	}
	if !strings.HasPrefix(got, capacitySec.start()+"\n## Capacity: one type with 1,000,000 objects\n") || !strings.HasSuffix(got, capacitySec.end()) {
		t.Errorf("markers or title missing:\n%s", got)
	}
	for _, want := range []string{"| small | 1,000,000 |", "| large | 1,000,000 |", "make bench-capacity",
		"small: peak RSS (VmHWM) 3.50 GiB", "**within 4 GiB**", "1m40s: **within 2 minutes**",
		"large: peak RSS (VmHWM) 6.00 GiB", "**over 4 GiB**", "11m40s: **over 2 minutes**"} {
		if !strings.Contains(got, want) {
			t.Errorf("the section lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "Quick mode") || strings.Contains(got, "the goals are set at") {
		t.Errorf("a run at the goals' count reads as a quick or smaller run:\n%s", got)
	}
}
