{{/* The image of the agent and the controller. */}}
{{- define "nodeward.image" -}}
{{- if .Values.image.reference -}}
{{ .Values.image.reference }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The --feature-gates value (names sorted), empty when no gate is set. */}}
{{- define "nodeward.featureGates" -}}
{{- $gates := list -}}
{{- range $name, $on := .Values.featureGates -}}
{{- $gates = append $gates (printf "%s=%t" $name $on) -}}
{{- end -}}
{{- join "," $gates -}}
{{- end -}}

{{/* The host directory holding the runtime's socket: agent.runtimeDir, else the runtime's. */}}
{{- define "nodeward.runtimeDir" -}}
{{- $dirs := dict "containerd" "/run/containerd" "cri-o" "/var/run/crio" "cri-dockerd" "/var/run" -}}
{{- .Values.agent.runtimeDir | default (get $dirs .Values.runtime) -}}
{{- end -}}
