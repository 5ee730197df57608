{{- define "rgo.name" -}}realtime-gateway-operator{{- end -}}

{{- define "rgo.fullname" -}}
{{- if contains "realtime-gateway-operator" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-realtime-gateway-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "rgo.labels" -}}
app.kubernetes.io/name: {{ include "rgo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "rgo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rgo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "rgo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "rgo.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}
