{{/*
What every template shares. The objects are those of `kvip manifest all
--role ROLE` (daemon/src/manifest.rs and its access and policy modules);
lab-free tests (lab/tests/helm_chart.rs) compare the two for several sets
of values, so a change on one side must be made on the other.
*/}}

{{/* The DaemonSet, ServiceAccount, roles and policy name of a role. */}}
{{- define "kvip.account" -}}
{{- if eq . "cp" }}kvip-cp{{ else if eq . "lb" }}kvip-lb{{ else }}kvip{{ end -}}
{{- end -}}

{{/* Whether a role announces the control-plane VIP ("true" or ""). */}}
{{- define "kvip.controlPlane" -}}
{{- if or (eq . "cp") (eq . "all") }}true{{ end -}}
{{- end -}}

{{/* Whether a role announces Service VIPs ("true" or ""). */}}
{{- define "kvip.services" -}}
{{- if or (eq . "lb") (eq . "all") }}true{{ end -}}
{{- end -}}

{{/* The labels of every object of a role. */}}
{{- define "kvip.labels" -}}
app.kubernetes.io/component: {{ . }}
app.kubernetes.io/name: kvip
{{- end -}}

{{/* The image reference, as --image takes it. */}}
{{- define "kvip.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
A variable as the pod will see it: the value of `env` named like it, else
`default`. Called with (dict "root" $ "name" NAME "default" VALUE).
*/}}
{{- define "kvip.setting" -}}
{{- $value := .default -}}
{{- range .root.Values.env -}}
{{- if and (eq .name $.name) (ne (toString .value | trim) "") }}{{ $value = toString .value | trim }}{{ end -}}
{{- end -}}
{{- $value -}}
{{- end -}}

{{/*
Refuses values `kvip manifest` refuses, naming the value and what it
accepts; the schema (values.schema.json) has already checked the types.
*/}}
{{- define "kvip.validate" -}}
{{- $roles := .Values.roles -}}
{{- if and (has "all" $roles) (gt (len $roles) 1) -}}
{{- fail "roles: all runs both roles in one DaemonSet; list it alone, or list cp and lb" -}}
{{- end -}}
{{- $cp := or (has "cp" $roles) (has "all" $roles) -}}
{{- $lb := or (has "lb" $roles) (has "all" $roles) -}}
{{- if and $cp (not .Values.address) -}}
{{- fail "address: roles cp and all announce the control-plane VIP, so they need one, such as 192.168.1.10" -}}
{{- end -}}
{{- if and .Values.address (not $cp) -}}
{{- fail "address: the control-plane VIP is announced by roles cp and all; add one of them to roles, or leave address empty" -}}
{{- end -}}
{{- if not $lb -}}
{{- range $value := list "servicesInterface" "lbClassName" "serviceNamespace" -}}
{{- if index $.Values $value -}}
{{- fail (printf "%s: Service settings apply to roles lb and all, which roles does not list" $value) -}}
{{- end -}}
{{- end -}}
{{- if .Values.lbClassOnly -}}
{{- fail "lbClassOnly: Service settings apply to roles lb and all, which roles does not list" -}}
{{- end -}}
{{- end -}}
{{- if not (and (gt (int .Values.leaseDuration) (int .Values.renewDeadline)) (gt (int .Values.renewDeadline) (int .Values.retryPeriod))) -}}
{{- fail (printf "leaseDuration (%v), renewDeadline (%v), retryPeriod (%v): each must be greater than the next" .Values.leaseDuration .Values.renewDeadline .Values.retryPeriod) -}}
{{- end -}}
{{- range .Values.env -}}
{{- if eq .name "prometheus_server" -}}
{{- fail "env: prometheus_server also serves the health probes; set it with metricsPort" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The container's environment of a role, in kube-vip's names and in the
order `kvip manifest` writes them; `env` replaces a variable of the same
name or comes last. Called with (dict "root" $ "role" ROLE).
*/}}
{{- define "kvip.env" -}}
{{- $v := .root.Values -}}
{{- $role := .role -}}
{{- $cp := include "kvip.controlPlane" $role -}}
{{- $lb := include "kvip.services" $role -}}
{{- $env := list (dict "name" "vip_arp" "value" "true") (dict "name" "port" "value" (toString $v.port)) -}}
{{- if $v.interface }}{{ $env = append $env (dict "name" "vip_interface" "value" $v.interface) }}{{ end -}}
{{- if and $lb $v.servicesInterface }}{{ $env = append $env (dict "name" "vip_servicesinterface" "value" $v.servicesInterface) }}{{ end -}}
{{- $env = append $env (dict "name" "vip_nodename" "valueFrom" (dict "fieldRef" (dict "fieldPath" "spec.nodeName"))) -}}
{{- $env = append $env (dict "name" "vip_leaderelection" "value" "true") -}}
{{- if $cp }}{{ $env = append $env (dict "name" "vip_leasename" "value" "plndr-cp-lock") }}{{ end -}}
{{- $env = append $env (dict "name" "vip_leaseduration" "value" (toString $v.leaseDuration)) -}}
{{- $env = append $env (dict "name" "vip_renewdeadline" "value" (toString $v.renewDeadline)) -}}
{{- $env = append $env (dict "name" "vip_retryperiod" "value" (toString $v.retryPeriod)) -}}
{{- $env = append $env (dict "name" "cp_enable" "value" (ternary "true" "false" (eq $cp "true"))) -}}
{{- $env = append $env (dict "name" "cp_namespace" "value" .root.Release.Namespace) -}}
{{- $env = append $env (dict "name" "svc_enable" "value" (ternary "true" "false" (eq $lb "true"))) -}}
{{- if $lb -}}
{{- $env = append $env (dict "name" "svc_election" "value" (toString $v.svcElection)) -}}
{{- if $v.serviceNamespace }}{{ $env = append $env (dict "name" "svc_namespace" "value" $v.serviceNamespace) }}{{ end -}}
{{- $env = append $env (dict "name" "lb_class_only" "value" (toString $v.lbClassOnly)) -}}
{{- if $v.lbClassName }}{{ $env = append $env (dict "name" "lb_class_name" "value" $v.lbClassName) }}{{ end -}}
{{- end -}}
{{- if $cp }}{{ $env = append $env (dict "name" "address" "value" $v.address) }}{{ end -}}
{{- $env = append $env (dict "name" "prometheus_server" "value" (printf ":%v" (index $v.metricsPort $role))) -}}
{{- $env = append $env (dict "name" "vip_arpRate" "value" (toString $v.arpRate)) -}}
{{- $env = append $env (dict "name" "vip_loglevel" "value" (toString $v.logLevel)) -}}
{{- $env = append $env (dict "name" "POD_NAMESPACE" "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.namespace"))) -}}
{{- range $extra := $v.env -}}
{{- $setting := dict "name" $extra.name "value" (toString $extra.value) -}}
{{- $replaced := false -}}
{{- $next := list -}}
{{- range $env -}}
{{- if eq .name $extra.name }}{{ $next = append $next $setting }}{{ $replaced = true }}{{ else }}{{ $next = append $next . }}{{ end -}}
{{- end -}}
{{- if not $replaced }}{{ $next = append $next $setting }}{{ end -}}
{{- $env = $next -}}
{{- end -}}
{{- toYaml $env -}}
{{- end -}}
