package lean

import (
	"encoding/binary"
	"runtime"
	"slices"
	"sync"
	"weak"

	"k8s.io/apimachinery/pkg/labels"
)

// The cache keeps each object's labels, to select by them. Objects of one
// type often carry the same labels (the tool that made them, the policy or
// the tenant they belong to), and a small map costs about 300 bytes, as
// much again as the rest of what the cache keeps of a compressed object
// besides its encoding. Objects with equal labels share one set instead.
// Nobody changes a set the cache holds, so sharing is safe.

// labelSet is a set of labels shared by the objects that carry it; it lives
// as long as one of them.
type labelSet struct {
	set labels.Set
}

// labelSets finds the shared set of given labels while an object holds it.
// It holds its sets weakly: a set no object holds any longer is collected,
// and its entry goes with it.
type labelSets struct {
	mu   sync.Mutex
	sets map[string]weak.Pointer[labelSet]
}

// share returns the shared set equal to set, made of set if there is none;
// nil for no labels.
func (t *labelSets) share(set labels.Set) *labelSet {
	if len(set) == 0 {
		return nil
	}
	key := labelSetKey(set)
	t.mu.Lock()
	defer t.mu.Unlock()
	if held, ok := t.sets[string(key)]; ok {
		if shared := held.Value(); shared != nil {
			return shared
		}
	}
	if t.sets == nil {
		t.sets = map[string]weak.Pointer[labelSet]{}
	}
	shared := &labelSet{set: set}
	name := string(key)
	t.sets[name] = weak.Make(shared)
	runtime.AddCleanup(shared, t.forget, name)
	return shared
}

// forget drops the entry of a set that was collected, unless an equal set
// took its place meanwhile.
func (t *labelSets) forget(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if held, ok := t.sets[key]; ok && held.Value() == nil {
		delete(t.sets, key)
	}
}

// size is the number of sets held.
func (t *labelSets) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.sets)
}

// labelSetKey encodes set, its keys in order, each key and value prefixed
// by its length: equal sets, and only they, have equal keys.
func labelSetKey(set labels.Set) []byte {
	keys := make([]string, 0, len(set))
	size := 0
	for k, v := range set {
		keys = append(keys, k)
		size += len(k) + len(v) + 2*binary.MaxVarintLen32
	}
	slices.Sort(keys)
	key := make([]byte, 0, size)
	for _, k := range keys {
		key = binary.AppendUvarint(key, uint64(len(k)))
		key = append(key, k...)
		v := set[k]
		key = binary.AppendUvarint(key, uint64(len(v)))
		key = append(key, v...)
	}
	return key
}
