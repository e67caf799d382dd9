{{- define "ephemera.fullname" -}}
{{- printf "%s" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "ephemera.labels" -}}
app.kubernetes.io/name: ephemera
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ephemera.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* A Deployment of one ephemera component. Arguments: root context,
     component name, subcommand arguments, resources, secret name, and
     optionally the number of replicas (default 1: one at a time, Recreate;
     more need leader election and roll one by one). */}}
{{- define "ephemera.deployment" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $args := index . 2 -}}
{{- $resources := index . 3 -}}
{{- $secret := index . 4 -}}
{{- $replicas := 1 -}}
{{- if gt (len .) 5 }}{{ $replicas = index . 5 | int }}{{ end -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "ephemera.fullname" $root }}-{{ $component }}
  labels:
    {{- include "ephemera.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $component }}
spec:
  replicas: {{ $replicas }}
  {{- if gt $replicas 1 }}
  strategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1, maxSurge: 0}}
  {{- else }}
  strategy: {type: Recreate}
  {{- end }}
  selector:
    matchLabels:
      app.kubernetes.io/instance: {{ $root.Release.Name }}
      app.kubernetes.io/component: {{ $component }}
  template:
    metadata:
      labels:
        {{- include "ephemera.labels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ $component }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    spec:
      serviceAccountName: {{ include "ephemera.fullname" $root }}-{{ $component }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets: {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext: {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ $component }}
          image: {{ include "ephemera.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: {{- toYaml $args | nindent 12 }}
          env:
            - name: EPHEMERA_LOG_FORMAT
              value: {{ $root.Values.controller.logFormat | quote }}
            - name: POD_NAME
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
            - name: POD_NAMESPACE
              valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
          ports:
            - {name: http, containerPort: 8080}
          readinessProbe:
            httpGet: {path: /readyz, port: http}
          livenessProbe:
            httpGet: {path: /healthz, port: http}
            initialDelaySeconds: 10
          resources: {{- toYaml $resources | nindent 12 }}
          securityContext: {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - {name: config, mountPath: /etc/ephemera, readOnly: true}
            {{- if $secret }}
            - {name: secrets, mountPath: /etc/ephemera/secrets, readOnly: true}
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ include "ephemera.fullname" $root }}
        {{- if $secret }}
        - name: secrets
          secret:
            secretName: {{ $secret }}
        {{- end }}
{{- end -}}
