{{/* Each program's own variables; (dict "root" $ "w" workload). */}}

{{- define "herald.env.herald-ingest" -}}
{{- $v := .root.Values -}}
{{- $s := $v.ingest.secret -}}
- name: HERALD_HTTP_ADDR
  value: {{ printf "0.0.0.0:%v" $v.ingest.port | quote }}
- name: HERALD_API_KEYS_FILE
  value: /run/herald/keys/api-keys.toml
{{ include "herald.secretEnv" (dict "name" "HERALD_RECEIPT_SECRETS" "secret" $s "key" "receipt-secrets") }}
{{ include "herald.secretEnv" (dict "name" "HERALD_JWT_SECRET" "secret" $s "key" "jwt-secret") }}
{{ include "herald.secretEnv" (dict "name" "HERALD_UNSUBSCRIBE_SECRET" "secret" $s "key" "unsubscribe-secret") }}
{{ include "herald.secretEnv" (dict "name" "HERALD_JWT_ADMIN_SECRET" "secret" $s "key" "jwt-admin-secret" "optional" true) }}
{{ include "herald.secretEnv" (dict "name" "HERALD_TWILIO_AUTH_TOKEN" "secret" $s "key" "twilio-auth-token" "optional" true) }}
{{ include "herald.secretEnv" (dict "name" "HERALD_WHATSAPP_APP_SECRET" "secret" $s "key" "whatsapp-app-secret" "optional" true) }}
{{ include "herald.secretEnv" (dict "name" "HERALD_WHATSAPP_VERIFY_TOKEN" "secret" $s "key" "whatsapp-verify-token" "optional" true) }}
- name: HERALD_PUBLIC_URL
  value: {{ $v.ingest.publicUrl | quote }}
- name: HERALD_PUBLIC_ROUTES
  value: {{ $v.ingest.publicRoutes | quote }}
- name: HERALD_PUBLIC_NETWORKS
  value: {{ $v.ingest.publicNetworks | quote }}
- name: HERALD_EMAIL_SENDER_DOMAINS
  value: {{ $v.ingest.emailSenderDomains | quote }}
{{- if $v.webhookAllowNetworks }}
- name: HERALD_WEBHOOK_ALLOW_NETWORKS
  value: {{ $v.webhookAllowNetworks | quote }}
{{- end }}
{{- end -}}

{{- define "herald.env.herald-dispatch" -}}
{{- $v := .root.Values -}}
- name: HERALD_HEALTH_ADDR
  value: {{ printf "0.0.0.0:%v" $v.healthPort | quote }}
- name: HERALD_SHUTDOWN_GRACE_MS
  value: {{ $v.dispatch.shutdownGraceMs | quote }}
{{- if $v.dispatch.providerUrl }}
- name: HERALD_PROVIDER_URL
  value: {{ $v.dispatch.providerUrl | quote }}
{{- end }}
{{ include "herald.secretEnv" (dict "name" "HERALD_PROVIDER_API_KEY" "secret" $v.dispatch.providerSecret "key" "api-key") }}
{{- if $v.dispatch.providersSecret }}
- name: HERALD_PROVIDERS
  value: /run/herald/providers/providers.toml
{{- end }}
{{- if and (eq .w.channel "email") $v.dispatch.smtpSecret }}
{{ include "herald.secretEnv" (dict "name" "HERALD_SMTP_URL" "secret" $v.dispatch.smtpSecret "key" "smtp-url") }}
{{- end }}
{{- if and (eq .w.channel "email") $v.dispatch.emailFrom }}
- name: HERALD_EMAIL_FROM
  value: {{ $v.dispatch.emailFrom | quote }}
{{- end }}
{{- if eq .w.channel "email" }}
{{ include "herald.secretEnv" (dict "name" "HERALD_UNSUBSCRIBE_SECRET" "secret" $v.ingest.secret "key" "unsubscribe-secret") }}
- name: HERALD_PUBLIC_URL
  value: {{ $v.ingest.publicUrl | quote }}
{{- end }}
{{- end -}}

{{- define "herald.env.herald-fanout" -}}
- name: HERALD_HEALTH_ADDR
  value: {{ printf "0.0.0.0:%v" .root.Values.healthPort | quote }}
- name: HERALD_FANOUT_MAX_LAG
  value: {{ .root.Values.fanout.maxLag | quote }}
{{- end -}}

{{- define "herald.env.herald-retry" -}}
- name: HERALD_HEALTH_ADDR
  value: {{ printf "0.0.0.0:%v" .root.Values.healthPort | quote }}
{{- end -}}

{{- define "herald.env.herald-events" -}}
{{- $v := .root.Values -}}
- name: HERALD_HEALTH_ADDR
  value: {{ printf "0.0.0.0:%v" $v.healthPort | quote }}
- name: HERALD_HISTORY_RETENTION_DAYS
  value: {{ $v.events.historyRetentionDays | quote }}
- name: HERALD_WEBHOOK_RETRY_HOURS
  value: {{ $v.events.webhookRetryHours | quote }}
{{- if $v.webhookAllowNetworks }}
- name: HERALD_WEBHOOK_ALLOW_NETWORKS
  value: {{ $v.webhookAllowNetworks | quote }}
{{- end }}
{{- end -}}

{{- define "herald.env.herald-metrics" -}}
- name: HERALD_METRICS_ADDR
  value: {{ printf "0.0.0.0:%v" .root.Values.metrics.port | quote }}
- name: HERALD_API_KEYS_FILE
  value: /run/herald/keys/api-keys.toml
{{- end -}}
