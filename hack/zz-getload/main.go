package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Args[1])
	if err != nil {
		panic(err)
	}
	cfg.QPS, cfg.Burst = -1, 0
	dyn := dynamic.NewForConfigOrDie(cfg)
	gvr := schema.GroupVersionResource{Group: "reports.example.com", Version: "v1", Resource: "policyreports"}
	r := dyn.Resource(gvr).Namespace("default")
	ctx := context.Background()
	obj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "reports.example.com/v1", "kind": "PolicyReport",
		"metadata": map[string]any{"name": "r0", "labels": map[string]any{"app": "web"}},
		"spec":     map[string]any{"scope": map[string]any{"kind": "Deployment", "name": "web"}}}}
	if _, err := r.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		fmt.Println("create:", err)
	}
	dur, _ := time.ParseDuration(os.Args[2])
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	end := time.Now().Add(dur)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(end) {
				s := time.Now()
				if _, err := r.Get(ctx, "r0", metav1.GetOptions{}); err != nil {
					panic(err)
				}
				mine = append(mine, time.Since(s))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	fmt.Printf("gets %d in %s: %.0f/s, p50 %s p99 %s\n", len(lat), dur, float64(len(lat))/dur.Seconds(), lat[len(lat)/2], lat[len(lat)*99/100])
}
