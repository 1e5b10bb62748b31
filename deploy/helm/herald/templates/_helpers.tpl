{{/* Names and labels. */}}
{{- define "herald.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "herald.labels" -}}
app.kubernetes.io/name: herald
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one workload: (dict "root" $ "workload" "dispatch-email"). */}}
{{- define "herald.selector" -}}
app.kubernetes.io/name: herald
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .workload }}
{{- end -}}

{{- define "herald.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
Every workload of the release, as a YAML map: name -> its settings. One per program, and
one dispatcher per channel. `group` and `topic` are the consumer group and topic its lag is
read on (for KEDA); `health` is the port its /healthz and /readyz answer on.
*/}}
{{- define "herald.workloads" -}}
{{- $v := .Values -}}
{{- $ns := $v.namespace -}}
ingest:
  program: herald-ingest
  redisUser: ingest
  args: []
  values: {{ toJson $v.ingest }}
  health: {{ $v.ingest.port }}
{{- range $v.dispatch.channels }}
dispatch-{{ . }}:
  program: herald-dispatch
  redisUser: dispatch
  args: ["--channel", {{ . | quote }}]
  channel: {{ . }}
  values: {{ toJson $v.dispatch }}
  health: {{ $v.healthPort }}
  group: {{ printf "%s-dispatch-%s" $ns . }}
  topic: {{ printf "%s.notify.%s" $ns . }}
  scaled: true
{{- end }}
fanout:
  program: herald-fanout
  redisUser: fanout
  args: []
  values: {{ toJson $v.fanout }}
  health: {{ $v.healthPort }}
  group: {{ printf "%s-fanout" $ns }}
  topic: {{ printf "%s.campaigns" $ns }}
  scaled: true
retry:
  program: herald-retry
  redisUser: retry
  args: []
  values: {{ toJson $v.retry }}
  health: {{ $v.healthPort }}
metrics:
  program: herald-metrics
  redisUser: metrics
  args: []
  values: {{ toJson $v.metrics }}
  health: {{ $v.metrics.port }}
events:
  program: herald-events
  redisUser: events
  args: []
  values: {{ toJson $v.events }}
  health: {{ $v.healthPort }}
{{- end -}}

{{/* Refuses values that would break a promise of the chart. */}}
{{- define "herald.checks" -}}
{{- $v := .Values -}}
{{- if le (int (mul $v.dispatch.terminationGracePeriodSeconds 1000)) (int $v.dispatch.shutdownGraceMs) -}}
{{- fail "dispatch.terminationGracePeriodSeconds must be longer than dispatch.shutdownGraceMs: the kubelet's SIGKILL would cut the hand-back of in-flight work short" -}}
{{- end -}}
{{- if gt (int $v.dispatch.maxReplicas) (int $v.kafka.partitions) -}}
{{- fail "dispatch.maxReplicas is above kafka.partitions: the extra dispatchers of a channel would idle" -}}
{{- end -}}
{{- if gt (int $v.fanout.maxReplicas) (int $v.kafka.partitions) -}}
{{- fail "fanout.maxReplicas is above kafka.partitions: the extra fan-outs would idle" -}}
{{- end -}}
{{- if ge (int $v.dispatch.lagThreshold) (int $v.fanout.maxLag) -}}
{{- fail "dispatch.lagThreshold must be below fanout.maxLag: fan-out pauses at maxLag, so the dispatchers would never scale out" -}}
{{- end -}}
{{- if and (hasPrefix "sasl" $v.kafka.securityProtocol) (not $v.kafka.saslSecret) -}}
{{- fail "kafka.securityProtocol is sasl_*: set kafka.saslSecret (a Secret with username and password)" -}}
{{- end -}}
{{- if not (has $v.autoscaling.mode (list "keda" "hpa" "none")) -}}
{{- fail "autoscaling.mode is keda, hpa or none" -}}
{{- end -}}
{{- end -}}

{{/* A variable from a key of a Secret. */}}
{{- define "herald.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/* The variables every program gets: Kafka, Redis (its own user), namespace, logs. */}}
{{- define "herald.commonEnv" -}}
{{- $v := .root.Values -}}
- name: HERALD_NAMESPACE
  value: {{ $v.namespace | quote }}
- name: HERALD_LOG_FORMAT
  value: {{ $v.logFormat | quote }}
- name: HERALD_KAFKA_BROKERS
  value: {{ $v.kafka.brokers | quote }}
- name: HERALD_KAFKA_SECURITY_PROTOCOL
  value: {{ $v.kafka.securityProtocol | quote }}
{{- if $v.kafka.saslMechanism }}
- name: HERALD_KAFKA_SASL_MECHANISM
  value: {{ $v.kafka.saslMechanism | quote }}
{{- end }}
{{- if $v.kafka.saslSecret }}
{{ include "herald.secretEnv" (dict "name" "HERALD_KAFKA_SASL_USERNAME" "secret" $v.kafka.saslSecret "key" "username") }}
{{ include "herald.secretEnv" (dict "name" "HERALD_KAFKA_SASL_PASSWORD" "secret" $v.kafka.saslSecret "key" "password") }}
{{- end }}
{{- if $v.kafka.caSecret }}
- name: HERALD_KAFKA_SSL_CA_LOCATION
  value: /run/herald/kafka-ca/ca.crt
{{- end }}
{{- if .redisUser }}
{{ include "herald.secretEnv" (dict "name" "HERALD_REDIS_URL" "secret" $v.redis.urlSecret "key" .redisUser) }}
- name: HERALD_REDIS_CLUSTER
  value: {{ ternary "1" "0" $v.redis.cluster | quote }}
{{- end }}
{{- end -}}
