{{/*
The two services of a direction. Context: dict "root" $ "component" "pg2broker"|"broker2pg" "direction" $dir.
*/}}

{{- define "pgtandem.workloadName" -}}
{{- $d := .direction -}}
{{- if eq .component "pg2broker" -}}
{{- include "pgtandem.objectName" (list (printf "%s-pg2broker-%s" (include "pgtandem.fullname" .root) (include "pgtandem.dnsName" $d.from))) -}}
{{- else -}}
{{- include "pgtandem.objectName" (list (printf "%s-broker2pg-%s-to-%s" (include "pgtandem.fullname" .root) (include "pgtandem.dnsName" $d.from) (include "pgtandem.dnsName" $d.to))) -}}
{{- end -}}
{{- end -}}

{{/* Selector labels of one workload; selectors are immutable, so only these. */}}
{{- define "pgtandem.workloadSelector" -}}
{{ include "pgtandem.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
pgtandem.io/from: {{ .direction.from }}
{{- if eq .component "broker2pg" }}
pgtandem.io/to: {{ .direction.to }}
{{- end }}
{{- end -}}

{{- define "pgtandem.workloadArgs" -}}
{{- $root := .root -}}
{{- $d := .direction -}}
- --config
- {{ include "pgtandem.configFile" $root }}
- {{ .component }}
- --from
- {{ $d.from }}
{{- if eq .component "broker2pg" }}
- --to
- {{ $d.to }}
{{- with $d.startAfterLSN }}
- --start-after-lsn
- {{ . | quote }}
{{- end }}
{{- else if $d.createSlot }}
- --create-slot
{{- end }}
- --metrics-listen
- {{ printf ":%d" (int $root.Values.metrics.port) | quote }}
{{- with (index $root.Values .component).extraArgs }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "pgtandem.deployment" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $w := index $v .component -}}
{{- $selector := include "pgtandem.workloadSelector" . -}}
{{- $fixed := dict "app.kubernetes.io/component" .component "pgtandem.io/from" .direction.from "pgtandem.io/to" .direction.to }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "pgtandem.workloadName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "pgtandem.labelsWith" (dict "root" $root "fixed" $fixed) | nindent 4 }}
  {{- include "pgtandem.annotations" $root }}
spec:
  replicas: {{ $w.replicaCount }}
  revisionHistoryLimit: 5
  # Recreate: the old pod stops (and flushes) before a new one starts. pg2broker has one reader per slot,
  # and a new pod of either service waits as a standby, never ready, while the old one holds the slot or
  # the subscription: a rolling update would wait for it forever.
  strategy:
    type: Recreate
  selector:
    matchLabels:
      {{- $selector | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "pgtandem.labelsWith" (dict "root" $root "fixed" $fixed "user" $w.podLabels) | nindent 8 }}
      annotations:
        {{- include "pgtandem.checksums" $root | nindent 8 }}
        {{- with $w.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- include "pgtandem.podSecurity" $root | nindent 6 }}
      terminationGracePeriodSeconds: {{ $w.terminationGracePeriodSeconds }}
      {{- with $w.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $w.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $w.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with include "pgtandem.affinity" (dict "root" $root "w" $w "labels" $selector) | trim }}
      {{- . | nindent 6 }}
      {{- end }}
      {{- with $w.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "pgtandem.image" $root }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          args:
            {{- include "pgtandem.workloadArgs" . | nindent 12 }}
          ports:
            - name: metrics
              containerPort: {{ $v.metrics.port }}
              protocol: TCP
          env:
            {{- include "pgtandem.env" (dict "root" $root "resources" $w.resources) | trim | nindent 12 }}
          {{- with $v.extraEnvFrom }}
          envFrom:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          startupProbe:
            httpGet:
              path: /healthz
              port: metrics
            periodSeconds: {{ $v.probes.startup.periodSeconds }}
            failureThreshold: {{ $v.probes.startup.failureThreshold }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: metrics
            periodSeconds: {{ $v.probes.liveness.periodSeconds }}
            timeoutSeconds: {{ $v.probes.liveness.timeoutSeconds }}
            failureThreshold: {{ $v.probes.liveness.failureThreshold }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: metrics
            periodSeconds: {{ $v.probes.readiness.periodSeconds }}
            timeoutSeconds: {{ $v.probes.readiness.timeoutSeconds }}
            failureThreshold: {{ $v.probes.readiness.failureThreshold }}
          resources:
            {{- toYaml $w.resources | nindent 12 }}
          securityContext:
            {{- toYaml $v.containerSecurityContext | nindent 12 }}
          volumeMounts:
            {{- include "pgtandem.volumeMounts" $root | nindent 12 }}
      volumes:
        {{- include "pgtandem.volumes" $root | nindent 8 }}
{{- end -}}

{{- define "pgtandem.pdb" -}}
{{- $root := .root -}}
{{- $w := index $root.Values .component }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "pgtandem.workloadName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "pgtandem.labelsWith" (dict "root" $root "fixed" (dict "app.kubernetes.io/component" .component)) | nindent 4 }}
  {{- include "pgtandem.annotations" $root }}
spec:
  # maxUnavailable, not minAvailable: minAvailable 1 on one replica would block every node drain.
  maxUnavailable: {{ $w.pdb.maxUnavailable }}
  # A pod that is not ready (crash looping, or a standby) may always be evicted.
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "pgtandem.workloadSelector" . | nindent 6 }}
{{- end -}}
