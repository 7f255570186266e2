{{/* The image of the agent and the controller. */}}
{{- define "nodeward.image" -}}
{{- if .Values.image.reference -}}
{{ .Values.image.reference }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The --feature-gates value of one half (names sorted): featureGates, overridden by the
half's own (agent.featureGates or controller.featureGates); empty when no gate is set. Called
with (list $ "agent") or (list $ "controller"). */}}
{{- define "nodeward.featureGates" -}}
{{- $root := index . 0 -}}
{{- $own := get (index $root.Values (index . 1)) "featureGates" | default dict -}}
{{- $all := merge (deepCopy $own) $root.Values.featureGates -}}
{{- $gates := list -}}
{{- range $name, $on := $all -}}
{{- $gates = append $gates (printf "%s=%t" $name $on) -}}
{{- end -}}
{{- join "," $gates -}}
{{- end -}}

{{/* The host directory holding the runtime's socket: agent.runtimeDir, else the runtime's. */}}
{{- define "nodeward.runtimeDir" -}}
{{- $dirs := dict "containerd" "/run/containerd" "cri-o" "/var/run/crio" "cri-dockerd" "/var/run" -}}
{{- .Values.agent.runtimeDir | default (get $dirs .Values.runtime) -}}
{{- end -}}

{{/* "true" when the controller's CloneSetController gate is on (featureGates or
controller.featureGates); empty otherwise. */}}
{{- define "nodeward.clonesetOn" -}}
{{- $all := merge (deepCopy (.Values.controller.featureGates | default dict)) .Values.featureGates -}}
{{- if get $all "CloneSetController" -}}true{{- end -}}
{{- end -}}
