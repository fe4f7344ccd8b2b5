// Package storefill writes many objects of one hosted type into annex's
// store while annex is stopped, in exactly the form annex writes them: the
// key and value of an object that annex created through its API, with
// another name and uid. The store is opened with annex's own code: its
// embedded etcd package on annex's data directory, or its kine on the
// PostgreSQL database, so that the rows are kine's own.
//
// Creating objects through annex's API costs a request, admission and an
// encoding each: a hundred thousand take minutes, a million about an hour.
// The benchmark's capacity command and the tests that need a large type
// (the LIST storm of test/faults) fill the store here instead, and keep
// the fill out of what they measure.
package storefill

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"annex.dev/annex/pkg/storage/compression"
)

// Facts describe what annex stored for the object created through the API.
type Facts struct {
	Key string `json:"key"`
	// ValueBytes is the size of its JSON, StoredBytes of its value in the
	// store (compressed, with annex's default --storage-compression).
	ValueBytes  int    `json:"valueBytes"`
	StoredBytes int    `json:"storedBytes,omitempty"`
	APIVersion  string `json:"apiVersion"`
	// MetadataFields are the fields of the stored metadata.
	MetadataFields []string `json:"metadataFields"`
}

// Template is the stored value of the API-created object, cut at its name
// and uid, so that a variant is a concatenation.
type Template struct {
	facts     Facts
	keyPrefix string
	// pieces surround the two holes; nameFirst says which hole comes first.
	pieces    [3][]byte
	nameFirst bool
	// compressed says that annex stored the value compressed: so is each
	// variant.
	compressed bool
}

// NewTemplate cuts value, stored under key, at the quoted name and uid,
// each of which must occur exactly once. The variants are stored
// uncompressed, as value is.
func NewTemplate(key string, value []byte, name, uid string) (*Template, error) {
	if !strings.HasSuffix(key, "/"+name) {
		return nil, fmt.Errorf("key %s does not end with the object's name %s", key, name)
	}
	qName, qUID := []byte(strconv.Quote(name)), []byte(strconv.Quote(uid))
	for _, q := range [][]byte{qName, qUID} {
		if n := bytes.Count(value, q); n != 1 {
			return nil, fmt.Errorf("%s occurs %d times in the stored value, want once", q, n)
		}
	}
	t := &Template{keyPrefix: strings.TrimSuffix(key, name)}
	i, j := bytes.Index(value, qName), bytes.Index(value, qUID)
	t.nameFirst = i < j
	a, la, b, lb := i, len(qName), j, len(qUID)
	if !t.nameFirst {
		a, la, b, lb = j, len(qUID), i, len(qName)
	}
	t.pieces = [3][]byte{value[:a], value[a+la : b], value[b+lb:]}
	return t, nil
}

// Facts describe the object the template was cut from.
func (t *Template) Facts() Facts { return t.facts }

// Variant is the key and value of the object named name with uid.
func (t *Template) Variant(name, uid string) (string, []byte) {
	first, second := strconv.Quote(name), strconv.Quote(uid)
	if !t.nameFirst {
		first, second = second, first
	}
	v := make([]byte, 0, len(t.pieces[0])+len(t.pieces[1])+len(t.pieces[2])+len(first)+len(second))
	v = append(v, t.pieces[0]...)
	v = append(v, first...)
	v = append(v, t.pieces[1]...)
	v = append(v, second...)
	v = append(v, t.pieces[2]...)
	if t.compressed {
		v = compression.Compress(v)
	}
	return t.keyPrefix + name, v
}

// size bounds the size of a variant's key and value, uncompressed.
func (t *Template) size() int {
	return len(t.keyPrefix) + len(t.pieces[0]) + len(t.pieces[1]) + len(t.pieces[2]) + 128
}
