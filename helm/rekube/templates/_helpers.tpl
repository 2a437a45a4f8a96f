{{- define "rekube.controllers.name" -}}{{ .Release.Name }}-controllers{{- end -}}
{{- define "rekube.labels" -}}
app.kubernetes.io/name: rekube
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "rekube.nodeAgent.name" -}}{{ .Release.Name }}-node-agent{{- end -}}
