package kubectlannex

import (
	"context"
	"fmt"
	"io"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

// follower reads a HostedResource's adoption status until the process it
// follows (an adoption or a release) ends, and shows its progress: a bar
// while objects are copied, each new phase, and what it waits for.
type follower struct {
	// what is "adoption" or "release", for messages.
	what string
	// barPhase is the phase whose objects (copied of total) the bar counts,
	// barLabel its name. count, when set, counts instead, in any phase.
	barPhase v1alpha1.AdoptionPhase
	barLabel string
	count    func(a *v1alpha1.AdoptionStatus) (done, total int64, counting bool)
	// showFirstPhase prints the phase found at the start, not only the
	// phases that follow it.
	showFirstPhase bool
	// failed tells a reason that ends the process from one it waits on.
	failed func(a *v1alpha1.AdoptionStatus) bool
	// done returns true, and the command's result, once the process ended.
	done func(ctx context.Context, a *v1alpha1.AdoptionStatus) (bool, error)

	out      io.Writer
	progress string
	timeout  time.Duration
	interval time.Duration
}

// follow shows the progress of HostedResource name until it ends, the
// timeout passes or ctx ends.
func (f *follower) follow(ctx context.Context, c *clients, name string) error {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	var bar *progress
	var lastNote string
	var lastPhase v1alpha1.AdoptionPhase
	note := func(s string) {
		if s != lastNote {
			fmt.Fprintln(f.out, s)
			lastNote = s
		}
	}
	ticker := time.NewTicker(f.interval)
	defer ticker.Stop()
	for {
		hr, err := c.annex.AnnexV1alpha1().HostedResources().Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return fmt.Errorf("HostedResource %s was deleted: the %s stopped", name, f.what)
		case err != nil && ctx.Err() == nil:
			// annex restarting, say: the process goes on; so does the command.
			note(fmt.Sprintf("cannot read the %s's progress: %v", f.what, err))
		case err == nil:
			a := hr.Status.Adoption
			if a == nil {
				a = &v1alpha1.AdoptionStatus{}
			}
			if done, total, counting := f.counted(a); counting && total > 0 {
				if bar == nil {
					bar = newProgress(f.out, f.progress, f.barLabel, total)
				}
				bar.add(int(done - bar.done))
			}
			if a.Phase != lastPhase && a.Phase != "" {
				if bar != nil && f.count == nil && lastPhase == f.barPhase {
					bar.finish(a.Copied >= a.Total)
				}
				if a.Reason == "" && (lastPhase != "" || f.showFirstPhase) {
					fmt.Fprintf(f.out, "%s: %s\n", a.Phase, a.Message)
				}
				lastPhase = a.Phase
			}
			if a.Reason != "" && !f.failed(a) {
				note(fmt.Sprintf("waiting (%s): %s", a.Reason, a.Message))
			}
			if f.count != nil && bar != nil {
				if done, total, counting := f.count(a); !counting {
					bar.finish(done >= total)
					bar = nil
				}
			}
			if ended, err := f.done(ctx, a); ended {
				return err
			}
		}
		select {
		case <-ctx.Done():
			if bar != nil {
				bar.finish(false)
			}
			return fmt.Errorf("stopped following the %s of %s (%w); it goes on: kubectl annex status shows it", f.what, name, ctx.Err())
		case <-ticker.C:
		}
	}
}

// counted is how far the bar's count is: count's, or the copied objects of
// barPhase.
func (f *follower) counted(a *v1alpha1.AdoptionStatus) (done, total int64, counting bool) {
	if f.count != nil {
		return f.count(a)
	}
	return a.Copied, a.Total, a.Phase == f.barPhase && a.Reason == ""
}
