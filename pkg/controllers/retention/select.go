package retention

import (
	"cmp"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Reason says which bound of a retention policy an object is deleted for.
type Reason string

// Reasons, as the reason label of annex_retention_deleted_objects_total.
const (
	ReasonMaxAge     Reason = "maxAge"
	ReasonMaxObjects Reason = "maxObjects"
)

// Policy is a HostedResource's retention policy; a zero field is no bound.
type Policy struct {
	MaxAge     time.Duration
	MaxObjects int64
}

// Object is what the selection needs to know of one hosted object.
type Object struct {
	// Namespace is empty for a cluster-scoped type, whose objects count as
	// one namespace.
	Namespace string
	Name      string
	UID       types.UID
	Created   time.Time
	// Terminating objects (deletionTimestamp set, waiting for finalizers)
	// are neither deleted again nor counted among the kept objects.
	Terminating bool
}

// Deletion is an object to delete and why.
type Deletion struct {
	Object
	Reason Reason
}

// Select returns the objects that policy says must go at now, oldest first,
// so that a pass cut short by its batch size deletes the oldest ones.
//
// An object is past maxAge when now is more than maxAge after its creation
// timestamp. Of the other objects of each namespace, the maxObjects newest
// stay; objects created in the same second (the resolution of a creation
// timestamp) are ordered by name, the greater name counting as the newer,
// so that names that sort in creation order keep the last ones created.
func Select(objects []Object, policy Policy, now time.Time) []Deletion {
	var deletions []Deletion
	live := map[string][]Object{}
	for _, o := range objects {
		if o.Terminating {
			continue
		}
		if policy.MaxAge > 0 && now.Sub(o.Created) > policy.MaxAge {
			deletions = append(deletions, Deletion{Object: o, Reason: ReasonMaxAge})
			continue
		}
		live[o.Namespace] = append(live[o.Namespace], o)
	}
	if policy.MaxObjects > 0 {
		for _, objs := range live {
			if int64(len(objs)) <= policy.MaxObjects {
				continue
			}
			slices.SortFunc(objs, func(a, b Object) int { return -olderFirst(a, b) })
			for _, o := range objs[policy.MaxObjects:] {
				deletions = append(deletions, Deletion{Object: o, Reason: ReasonMaxObjects})
			}
		}
	}
	slices.SortFunc(deletions, func(a, b Deletion) int { return olderFirst(a.Object, b.Object) })
	return deletions
}

// olderFirst orders objects by creation, then name, then namespace.
func olderFirst(a, b Object) int {
	if c := a.Created.Compare(b.Created); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Name, b.Name); c != 0 {
		return c
	}
	return cmp.Compare(a.Namespace, b.Namespace)
}
