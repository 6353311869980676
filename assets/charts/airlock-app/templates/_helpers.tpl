{{/*
Names. Every object is named <release>-<part>; the installer derives the database
host (<release>-postgresql.<namespace>.svc) from the same rule, so keep them in step
with installer/src/platform/app.rs.
*/}}
{{- define "app.name" -}}
{{- printf "%s-%s" .root.Release.Name .part | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "app.labels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .part }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* The labels the NetworkPolicies and Services select on: stable across upgrades. */}}
{{- define "app.selector" -}}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .part }}
{{- end -}}

{{/* A required value, with the key in the message so the operator knows what to set. */}}
{{- define "app.required" -}}
{{- $v := index . 1 -}}
{{- if not $v -}}
{{- fail (printf "value `%s` is required: %s" (index . 0) (index . 2)) -}}
{{- end -}}
{{- $v -}}
{{- end -}}

{{- define "app.image" -}}
{{- include "app.required" (list (printf "images.%s" .key) (index .root.Values.images .key) "the full image reference the bundle carries (set by the vendor in the bundle spec)") -}}
{{- end -}}

{{- define "app.host" -}}
{{- if .Values.ingress.host -}}
{{- .Values.ingress.host -}}
{{- else -}}
{{- printf "app.%s" (include "app.required" (list "domain" .Values.domain "the platform's base domain; the app is served on app.<domain>")) -}}
{{- end -}}
{{- end -}}

{{/*
Pod Security "restricted": non-root, no privilege escalation, no capabilities,
seccomp RuntimeDefault. uid/gid are set explicitly so an image whose USER is a name
(which the kubelet cannot check) still starts.
*/}}
{{- define "app.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "app.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ .readOnly }}
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The site CA, mounted where Node.js finds it (NODE_EXTRA_CA_CERTS); callers include
these only when ca.configMap is set. */}}
{{- define "app.caEnv" -}}
- name: NODE_EXTRA_CA_CERTS
  value: /etc/airlock/ca/{{ .Values.ca.key }}
{{- end -}}
{{- define "app.caVolumeMount" -}}
- name: site-ca
  mountPath: /etc/airlock/ca
  readOnly: true
{{- end -}}
{{- define "app.caVolume" -}}
- name: site-ca
  configMap:
    name: {{ .Values.ca.configMap }}
    items:
      - key: {{ .Values.ca.key }}
        path: {{ .Values.ca.key }}
{{- end -}}

{{/* Environment both the API and the worker read: database, object storage. */}}
{{- define "app.commonEnv" -}}
- name: NODE_ENV
  value: production
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "app.required" (list "database.credentialsSecret" .Values.database.credentialsSecret "the Secret with the database password and URL") }}
      key: url
- name: S3_ENDPOINT
  value: {{ include "app.required" (list "s3.endpoint" .Values.s3.endpoint "the MinIO S3 endpoint URL") | quote }}
- name: S3_BUCKET
  value: {{ include "app.required" (list "s3.bucket" .Values.s3.bucket "the bucket the app stores its files in") | quote }}
- name: S3_REGION
  value: {{ .Values.s3.region | quote }}
- name: S3_FORCE_PATH_STYLE
  value: "true"
- name: S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "app.required" (list "s3.credentialsSecret" .Values.s3.credentialsSecret "the Secret with the S3 access and secret key") }}
      key: access-key
- name: S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.credentialsSecret }}
      key: secret-key
{{- end -}}
