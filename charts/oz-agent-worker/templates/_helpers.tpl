{{/* The chart name, or nameOverride. */}}
{{- define "oz-agent-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's object names: fullnameOverride, else <release>-<chart> (just <release> when it
contains the chart name). */}}
{{- define "oz-agent-worker.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "oz-agent-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "oz-agent-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "oz-agent-worker.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "oz-agent-worker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "oz-agent-worker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "oz-agent-worker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "oz-agent-worker.apiKeySecretName" -}}
{{- default (include "oz-agent-worker.fullname" .) .Values.warp.apiKeySecret.name }}
{{- end }}

{{/* Where task Jobs run: kubernetesBackend.namespace, else the release namespace. */}}
{{- define "oz-agent-worker.taskNamespace" -}}
{{- default .Release.Namespace .Values.kubernetesBackend.namespace }}
{{- end }}

{{- define "oz-agent-worker.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
