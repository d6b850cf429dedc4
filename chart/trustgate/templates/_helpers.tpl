{{/* The image of every trustgate container. */}}
{{- define "trustgate.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Labels of a component's objects; the selector uses the first two. */}}
{{- define "trustgate.selector" -}}
app.kubernetes.io/name: trustgate-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "trustgate.labels" -}}
{{ include "trustgate.selector" . }}
app.kubernetes.io/part-of: trustgate
app.kubernetes.io/version: {{ .root.Values.image.tag | default .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ .root.Chart.Name }}-{{ .root.Chart.Version }}
{{- end -}}

{{/* The namespaces whose pods never need trust, whatever a policy selects. */}}
{{- define "trustgate.exempt" -}}
{{- $exempt := list "kube-system" .Release.Namespace -}}
{{- range .Values.exemptNamespaces }}{{ $exempt = append $exempt . }}{{ end -}}
{{ $exempt | uniq | join "," }}
{{- end -}}

{{/* What every service that verifies reports is told: the issuer, its keys, and the exempt namespaces. */}}
{{- define "trustgate.trustEnv" -}}
- {name: TRUSTGATE_ISSUER, value: {{ required "issuer.name is required: the attestation authority's iss" .Values.issuer.name | quote }}}
- {name: TRUSTGATE_JWKS, value: /etc/trustgate/issuer/jwks.json}
- {name: TRUSTGATE_NAMESPACE, value: {{ .Release.Namespace }}}
- {name: TRUSTGATE_EXEMPT_NAMESPACE, value: {{ include "trustgate.exempt" . | quote }}}
- {name: TRUSTGATE_SKEW, value: {{ .Values.issuer.skewSeconds | quote }}}
- {name: TRUSTGATE_MAX_LIFETIME, value: {{ .Values.issuer.maxLifetimeSeconds | quote }}}
{{- if .Values.issuer.allowReportsWithoutBootID }}
- {name: TRUSTGATE_ALLOW_REPORTS_WITHOUT_BOOT_ID, value: "true"}
{{- end }}
- {name: TRUSTGATE_TLS_CERT, value: /etc/trustgate/tls/tls.crt}
- {name: TRUSTGATE_TLS_KEY, value: /etc/trustgate/tls/tls.key}
- {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
{{- end -}}

{{- define "trustgate.podSecurity" -}}
securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: {type: RuntimeDefault}}
{{- end -}}

{{- define "trustgate.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
{{- end -}}

{{/* Probes of every HTTPS service: probes need no client certificate. */}}
{{- define "trustgate.probes" -}}
readinessProbe: {httpGet: {path: /readyz, port: https, scheme: HTTPS}, periodSeconds: 2, failureThreshold: 3}
livenessProbe: {httpGet: {path: /healthz, port: https, scheme: HTTPS}, periodSeconds: 10, failureThreshold: 6}
{{- end -}}

{{/* One replica per node where possible. */}}
{{- define "trustgate.spread" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "trustgate.selector" . | nindent 12 }}
{{- end -}}

{{/* The Secret of a service's serving certificate. */}}
{{- define "trustgate.tlsSecret" -}}
trustgate-{{ . }}-tls
{{- end -}}

{{/* The Services that get a serving certificate. */}}
{{- define "trustgate.servedServices" -}}
{{- $services := list "trustgate-webhook" "trustgate-extender" "trustgate-controller" -}}
{{- if .Values.attestation.enabled }}{{ $services = append $services "trustgate-attestation" }}{{ end -}}
{{ join " " $services }}
{{- end -}}
