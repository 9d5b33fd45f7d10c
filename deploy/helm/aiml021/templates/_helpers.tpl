{{/*
Object names: <fullname>-gateway, <fullname>-triton, <fullname>-minio. A release named "aiml021"
(the one the docs install) gives the same names as deploy/k8s. Truncated to 40 so the longest
suffix ("-gateway-metrics") still fits a 63-character DNS label.
*/}}
{{- define "aiml021.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* What a Service, PDB or NetworkPolicy selects. Usage: include "aiml021.selector" (list . "gateway") */}}
{{- define "aiml021.selector" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: aiml021-{{ index . 1 }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
{{- end -}}

{{/* Every object's labels. Usage: include "aiml021.labels" (list . "gateway" "gateway") */}}
{{- define "aiml021.labels" -}}
{{- $ctx := index . 0 -}}
{{ include "aiml021.selector" (list $ctx (index . 1)) }}
app.kubernetes.io/component: {{ index . 2 }}
app.kubernetes.io/part-of: aiml021
app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" $ctx.Chart.Name $ctx.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* repository:tag, or repository@digest when a digest is pinned. Usage: include "aiml021.image" (list .Values.gateway.image $.Chart.AppVersion) */}}
{{- define "aiml021.image" -}}
{{- $img := index . 0 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default (index . 1) $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* Secret names: the value given, else <fullname>-<default suffix>. */}}
{{- define "aiml021.tlsSecret" -}}
{{- default (printf "%s-gateway-tls" (include "aiml021.fullname" .)) .Values.tls.secretName -}}
{{- end -}}
{{- define "aiml021.privacySecret" -}}
{{- default (printf "%s-gateway-privacy" (include "aiml021.fullname" .)) .Values.privacy.secretName -}}
{{- end -}}
{{- define "aiml021.storesSecret" -}}
{{- default (printf "%s-gateway-stores" (include "aiml021.fullname" .)) .Values.stores.secretName -}}
{{- end -}}
{{- define "aiml021.signingSecret" -}}
{{- default (printf "%s-bundle-signing" (include "aiml021.fullname" .)) .Values.bundleSigning.secretName -}}
{{- end -}}
{{- define "aiml021.s3Secret" -}}
{{- default (printf "%s-minio" (include "aiml021.fullname" .)) .Values.artifacts.credentials.secretName -}}
{{- end -}}

{{/* The S3 endpoint bundles and Triton's model repository are read from. */}}
{{- define "aiml021.s3Endpoint" -}}
{{- if .Values.artifacts.endpoint -}}
{{- .Values.artifacts.endpoint -}}
{{- else if .Values.minio.enabled -}}
{{- printf "http://%s-minio:%d" (include "aiml021.fullname" .) (int .Values.minio.port) -}}
{{- end -}}
{{- end -}}

{{/* host:port of Triton's gRPC endpoint as the gateway dials it. */}}
{{- define "aiml021.tritonUrl" -}}
{{- if .Values.triton.enabled -}}
{{- printf "%s-triton:%d" (include "aiml021.fullname" .) (int .Values.triton.ports.grpc) -}}
{{- else -}}
{{- .Values.triton.url -}}
{{- end -}}
{{- end -}}

{{/* AWS_* variables of a container reading the bucket. */}}
{{- define "aiml021.s3Env" -}}
{{- if .Values.artifacts.credentials.enabled }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "aiml021.s3Secret" . }}
      key: access-key
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "aiml021.s3Secret" . }}
      key: secret-key
{{- end }}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.artifacts.region | quote }}
{{- end -}}

{{/*
Cross-field rules JSON schema cannot express; each fails the render with a message naming the
values to change.
*/}}
{{- define "aiml021.checks" -}}
{{- $a := .Values.autoscaling -}}
{{- if and $a.enabled (gt (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- fail (printf "autoscaling.minReplicas (%d) must not exceed autoscaling.maxReplicas (%d)" (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- end -}}
{{- if and $a.enabled $a.keda.enabled (lt (int $a.keda.fallback.replicas) (int $a.minReplicas)) -}}
{{- fail (printf "autoscaling.keda.fallback.replicas (%d) must be at least autoscaling.minReplicas (%d): when Prometheus cannot be read KEDA would scale below the floor" (int $a.keda.fallback.replicas) (int $a.minReplicas)) -}}
{{- end -}}
{{- $written := "models_dir|backend|drain_grace_s|server|metrics|rest|tls|triton|stores|artifacts" -}}
{{- if regexMatch (printf "(?m)^\\s*\\[?\\s*(%s)\\b" $written) .Values.gateway.extraConfig -}}
{{- fail (printf "gateway.extraConfig sets %q, which the chart writes from its values: change that value instead (a second [table] or key would stop the gateway at start-up)" (regexFind (printf "(%s)" $written) (regexFind (printf "(?m)^\\s*\\[?\\s*(%s)\\b" $written) .Values.gateway.extraConfig))) -}}
{{- end -}}
{{- if le (int .Values.gateway.terminationGracePeriodSeconds) (int (ceil .Values.gateway.drainGraceSeconds)) -}}
{{- fail (printf "gateway.terminationGracePeriodSeconds (%d) must exceed gateway.drainGraceSeconds (%v): the kubelet would kill the gateway before its sessions drain" (int .Values.gateway.terminationGracePeriodSeconds) .Values.gateway.drainGraceSeconds) -}}
{{- end -}}
{{- end -}}
