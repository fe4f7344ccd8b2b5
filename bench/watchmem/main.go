// Command watchmem measures the memory of idle watches in annex: it reads
// annex's live heap after a forced GC (GET /debug/pprof/heap?gc=1, then
// go_gc_heap_live_bytes from /metrics, the smallest of three reads), opens N
// watches on the example PolicyReport type in namespace default, and reads
// it again.
//
// Usage: go run ./watchmem <kubeconfig of annex's admin> <N>
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// live returns annex's smallest live heap over three reads after a forced GC.
func live(cfg *rest.Config) float64 {
	c, err := rest.HTTPClientFor(cfg)
	if err != nil {
		panic(err)
	}
	best := 0.0
	for i := 0; i < 3; i++ {
		r, err := c.Get(cfg.Host + "/debug/pprof/heap?gc=1")
		if err != nil {
			panic(err)
		}
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if r, err = c.Get(cfg.Host + "/metrics"); err != nil {
			panic(err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "go_gc_heap_live_bytes ") {
				v, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
				if best == 0 || v < best {
					best = v
				}
			}
		}
		time.Sleep(2 * time.Second)
	}
	return best
}

func main() {
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Args[1])
	if err != nil {
		panic(err)
	}
	cfg.QPS, cfg.Burst = 1000, 2000
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: watchmem <kubeconfig> <watches>")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[2])
	if err != nil {
		panic(err)
	}
	dyn := dynamic.NewForConfigOrDie(cfg)
	gvr := schema.GroupVersionResource{Group: "reports.example.com", Version: "v1", Resource: "policyreports"}
	before := live(cfg)
	var ws []interface{ Stop() }
	for i := 0; i < n; i++ {
		w, err := dyn.Resource(gvr).Namespace("default").Watch(context.Background(), metav1.ListOptions{})
		if err != nil {
			panic(err)
		}
		ws = append(ws, w)
	}
	time.Sleep(3 * time.Second)
	after := live(cfg)
	fmt.Printf("watches=%d live_before=%.1fMiB live_after=%.1fMiB per_watch=%.1fKiB\n", n, before/1048576, after/1048576, (after-before)/float64(n)/1024)
	for _, w := range ws {
		w.Stop()
	}
}
