{{/* Names, labels and the choices every template shares. */}}

{{- define "annex.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "annex.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "annex.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "annex.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "annex.selectorLabels" -}}
app.kubernetes.io/name: {{ include "annex.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "annex.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "annex.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "annex.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "annex.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The value of annex.dev/managed-by on the APIServices of this install
(--apiservice-managed-by): <namespace>.<fullname>, which no other install in
the cluster has. A label value holds at most 63 characters: a longer one keeps
a readable prefix and ends with a hash of the whole.
*/}}
{{- define "annex.managedBy" -}}
{{- $value := printf "%s.%s" .Release.Namespace (include "annex.fullname" .) }}
{{- if gt (len $value) 63 }}
{{- $value = printf "%s-%s" (regexReplaceAll "[-.]+$" (trunc 54 $value) "") (sha256sum $value | trunc 8) }}
{{- end }}
{{- $value }}
{{- end }}

{{/* The name the aggregator verifies annex's certificate for. */}}
{{- define "annex.serviceHost" -}}
{{ include "annex.fullname" . }}.{{ .Release.Namespace }}.svc
{{- end }}

{{- define "annex.tlsSecretName" -}}
{{- if eq .Values.tls.source "existingSecret" }}
{{- required "tls.existingSecret.name is required when tls.source is existingSecret" .Values.tls.existingSecret.name }}
{{- else }}
{{- include "annex.fullname" . }}-tls
{{- end }}
{{- end }}

{{/* The cert-manager Certificate whose CA is injected into the APIService. */}}
{{- define "annex.certificateName" -}}
{{ include "annex.fullname" . }}-serving
{{- end }}

{{/*
Where the CA that verifies annex's serving certificate is mounted: ca.crt of
the serving Secret, or of the chart's ConfigMap for an existing Secret.
*/}}
{{- define "annex.caFile" -}}
{{- if eq .Values.tls.source "existingSecret" -}}
/etc/annex/ca/ca.crt
{{- else -}}
/etc/annex/tls/ca.crt
{{- end }}
{{- end }}

{{/* Whether the workload is a Deployment (etcd, postgres) or a StatefulSet (embedded). */}}
{{- define "annex.replicas" -}}
{{- if eq .Values.storage.mode "embedded" }}1{{ else }}{{ .Values.replicas }}{{ end }}
{{- end }}

{{- define "annex.image" -}}
{{- $repo := required "image.repository is required: the annex-apiserver image to run" .Values.image.repository }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Refuses values that the schema cannot express. Every template includes it, so
that `helm template -s` of any one file refuses them too.
*/}}
{{- define "annex.validate" -}}
{{- if eq .Values.storage.mode "etcd" }}
{{- if not .Values.storage.etcd.endpoints }}
{{- fail "storage.etcd.endpoints is required when storage.mode is etcd" }}
{{- end }}
{{- if not .Values.storage.etcd.tls.secretName }}
{{- fail "storage.etcd.tls.secretName is required when storage.mode is etcd (a Secret with ca.crt, tls.crt and tls.key)" }}
{{- end }}
{{- end }}
{{- if and (eq .Values.tls.source "existingSecret") (not (contains "-----BEGIN CERTIFICATE-----" .Values.tls.existingSecret.caBundle)) }}
{{- fail "tls.existingSecret.caBundle must hold the PEM CA certificate that verifies the Secret's tls.crt: the APIService always carries a caBundle" }}
{{- end }}
{{- range .Values.rbac.apiServiceGroups }}
{{- $group := trimPrefix "*." . }}
{{- if or (eq $group "k8s.io") (hasSuffix ".k8s.io" $group) (eq $group "kubernetes.io") (hasSuffix ".kubernetes.io" $group) (eq $group "annex.dev") (hasSuffix ".annex.dev" $group) }}
{{- fail (printf "rbac.apiServiceGroups: %s is reserved (groups under k8s.io and kubernetes.io are Kubernetes' own, annex.dev is annex's), and annex never registers it" .) }}
{{- end }}
{{- end }}
{{- $needed := add .Values.shutdown.delaySeconds .Values.shutdown.watchTerminationGraceSeconds 5 }}
{{- if lt (int .Values.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least shutdown.delaySeconds + shutdown.watchTerminationGraceSeconds + 5 (%d), or the kubelet kills annex before its watches drain" (int .Values.terminationGracePeriodSeconds) (int $needed)) }}
{{- end }}
{{- end }}
