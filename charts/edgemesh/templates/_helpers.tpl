{{/* The chart's name, or nameOverride: the app.kubernetes.io/name label. */}}
{{- define "edgemesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every object's name: fullnameOverride, or the release name plus the chart's name unless
the release name already contains it. At most 40 characters, so that the longest suffix
(-operator-metrics) still makes a Service name of at most 63.
*/}}
{{- define "edgemesh.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "edgemesh.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "edgemesh.labels" -}}
app.kubernetes.io/name: {{ include "edgemesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: edgemesh
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "edgemesh.operatorSelector" -}}
app.kubernetes.io/name: {{ include "edgemesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "edgemesh.natsSelector" -}}
app.kubernetes.io/name: {{ include "edgemesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: nats
{{- end -}}

{{/*
The EdgeMesh image, for the operator and (through EDGEMESH_OPERATOR_AGENT_IMAGE) every agent:
repository@digest when a digest is set, else repository:tag, the tag defaulting to the appVersion.
*/}}
{{- define "edgemesh.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* imagePullSecrets' names, comma-separated: EDGEMESH_OPERATOR_IMAGE_PULL_SECRETS. */}}
{{- define "edgemesh.pullSecretNames" -}}
{{- $names := list -}}
{{- range .Values.imagePullSecrets -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}
