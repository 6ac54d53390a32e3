{{/* The chart's name, or nameOverride: the app.kubernetes.io/name label (at most 63 characters). */}}
{{- define "edgemesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every object's name: fullnameOverride, or the release name plus the chart's name unless
the release name already contains it, cut at 63 characters as it always was (so an upgrade renames
nothing). Objects whose name must be a DNS label (Services) take "edgemesh.dnsLabelName" instead.
*/}}
{{- define "edgemesh.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "edgemesh.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The fullname plus a suffix, for a name that must be a DNS label of at most 63 characters (a Service,
and what must match one): the fullname is cut only as far as the suffix needs. Called with
(list $ "-suffix").
*/}}
{{- define "edgemesh.dnsLabelName" -}}
{{- $suffix := index . 1 -}}
{{- $prefix := include "edgemesh.fullname" (index . 0) | trunc (int (sub 63 (len $suffix))) | trimSuffix "-" -}}
{{- printf "%s%s" $prefix $suffix -}}
{{- end -}}

{{/* The bundled NATS: its Service, Deployment, and the name its configuration and Secrets derive from. */}}
{{- define "edgemesh.natsName" -}}
{{- include "edgemesh.dnsLabelName" (list . "-nats") -}}
{{- end -}}

{{/* The agents' PriorityClass, when the chart makes one or names one; empty: none. */}}
{{- define "edgemesh.agentPriorityClass" -}}
{{- if .Values.agents.priorityClass.name -}}
{{- .Values.agents.priorityClass.name -}}
{{- else if .Values.agents.priorityClass.create -}}
{{- include "edgemesh.fullname" . }}-agent
{{- end -}}
{{- end -}}

{{/* The namespaces EdgeMeshes live in (meshNamespaces) and the chart's own, each once. */}}
{{- define "edgemesh.meshNamespaces" -}}
{{- append .Values.meshNamespaces .Release.Namespace | uniq | toJson -}}
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
