package charttest

import (
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if pgtandemPath != "" {
		os.RemoveAll(filepath.Dir(pgtandemPath))
	}
	os.Exit(code)
}

// scenarios are the values files every check runs on.
var scenarios = map[string][]string{
	"defaults":     nil,
	"all-features": {"ci/all-features-values.yaml"},
	"ha":           {"ci/ha-values.yaml"},
}

func TestLint(t *testing.T) {
	for name, values := range scenarios {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if out, err := (render{Values: values}).run(t, "lint"); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

// TestRenderedObjectsAreValid renders every scenario for the oldest and the
// newest Kubernetes, with and without the Prometheus Operator's API, and
// checks every object: strict decoding, the OpenAPI schema of that version,
// Pod Security "restricted" at that version and the latest.
func TestRenderedObjectsAreValid(t *testing.T) {
	_, kubes := toolVersions(t)
	for name, values := range scenarios {
		for _, kube := range kubes {
			for _, monitoring := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%s/monitoring=%v", name, kube, monitoring), func(t *testing.T) {
					t.Parallel()
					objs := render{Values: values, Kube: kube, Monitoring: monitoring}.manifests(t)
					if len(objs) == 0 {
						t.Fatal("nothing rendered")
					}
					s := openAPISchema(t, kube)
					for _, o := range objs {
						if err := s.validate(o); err != nil {
							t.Error(err)
						}
						for _, version := range []string{kubeMinor(kube), "latest"} {
							if v := podSecurityViolations(t, o, version); len(v) > 0 {
								t.Errorf("%s breaks Pod Security restricted (%s): %s", o, version, strings.Join(v, "; "))
							}
						}
					}
					monitors := len(find(objs, "PodMonitor")) + len(find(objs, "ServiceMonitor")) + len(find(objs, "PrometheusRule"))
					if !monitoring && monitors > 0 {
						t.Errorf("Prometheus Operator objects rendered for a cluster without its API: %v", names(objs))
					}
					if monitoring && name != "defaults" && monitors == 0 {
						t.Errorf("no Prometheus Operator objects although enabled and the API exists: %v", names(objs))
					}
				})
			}
		}
	}
}

func TestDefaults(t *testing.T) {
	objs := render{}.manifests(t)
	want := []string{
		"NetworkPolicy/rel-pgtandem",
		"PodDisruptionBudget/rel-pgtandem-pg2broker-old", "PodDisruptionBudget/rel-pgtandem-broker2pg-old-to-new",
		"PodDisruptionBudget/rel-pgtandem-pg2broker-new", "PodDisruptionBudget/rel-pgtandem-broker2pg-new-to-old",
		"ServiceAccount/rel-pgtandem", "ConfigMap/rel-pgtandem-config",
		"Deployment/rel-pgtandem-pg2broker-old", "Deployment/rel-pgtandem-broker2pg-old-to-new",
		"Deployment/rel-pgtandem-pg2broker-new", "Deployment/rel-pgtandem-broker2pg-new-to-old",
	}
	if got := names(objs); !slices.Equal(got, want) {
		t.Fatalf("rendered %v\nwant     %v", got, want)
	}
	for _, o := range find(objs, "Deployment") {
		d := o.Typed.(*appsv1.Deployment)
		if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
			t.Errorf("%s: strategy %s, want Recreate (a new pod waits as a standby)", o, d.Spec.Strategy.Type)
		}
		pod := d.Spec.Template.Spec
		c := pod.Containers[0]
		if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
			t.Errorf("%s: enableServiceLinks is not false: Service variables named PGTANDEM_* would stop pgtandem", o)
		}
		probes := map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe}
		for path, p := range probes {
			if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path || p.HTTPGet.Port.String() != "metrics" {
				t.Errorf("%s: probe %+v, want GET %s on the metrics port", o, p, path)
			}
		}
		if s := c.StartupProbe; s == nil || s.HTTPGet.Path != "/healthz" || s.PeriodSeconds*s.FailureThreshold < 300 {
			t.Errorf("%s: startup probe %+v: want /healthz with at least five minutes", o, s)
		}
		if env := envValue(c, "GOMEMLIMIT"); env != "921MiB" {
			t.Errorf("%s: GOMEMLIMIT %q, want 90%% of the 1Gi limit", o, env)
		}
		if !slices.Contains(c.Args, "--metrics-listen") {
			t.Errorf("%s: args %v without --metrics-listen", o, c.Args)
		}
	}
	cm := find(objs, "ConfigMap")[0].Typed.(*corev1.ConfigMap)
	if strings.Contains(strings.ToLower(cm.Data["pgtandem.yaml"]), "dsn") {
		t.Errorf("the ConfigMap holds a DSN:\n%s", cm.Data["pgtandem.yaml"])
	}
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func TestAllFeatures(t *testing.T) {
	objs := render{Values: scenarios["all-features"], Monitoring: true}.manifests(t)
	jobs := find(objs, "Job")
	var jobNames []string
	for _, o := range jobs {
		jobNames = append(jobNames, o.Name)
		j := o.Typed.(*batchv1.Job)
		if j.Spec.BackoffLimit == nil || *j.Spec.BackoffLimit != 0 {
			t.Errorf("%s: backoffLimit %v, want 0: Kubernetes must never retry it", o, j.Spec.BackoffLimit)
		}
		if j.Spec.ActiveDeadlineSeconds == nil || j.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
			t.Errorf("%s: no deadline or a restart policy other than Never", o)
		}
	}
	want := []string{"rel-tandem-switch-old-to-new-2026-12-01-a", "rel-tandem-init-old-to-new-2026-12-01-a", "rel-tandem-verify-new-to-old-2026-12-01-a"}
	if !slices.Equal(jobNames, want) {
		t.Errorf("jobs %v, want %v", jobNames, want)
	}
	secrets := find(objs, "Secret")
	if len(secrets) != 1 || string(secrets[0].Typed.(*corev1.Secret).Data["cluster-new-dsn"]) != "postgres://pgtandem:inline-dev-password@db-new:5432/app" {
		t.Fatalf("the inline DSN is not in the chart's Secret: %v", names(secrets))
	}
	for _, o := range objs {
		if o.GVK.Kind != "Secret" && strings.Contains(string(o.Raw), "inline-dev-password") {
			t.Errorf("%s holds the inline password", o)
		}
	}
	for _, o := range find(objs, "Deployment") {
		if _, ok := o.Typed.(*appsv1.Deployment).Spec.Template.Annotations["checksum/secret"]; !ok {
			t.Errorf("%s: no checksum/secret annotation although the chart renders a Secret", o)
		}
	}
	for _, kind := range []string{"PodMonitor", "PrometheusRule"} {
		if len(find(objs, kind)) != 1 {
			t.Errorf("want one %s: %v", kind, names(objs))
		}
	}
}

// TestPgtandemAcceptsConfiguration hands each container's configuration,
// environment and command line to the pgtandem binary: a key pgtandem does
// not know, a value of the wrong type, a TLS key on a plain URL or a flag a
// command lacks fails here, not in the cluster.
func TestPgtandemAcceptsConfiguration(t *testing.T) {
	for name, values := range scenarios {
		t.Run(name, func(t *testing.T) {
			// The Jobs too: render them with the run id they need.
			objs := render{Values: values, Set: []string{"jobs.runId=t1", "jobs.verify.enabled=true", "jobs.switch.enabled=true"}}.manifests(t)
			cm := find(objs, "ConfigMap")[0].Typed.(*corev1.ConfigMap)
			dir := t.TempDir()
			mounts := newMountedSecrets(t, dir)
			configFile := filepath.Join(dir, "pgtandem.yaml")
			if err := os.WriteFile(configFile, []byte(mounts.rewrite(cm.Data["pgtandem.yaml"])), 0o600); err != nil {
				t.Fatal(err)
			}
			checked := 0
			for _, o := range objs {
				_, spec, ok := podTemplate(o)
				if !ok {
					continue
				}
				c := spec.Containers[0]
				args := slices.Clone(c.Args)
				if len(args) < 3 || args[0] != "--config" {
					t.Fatalf("%s: args %v do not start with --config FILE COMMAND", o, args)
				}
				args[1] = configFile
				checkPgtandemRun(t, o, args, containerEnv(c, mounts))
				checked++
			}
			if checked == 0 {
				t.Fatal("no container checked")
			}
		})
	}
}

// containerEnv is the environment a container gets, with made-up values for
// what comes from Secrets and ConfigMaps and the mounted files in mounts.
func containerEnv(c corev1.Container, mounts mountedSecrets) []string {
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + os.TempDir()}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+mounts.rewrite(e.Value))
		case e.ValueFrom.SecretKeyRef != nil && strings.HasSuffix(e.Name, "_DSN"):
			env = append(env, e.Name+"=postgres://pgtandem:made-up-password@127.0.0.1:1/app")
		case e.ValueFrom.SecretKeyRef != nil && e.Name == "PGTANDEM_SWITCH_PGBOUNCER_ADMIN":
			env = append(env, e.Name+"=postgres://pgbouncer:made-up-password@127.0.0.1:1/pgbouncer,postgres://pgbouncer:made-up-password@127.0.0.1:2/pgbouncer")
		case e.ValueFrom.ConfigMapKeyRef != nil && e.Name == "PGTANDEM_LOG_LEVEL":
			env = append(env, e.Name+"=info")
		}
	}
	return env
}

// checkPgtandemRun runs the container's command twice: with --help appended
// (cobra parses every flag, then prints help: exit 0 means each flag
// exists), and as `switch --from A --to A` with the same configuration and
// environment, which loads and validates the whole configuration and then
// stops before touching any server ("cannot be its own target").
func checkPgtandemRun(t *testing.T, o object, args, env []string) {
	t.Helper()
	bin := pgtandemBinary(t)
	help := runPgtandem(bin, append(slices.Clone(args), "--help"), env)
	if help.err != nil {
		t.Errorf("%s: pgtandem %s --help: %v\n%s", o, strings.Join(args, " "), help.err, help.out)
	}
	from := flagValue(args, "--from")
	probe := append(slices.Clone(args[:2]), "switch", "--from", from, "--to", from)
	res := runPgtandem(bin, probe, env)
	if !strings.Contains(res.out, "cannot be its own target") {
		t.Errorf("%s: pgtandem refuses the chart's configuration:\n%s\nconfiguration:\n%s", o, res.out, readFile(t, args[1]))
	}
}

type runResult struct {
	out string
	err error
}

func runPgtandem(bin string, args, env []string) runResult {
	cmd := osexec.Command(bin, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return runResult{string(out), err}
}

// secretsDir is where the chart mounts Secrets (templates/_helpers.tpl).
const secretsDir = "/var/run/secrets/pgtandem"

// mountedSecrets stands in for the Secret volumes of a pod: pgtandem reads
// PGSSLROOTCERT, PGSSLCERT and PGSSLKEY when it checks a DSN, so the files
// must exist and hold PEM.
type mountedSecrets struct{ dir string }

func newMountedSecrets(t *testing.T, dir string) mountedSecrets {
	m := mountedSecrets{filepath.Join(dir, "secrets")}
	cert, key := selfSignedPEM(t)
	for _, tls := range []string{"postgresql-tls", "pulsar-tls"} {
		for name, body := range map[string][]byte{"ca.crt": cert, "tls.crt": cert, "tls.key": key} {
			writeFile(t, filepath.Join(m.dir, tls, name), body)
		}
	}
	writeFile(t, filepath.Join(m.dir, "pulsar-token", "token"), []byte("made-up-token\n"))
	return m
}

func (m mountedSecrets) rewrite(s string) string { return strings.ReplaceAll(s, secretsDir, m.dir) }

func writeFile(t *testing.T, path string, body []byte) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
}

func testdata(name string) string {
	abs, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		panic(err)
	}
	return abs
}

func flagValue(args []string, flag string) string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

func readFile(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestValuesRefused feeds the chart values it must refuse and checks that
// the message names what to fix.
func TestValuesRefused(t *testing.T) {
	cases := []struct {
		name string
		r    render
		want string // a regular expression the error must match
	}{
		{"a typo in a key", render{Set: []string{"pg2broker.replicaCont=2"}}, `additional properties 'replicaCont' not allowed`},
		{"a typo in a nested key", render{Values: []string{testdata("typo-values.yaml")}}, `additional properties 'existingSecrte' not allowed`},
		{"a wrong type", render{Set: []string{"broker2pg.replicaCount=two"}}, `/broker2pg/replicaCount.*got string, want integer`},
		{"a string for a list", render{Set: []string{"switch.fence=pgbouncer"}}, `/switch/fence.*got string, want array`},
		{"an unknown enum value", render{Set: []string{"jobs.switch.mode=force"}}, `/jobs/switch/mode.*value must be one of`},
		{"a missing DSN Secret", render{Set: []string{"clusters.old.existingSecret="}}, `clusters\.old: the DSN's Secret is missing: set clusters\.old\.existingSecret`},
		{"a missing token Secret", render{Set: []string{"pulsar.auth.token.enabled=true"}}, `pulsar\.auth\.token\.enabled: the token's Secret is missing`},
		{"a client certificate without Secret", render{Set: []string{"postgresql.tls.clientCert.enabled=true"}}, `postgresql\.tls\.clientCert\.enabled: name the Secret`},
		{"a DSN both inline and in a Secret", render{Set: []string{"clusters.new.dsn=postgres://a@b/c"}}, `clusters\.new: set existingSecret or dsn, not both`},
		{"a job without run id", render{Set: []string{"jobs.switch.enabled=true"}}, `jobs\.runId: required when a job is enabled`},
		{"a run id that is no name", render{Set: []string{"jobs.runId=Run_1"}}, `/jobs/runId.*does not match pattern`},
		{"a direction into itself", render{Set: []string{"directions.reverse.to=new"}}, `directions\.reverse: from and to are both "new"`},
		{"a direction to an unknown cluster", render{Set: []string{"directions.forward.to=newer"}}, `directions\.forward\.to: "newer" is not a cluster of clusters \(new, old\)`},
		{"TLS settings on a plain Pulsar URL", render{Set: []string{"pulsar.url=pulsar://broker:6650", "pulsar.tls.existingSecret=ca"}}, `pulsar\.tls: applies only to a pulsar\+ssl:// URL`},
		{"init restore without pg_dump", render{Set: []string{"jobs.runId=r1", "jobs.init.enabled=true", "jobs.init.schema=restore"}}, `jobs\.init\.schema=restore runs pg_dump`},
		{"hooks without a shell", render{Set: []string{"jobs.runId=r1", "jobs.switch.enabled=true", "switch.redirect=hook"}}, `the pgtandem image has no shell`},
		{"a memory limit GOMEMLIMIT cannot follow", render{Set: []string{"pg2broker.resources.limits.memory=1e9"}}, `/pg2broker/resources/limits/memory`},
		{"a name too long for a label", render{Set: []string{"fullnameOverride=a-release-name-that-is-long-enough", "jobs.runId=abcdefghijklmnopqrst", "jobs.switch.enabled=true"}}, `the object name "a-release-name-that-is-long-enough-switch-dry-run-old-to-new-abcdefghijklmnopqrst" is 81 characters, more than 63`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := tc.r.run(t, "template")
			if err == nil {
				t.Fatalf("helm template accepted %+v", tc.r)
			}
			if !regexp.MustCompile(tc.want).MatchString(err.Error()) {
				t.Fatalf("error does not say %q:\n%v", tc.want, err)
			}
		})
	}
}

// TestChecksCatchWhatTheyGuard proves each check of TestRenderedObjectsAreValid
// can fail: a Pod Security violation injected through a values file, a
// misspelt field in a free-form Kubernetes value, a field the oldest
// supported Kubernetes lacks.
func TestChecksCatchWhatTheyGuard(t *testing.T) {
	_, kubes := toolVersions(t)
	oldest, newest := kubes[0], kubes[len(kubes)-1]

	t.Run("Pod Security violation", func(t *testing.T) {
		objs := render{Values: []string{testdata("privileged-values.yaml")}}.manifests(t)
		deployments := find(objs, "Deployment")
		if len(deployments) == 0 {
			t.Fatal("no Deployment rendered")
		}
		v := strings.Join(podSecurityViolations(t, deployments[0], "latest"), "; ")
		for _, want := range []string{"allowPrivilegeEscalation != false", "runAsNonRoot != true", "unrestricted capabilities", "seccompProfile"} {
			if !strings.Contains(v, want) {
				t.Errorf("Pod Security restricted did not report %q; it reported: %s", want, v)
			}
		}
	})

	t.Run("misspelt field", func(t *testing.T) {
		out, err := render{Set: []string{"containerSecurityContext.readOnlyRootFileSystem=true"}}.run(t, "template")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeAll(out); err == nil || !strings.Contains(err.Error(), `unknown field "spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem"`) {
			t.Fatalf("strict decoding did not refuse the misspelt field: %v", err)
		}
	})

	t.Run("field of a newer Kubernetes", func(t *testing.T) {
		d := find(render{}.manifests(t), "Deployment")[0]
		// hostnameOverride came with Kubernetes 1.34.
		spec := d.Generic["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
		spec["hostnameOverride"] = "capture"
		if err := openAPISchema(t, newest).validate(d); err != nil {
			t.Fatalf("Kubernetes %s refuses a field it has: %v", newest, err)
		}
		err := openAPISchema(t, oldest).validate(d)
		if err == nil || !strings.Contains(err.Error(), `unknown field "hostnameOverride"`) {
			t.Fatalf("the schema of Kubernetes %s did not refuse hostnameOverride: %v", oldest, err)
		}
		delete(spec, "hostnameOverride")
		delete(d.Generic["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any), "image")
		if err := openAPISchema(t, newest).validate(d); err == nil {
			t.Log("a container without image passes the schema (image is optional in the API)")
		}
	})
}

func TestGOMEMLIMIT(t *testing.T) {
	cases := map[string]string{"512Mi": "460MiB", "1G": "858MiB", "1.5Gi": "1382MiB", "2147483648": "1843MiB", "": ""}
	for limit, want := range cases {
		t.Run(limit, func(t *testing.T) {
			t.Parallel()
			set := []string{"directions.reverse.enabled=false"}
			if limit == "" {
				set = append(set, "pg2broker.resources.limits=null")
			} else {
				set = append(set, "pg2broker.resources.limits.memory="+limit)
			}
			objs := render{Set: set}.manifests(t)
			d := find(objs, "Deployment")[0].Typed.(*appsv1.Deployment)
			if got := envValue(d.Spec.Template.Spec.Containers[0], "GOMEMLIMIT"); got != want {
				t.Errorf("GOMEMLIMIT for a %q limit = %q, want %q", limit, got, want)
			}
		})
	}
}

// TestReadmeCoversValues keeps the values README in step with values.yaml:
// every key must be described.
func TestReadmeCoversValues(t *testing.T) {
	var values map[string]any
	if err := sigsyaml.Unmarshal([]byte(readFile(t, filepath.Join(chartDir(t), "values.yaml"))), &values); err != nil {
		t.Fatal(err)
	}
	// A "|" inside a table cell is written "\|".
	readme := strings.ReplaceAll(readFile(t, filepath.Join(chartDir(t), "README.md")), `\|`, "|")
	for _, key := range leafKeys("", values) {
		if !strings.Contains(readme, "`"+key+"`") {
			t.Errorf("charts/pgtandem/README.md does not describe `%s`", key)
		}
	}
}

// leafKeys lists the dotted paths of values' leaves and empty maps. Keys
// that repeat are described once: clusters.<name>.*, directions.<forward|reverse>.*
// and <pg2broker|broker2pg>.*; Kubernetes objects (resources, security
// contexts) as a whole.
func leafKeys(prefix string, v any) []string {
	m, ok := v.(map[string]any)
	last := prefix[strings.LastIndex(prefix, ".")+1:]
	if !ok || len(m) == 0 || slices.Contains([]string{"resources", "podSecurityContext", "containerSecurityContext"}, last) {
		return []string{prefix}
	}
	var keys []string
	for k, sub := range m {
		switch {
		case prefix == "clusters":
			k = "<name>"
		case prefix == "directions":
			k = "<forward|reverse>"
		case prefix == "" && (k == "pg2broker" || k == "broker2pg"):
			k = "<pg2broker|broker2pg>"
		}
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		keys = append(keys, leafKeys(p, sub)...)
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// TestNotes renders NOTES.txt, which helm template leaves out (and helm
// install --dry-run renders only with a cluster to ask), from a copy of the
// chart where a template renders it through tpl.
func TestNotes(t *testing.T) {
	helm := helmBinary(t)
	chart := filepath.Join(t.TempDir(), "pgtandem")
	if err := os.CopyFS(chart, os.DirFS(chartDir(t))); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(chart, "notes", "NOTES.txt"), []byte(readFile(t, filepath.Join(chart, "templates", "NOTES.txt"))))
	writeFile(t, filepath.Join(chart, "templates", "notes.yaml"), []byte(`notes: {{ tpl (.Files.Get "notes/NOTES.txt") . | toJson }}`+"\n"))
	notes := func(set ...string) string {
		args := []string{"template", "rel", chart, "--namespace", "db", "--show-only", "templates/notes.yaml"}
		for _, s := range set {
			args = append(args, "--set", s)
		}
		out, err := osexec.Command(helm, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("NOTES.txt with %v: %v\n%s", set, err, out)
		}
		var doc struct{ Notes string }
		if err := sigsyaml.Unmarshal(out, &doc); err != nil {
			t.Fatal(err)
		}
		return doc.Notes
	}
	for _, tc := range []struct {
		set  []string
		want []string
	}{
		{nil, []string{
			"deployment/rel-pgtandem-pg2broker-old captures old",
			"exec deploy/rel-pgtandem-broker2pg-old-to-new -- /usr/local/bin/pgtandem --config /etc/pgtandem/pgtandem.yaml status",
			"--show-only templates/jobs.yaml | kubectl -n db create -f -",
			"jobs.switch.mode=run",
		}},
		{[]string{"directions.forward.enabled=false"}, []string{
			"old → new: off",
			"exec deploy/rel-pgtandem-broker2pg-new-to-old --",
		}},
		{[]string{"metrics.podMonitor.enabled=true"}, []string{"WARNING: metrics.podMonitor"}},
		{[]string{"clusters.old.existingSecret=", "clusters.old.dsn=postgres://a@b/c"}, []string{"WARNING: credentials were given inline"}},
	} {
		out := notes(tc.set...)
		for _, want := range tc.want {
			if !strings.Contains(out, want) {
				t.Errorf("NOTES.txt with %v does not say %q:\n%s", tc.set, want, out)
			}
		}
	}
}
