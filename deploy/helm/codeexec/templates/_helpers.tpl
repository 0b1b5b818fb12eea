{{- define "codeexec.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "codeexec.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "codeexec.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "codeexec.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "codeexec.selectorLabels" -}}
app.kubernetes.io/name: {{ include "codeexec.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "codeexec.labels" -}}
{{ include "codeexec.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "codeexec.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "codeexec.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret with the credentials: the user's, or the one the chart creates. */}}
{{- define "codeexec.authSecret" -}}
{{- if .Values.auth.existingSecret -}}
{{- .Values.auth.existingSecret -}}
{{- else -}}
{{- printf "%s-auth" (include "codeexec.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Settings that cannot work together fail the render with a reason. */}}
{{- define "codeexec.validate" -}}
{{- $b := .Values.storage.backend -}}
{{- if not (has $b (list "local" "s3" "gcs")) -}}
{{- fail (printf "storage.backend must be local, s3 or gcs, not %q" $b) -}}
{{- end -}}
{{- if and (eq $b "local") (or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled) -}}
{{- fail "storage.backend=local keeps session files on one pod: use replicaCount=1 without autoscaling, or storage.backend=s3/gcs" -}}
{{- end -}}
{{- if and (eq $b "s3") (not .Values.storage.s3.bucket) -}}
{{- fail "storage.backend=s3 needs storage.s3.bucket" -}}
{{- end -}}
{{- if and (eq $b "gcs") (not .Values.storage.gcs.bucket) -}}
{{- fail "storage.backend=gcs needs storage.gcs.bucket" -}}
{{- end -}}
{{- $m := .Values.auth.mode -}}
{{- if not (has $m (list "apiKey" "jwt" "none")) -}}
{{- fail (printf "auth.mode must be apiKey, jwt or none, not %q" $m) -}}
{{- end -}}
{{- if and (ne $m "none") (not .Values.auth.existingSecret) (not .Values.auth.createSecret) -}}
{{- fail "auth: set auth.existingSecret (a Secret with the API key / JWT key), or auth.createSecret=true with auth.apiKey, or auth.mode=none" -}}
{{- end -}}
{{- if and .Values.auth.createSecret (eq $m "apiKey") (not .Values.auth.apiKey) -}}
{{- fail "auth.createSecret=true needs auth.apiKey" -}}
{{- end -}}
{{- if and (eq $m "jwt") (not .Values.auth.jwtPublicKeyKey) (not .Values.auth.jwtSecretKey) -}}
{{- fail "auth.mode=jwt needs auth.jwtPublicKeyKey or auth.jwtSecretKey (keys of auth.existingSecret)" -}}
{{- end -}}
{{- end -}}
