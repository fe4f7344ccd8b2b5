package kubectlannex

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/cli-runtime/pkg/printers"
)

// serverFields are the metadata fields the server assigns when it creates
// an object. export leaves them out, so that its output can be created
// again (by import, or by kubectl create or apply), and import drops them
// from what it reads.
var serverFields = []string{
	"uid", "resourceVersion", "creationTimestamp", "generation", "managedFields",
	"selfLink", "deletionTimestamp", "deletionGracePeriodSeconds",
}

// clearServerFields removes the server's fields from obj's metadata.
func clearServerFields(obj *unstructured.Unstructured) {
	for _, f := range serverFields {
		unstructured.RemoveNestedField(obj.Object, "metadata", f)
	}
}

// position is where an object is in an input: its document (a YAML
// document or a JSON value), and its item when the document is a List.
type position struct {
	document int
	// item is 1-based; 0 when the document is the object itself.
	item int
}

func (p position) String() string {
	if p.item == 0 {
		return fmt.Sprintf("document %d", p.document)
	}
	return fmt.Sprintf("document %d, item %d", p.document, p.item)
}

// readObjects calls fn with each object of r: a stream of YAML documents
// or JSON values, each an object or a List of objects (what export and
// kubectl get write). Empty documents are skipped. fn's error stops the
// read and is returned as it is.
func readObjects(r io.Reader, fn func(obj *unstructured.Unstructured, pos position) error) error {
	decoder := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	for document := 1; ; document++ {
		var raw json.RawMessage
		if err := decoder.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("document %d: %w", document, err)
		}
		if len(raw) == 0 || string(raw) == "null" {
			continue
		}
		var probe map[string]any
		if err := json.Unmarshal(raw, &probe); err != nil {
			return fmt.Errorf("document %d is not an object: %w", document, err)
		}
		if len(probe) == 0 {
			continue
		}
		obj := &unstructured.Unstructured{}
		if _, ok := probe["kind"]; !ok {
			// The scheme refuses an object without kind; keep it, so that
			// the caller reports it with the others.
			obj.Object = map[string]any{}
			if err := json.Unmarshal(raw, &obj.Object); err != nil {
				return fmt.Errorf("document %d: %w", document, err)
			}
			if err := fn(obj, position{document: document}); err != nil {
				return err
			}
			continue
		}
		decoded, _, err := unstructured.UnstructuredJSONScheme.Decode(raw, nil, nil)
		if err != nil {
			return fmt.Errorf("document %d: %w", document, err)
		}
		switch o := decoded.(type) {
		case *unstructured.UnstructuredList:
			for i := range o.Items {
				if err := fn(&o.Items[i], position{document: document, item: i + 1}); err != nil {
					return err
				}
			}
		case *unstructured.Unstructured:
			if err := fn(o, position{document: document}); err != nil {
				return err
			}
		default:
			return fmt.Errorf("document %d: unexpected %T", document, decoded)
		}
	}
}

// objectWriter writes objects as a YAML stream or a JSON List.
type objectWriter interface {
	write(obj runtime.Object) error
	// close ends the output (the JSON List's closing brackets).
	close() error
}

func newObjectWriter(format string, w io.Writer) objectWriter {
	if format == "json" {
		return &jsonListWriter{w: w}
	}
	return &yamlStreamWriter{w: w}
}

// yamlStreamWriter writes YAML documents separated by ---, as kubectl get
// -o yaml writes several objects.
type yamlStreamWriter struct {
	w       io.Writer
	printer printers.YAMLPrinter
}

func (y *yamlStreamWriter) write(obj runtime.Object) error { return y.printer.PrintObj(obj, y.w) }

func (y *yamlStreamWriter) close() error { return nil }

// jsonListWriter writes a List of kind v1, as kubectl get -o json does,
// one item at a time.
type jsonListWriter struct {
	w     io.Writer
	count int
}

const jsonListHead = "{\n    \"apiVersion\": \"v1\",\n    \"kind\": \"List\",\n    \"items\": ["

func (j *jsonListWriter) write(obj runtime.Object) error {
	data, err := json.MarshalIndent(obj, "        ", "    ")
	if err != nil {
		return err
	}
	sep := ",\n        "
	if j.count == 0 {
		sep = jsonListHead + "\n        "
	}
	j.count++
	if _, err := io.WriteString(j.w, sep); err != nil {
		return err
	}
	_, err = j.w.Write(data)
	return err
}

func (j *jsonListWriter) close() error {
	tail := "\n    ]\n}\n"
	if j.count == 0 {
		tail = jsonListHead + "]\n}\n"
	}
	_, err := io.WriteString(j.w, tail)
	return err
}
