package backend

import (
	"testing"
	"time"
)

func TestRetryInterval(t *testing.T) {
	p := NewPool(NewFactory(Options{}), 0, nil)
	defer p.Close()
	for failures, want := range map[int]time.Duration{1: 10 * time.Second, 2: 20 * time.Second, 4: 80 * time.Second, 5: 2 * time.Minute, 50: 2 * time.Minute} {
		if got := p.retryInterval(failures); got != want {
			t.Errorf("after %d failures: wait %s, want %s", failures, got, want)
		}
	}
}
