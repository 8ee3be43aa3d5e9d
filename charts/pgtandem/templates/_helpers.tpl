{{/* Names, labels and the pieces every pod shares. */}}

{{- define "pgtandem.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pgtandem.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A pgtandem cluster name as it may appear in an object name (no "_"). */}}
{{- define "pgtandem.dnsName" -}}
{{- . | replace "_" "-" -}}
{{- end -}}

{{/* An object name, refused when longer than a label value may be (pods carry it). */}}
{{- define "pgtandem.objectName" -}}
{{- $name := index . 0 -}}
{{- if gt (len $name) 63 -}}
{{- fail (printf "the object name %q is %d characters, more than 63: shorten fullnameOverride, the cluster names or jobs.runId" $name (len $name)) -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{- define "pgtandem.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pgtandem.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pgtandem.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pgtandem.labels" -}}
{{ include "pgtandem.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: pgtandem
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "pgtandem.chart" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* metadata.annotations of every object, when commonAnnotations has any; call it right after the labels. */}}
{{/*
Labels of one object: the chart's labels, then the user's (context "user", e.g. podLabels), then the fixed
ones ("fixed", e.g. the component); a later group wins, and the selector labels always do, so no label is
written twice and no user label can break a selector. Context: dict "root" $ "fixed" dict "user" dict.
*/}}
{{- define "pgtandem.labelsWith" -}}
{{- $all := include "pgtandem.labels" .root | fromYaml -}}
{{- $selector := include "pgtandem.selectorLabels" .root | fromYaml -}}
{{- toYaml (merge (deepCopy (default dict .fixed)) $selector (deepCopy (default dict .user)) $all) -}}
{{- end -}}

{{- define "pgtandem.annotations" -}}
{{- with .Values.commonAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end -}}

{{- define "pgtandem.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pgtandem.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "pgtandem.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "pgtandem.jobImage" -}}
{{- if .Values.jobs.image.repository -}}
{{- printf "%s:%s" .Values.jobs.image.repository (default .Chart.AppVersion .Values.jobs.image.tag) -}}
{{- else -}}
{{- include "pgtandem.image" . -}}
{{- end -}}
{{- end -}}

{{/* The chart's own Secret holds the inline (development) credentials; it exists only when one is set. */}}
{{- define "pgtandem.secretName" -}}
{{- printf "%s-credentials" (include "pgtandem.fullname" .) -}}
{{- end -}}

{{- define "pgtandem.hasOwnSecret" -}}
{{- $has := false -}}
{{- range $name, $c := .Values.clusters -}}
{{- if $c.dsn -}}{{- $has = true -}}{{- end -}}
{{- end -}}
{{- if and .Values.pulsar.auth.token.enabled .Values.pulsar.auth.token.value -}}{{- $has = true -}}{{- end -}}
{{- if .Values.switch.pgbouncer.admin.dsns -}}{{- $has = true -}}{{- end -}}
{{- if $has -}}true{{- end -}}
{{- end -}}

{{/* Where the mounted files are. */}}
{{- define "pgtandem.configFile" -}}/etc/pgtandem/pgtandem.yaml{{- end -}}
{{- define "pgtandem.pulsarTokenFile" -}}/var/run/secrets/pgtandem/pulsar-token/token{{- end -}}
{{- define "pgtandem.pulsarTLSDir" -}}/var/run/secrets/pgtandem/pulsar-tls{{- end -}}
{{- define "pgtandem.postgresqlTLSDir" -}}/var/run/secrets/pgtandem/postgresql-tls{{- end -}}

{{/*
GOMEMLIMIT at 90% of a memory limit ("512Mi", "1Gi", "1G", bytes), so the collector works harder before the
kernel's OOM killer would; empty without a limit (pgtandem's own default then applies).
*/}}
{{- define "pgtandem.goMemLimit" -}}
{{- $limit := "" -}}
{{- with .limits -}}{{- with .memory -}}{{- $limit = toString . -}}{{- end -}}{{- end -}}
{{- if $limit -}}
{{- $m := regexFindAll "^([0-9]+(\\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$" $limit -1 -}}
{{- if not $m -}}
{{- fail (printf "resources.limits.memory %q: write it as a number with an optional Ki, Mi, Gi, Ti, k, M, G or T suffix" $limit) -}}
{{- end -}}
{{- $unit := regexReplaceAll "^[0-9.]+" $limit "" -}}
{{- $number := regexReplaceAll "[A-Za-z]+$" $limit "" | float64 -}}
{{- $factor := get (dict "" 1.0 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "k" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0) $unit -}}
{{- printf "%dMiB" (divf (mulf $number $factor 0.9) 1048576.0 | floor | int64) -}}
{{- end -}}
{{- end -}}

{{/* The environment of every pgtandem container: DSNs, libpq TLS, the memory limit. Context: dict "root" "resources" "switchAdmin". */}}
{{- define "pgtandem.env" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- range $name, $c := $v.clusters }}
- name: PGTANDEM_CLUSTERS_{{ upper $name }}_DSN
  valueFrom:
    secretKeyRef:
      {{- if $c.existingSecret }}
      name: {{ $c.existingSecret }}
      key: {{ default "dsn" $c.dsnKey }}
      {{- else }}
      name: {{ include "pgtandem.secretName" $root }}
      key: cluster-{{ $name }}-dsn
      {{- end }}
{{- end }}
{{- if .switchAdmin }}
{{- with $v.switch.pgbouncer.admin }}
{{- if or .existingSecret .dsns }}
- name: PGTANDEM_SWITCH_PGBOUNCER_ADMIN
  valueFrom:
    secretKeyRef:
      {{- if .existingSecret }}
      name: {{ .existingSecret }}
      key: {{ .key }}
      {{- else }}
      name: {{ include "pgtandem.secretName" $root }}
      key: pgbouncer-admin
      {{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- with $v.postgresql.sslmode }}
- name: PGSSLMODE
  value: {{ . }}
{{- end }}
{{- if $v.postgresql.tls.existingSecret }}
- name: PGSSLROOTCERT
  value: {{ include "pgtandem.postgresqlTLSDir" $root }}/ca.crt
{{- end }}
{{- if $v.postgresql.tls.clientCert.enabled }}
- name: PGSSLCERT
  value: {{ include "pgtandem.postgresqlTLSDir" $root }}/tls.crt
- name: PGSSLKEY
  value: {{ include "pgtandem.postgresqlTLSDir" $root }}/tls.key
{{- end }}
{{- with include "pgtandem.goMemLimit" .resources }}
- name: GOMEMLIMIT
  value: {{ . }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* A projected volume of TLS files from one or two Secrets: the CA as ca.crt, the client pair as tls.crt and tls.key. */}}
{{- define "pgtandem.tlsVolume" -}}
{{- $ca := .tls.existingSecret -}}
{{- $client := .tls.clientCert -}}
- name: {{ .name }}
  projected:
    defaultMode: 0440
    sources:
      {{- if $ca }}
      - secret:
          name: {{ $ca }}
          items:
            - key: {{ .tls.caKey }}
              path: ca.crt
      {{- end }}
      {{- if $client.enabled }}
      - secret:
          name: {{ default $ca $client.existingSecret }}
          items:
            - key: {{ $client.certKey }}
              path: tls.crt
            - key: {{ $client.keyKey }}
              path: tls.key
      {{- end }}
{{- end -}}

{{- define "pgtandem.volumes" -}}
{{- $v := .Values -}}
- name: config
  configMap:
    name: {{ include "pgtandem.fullname" . }}-config
- name: tmp
  emptyDir:
    sizeLimit: {{ $v.tmpSizeLimit }}
{{- if $v.pulsar.auth.token.enabled }}
- name: pulsar-token
  secret:
    secretName: {{ default (include "pgtandem.secretName" .) $v.pulsar.auth.token.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ if $v.pulsar.auth.token.existingSecret }}{{ $v.pulsar.auth.token.key }}{{ else }}pulsar-token{{ end }}
        path: token
{{- end }}
{{- if or $v.pulsar.tls.existingSecret $v.pulsar.tls.clientCert.enabled }}
{{ include "pgtandem.tlsVolume" (dict "name" "pulsar-tls" "tls" $v.pulsar.tls) }}
{{- end }}
{{- if or $v.postgresql.tls.existingSecret $v.postgresql.tls.clientCert.enabled }}
{{ include "pgtandem.tlsVolume" (dict "name" "postgresql-tls" "tls" $v.postgresql.tls) }}
{{- end }}
{{- with $v.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "pgtandem.volumeMounts" -}}
{{- $v := .Values -}}
- name: config
  mountPath: /etc/pgtandem
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if $v.pulsar.auth.token.enabled }}
- name: pulsar-token
  mountPath: {{ dir (include "pgtandem.pulsarTokenFile" .) }}
  readOnly: true
{{- end }}
{{- if or $v.pulsar.tls.existingSecret $v.pulsar.tls.clientCert.enabled }}
- name: pulsar-tls
  mountPath: {{ include "pgtandem.pulsarTLSDir" . }}
  readOnly: true
{{- end }}
{{- if or $v.postgresql.tls.existingSecret $v.postgresql.tls.clientCert.enabled }}
- name: postgresql-tls
  mountPath: {{ include "pgtandem.postgresqlTLSDir" . }}
  readOnly: true
{{- end }}
{{- with $v.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod annotations that roll the pods when the configuration or the chart's own Secret changes. */}}
{{- define "pgtandem.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if include "pgtandem.hasOwnSecret" . }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end -}}

{{/* Spread replicas of one workload over nodes unless the user chose an affinity. Context: dict "root" "w" "labels". */}}
{{- define "pgtandem.affinity" -}}
{{- if .w.affinity }}
affinity:
  {{- toYaml .w.affinity | nindent 2 }}
{{- else if gt (int .w.replicaCount) 1 }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- .labels | nindent 14 }}
{{- end }}
{{- end -}}

{{/* The pod-level settings every pgtandem pod shares. */}}
{{- define "pgtandem.podSecurity" -}}
serviceAccountName: {{ include "pgtandem.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
# Kubernetes would add <SERVICE>_PORT variables for every Service of the namespace, and pgtandem refuses
# PGTANDEM_* variables that are not configuration keys (a Service named pgtandem-... would stop it).
enableServiceLinks: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end -}}
