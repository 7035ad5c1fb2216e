{{/* Chart name, truncated to the 63 characters DNS names allow. */}}
{{- define "nbd-server.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. The headless Service adds "-headless", so keep room for it: pod DNS
names are <fullname>-<ordinal>.<fullname>-headless.
*/}}
{{- define "nbd-server.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "nbd-server.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride }}
{{- end }}

{{- define "nbd-server.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nbd-server.labels" -}}
helm.sh/chart: {{ include "nbd-server.chart" . }}
{{ include "nbd-server.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nbd-server
{{- end }}

{{/* Selector labels: immutable on a StatefulSet, so only name and instance. */}}
{{- define "nbd-server.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nbd-server.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "nbd-server.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nbd-server.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "nbd-server.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "nbd-server.headlessServiceName" -}}
{{- printf "%s-headless" (include "nbd-server.fullname" .) }}
{{- end }}

{{/* Where the Secret with the TLS certificate is mounted. */}}
{{- define "nbd-server.tlsMountPath" -}}
/etc/nbd-server/tls
{{- end }}

{{/* Where the rendered application.yaml is mounted. */}}
{{- define "nbd-server.configMountPath" -}}
/etc/nbd-server/config
{{- end }}

{{/* Grace period: preStop sleep, then the NBD drain (one shutdown phase), plus a margin. */}}
{{- define "nbd-server.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add .Values.shutdown.preStopSleepSeconds .Values.shutdown.timeoutSeconds 15 }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
The application configuration, as YAML: NBD listener, exports, TLS bundle, management port,
probes and shutdown timing, then .Values.config deep-merged over it.
*/}}
{{- define "nbd-server.applicationConfig" -}}
{{- $v := .Values }}
{{- $server := dict
  "address" "0.0.0.0"
  "port" (int $v.nbd.port)
  "max-connections" (int $v.nbd.maxConnections)
  "max-in-flight" (int $v.nbd.maxInFlight)
  "max-payload" $v.nbd.maxPayload
  "handshake-timeout" $v.nbd.handshakeTimeout
}}
{{- if $v.nbd.allowedAddresses }}
{{- $_ := set $server "allowed-addresses" (join "," $v.nbd.allowedAddresses) }}
{{- end }}
{{- if $v.unixSocket.enabled }}
{{- $_ := set $server "unix-socket" $v.unixSocket.path }}
{{- $_ := set $server "unix-socket-permissions" (toString $v.unixSocket.permissions) }}
{{- end }}
{{- $exports := dict }}
{{- range $name, $e := $v.exports }}
{{- if $e }}
{{- /* Without a type the entry is the policy of an ExportBackend bean of that name. */}}
{{- $storage := list }}
{{- if $e.size }}{{ $storage = append $storage "size" }}{{ end }}
{{- if $e.path }}{{ $storage = append $storage "path" }}{{ end }}
{{- if not (kindIs "invalid" $e.eventLoopIo) }}{{ $storage = append $storage "eventLoopIo" }}{{ end }}
{{- if and (not $e.type) $storage }}
{{- fail (printf "exports.%s sets %s: storage keys only apply to exports with a type (memory or file); without a type the entry sets the policy (readOnly, description, block sizes, multiConn, allowedAddresses) of the application's ExportBackend bean named %q" $name (join ", " $storage) $name) }}
{{- end }}
{{- if and (eq (toString $e.type) "memory") (or $e.path (not (kindIs "invalid" $e.eventLoopIo))) }}
{{- fail (printf "exports.%s is a memory export: path and eventLoopIo only apply to type file" $name) }}
{{- end }}
{{- $out := dict }}
{{- if $e.type }}{{ $_ := set $out "type" $e.type }}{{ end }}
{{- if $e.size }}{{ $_ := set $out "size" (toString $e.size) }}{{ end }}
{{- if $e.path }}
{{- if hasPrefix "/" $e.path }}
{{- $_ := set $out "path" $e.path }}
{{- else }}
{{- $_ := set $out "path" (printf "%s/%s" (trimSuffix "/" $v.persistence.mountPath) $e.path) }}
{{- end }}
{{- end }}
{{- if not (kindIs "invalid" $e.readOnly) }}{{ $_ := set $out "read-only" $e.readOnly }}{{ end }}
{{- if $e.description }}{{ $_ := set $out "description" $e.description }}{{ end }}
{{- if not (kindIs "invalid" $e.eventLoopIo) }}{{ $_ := set $out "event-loop-io" $e.eventLoopIo }}{{ end }}
{{- if $e.minimumBlockSize }}{{ $_ := set $out "minimum-block-size" (toString $e.minimumBlockSize) }}{{ end }}
{{- if $e.preferredBlockSize }}{{ $_ := set $out "preferred-block-size" (toString $e.preferredBlockSize) }}{{ end }}
{{- if $e.multiConn }}{{ $_ := set $out "multi-conn" $e.multiConn }}{{ end }}
{{- if $e.allowedAddresses }}{{ $_ := set $out "allowed-addresses" (join "," $e.allowedAddresses) }}{{ end }}
{{- $_ := set $exports $name $out }}
{{- end }}
{{- end }}
{{- $spring := dict "lifecycle" (dict "timeout-per-shutdown-phase" (printf "%ds" (int $v.shutdown.timeoutSeconds))) }}
{{- if $v.tls.enabled }}
{{- $dir := include "nbd-server.tlsMountPath" . }}
{{- $keystore := dict
  "certificate" (printf "file:%s/%s" $dir $v.tls.certificateKey)
  "private-key" (printf "file:%s/%s" $dir $v.tls.privateKeyKey)
}}
{{- $pem := dict "keystore" $keystore "reload-on-update" $v.tls.reloadOnUpdate }}
{{- if $v.tls.caKey }}
{{- $_ := set $pem "truststore" (dict "certificate" (printf "file:%s/%s" $dir $v.tls.caKey)) }}
{{- end }}
{{- $_ := set $spring "ssl" (dict "bundle" (dict "pem" (dict $v.tls.bundleName $pem))) }}
{{- $_ := set $server "ssl" (dict "bundle" $v.tls.bundleName "mode" $v.tls.mode "client-auth" $v.tls.clientAuth) }}
{{- end }}
{{- $management := dict
  "server" (dict "port" (int $v.management.port))
  "endpoints" (dict "web" (dict "exposure" (dict "include" (join "," $v.management.exposure))))
  "endpoint" (dict "health" (dict
      "probes" (dict "enabled" true)
      "group" (dict "readiness" (dict "include" "readinessState,nbd"))))
}}
{{- $config := dict
  "nbd" (dict "server" $server "exports" $exports)
  "server" (dict "port" (int $v.httpPort) "shutdown" "graceful")
  "management" $management
  "spring" $spring
}}
{{- toYaml (mustMergeOverwrite $config (deepCopy $v.config)) }}
{{- end }}

{{/* An emptyDir source as flow YAML, without empty fields ({} when none are set). */}}
{{- define "nbd-server.emptyDir" -}}
{{- $out := dict }}
{{- range $k, $v := . }}
{{- if $v }}{{ $_ := set $out $k $v }}{{ end }}
{{- end }}
{{- toJson $out }}
{{- end }}
