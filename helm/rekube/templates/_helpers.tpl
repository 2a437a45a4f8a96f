{{- define "rekube.controllers.name" -}}{{ .Release.Name }}-controllers{{- end -}}
{{- define "rekube.labels" -}}
app.kubernetes.io/name: rekube
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "rekube.nodeAgent.name" -}}{{ .Release.Name }}-node-agent{{- end -}}
{{- /* A Pod Security level from podSecurity.defaults: (list NAME VALUE). */ -}}
{{- define "rekube.podSecurityLevel" -}}
{{- $v := index . 1 -}}
{{- if has $v (list "privileged" "baseline" "restricted") -}}{{ $v }}
{{- else -}}{{ fail (printf "podSecurity.defaults.%s: %q must be one of privileged, baseline, restricted" (index . 0) $v) }}
{{- end -}}
{{- end -}}
{{- /* Pod Security exemptions from podSecurity.exemptions: (list NAME LIST) as a CEL
list of strings inside a single-quoted YAML scalar (JSON strings are CEL strings; a quote
is doubled for YAML). */ -}}
{{- define "rekube.podSecurityExemptions" -}}
{{- $name := index . 0 -}}
{{- $items := list -}}
{{- range (index . 1 | default list) -}}
{{- if not (kindIs "string" .) -}}{{ fail (printf "podSecurity.exemptions.%s: %v is not a string" $name .) }}{{- end -}}
{{- $items = append $items (toJson . | replace "'" "''") -}}
{{- end -}}
[{{ join ", " $items }}]
{{- end -}}
{{- /* A Pod Security version from podSecurity.defaults: (list NAME VALUE). */ -}}
{{- define "rekube.podSecurityVersion" -}}
{{- $v := index . 1 | toString -}}
{{- if or (eq $v "latest") (regexMatch "^v1[.](0|[1-9][0-9]*)$" $v) -}}{{ $v }}
{{- else -}}{{ fail (printf "podSecurity.defaults.%s: %q must be \"latest\" or \"v1.x\"" (index . 0) $v) }}
{{- end -}}
{{- end -}}
{{- /* The controllers' pod selector. */ -}}
{{- define "rekube.controllers.selector" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controllers
{{- end -}}
{{- /* The node agents' pod selector. */ -}}
{{- define "rekube.nodeAgent.selector" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node-agent
{{- end -}}
{{- /* An image reference from an image value: (list IMAGE DEFAULT_TAG), quoted. */ -}}
{{- define "rekube.image" -}}
{{- $image := index . 0 -}}
{{- printf "%s:%s" $image.repository (toString ($image.tag | default (index . 1))) | quote -}}
{{- end -}}
{{- /* A map as key=value pairs joined by commas, keys sorted (--node-labels). */ -}}
{{- define "rekube.keyValues" -}}
{{- $m := . -}}
{{- $pairs := list -}}
{{- range $k := keys $m | sortAlpha -}}
{{- $pairs = append $pairs (printf "%s=%v" $k (index $m $k)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
