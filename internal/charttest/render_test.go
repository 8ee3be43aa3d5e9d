package charttest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"
)

// render is one `helm template` of the chart.
type render struct {
	// Values are values files, relative to the chart (e.g. ci/ha-values.yaml)
	// or absolute.
	Values []string
	// Set are --set arguments.
	Set []string
	// Kube is the Kubernetes version (--kube-version); empty: the newest.
	Kube string
	// Monitoring adds monitoring.coreos.com/v1 to the API versions.
	Monitoring bool
}

func (r render) args(t testing.TB, verb string) []string {
	_, kubes := toolVersions(t)
	kube := r.Kube
	if kube == "" {
		kube = kubes[len(kubes)-1]
	}
	args := []string{verb}
	if verb == "template" {
		args = append(args, "rel", chartDir(t), "--namespace", "db")
	} else {
		args = append(args, "--strict", chartDir(t))
	}
	args = append(args, "--kube-version", strings.TrimPrefix(kube, "v"))
	for _, f := range r.Values {
		if !filepath.IsAbs(f) {
			f = filepath.Join(chartDir(t), f)
		}
		args = append(args, "--values", f)
	}
	for _, s := range r.Set {
		args = append(args, "--set", s)
	}
	if r.Monitoring && verb == "template" {
		args = append(args, "--api-versions", "monitoring.coreos.com/v1")
	}
	return args
}

// run runs helm and returns its output, or its error with stderr.
func (r render) run(t testing.TB, verb string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(helmBinary(t), r.args(t, verb)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("helm %s: %v: %s", verb, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// object is one rendered manifest.
type object struct {
	GVK  schema.GroupVersionKind
	Name string
	// Raw is the document as helm wrote it.
	Raw []byte
	// Typed is the document decoded strictly into its Go type.
	Typed runtime.Object
	// Generic is the document as JSON values, for the OpenAPI validator.
	Generic map[string]any
}

func (o object) String() string { return o.GVK.Kind + "/" + o.Name }

// manifests renders r and decodes every object strictly; a document that
// does not decode fails the test.
func (r render) manifests(t testing.TB) []object {
	t.Helper()
	out, err := r.run(t, "template")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeAll(out)
	if err != nil {
		t.Fatalf("%+v: %v", r, err)
	}
	return objs
}

// decodeAll splits helm's output into documents and decodes each strictly.
func decodeAll(out []byte) ([]object, error) {
	var objs []object
	reader := yaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		o, err := decodeStrict(doc)
		if err != nil {
			return nil, err
		}
		objs = append(objs, o)
	}
}

func decodeStrict(doc []byte) (object, error) {
	typed, gvk, err := strictDecoder.Decode(doc, nil, nil)
	if err != nil {
		return object{}, fmt.Errorf("decode strictly:\n%s\n: %w", doc, err)
	}
	var generic map[string]any
	if err := sigsyaml.Unmarshal(doc, &generic); err != nil {
		return object{}, err
	}
	name, _ := generic["metadata"].(map[string]any)["name"].(string)
	return object{GVK: *gvk, Name: name, Raw: doc, Typed: typed, Generic: generic}, nil
}

// stripComments drops comment lines, so that a document of only comments
// (a template that rendered nothing) counts as empty.
func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			b.Write(line)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// find returns the objects of a kind.
func find(objs []object, kind string) []object {
	var out []object
	for _, o := range objs {
		if o.GVK.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// names lists "Kind/name" of every object, sorted as rendered.
func names(objs []object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.String())
	}
	return out
}
