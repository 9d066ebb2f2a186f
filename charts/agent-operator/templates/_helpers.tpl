{{/* The release's full name, used for every object the chart creates. */}}
{{- define "agent-operator.fullname" -}}
{{- if contains "agent-operator" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-agent-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "agent-operator.serviceAccountName" -}}
{{- default (include "agent-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "agent-operator.selectorLabels" -}}
app.kubernetes.io/name: agent-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "agent-operator.labels" -}}
{{ include "agent-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "agent-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
