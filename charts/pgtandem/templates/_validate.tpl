{{/*
Combinations values.schema.json cannot express. Each failure names the values to change; pgtandem itself
checks its configuration again when it starts.
*/}}
{{- define "pgtandem.validate" -}}
{{- $v := .Values -}}
{{- $errs := list -}}
{{- range $name, $c := $v.clusters -}}
{{- if and $c.existingSecret $c.dsn -}}
{{- $errs = append $errs (printf "clusters.%s: set existingSecret or dsn, not both (dsn is for development; production keeps the DSN in a Secret)" $name) -}}
{{- else if not (or $c.existingSecret $c.dsn) -}}
{{- $errs = append $errs (printf "clusters.%s: the DSN's Secret is missing: set clusters.%s.existingSecret to a Secret holding the DSN under clusters.%s.dsnKey (%q), or clusters.%s.dsn for development" $name $name $name (default "dsn" $c.dsnKey) $name) -}}
{{- end -}}
{{- end -}}
{{- range $key := list "forward" "reverse" -}}
{{- $d := index $v.directions $key -}}
{{- if $d.enabled -}}
{{- $errs = concat $errs (include "pgtandem.checkPair" (dict "root" $ "what" (printf "directions.%s" $key) "pair" $d) | fromJsonArray) -}}
{{- end -}}
{{- end -}}
{{- $anyJob := false -}}
{{- range $job := list "switch" "init" "verify" -}}
{{- $j := index $v.jobs $job -}}
{{- if $j.enabled -}}
{{- $anyJob = true -}}
{{- $errs = concat $errs (include "pgtandem.checkPair" (dict "root" $ "what" (printf "jobs.%s" $job) "pair" $j) | fromJsonArray) -}}
{{- end -}}
{{- end -}}
{{- if and $anyJob (not $v.jobs.runId) -}}
{{- $errs = append $errs "jobs.runId: required when a job is enabled, e.g. --set jobs.runId=2026-12-01-1: it names the Job, so the same run cannot be created twice" -}}
{{- end -}}
{{- if and $v.jobs.init.enabled (eq $v.jobs.init.schema "restore") (not $v.jobs.image.repository) -}}
{{- $errs = append $errs "jobs.init.schema=restore runs pg_dump and pg_restore, which the pgtandem image does not hold: set jobs.image to an image with pgtandem and the PostgreSQL client tools of the source's major or newer, or use jobs.init.schema=existing" -}}
{{- end -}}
{{- $sw := $v.switch -}}
{{- if and $v.jobs.switch.enabled (or (has "hook" $sw.fence) (eq $sw.redirect "hook")) (not $v.jobs.image.repository) -}}
{{- $errs = append $errs "switch: the hook fence or redirect runs shell commands, and the pgtandem image has no shell: set jobs.image to an image with pgtandem and sh" -}}
{{- end -}}
{{- if and $sw.pgbouncer.admin.existingSecret $sw.pgbouncer.admin.dsns -}}
{{- $errs = append $errs "switch.pgbouncer.admin: set existingSecret or dsns, not both" -}}
{{- end -}}
{{- $tok := $v.pulsar.auth.token -}}
{{- if $tok.enabled -}}
{{- if and $tok.existingSecret $tok.value -}}
{{- $errs = append $errs "pulsar.auth.token: set existingSecret or value, not both" -}}
{{- else if not (or $tok.existingSecret $tok.value) -}}
{{- $errs = append $errs "pulsar.auth.token.enabled: the token's Secret is missing: set pulsar.auth.token.existingSecret (the token under pulsar.auth.token.key), or pulsar.auth.token.value for development" -}}
{{- end -}}
{{- else if or $tok.existingSecret $tok.value -}}
{{- $errs = append $errs "pulsar.auth.token: a token is given but pulsar.auth.token.enabled is false" -}}
{{- end -}}
{{- $ptls := $v.pulsar.tls -}}
{{- if not (hasPrefix "pulsar+ssl://" $v.pulsar.url) -}}
{{- if or $ptls.existingSecret $ptls.clientCert.enabled $ptls.allowInsecure -}}
{{- $errs = append $errs (printf "pulsar.tls: applies only to a pulsar+ssl:// URL, and pulsar.url is %s" $v.pulsar.url) -}}
{{- end -}}
{{- end -}}
{{- if and $ptls.allowInsecure $ptls.existingSecret -}}
{{- $errs = append $errs "pulsar.tls.allowInsecure accepts any certificate, so the CA of pulsar.tls.existingSecret would be ignored: remove one" -}}
{{- end -}}
{{- range $what, $t := dict "pulsar.tls" $ptls "postgresql.tls" $v.postgresql.tls -}}
{{- if and $t.clientCert.enabled (not (or $t.clientCert.existingSecret $t.existingSecret)) -}}
{{- $errs = append $errs (printf "%s.clientCert.enabled: name the Secret with the certificate and key: %s.clientCert.existingSecret or %s.existingSecret" $what $what $what) -}}
{{- end -}}
{{- end -}}
{{- if and $v.metrics.podMonitor.enabled $v.metrics.serviceMonitor.enabled -}}
{{- $errs = append $errs "metrics: enable podMonitor or serviceMonitor, not both: each pod would be scraped twice" -}}
{{- end -}}
{{- if $errs -}}
{{- fail (printf "\n  - %s" (join "\n  - " $errs)) -}}
{{- end -}}
{{- end -}}

{{/* The from/to of a direction or job: configured clusters, not the same one. Returns a JSON list of errors. */}}
{{- define "pgtandem.checkPair" -}}
{{- $errs := list -}}
{{- $clusters := .root.Values.clusters -}}
{{- range $side := list "from" "to" -}}
{{- $name := index $.pair $side -}}
{{- if not (hasKey $clusters $name) -}}
{{- $errs = append $errs (printf "%s.%s: %q is not a cluster of clusters (%s)" $.what $side $name (keys $clusters | sortAlpha | join ", ")) -}}
{{- end -}}
{{- end -}}
{{- if eq .pair.from .pair.to -}}
{{- $errs = append $errs (printf "%s: from and to are both %q: a cluster cannot be its own target" .what .pair.from) -}}
{{- end -}}
{{- toJson $errs -}}
{{- end -}}
