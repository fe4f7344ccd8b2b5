package namespace

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func TestPrepareForCreate(t *testing.T) {
	s := NewStrategy(runtime.NewScheme())
	for _, tc := range []struct {
		name string
		in   []corev1.FinalizerName
		want []corev1.FinalizerName
	}{
		{"none", nil, []corev1.FinalizerName{"kubernetes"}},
		{"others", []corev1.FinalizerName{"example.com/a"}, []corev1.FinalizerName{"example.com/a", "kubernetes"}},
		{"already", []corev1.FinalizerName{"kubernetes"}, []corev1.FinalizerName{"kubernetes"}},
	} {
		ns := &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{Name: "a"},
			Spec:       corev1.NamespaceSpec{Finalizers: tc.in},
			Status:     corev1.NamespaceStatus{Phase: corev1.NamespaceTerminating, Conditions: []corev1.NamespaceCondition{{Type: "X"}}},
		}
		s.PrepareForCreate(context.Background(), ns)
		if !slices.Equal(ns.Spec.Finalizers, tc.want) {
			t.Errorf("%s: finalizers %v, want %v", tc.name, ns.Spec.Finalizers, tc.want)
		}
		if ns.Status.Phase != corev1.NamespaceActive || len(ns.Status.Conditions) != 0 {
			t.Errorf("%s: status %+v, want only Active", tc.name, ns.Status)
		}
	}
}

func TestUpdateKeepsFinalizersAndStatus(t *testing.T) {
	s := NewStrategy(runtime.NewScheme())
	old := &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: "a", ResourceVersion: "1"},
		Spec:       corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{"kubernetes"}},
		Status:     corev1.NamespaceStatus{Phase: corev1.NamespaceActive},
	}
	ns := old.DeepCopy()
	ns.Spec.Finalizers = nil
	ns.Status.Phase = corev1.NamespaceTerminating
	ns.Labels = map[string]string{"x": "y"}

	main := ns.DeepCopy()
	s.PrepareForUpdate(context.Background(), main, old)
	if len(main.Spec.Finalizers) != 1 || main.Status.Phase != corev1.NamespaceActive || main.Labels["x"] != "y" {
		t.Errorf("main resource: %+v", main)
	}

	status := ns.DeepCopy()
	NewStatusStrategy(s).PrepareForUpdate(context.Background(), status, old)
	if len(status.Spec.Finalizers) != 1 || status.Status.Phase != corev1.NamespaceTerminating {
		t.Errorf("/status: %+v", status)
	}

	finalize := ns.DeepCopy()
	NewFinalizeStrategy(s).PrepareForUpdate(context.Background(), finalize, old)
	if len(finalize.Spec.Finalizers) != 0 || finalize.Status.Phase != corev1.NamespaceActive {
		t.Errorf("/finalize: %+v", finalize)
	}
}

func TestValidation(t *testing.T) {
	s := NewStrategy(runtime.NewScheme())
	ctx := context.Background()
	valid := func(name string, finalizers ...corev1.FinalizerName) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, ResourceVersion: "1"}, Spec: corev1.NamespaceSpec{Finalizers: finalizers}}
	}
	for _, tc := range []struct {
		ns      *corev1.Namespace
		wantErr bool
	}{
		{valid("team-a", "kubernetes", "example.com/x", metav1.FinalizerOrphanDependents), false},
		{valid("Team"), true},
		{valid("a.b"), true},
		{valid("a", "custom"), true},
		{valid("a", "example.com/"), true},
	} {
		if errs := s.Validate(ctx, tc.ns); (len(errs) > 0) != tc.wantErr {
			t.Errorf("%s %v: errors %v, want error %v", tc.ns.Name, tc.ns.Spec.Finalizers, errs, tc.wantErr)
		}
	}

	old := valid("a", "kubernetes")
	now := metav1.Now()
	for _, tc := range []struct {
		name      string
		deleting  bool
		phase     corev1.NamespacePhase
		wantValid bool
	}{
		{"active", false, corev1.NamespaceActive, true},
		{"terminating without deletion", false, corev1.NamespaceTerminating, false},
		{"terminating", true, corev1.NamespaceTerminating, true},
		{"active while deleting", true, corev1.NamespaceActive, false},
	} {
		o, ns := old.DeepCopy(), old.DeepCopy()
		if tc.deleting {
			o.DeletionTimestamp, ns.DeletionTimestamp = &now, &now
		}
		ns.Status.Phase = tc.phase
		if errs := NewStatusStrategy(s).ValidateUpdate(ctx, ns, o); (len(errs) == 0) != tc.wantValid {
			t.Errorf("status %s: errors %v", tc.name, errs)
		}
	}

	ns := old.DeepCopy()
	ns.Spec.Finalizers = []corev1.FinalizerName{"bogus"}
	if errs := NewFinalizeStrategy(s).ValidateUpdate(ctx, ns, old); len(errs) == 0 {
		t.Error("/finalize accepted an unqualified finalizer name")
	}
	ns.Spec.Finalizers = nil
	if errs := NewFinalizeStrategy(s).ValidateUpdate(ctx, ns, old); len(errs) != 0 {
		t.Errorf("/finalize refused to remove the finalizers: %v", errs)
	}
}

func TestDefaultsAndCanonicalize(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a"}}
	SetDefaults(ns)
	if ns.Labels[corev1.LabelMetadataName] != "a" || ns.Status.Phase != corev1.NamespaceActive {
		t.Errorf("defaults: %+v", ns)
	}
	generated := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "g-"}}
	SetDefaults(generated)
	generated.Name = "g-x1"
	NewStrategy(runtime.NewScheme()).Canonicalize(generated)
	if generated.Labels[corev1.LabelMetadataName] != "g-x1" {
		t.Errorf("canonicalize of a generated name: labels %v", generated.Labels)
	}
}

func TestSelectableFields(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceTerminating}}
	_, f, err := GetAttrs(ns)
	if err != nil {
		t.Fatal(err)
	}
	if f["metadata.name"] != "a" || f["status.phase"] != "Terminating" {
		t.Errorf("fields %v", f)
	}
	for _, label := range []string{"metadata.name", "status.phase"} {
		if _, _, err := ConvertFieldLabel(label, "v"); err != nil {
			t.Errorf("%s: %v", label, err)
		}
	}
	if _, _, err := ConvertFieldLabel("spec.finalizers", "v"); err == nil {
		t.Error("spec.finalizers was accepted as a field label")
	}
}

func TestTable(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a", CreationTimestamp: metav1.Now()}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}}
	table, err := NewTableConvertor().ConvertToTable(context.Background(), &corev1.NamespaceList{Items: []corev1.Namespace{*ns}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(table.ColumnDefinitions) != 3 || len(table.Rows) != 1 {
		t.Fatalf("table: %d columns, %d rows", len(table.ColumnDefinitions), len(table.Rows))
	}
	if cells := table.Rows[0].Cells; cells[0] != "a" || cells[1] != "Active" {
		t.Errorf("row: %v", cells)
	}
}
