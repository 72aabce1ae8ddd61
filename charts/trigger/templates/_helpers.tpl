{{/* Names and labels. */}}
{{- define "trigger.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "trigger.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "trigger.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trigger.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "trigger.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "trigger.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "trigger.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "trigger.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Cluster-scoped objects carry the namespace: one release name may be used in several. */}}
{{- define "trigger.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "trigger.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* What the daemon will use; each is "true" or "". */}}
{{- define "trigger.kubernetesSink" -}}
{{- if eq .Values.sink "kubernetes" -}}true{{- end -}}
{{- end -}}

{{- define "trigger.leaderEnabled" -}}
{{- if kindIs "invalid" .Values.leader.enabled -}}
{{- if gt (int .Values.replicas) 1 -}}true{{- end -}}
{{- else if .Values.leader.enabled -}}true{{- end -}}
{{- end -}}

{{- define "trigger.kubernetesState" -}}
{{- if or (eq .Values.state "kubernetes") (hasPrefix "kubernetes:" .Values.state) -}}true{{- end -}}
{{- end -}}

{{/* The daemon's template cache watches WorkflowTemplates in the workflow namespaces, and
     ClusterWorkflowTemplates only when a rule refers to one (clusterWorkflowTemplates). */}}
{{- define "trigger.checkTemplates" -}}
{{- if and .Values.checkTemplates (include "trigger.kubernetesSink" .) -}}true{{- end -}}
{{- end -}}

{{/* Queues (`kind: Queue` in the rules): the leader keeps the semaphore ConfigMap
     trigger-queues in the workflow namespaces. `queues: null` looks for a line
     `kind: Queue` in the inline rule files; an existing rules ConfigMap cannot be read
     here: set `queues: true`. */}}
{{- define "trigger.queues" -}}
{{- if include "trigger.kubernetesSink" . -}}
{{- if kindIs "invalid" .Values.queues -}}
{{- range $file, $text := .Values.rules.files -}}
{{- if regexMatch "(?m)^kind:[ \t]*[\"']?Queue[\"']?[ \t]*(#.*)?$" $text -}}true{{- end -}}
{{- end -}}
{{- else if .Values.queues -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{- define "trigger.leaseName" -}}
{{- default (include "trigger.fullname" .) .Values.leader.leaseName -}}
{{- end -}}

{{/* The state ConfigMap: "NAMESPACE/NAME". */}}
{{- define "trigger.stateConfigMap" -}}
{{- if hasPrefix "kubernetes:" .Values.state -}}
{{- $ref := trimPrefix "kubernetes:" .Values.state -}}
{{- if ne (len (splitList "/" $ref)) 2 -}}
{{- fail (printf "state %q: expected kubernetes, kubernetes:NAMESPACE/NAME or file:PATH" .Values.state) -}}
{{- end -}}
{{- $ref -}}
{{- else -}}
{{- printf "%s/%s" .Release.Namespace (default (printf "%s-state" (include "trigger.fullname" .)) .Values.stateConfigMap) -}}
{{- end -}}
{{- end -}}

{{- define "trigger.stateSpec" -}}
{{- if include "trigger.kubernetesState" . -}}
{{- printf "kubernetes:%s" (include "trigger.stateConfigMap" .) -}}
{{- else if hasPrefix "file:" .Values.state -}}
{{- .Values.state -}}
{{- else -}}
{{- fail (printf "state %q: expected kubernetes, kubernetes:NAMESPACE/NAME or file:PATH" .Values.state) -}}
{{- end -}}
{{- end -}}

{{- define "trigger.workflowNamespaces" -}}
{{- toJson (default (list .Release.Namespace) .Values.workflowNamespaces | uniq) -}}
{{- end -}}

{{/* Where the workflow source watches finished Workflows: namespaces, or "*" for all. */}}
{{- define "trigger.watchedNamespaces" -}}
{{- if include "trigger.kubernetesSink" . -}}
{{- toJson (.Values.workflowSource.namespaces | default list | uniq) -}}
{{- else -}}
{{- toJson list -}}
{{- end -}}
{{- end -}}

{{- define "trigger.watchesAllNamespaces" -}}
{{- if has "*" (include "trigger.watchedNamespaces" . | fromJsonArray) -}}true{{- end -}}
{{- end -}}

{{- define "trigger.clusterRole" -}}
{{- if or (include "trigger.watchesAllNamespaces" .) (and .Values.clusterWorkflowTemplates (include "trigger.checkTemplates" .)) -}}true{{- end -}}
{{- end -}}

{{- define "trigger.rulesConfigMap" -}}
{{- default (printf "%s-rules" (include "trigger.fullname" .)) .Values.rules.existingConfigMap -}}
{{- end -}}

{{- define "trigger.configMountPath" -}}/etc/trigger/config.yaml{{- end -}}
{{- define "trigger.rulesMountPath" -}}/etc/trigger/rules{{- end -}}

{{/* The settings file. The rules directory is the mounted ConfigMap: the loader skips the
     kubelet's hidden snapshot directories, and the reloader sees the `..data` swap of an
     update as changed files. */}}
{{- define "trigger.settings" -}}
{{- $s := deepCopy .Values.config -}}
{{- $_ := set $s "rules" (list (include "trigger.rulesMountPath" .)) -}}
{{- $_ = set $s "listen" (printf "0.0.0.0:%d" (int .Values.containerPort)) -}}
{{- $_ = set $s "sink" .Values.sink -}}
{{- $_ = set $s "state" (include "trigger.stateSpec" .) -}}
{{- $_ = set $s "dead_letter" .Values.deadLetter -}}
{{- $_ = set $s "strict" .Values.strict -}}
{{- $leader := deepCopy (default dict (get $s "leader")) -}}
{{- $_ = set $leader "enabled" (eq (include "trigger.leaderEnabled" .) "true") -}}
{{- $_ = set $leader "lease_name" (include "trigger.leaseName" .) -}}
{{- $_ = set $leader "namespace" .Release.Namespace -}}
{{- $_ = set $s "leader" $leader -}}
{{- $submit := deepCopy (default dict (get $s "submit")) -}}
{{- $_ = set $submit "check_templates" (eq (include "trigger.checkTemplates" .) "true") -}}
{{- $_ = set $submit "template_namespaces" (include "trigger.workflowNamespaces" . | fromJsonArray) -}}
{{- $_ = set $s "submit" $submit -}}
{{- toYaml $s -}}
{{- end -}}

{{/* Refuse combinations the daemon would refuse at start. */}}
{{- define "trigger.validate" -}}
{{- if not (or .Values.rules.existingConfigMap .Values.rules.files) -}}
{{- fail "no rules: set rules.files (file name: rule YAML) or rules.existingConfigMap" -}}
{{- end -}}
{{- range $file, $_ := .Values.rules.files -}}
{{- if not (or (hasSuffix ".yaml" $file) (hasSuffix ".yml" $file)) -}}
{{- fail (printf "rules.files.%s: rule file names end in .yaml or .yml" $file) -}}
{{- end -}}
{{- end -}}
{{- if not (include "trigger.kubernetesSink" .) -}}
{{- if include "trigger.leaderEnabled" . -}}
{{- fail "leader election uses the kubernetes sink's connection: set sink: kubernetes or leader.enabled: false" -}}
{{- end -}}
{{- if include "trigger.kubernetesState" . -}}
{{- fail "state: kubernetes uses the kubernetes sink's connection: set sink: kubernetes or state: file:PATH" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The namespaced Roles as [{name, namespace}]: role.yaml and rolebinding.yaml agree. */}}
{{- define "trigger.roles" -}}
{{- $roles := list -}}
{{- $fullname := include "trigger.fullname" . -}}
{{- $watched := include "trigger.watchedNamespaces" . | fromJsonArray -}}
{{- $all := has "*" $watched -}}
{{- if include "trigger.kubernetesSink" . -}}
{{- $created := include "trigger.workflowNamespaces" . | fromJsonArray -}}
{{- range $ns := $created -}}
{{- $watch := and (has $ns $watched) (not $all) -}}
{{- $roles = append $roles (dict "name" (printf "%s-workflows" $fullname) "namespace" $ns "kind" "workflows" "watch" $watch) -}}
{{- end -}}
{{- if not $all -}}
{{- range $ns := $watched -}}
{{- if not (has $ns $created) -}}
{{- $roles = append $roles (dict "name" (printf "%s-finished" $fullname) "namespace" $ns "kind" "finished") -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if include "trigger.leaderEnabled" . -}}
{{- $roles = append $roles (dict "name" (printf "%s-leader" $fullname) "namespace" .Release.Namespace "kind" "leader") -}}
{{- end -}}
{{- if include "trigger.kubernetesState" . -}}
{{- $ns := include "trigger.stateConfigMap" . | splitList "/" | first -}}
{{- $roles = append $roles (dict "name" (printf "%s-state" $fullname) "namespace" $ns "kind" "state") -}}
{{- end -}}
{{- toJson $roles -}}
{{- end -}}
