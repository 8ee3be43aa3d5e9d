package charttest

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"

	openapi_v2 "github.com/google/gnostic-models/openapiv2"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/kube-openapi/pkg/util/proto"
	"k8s.io/kube-openapi/pkg/util/proto/validation"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

// strictDecoder decodes only the kinds the chart may render, and fails on
// unknown and duplicate fields.
var strictDecoder = func() runtime.Decoder {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, policyv1.AddToScheme,
		networkingv1.AddToScheme, monitoringv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}()

// kubeSchema is the OpenAPI schema of one Kubernetes version.
type kubeSchema struct {
	version string
	byGVK   map[schema.GroupVersionKind]proto.Schema
}

var (
	schemasMu sync.Mutex
	schemas   = map[string]*kubeSchema{}
)

// openAPISchema loads (once) the schema of Kubernetes version v from the
// k8s.io/kubernetes module.
func openAPISchema(t testing.TB, v string) *kubeSchema {
	t.Helper()
	schemasMu.Lock()
	defer schemasMu.Unlock()
	if s, ok := schemas[v]; ok {
		return s
	}
	b, err := os.ReadFile(swaggerFile(t, v))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := openapi_v2.ParseDocument(b)
	if err != nil {
		t.Fatalf("parse the OpenAPI schema of %s: %v", v, err)
	}
	models, err := proto.NewOpenAPIData(doc)
	if err != nil {
		t.Fatalf("read the OpenAPI schema of %s: %v", v, err)
	}
	s := &kubeSchema{version: v, byGVK: map[schema.GroupVersionKind]proto.Schema{}}
	for _, name := range models.ListModels() {
		model := models.LookupModel(name)
		gvks, _ := model.GetExtensions()["x-kubernetes-group-version-kind"].([]any)
		for _, g := range gvks {
			m, _ := g.(map[any]any)
			gvk := schema.GroupVersionKind{Group: fmt.Sprint(m["group"]), Version: fmt.Sprint(m["version"]), Kind: fmt.Sprint(m["kind"])}
			s.byGVK[gvk] = model
		}
	}
	if len(s.byGVK) < 50 {
		t.Fatalf("the OpenAPI schema of %s names only %d kinds", v, len(s.byGVK))
	}
	schemas[v] = s
	return s
}

// validate checks a built-in object against the schema; custom resources
// (the Prometheus Operator's) are not in it and were checked by the strict
// decode alone.
func (s *kubeSchema) validate(o object) error {
	model, ok := s.byGVK[o.GVK]
	if !ok {
		if o.GVK.Group == monitoringv1.SchemeGroupVersion.Group {
			return nil
		}
		return fmt.Errorf("%s: Kubernetes %s has no %s", o, s.version, o.GVK)
	}
	errs := validation.ValidateModel(o.Generic, model, o.GVK.Kind)
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	sort.Strings(msgs)
	return fmt.Errorf("%s against the OpenAPI schema of Kubernetes %s:\n  %s", o, s.version, strings.Join(msgs, "\n  "))
}

// podTemplate returns the pod an object runs, if it runs one.
func podTemplate(o object) (*metav1.ObjectMeta, *corev1.PodSpec, bool) {
	switch obj := o.Typed.(type) {
	case *appsv1.Deployment:
		return &obj.Spec.Template.ObjectMeta, &obj.Spec.Template.Spec, true
	case *batchv1.Job:
		return &obj.Spec.Template.ObjectMeta, &obj.Spec.Template.Spec, true
	case *batchv1.CronJob:
		return &obj.Spec.JobTemplate.Spec.Template.ObjectMeta, &obj.Spec.JobTemplate.Spec.Template.Spec, true
	case *appsv1.StatefulSet:
		return &obj.Spec.Template.ObjectMeta, &obj.Spec.Template.Spec, true
	case *corev1.Pod:
		return &obj.ObjectMeta, &obj.Spec, true
	}
	return nil, nil, false
}

var restricted = func() policy.Evaluator {
	e, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		panic(err)
	}
	return e
}()

// podSecurityViolations lists what Pod Security "restricted", at the given
// policy version (e.g. v1.30, or "latest"), forbids in the object's pod.
func podSecurityViolations(t testing.TB, o object, version string) []string {
	meta, spec, ok := podTemplate(o)
	if !ok {
		return nil
	}
	v := psapi.LatestVersion()
	if version != "latest" {
		var err error
		if v, err = psapi.ParseVersion(version); err != nil {
			t.Fatal(err)
		}
	}
	var out []string
	for _, r := range restricted.EvaluatePod(psapi.LevelVersion{Level: psapi.LevelRestricted, Version: v}, meta, spec) {
		if !r.Allowed {
			out = append(out, r.ForbiddenReason+": "+r.ForbiddenDetail)
		}
	}
	return out
}
