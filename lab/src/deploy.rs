//! `kvip-lab deploy FILE`: non-workload objects go to the API server as
//! they are; each DaemonSet runs its container, with the local binary its
//! image stands for, on every node its nodeSelector, affinity and tolerations
//! admit — as the DaemonSet controller and kubelet would — under its
//! ServiceAccount's token, so RBAC is enforced for real. A Pod is a static
//! Pod (`deploy FILE --node N`), as a kubelet runs the files in its
//! manifests folder: on the nodes named, with the node's admin kubeconfig
//! where its hostPath volume mounts one.

use crate::layout::NodeLayout;
use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Container, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec, Taint, Toleration,
};
use std::collections::BTreeMap;

/// A manifest split into what `deploy` does with each part.
#[derive(Debug, Default)]
pub struct Manifest {
    /// Objects applied with kubectl as they are (YAML documents).
    pub objects: Vec<serde_json::Value>,
    /// DaemonSets the lab runs itself.
    pub daemonsets: Vec<DaemonSet>,
    /// Static Pods the lab runs on the nodes `deploy --node` names.
    pub pods: Vec<Pod>,
}

/// Kinds the lab cannot run: it plays the DaemonSet controller and the
/// kubelet's static Pods only.
const WORKLOADS: [&str; 5] = ["Deployment", "StatefulSet", "ReplicaSet", "Job", "CronJob"];

/// Splits a multi-document YAML manifest.
pub fn parse(text: &str) -> anyhow::Result<Manifest> {
    let mut manifest = Manifest::default();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = serde_json::Value::deserialize_from(doc)
            .with_context(|| format!("YAML document {}", i + 1))?;
        collect(value, &mut manifest, i + 1)?;
    }
    Ok(manifest)
}

trait DeserializeFrom: Sized {
    fn deserialize_from(doc: serde_norway::Deserializer<'_>) -> anyhow::Result<Self>;
}

impl DeserializeFrom for serde_json::Value {
    fn deserialize_from(doc: serde_norway::Deserializer<'_>) -> anyhow::Result<Self> {
        Ok(serde::Deserialize::deserialize(doc)?)
    }
}

fn collect(value: serde_json::Value, manifest: &mut Manifest, doc: usize) -> anyhow::Result<()> {
    if value.is_null() {
        return Ok(());
    }
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default()
        .to_string();
    match kind.as_str() {
        "" => bail!("YAML document {doc} has no kind"),
        "List" => {
            for item in value
                .get("items")
                .and_then(|i| i.as_array())
                .cloned()
                .unwrap_or_default()
            {
                collect(item, manifest, doc)?;
            }
        }
        "DaemonSet" => {
            let ds: DaemonSet = serde_json::from_value(value)
                .with_context(|| format!("YAML document {doc}: DaemonSet"))?;
            manifest.daemonsets.push(ds);
        }
        "Pod" => {
            let pod: Pod = serde_json::from_value(value)
                .with_context(|| format!("YAML document {doc}: Pod"))?;
            manifest.pods.push(pod);
        }
        k if WORKLOADS.contains(&k) => {
            bail!("YAML document {doc} is a {k}: the lab runs DaemonSets and static Pods only")
        }
        _ => manifest.objects.push(value),
    }
    Ok(())
}

/// The node files a static Pod may mount (hostPath): kubeadm's admin
/// kubeconfigs, which kube-vip's static Pod mounts (`super-admin.conf` on
/// the first node of Kubernetes 1.29 and later, as kube-vip's docs say).
pub const KUBECONFIG_HOST_PATHS: [&str; 2] = [
    "/etc/kubernetes/admin.conf",
    "/etc/kubernetes/super-admin.conf",
];

/// Where `container` of a static Pod with `spec` mounts a node kubeconfig
/// ([`KUBECONFIG_HOST_PATHS`]): the paths the lab puts the node's admin
/// kubeconfig at. Any other volume is refused, naming it.
pub fn kubeconfig_mounts(spec: &PodSpec, container: &Container) -> anyhow::Result<Vec<String>> {
    let mut paths = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .with_context(|| {
                format!(
                    "container {}: volumeMount {} names no volume",
                    container.name, mount.name
                )
            })?;
        let host_path = volume.host_path.as_ref().map(|h| h.path.as_str());
        match host_path {
            Some(path) if KUBECONFIG_HOST_PATHS.contains(&path) => {}
            _ => bail!(
                "container {}: volume {}: the lab maps only the hostPaths {} (a kubeconfig)",
                container.name,
                mount.name,
                KUBECONFIG_HOST_PATHS.join(", ")
            ),
        }
        // The lab mounts a tmpfs over the folder: only a folder of its own.
        if !mount.mount_path.starts_with("/etc/kubernetes/") {
            bail!(
                "container {}: volume {}: mountPath {} is outside /etc/kubernetes/, where the lab puts kubeconfigs",
                container.name,
                mount.name,
                mount.mount_path
            );
        }
        paths.push(mount.mount_path.clone());
    }
    Ok(paths)
}

/// `namespace/name` of a Pod.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// `namespace/name` of a DaemonSet.
pub fn daemonset_key(ds: &DaemonSet) -> String {
    format!(
        "{}/{}",
        ds.metadata.namespace.as_deref().unwrap_or("default"),
        ds.metadata.name.as_deref().unwrap_or_default()
    )
}

/// A node as the scheduler sees it.
pub struct NodeView<'a> {
    /// The lab node.
    pub layout: &'a NodeLayout,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its taints.
    pub taints: Vec<Taint>,
}

/// True when a DaemonSet pod with `spec` may run on `node`.
pub fn admits(spec: &PodSpec, node: &NodeView<'_>) -> bool {
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| node.labels.get(k) == Some(v));
    let affinity_ok = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_none_or(|req| {
            req.node_selector_terms
                .iter()
                .any(|t| term_matches(t, node))
        });
    let defaults = daemonset_default_tolerations(spec.host_network == Some(true));
    let tolerated = node
        .taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|taint| {
            let mut all = spec.tolerations.iter().flatten().chain(&defaults);
            all.any(|tol| tolerates(tol, taint))
        });
    selector_ok && affinity_ok && tolerated
}

/// Tolerations the DaemonSet controller adds to every DaemonSet pod.
fn daemonset_default_tolerations(host_network: bool) -> Vec<Toleration> {
    let mut keys = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        keys.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    keys.into_iter()
        .map(|(key, effect)| Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Default::default()
        })
        .collect()
}

fn term_matches(term: &NodeSelectorTerm, node: &NodeView<'_>) -> bool {
    let exprs = term.match_expressions.iter().flatten();
    let fields = term.match_fields.iter().flatten();
    let name = BTreeMap::from([("metadata.name".to_string(), node.layout.name.clone())]);
    // An empty term matches nothing, as in Kubernetes.
    let non_empty = term
        .match_expressions
        .as_ref()
        .is_some_and(|e| !e.is_empty())
        || term.match_fields.as_ref().is_some_and(|f| !f.is_empty());
    non_empty
        && exprs.clone().all(|r| requirement_matches(r, &node.labels))
        && fields.clone().all(|r| requirement_matches(r, &name))
}

fn requirement_matches(req: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&req.key);
    let values = req.values.clone().unwrap_or_default();
    let as_int = |s: &str| s.parse::<i64>().ok();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(|v| as_int(v)), values.first().and_then(|v| as_int(v))), (Some(a), Some(b)) if a > b)
        }
        "Lt" => {
            matches!((value.and_then(|v| as_int(v)), values.first().and_then(|v| as_int(v))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = tol.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = tol.key.as_deref().unwrap_or_default();
    if key.is_empty() {
        // An empty key with Exists tolerates every taint.
        return tol.operator.as_deref() == Some("Exists");
    }
    if key != taint.key {
        return false;
    }
    match tol.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" => {
            tol.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// Facts the container environment is resolved against.
pub struct PodFacts<'a> {
    /// Pod name (`<daemonset>-<node>`).
    pub pod_name: &'a str,
    /// Pod namespace.
    pub namespace: &'a str,
    /// Node name.
    pub node: &'a NodeLayout,
    /// ServiceAccount name.
    pub service_account: &'a str,
}

/// The environment a kubelet gives `container` (hostNetwork pod).
pub fn container_env(
    container: &Container,
    facts: &PodFacts<'_>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::from([
        ("PATH".to_string(), crate::control_plane::PATH.to_string()),
        ("HOSTNAME".to_string(), facts.node.name.clone()),
        (
            "KUBERNETES_SERVICE_HOST".to_string(),
            crate::layout::KUBERNETES_SERVICE_IP.to_string(),
        ),
        ("KUBERNETES_SERVICE_PORT".to_string(), "443".to_string()),
        (
            "KUBERNETES_SERVICE_PORT_HTTPS".to_string(),
            "443".to_string(),
        ),
        (
            "KUBERNETES_PORT".to_string(),
            format!("tcp://{}:443", crate::layout::KUBERNETES_SERVICE_IP),
        ),
    ]);
    if container.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        bail!(
            "container {}: envFrom is not supported by the lab",
            container.name
        );
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            let Some(field) = &from.field_ref else {
                bail!(
                    "container {}: env {}: only value and valueFrom.fieldRef are supported by the lab",
                    container.name,
                    var.name
                );
            };
            match field.field_path.as_str() {
                "spec.nodeName" => facts.node.name.clone(),
                "metadata.name" => facts.pod_name.to_string(),
                "metadata.namespace" => facts.namespace.to_string(),
                "spec.serviceAccountName" => facts.service_account.to_string(),
                "status.hostIP" | "status.podIP" => facts.node.ipv4.to_string(),
                other => bail!(
                    "container {}: env {}: fieldRef {other} is not supported",
                    container.name,
                    var.name
                ),
            }
        } else {
            expand(var.value.as_deref().unwrap_or_default(), &env)
        };
        env.insert(var.name.clone(), value);
    }
    Ok(env)
}

/// Kubernetes' `$(VAR)` expansion (`$$` escapes).
pub fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some(value) = env.get(&inner[..end])
        {
            out.push_str(value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Which local binary an image stands for.
pub fn binary_for_image(image: &str) -> anyhow::Result<&'static str> {
    let name = image.rsplit('/').next().unwrap_or(image);
    let name = name.split([':', '@']).next().unwrap_or(name);
    match name {
        "kube-vip" => Ok("kube-vip"),
        "kvip" => Ok("kvip"),
        _ => bail!("image {image:?}: the lab runs only kvip and kube-vip images"),
    }
}

/// The command line of `container` with `binary` for its image.
pub fn container_argv(
    container: &Container,
    binary: &str,
    env: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut argv = vec![binary.to_string()];
    let command = container.command.clone().unwrap_or_default();
    argv.extend(command.iter().skip(1).map(|a| expand(a, env)));
    argv.extend(container.args.iter().flatten().map(|a| expand(a, env)));
    argv
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::LabShape;

    fn ds(yaml: &str) -> DaemonSet {
        parse(yaml).unwrap().daemonsets.remove(0)
    }

    const CP_ONLY: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: { name: kvip-cp, namespace: kube-system }
spec:
  selector: { matchLabels: { app: kvip } }
  template:
    metadata: { labels: { app: kvip } }
    spec:
      hostNetwork: true
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - { key: node-role.kubernetes.io/control-plane, operator: Exists }
      tolerations:
      - { key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule }
      containers:
      - name: kvip
        image: ghcr.io/example/kvip:v0.1.0
        args: ["manager", "--node=$(vip_nodename)"]
        env:
        - name: vip_nodename
          valueFrom: { fieldRef: { fieldPath: spec.nodeName } }
        - { name: vip_arp, value: "true" }
"#;

    fn views(nodes: &[NodeLayout]) -> Vec<NodeView<'_>> {
        nodes
            .iter()
            .map(|n| {
                let mut labels =
                    BTreeMap::from([("kubernetes.io/hostname".to_string(), n.name.clone())]);
                let mut taints = vec![];
                if n.role == crate::layout::Role::ControlPlane {
                    labels.insert(
                        "node-role.kubernetes.io/control-plane".into(),
                        String::new(),
                    );
                    taints.push(Taint {
                        key: "node-role.kubernetes.io/control-plane".into(),
                        effect: "NoSchedule".into(),
                        ..Default::default()
                    });
                }
                NodeView {
                    layout: n,
                    labels,
                    taints,
                }
            })
            .collect()
    }

    #[test]
    fn control_plane_daemonset_lands_on_control_plane_nodes_only() {
        let nodes = LabShape {
            nodes: 3,
            control_plane: 1,
            ipv6: false,
            ipvs_dummy: false,
        }
        .layout()
        .unwrap();
        let ds = ds(CP_ONLY);
        let spec = ds.spec.unwrap().template.spec.unwrap();
        let admitted: Vec<_> = views(&nodes)
            .iter()
            .filter(|v| admits(&spec, v))
            .map(|v| v.layout.name.clone())
            .collect();
        assert_eq!(admitted, ["cp1"]);
    }

    #[test]
    fn untolerated_taint_keeps_a_daemonset_off() {
        let nodes = LabShape {
            nodes: 2,
            control_plane: 1,
            ipv6: false,
            ipvs_dummy: false,
        }
        .layout()
        .unwrap();
        let mut spec = ds(CP_ONLY).spec.unwrap().template.spec.unwrap();
        spec.affinity = None;
        spec.tolerations = None;
        let admitted: Vec<_> = views(&nodes)
            .iter()
            .filter(|v| admits(&spec, v))
            .map(|v| v.layout.name.clone())
            .collect();
        assert_eq!(admitted, ["worker1"]);
    }

    #[test]
    fn daemonset_defaults_tolerate_unreachable_nodes() {
        let nodes = LabShape {
            nodes: 1,
            control_plane: 1,
            ipv6: false,
            ipvs_dummy: false,
        }
        .layout()
        .unwrap();
        let mut spec = ds(CP_ONLY).spec.unwrap().template.spec.unwrap();
        spec.tolerations = None;
        spec.affinity = None;
        let taint = |key: &str, effect: &str| Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        };
        let mut view = NodeView {
            layout: &nodes[0],
            labels: BTreeMap::new(),
            taints: vec![taint("node.kubernetes.io/unreachable", "NoExecute")],
        };
        assert!(admits(&spec, &view));
        view.taints.push(taint("dedicated", "NoSchedule"));
        assert!(!admits(&spec, &view));
    }

    #[test]
    fn env_and_args_are_resolved_like_a_kubelet() {
        let nodes = LabShape {
            nodes: 1,
            control_plane: 1,
            ipv6: false,
            ipvs_dummy: false,
        }
        .layout()
        .unwrap();
        let spec = ds(CP_ONLY).spec.unwrap().template.spec.unwrap();
        let container = &spec.containers[0];
        let facts = PodFacts {
            pod_name: "kvip-cp-cp1",
            namespace: "kube-system",
            node: &nodes[0],
            service_account: "kvip",
        };
        let env = container_env(container, &facts).unwrap();
        assert_eq!(env["vip_nodename"], "cp1");
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        let argv = container_argv(container, "/bin/kvip", &env);
        assert_eq!(argv, ["/bin/kvip", "manager", "--node=cp1"]);
        assert_eq!(
            binary_for_image(&container.image.clone().unwrap()).unwrap(),
            "kvip"
        );
        assert_eq!(
            binary_for_image("ghcr.io/kube-vip/kube-vip:v1.0.0").unwrap(),
            "kube-vip"
        );
        assert!(binary_for_image("nginx").is_err());
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let env = BTreeMap::from([("A".to_string(), "x".to_string())]);
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &env), "x-$(B)-$(A)-$");
    }

    const STATIC_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: { name: kube-vip, namespace: kube-system }
spec:
  hostNetwork: true
  containers:
  - name: kube-vip
    image: ghcr.io/kube-vip/kube-vip:v1.0.0
    args: ["manager"]
    volumeMounts:
    - { mountPath: /etc/kubernetes/admin.conf, name: kubeconfig }
  volumes:
  - { name: kubeconfig, hostPath: { path: /etc/kubernetes/super-admin.conf } }
"#;

    #[test]
    fn a_static_pods_kubeconfig_hostpath_is_mapped_and_nothing_else() {
        let m = parse(STATIC_POD).unwrap();
        assert_eq!(m.pods.len(), 1);
        assert_eq!(pod_key(&m.pods[0]), "kube-system/kube-vip");
        let spec = m.pods[0].spec.clone().unwrap();
        let mounts = kubeconfig_mounts(&spec, &spec.containers[0]).unwrap();
        assert_eq!(mounts, ["/etc/kubernetes/admin.conf"]);

        let other = STATIC_POD.replace("/etc/kubernetes/super-admin.conf", "/var/lib/etcd");
        let m = parse(&other).unwrap();
        let spec = m.pods[0].spec.clone().unwrap();
        let err = kubeconfig_mounts(&spec, &spec.containers[0]).unwrap_err();
        assert!(err.to_string().contains("volume kubeconfig"), "{err}");

        let elsewhere = STATIC_POD.replace(
            "mountPath: /etc/kubernetes/admin.conf",
            "mountPath: /etc/admin.conf",
        );
        let m = parse(&elsewhere).unwrap();
        let spec = m.pods[0].spec.clone().unwrap();
        let err = kubeconfig_mounts(&spec, &spec.containers[0]).unwrap_err();
        assert!(
            err.to_string().contains("outside /etc/kubernetes/"),
            "{err}"
        );

        let dangling = STATIC_POD.replace("name: kubeconfig }", "name: other }");
        let m = parse(&dangling).unwrap();
        let spec = m.pods[0].spec.clone().unwrap();
        assert!(kubeconfig_mounts(&spec, &spec.containers[0]).is_err());
    }

    #[test]
    fn workloads_other_than_daemonsets_are_refused() {
        let err =
            parse("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n").unwrap_err();
        assert!(
            err.to_string().contains("DaemonSets and static Pods only"),
            "{err}"
        );
        let m =
            parse("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: kvip}\n---\n").unwrap();
        assert_eq!(m.objects.len(), 1);
    }
}
