{{/*
The pod of annex, shared by the StatefulSet (embedded mode) and the Deployment
(etcd and postgres modes). Every file annex reads is mounted read-only under /etc/annex;
only the data directory, the runtime directory (/run/annex, in memory) and /tmp are writable.
*/}}
{{- define "annex.args" -}}
- --mode=aggregated
- --secure-port={{ .Values.containerPort }}
- --tls-cert-file=/etc/annex/tls/tls.crt
- --tls-private-key-file=/etc/annex/tls/tls.key
- --data-dir=/var/lib/annex
- --runtime-dir=/run/annex
- --storage-secret-namespaces={{ join "," .Values.rbac.storageSecretNamespaces }}
- --serving-cert-secret={{ .Release.Namespace }}/{{ include "annex.tlsSecretName" . }}
- --apiservice-namespace={{ .Release.Namespace }}
- --apiservice-service-name={{ include "annex.fullname" . }}
- --apiservice-service-port={{ .Values.service.port }}
- --apiservice-ca-bundle-file={{ include "annex.caFile" . }}
- --apiservice-managed-by={{ include "annex.managedBy" . }}
- --shutdown-delay-duration={{ .Values.shutdown.delaySeconds }}s
- --shutdown-watch-termination-grace-period={{ .Values.shutdown.watchTerminationGraceSeconds }}s
{{- if .Values.metrics.allowUnauthenticated }}
- --authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics
{{- end }}
{{- if eq .Values.storage.mode "embedded" }}
- --embedded-etcd-quota-backend-bytes={{ int64 .Values.storage.embedded.quotaBackendBytes }}
{{- else }}
- --leader-elect
{{- end }}
{{- if eq .Values.storage.mode "etcd" }}
- --etcd-servers={{ join "," .Values.storage.etcd.endpoints }}
- --etcd-prefix={{ .Values.storage.etcd.prefix }}
- --etcd-cafile=/etc/annex/etcd/ca.crt
- --etcd-certfile=/etc/annex/etcd/tls.crt
- --etcd-keyfile=/etc/annex/etcd/tls.key
{{- end }}
{{- if eq .Values.storage.mode "postgres" }}
- --postgres-dsn-file=/etc/annex/postgres/{{ .Values.storage.postgres.dsnSecret.key }}
- --postgres-compact-interval={{ .Values.storage.postgres.compactInterval }}
- --postgres-max-connections={{ .Values.storage.postgres.maxConnections }}
{{- if .Values.storage.postgres.insecure }}
- --storage-insecure
{{- end }}
{{- end }}
{{- if .Values.audit.enabled }}
- --audit-policy-file=/etc/annex/audit/policy.yaml
- --audit-log-path=-
- --audit-log-format=json
{{- end }}
- --v={{ .Values.logVerbosity }}
{{- with .Values.extraArgs }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "annex.podTemplate" -}}
metadata:
  labels:
    {{- include "annex.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    kubectl.kubernetes.io/default-container: annex-apiserver
    {{- /* A new CA restarts annex: it reads the CA file once, at start. */}}
    {{- if eq .Values.tls.source "existingSecret" }}
    checksum/ca: {{ .Values.tls.existingSecret.caBundle | sha256sum }}
    {{- end }}
    {{- if .Values.audit.enabled }}
    checksum/audit-policy: {{ .Values.audit.policy | sha256sum }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "annex.serviceAccountName" . }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  # Long enough for --shutdown-delay-duration and for watches to drain (the
  # chart checks it): annex is never killed with requests in flight.
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
  - name: annex-apiserver
    image: {{ include "annex.image" . }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    command: [/annex-apiserver]
    args:
      {{- include "annex.args" . | nindent 6 }}
    {{- with .Values.extraEnv }}
    env:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    ports:
    - name: https
      containerPort: {{ .Values.containerPort }}
      protocol: TCP
    # /livez, /readyz and /healthz need no credentials (annex's default
    # --authorization-always-allow-paths). /readyz fails from the moment annex
    # is told to stop, so the Service drops the pod before it stops serving.
    startupProbe:
      httpGet: {path: /livez, port: https, scheme: HTTPS}
      periodSeconds: 5
      failureThreshold: 60
    readinessProbe:
      httpGet: {path: /readyz, port: https, scheme: HTTPS}
      periodSeconds: 5
      failureThreshold: 2
    # A store that lost its quorum fails /readyz (the pod leaves the
    # Service) but not liveness: restarting annex would not bring the store
    # back, and every replica would restart at once.
    livenessProbe:
      httpGet: {path: "/livez?exclude=etcd", port: https, scheme: HTTPS}
      periodSeconds: 10
      failureThreshold: 6
    resources:
      {{- toYaml .Values.resources | nindent 6 }}
    securityContext:
      {{- toYaml .Values.securityContext | nindent 6 }}
    volumeMounts:
    - name: data
      mountPath: /var/lib/annex
    - name: tmp
      mountPath: /tmp
    - name: run
      mountPath: /run/annex
    - name: tls
      mountPath: /etc/annex/tls
      readOnly: true
    {{- if eq .Values.tls.source "existingSecret" }}
    - name: ca
      mountPath: /etc/annex/ca
      readOnly: true
    {{- end }}
    {{- if eq .Values.storage.mode "etcd" }}
    - name: etcd-tls
      mountPath: /etc/annex/etcd
      readOnly: true
    {{- end }}
    {{- if eq .Values.storage.mode "postgres" }}
    - name: postgres
      mountPath: /etc/annex/postgres
      readOnly: true
    {{- end }}
    {{- if .Values.audit.enabled }}
    - name: audit
      mountPath: /etc/annex/audit
      readOnly: true
    {{- end }}
  volumes:
  {{- if ne .Values.storage.mode "embedded" }}
  # Data lives in the external store; annex keeps nothing here that must
  # survive a restart.
  - name: data
    emptyDir: {}
  {{- end }}
  - name: tmp
    emptyDir: {}
  # --runtime-dir: the client keys of StorageBackends' etcd clusters and the
  # sockets of kine, in memory, never on the data's volume.
  - name: run
    emptyDir:
      medium: Memory
      sizeLimit: 16Mi
  - name: tls
    secret:
      secretName: {{ include "annex.tlsSecretName" . }}
  {{- if eq .Values.tls.source "existingSecret" }}
  - name: ca
    configMap:
      name: {{ include "annex.fullname" . }}-ca
  {{- end }}
  {{- if eq .Values.storage.mode "etcd" }}
  - name: etcd-tls
    secret:
      secretName: {{ .Values.storage.etcd.tls.secretName }}
  {{- end }}
  {{- if eq .Values.storage.mode "postgres" }}
  # Only the DSN's key is mounted, with owner-only permissions: it may hold a password.
  - name: postgres
    secret:
      secretName: {{ .Values.storage.postgres.dsnSecret.name }}
      defaultMode: 0400
      items:
      - key: {{ .Values.storage.postgres.dsnSecret.key }}
        path: {{ .Values.storage.postgres.dsnSecret.key }}
  {{- end }}
  {{- if .Values.audit.enabled }}
  - name: audit
    configMap:
      name: {{ include "annex.fullname" . }}-audit
  {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  affinity:
    {{- if .Values.affinity }}
    {{- toYaml .Values.affinity | nindent 4 }}
    {{- else }}
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "annex.selectorLabels" . | nindent 14 }}
    {{- end }}
  topologySpreadConstraints:
    {{- if .Values.topologySpreadConstraints }}
    {{- toYaml .Values.topologySpreadConstraints | nindent 4 }}
    {{- else }}
    - maxSkew: 1
      topologyKey: topology.kubernetes.io/zone
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- include "annex.selectorLabels" . | nindent 10 }}
    {{- end }}
{{- end }}
