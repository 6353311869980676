{{/* Labels every object carries. */}}
{{- define "local-path.labels" -}}
app: local-path-provisioner
app.kubernetes.io/name: local-path-provisioner
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "local-path.serviceAccount" -}}
local-path-provisioner-service-account
{{- end -}}
