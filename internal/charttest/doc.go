// Package charttest tests the Helm chart in charts/pgtandem without a
// Kubernetes cluster (there is none on development or CI machines).
//
// The tests run the pinned helm that scripts/install-deps.sh builds into
// .cache/tools/helm-<version>/ (versions in scripts/chart-tools.env; a
// missing helm fails the tests with "run make deps", and -short skips them)
// and check what it renders:
//
//   - helm lint --strict and helm template with the default values,
//     charts/pgtandem/ci/all-features-values.yaml and ci/ha-values.yaml, for
//     the oldest and the newest supported Kubernetes, with and without the
//     monitoring.coreos.com/v1 API;
//   - every object decoded strictly into its k8s.io/api (or Prometheus
//     Operator) type: an unknown or misspelt field fails;
//   - every built-in object validated against the OpenAPI schema of both
//     Kubernetes versions (api/openapi-spec/swagger.json of the
//     k8s.io/kubernetes module, read from the Go module cache) with
//     kube-openapi's validator, the one kubectl's client-side validation
//     used: unknown fields, wrong types, missing required fields;
//   - every pod template checked against Pod Security "restricted" with the
//     k8s.io/pod-security-admission library, at both versions;
//   - the configuration and command line of every container accepted by the
//     pgtandem binary itself;
//   - values.schema.json and templates/_validate.tpl refusing typos, wrong
//     types, missing Secrets and contradictions with a message that names
//     the value to fix.
//
// What needs a cluster (scheduling, probes, PDB evictions, the Failover
// handover) is not tested here; see docs/kubernetes.md.
package charttest
