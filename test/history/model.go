package history

import (
	"fmt"
	"hash/fnv"
	"sort"

	"github.com/anishathalye/porcupine"
)

// The model follows one object name: whether an object of that name
// exists, the value it holds and its resourceVersion. Writes of unknown
// outcome make the model nondeterministic: such a write may have taken
// effect (at any point after its call) or not, and when it did, its
// resourceVersion is unknown until a read or a precondition reveals it.

// objState is the model's state for one name.
type objState struct {
	Exists bool
	Value  string
	// RV is the object's resourceVersion; 0 while it is unknown (the
	// object was written by a write of unknown outcome).
	RV uint64
	// Floor is the highest resourceVersion known to have been written to
	// this name: every later write of it must have a higher one.
	Floor uint64
}

func (s objState) String() string {
	if !s.Exists {
		return fmt.Sprintf("absent (floor %d)", s.Floor)
	}
	if s.RV == 0 {
		return fmt.Sprintf("%s@? (floor %d)", s.Value, s.Floor)
	}
	return fmt.Sprintf("%s@%d", s.Value, s.RV)
}

// input and output are what porcupine sees of an operation on one name. A
// list is split into one read per name (Kind List).
type input struct {
	Kind         Kind
	Name         string
	Value        string
	Precondition uint64
}

type output struct {
	Result Result
	RV     uint64 // a write's resourceVersion
	Found  bool   // a read found the object
	Got    Object // what it found
}

// matches says whether an object in state s satisfies a resourceVersion
// precondition pre (0: none).
func (s objState) matches(pre uint64) bool {
	if pre == 0 {
		return true
	}
	if s.RV == 0 {
		// Unknown: it is whatever the write that made it got, which is
		// above the floor.
		return pre > s.Floor
	}
	return s.RV == pre
}

// mayDiffer says whether the object's resourceVersion may differ from pre.
func (s objState) mayDiffer(pre uint64) bool {
	return pre != 0 && (s.RV == 0 || s.RV != pre)
}

func written(value string, rv uint64) objState {
	return objState{Exists: true, Value: value, RV: rv, Floor: rv}
}

func step(s objState, in input, out output) []objState {
	none := []objState(nil)
	switch in.Kind {
	case Create:
		switch out.Result {
		case OK:
			if !s.Exists && out.RV > s.Floor {
				return []objState{written(in.Value, out.RV)}
			}
		case AlreadyExists:
			if s.Exists {
				return []objState{s}
			}
		case Unknown:
			if !s.Exists {
				return []objState{s, {Exists: true, Value: in.Value, Floor: s.Floor}}
			}
			return []objState{s}
		}
		return none
	case Update, Delete:
		switch out.Result {
		case OK:
			if !s.Exists || !s.matches(in.Precondition) {
				return none
			}
			if in.Kind == Delete && out.RV == 0 {
				// Deleted at a resourceVersion the answer did not say.
				return []objState{{Floor: max(s.Floor, in.Precondition)}}
			}
			if out.RV > s.Floor && out.RV > in.Precondition {
				if in.Kind == Update {
					return []objState{written(in.Value, out.RV)}
				}
				return []objState{{Floor: out.RV}}
			}
		case Conflict:
			if s.Exists && s.mayDiffer(in.Precondition) {
				return []objState{s}
			}
		case NotFound:
			if !s.Exists {
				return []objState{s}
			}
		case Unknown:
			if !s.Exists || !s.matches(in.Precondition) {
				return []objState{s}
			}
			floor := max(s.Floor, in.Precondition)
			if in.Kind == Update {
				return []objState{s, {Exists: true, Value: in.Value, Floor: floor}}
			}
			return []objState{s, {Floor: floor}}
		}
		return none
	case Get, List:
		if !out.Found {
			if !s.Exists {
				return []objState{s}
			}
			return none
		}
		if !s.Exists || s.Value != out.Got.Value {
			return none
		}
		if s.RV == out.Got.RV {
			return []objState{s}
		}
		if s.RV == 0 && out.Got.RV > s.Floor {
			return []objState{written(s.Value, out.Got.RV)}
		}
		return none
	}
	return none
}

// newModel is the porcupine model of a history of one resource type,
// partitioned by object name.
func newModel(h *History) porcupine.Model {
	items := func(meta interface{}) map[string]Object {
		if i := meta.(int); i >= 0 {
			return h.Ops[i].Items
		}
		return h.Final.Items
	}
	nm := porcupine.NondeterministicModel{
		Partition: func(ops []porcupine.Operation) [][]porcupine.Operation {
			return partitionWith(h.Names, ops, items)
		},
		Init: func() []interface{} { return []interface{}{objState{}} },
		Step: func(state, in, out interface{}) []interface{} {
			next := step(state.(objState), in.(input), out.(output))
			res := make([]interface{}, len(next))
			for i, s := range next {
				res[i] = s
			}
			return res
		},
		Hash: func(state interface{}) uint64 {
			s := state.(objState)
			h := fnv.New64a()
			fmt.Fprintf(h, "%t/%s/%d/%d", s.Exists, s.Value, s.RV, s.Floor)
			return h.Sum64()
		},
		DescribeOperation: func(in, out interface{}) string {
			return describe(in.(input), out.(output))
		},
		DescribeState: func(state interface{}) string {
			return state.(objState).String()
		},
	}
	return nm.ToModel()
}

func describe(in input, out output) string {
	var s string
	switch in.Kind {
	case Create:
		s = fmt.Sprintf("create(%s, %s)", in.Name, in.Value)
	case Update:
		s = fmt.Sprintf("update(%s, %s, if rv=%d)", in.Name, in.Value, in.Precondition)
	case Delete:
		if in.Precondition == 0 {
			s = fmt.Sprintf("delete(%s)", in.Name)
		} else {
			s = fmt.Sprintf("delete(%s, if rv=%d)", in.Name, in.Precondition)
		}
	default:
		s = fmt.Sprintf("%s(%s)", in.Kind, in.Name)
	}
	switch {
	case in.Kind == Get || in.Kind == List:
		if out.Found {
			return fmt.Sprintf("%s -> %s@%d", s, out.Got.Value, out.Got.RV)
		}
		return s + " -> absent"
	case out.Result == OK:
		return fmt.Sprintf("%s -> ok rv=%d", s, out.RV)
	default:
		return fmt.Sprintf("%s -> %s", s, out.Result)
	}
}

// operations turns a history's operations into porcupine's, leaving out
// those that tell nothing (refused, failed reads). Each carries the
// index of its Op as metadata.
func operations(h *History) []porcupine.Operation {
	var out []porcupine.Operation
	add := func(i int, o *Op) {
		switch {
		case o.Result == Refused:
			return
		case (o.Kind == Get || o.Kind == List) && o.Result != OK && o.Result != NotFound:
			return
		case o.Kind == List && o.Result != OK:
			return
		}
		ret := o.Return
		if o.Result == Unknown {
			ret = Pending
		}
		in := input{Kind: o.Kind, Name: o.Name, Value: o.Value, Precondition: o.Precondition}
		var res output
		switch o.Kind {
		case Get:
			if o.Result == OK && o.Got != nil {
				res = output{Result: OK, Found: true, Got: *o.Got}
			}
		case List:
			// partition splits it by name.
			res = output{Result: OK}
		default:
			res = output{Result: o.Result, RV: o.RV}
		}
		out = append(out, porcupine.Operation{ClientId: o.Client, Input: in, Output: res, Call: o.Call, Return: ret, Metadata: i})
	}
	for i := range h.Ops {
		add(i, &h.Ops[i])
	}
	if h.Final != nil {
		add(-1, h.Final)
	}
	return out
}

// partitionWith groups operations by name; a list becomes one read of
// each name. items gives a list operation's items from its metadata.
func partitionWith(names []string, ops []porcupine.Operation, items func(meta interface{}) map[string]Object) [][]porcupine.Operation {
	byName := map[string][]porcupine.Operation{}
	for _, op := range ops {
		in := op.Input.(input)
		if in.Kind != List {
			byName[in.Name] = append(byName[in.Name], op)
			continue
		}
		got := items(op.Metadata)
		for _, name := range names {
			read := op
			read.Input = input{Kind: List, Name: name}
			if obj, ok := got[name]; ok {
				read.Output = output{Result: OK, Found: true, Got: obj}
			} else {
				read.Output = output{Result: OK}
			}
			byName[name] = append(byName[name], read)
		}
	}
	keys := make([]string, 0, len(byName))
	for k := range byName {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([][]porcupine.Operation, 0, len(keys))
	for _, k := range keys {
		out = append(out, byName[k])
	}
	return out
}
