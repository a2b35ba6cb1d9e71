{{- define "provisioning.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "provisioning.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "provisioning.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "provisioning.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "provisioning.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ .Values.serviceAccount.name | default (include "provisioning.fullname" .) }}
{{- else -}}
{{ .Values.serviceAccount.name | default "default" }}
{{- end -}}
{{- end -}}

{{/* Settings every process reads: the ConfigMap, and secrets by reference only. */}}
{{- define "provisioning.env" -}}
{{ include "provisioning.databaseEnv" . }}
{{- with include "provisioning.kafkaEnv" . }}
{{ . }}
{{- end }}
{{- end -}}

{{/* The database URL, by reference (not for the topics job, which never touches PostgreSQL). */}}
{{- define "provisioning.databaseEnv" -}}
- name: PROVISIONING_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.urlSecret.name }}
      key: {{ .Values.database.urlSecret.key }}
{{- end -}}

{{/* The Kafka SASL credentials, by reference (not for the migration job). */}}
{{- define "provisioning.kafkaEnv" -}}
{{- if .Values.kafka.saslSecret.name -}}
- name: PROVISIONING_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.saslSecret.name }}
      key: {{ .Values.kafka.saslSecret.usernameKey }}
- name: PROVISIONING_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.saslSecret.name }}
      key: {{ .Values.kafka.saslSecret.passwordKey }}
{{- end }}
{{- end -}}

{{- define "provisioning.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.tlsSecret }}
- name: kafka-tls
  mountPath: /etc/provisioning/kafka-tls
  readOnly: true
{{- end }}
{{- if .Values.routing }}
- name: routing
  mountPath: /etc/provisioning/routing
  readOnly: true
{{- end }}
{{- if .Values.auth.jwksConfigMap }}
- name: jwks
  mountPath: /etc/provisioning/jwks
  readOnly: true
{{- end }}
{{- end -}}

{{- define "provisioning.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- if .Values.kafka.tlsSecret }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tlsSecret }}
{{- end }}
{{- if .Values.routing }}
- name: routing
  configMap:
    name: {{ include "provisioning.fullname" . }}-routing
{{- end }}
{{- if .Values.auth.jwksConfigMap }}
- name: jwks
  configMap:
    name: {{ .Values.auth.jwksConfigMap }}
{{- end }}
{{- end -}}

{{/* The pod-level parts every Deployment and Job shares. */}}
{{- define "provisioning.podCommon" -}}
serviceAccountName: {{ include "provisioning.serviceAccountName" . }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  {{- include "provisioning.volumes" . | nindent 2 }}
{{- end -}}

{{- define "provisioning.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: metrics}
  periodSeconds: 5
  failureThreshold: 3
startupProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: 2
  failureThreshold: 60
{{- end -}}

{{/* The non-secret settings, shared by the ConfigMap and the hook Jobs (which run before the
ConfigMap exists). */}}
{{- define "provisioning.config" -}}
PROVISIONING_KAFKA_BOOTSTRAP_SERVERS: {{ .Values.kafka.bootstrapServers | quote }}
PROVISIONING_KAFKA_SECURITY_PROTOCOL: {{ .Values.kafka.securityProtocol | quote }}
{{- with .Values.kafka.saslMechanism }}
PROVISIONING_KAFKA_SASL_MECHANISM: {{ . | quote }}
{{- end }}
{{- if .Values.kafka.tlsSecret }}
PROVISIONING_KAFKA_SSL_CA_LOCATION: /etc/provisioning/kafka-tls/ca.crt
PROVISIONING_KAFKA_SSL_CERTIFICATE_LOCATION: /etc/provisioning/kafka-tls/tls.crt
PROVISIONING_KAFKA_SSL_KEY_LOCATION: /etc/provisioning/kafka-tls/tls.key
{{- end }}
PROVISIONING_TOPIC_PREFIX: {{ .Values.kafka.topicPrefix | quote }}
{{- with .Values.kafka.replyTopicPattern }}
PROVISIONING_REPLY_TOPIC_PATTERN: {{ . | quote }}
{{- end }}
PROVISIONING_TOPIC_PARTITIONS: {{ .Values.kafka.partitions | quote }}
PROVISIONING_TOPIC_REPLICATION_FACTOR: {{ .Values.kafka.replicationFactor | quote }}
PROVISIONING_TOPIC_MIN_INSYNC_REPLICAS: {{ .Values.kafka.minInsyncReplicas | quote }}
PROVISIONING_REQUIRED_MIN_INSYNC_REPLICAS: {{ .Values.kafka.minInsyncReplicas | quote }}
PROVISIONING_AUTH_ISSUER: {{ .Values.auth.issuer | quote }}
PROVISIONING_AUTH_AUDIENCE: {{ .Values.auth.audience | quote }}
{{- if .Values.auth.jwksConfigMap }}
PROVISIONING_AUTH_JWKS_FILE: /etc/provisioning/jwks/jwks.json
{{- else }}
PROVISIONING_AUTH_JWKS_URL: {{ .Values.auth.jwksUrl | quote }}
{{- end }}
PROVISIONING_API_MAX_WAIT_S: {{ .Values.api.maxWaitSeconds | quote }}
PROVISIONING_METRICS_PORT: {{ .Values.metricsPort | quote }}
{{- if .Values.routing }}
PROVISIONING_ROUTING_FILE: /etc/provisioning/routing/routing.toml
{{- end }}
{{- end -}}

{{/* The label of the headless metrics Services, which the ServiceMonitor selects. */}}
{{- define "provisioning.metricsServiceLabel" -}}
provisioning.io/metrics: "true"
{{- end -}}
