//! The lab acting as the kubelet: Node objects for the lab's nodes, Pods
//! bound to a node and made Ready through the status subresource, and Pod
//! deletion the way a kubelet finishes it.

use crate::layout::{NodeLayout, Role};
use anyhow::Context;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use std::time::{Duration, Instant};

/// Label and taint kubeadm gives control-plane nodes.
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";
/// The other label kubeadm gives control-plane nodes.
pub const EXCLUDE_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// Creates (or updates) the Node object of `node` and marks it Ready; a
/// control-plane node carries kubeadm's labels and taint.
pub async fn register_node(client: &Client, node: &NodeLayout) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let mut labels = json!({
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
    });
    let mut taints = json!([]);
    if node.role == Role::ControlPlane {
        labels[CONTROL_PLANE_LABEL] = json!("");
        labels[EXCLUDE_LB_LABEL] = json!("");
        taints = json!([{ "key": CONTROL_PLANE_LABEL, "effect": "NoSchedule" }]);
    }
    let mut cidrs = vec![node.pod_cidr4()];
    if node.ipv6.is_some() {
        cidrs.push(node.pod_cidr6());
    }
    let object = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": node.name, "labels": labels },
        "spec": { "podCIDR": cidrs[0], "podCIDRs": cidrs, "taints": taints.clone() },
    });
    let params = PatchParams::apply("kvip-lab").force();
    api.patch(&node.name, &params, &Patch::Apply(&object))
        .await
        .with_context(|| format!("registering Node {}", node.name))?;
    let mut addresses = vec![json!({ "type": "InternalIP", "address": node.ipv4.to_string() })];
    if let Some(v6) = node.ipv6 {
        addresses.push(json!({ "type": "InternalIP", "address": v6.to_string() }));
    }
    addresses.push(json!({ "type": "Hostname", "address": node.name }));
    let now = now_rfc3339();
    let status = json!({
        "status": {
            "addresses": addresses,
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kvip-lab plays the kubelet", "lastHeartbeatTime": now, "lastTransitionTime": now,
            }],
            "nodeInfo": {
                "architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "kvip-lab",
                "kubeProxyVersion": "kvip-lab", "containerRuntimeVersion": "kvip-lab://0",
                "kernelVersion": "", "osImage": "kvip-lab", "machineID": "", "systemUUID": "", "bootID": "",
            },
        }
    });
    api.patch_status(&node.name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .with_context(|| format!("setting the status of Node {}", node.name))?;
    // Admission tainted the new Node not-ready; with the Node Ready, lift it as
    // the node lifecycle controller would.
    let spec = json!({ "spec": { "taints": taints } });
    api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .with_context(|| format!("lifting the not-ready taint of Node {}", node.name))?;
    Ok(())
}

/// The current time as Kubernetes writes it.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Waits until the service-account controller has made `default/default`
/// (Pods cannot be created before).
pub async fn wait_default_service_account(
    client: &Client,
    timeout: Duration,
) -> anyhow::Result<()> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + timeout;
    loop {
        if api.get_opt("default").await.ok().flatten().is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the controller manager did not create the default ServiceAccount within {timeout:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What `kvip-lab pod` creates.
pub struct PodSpec<'a> {
    /// Kubernetes namespace.
    pub namespace: &'a str,
    /// Pod name.
    pub name: &'a str,
    /// Node to bind it to.
    pub node: &'a NodeLayout,
    /// Labels (the Service selector matches these).
    pub labels: &'a [(String, String)],
    /// Container port.
    pub port: u16,
    /// Pod addresses (IPv4 first).
    pub ips: Vec<String>,
}

/// Creates the Pod bound to its node and marks it Running and Ready.
pub async fn create_pod(client: &Client, spec: &PodSpec<'_>) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), spec.namespace);
    let labels: serde_json::Map<String, serde_json::Value> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": spec.name, "namespace": spec.namespace, "labels": labels },
        "spec": {
            "nodeName": spec.node.name,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 30,
            "tolerations": [{ "operator": "Exists" }],
            "containers": [{
                "name": "responder", "image": "kvip-lab/responder:latest",
                "ports": [{ "containerPort": spec.port, "protocol": "TCP" }],
            }],
        },
    }))?;
    api.create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating Pod {}/{}", spec.namespace, spec.name))?;
    set_pod_ready(client, spec, true).await
}

/// Writes the Pod's status as a kubelet would.
async fn set_pod_ready(client: &Client, spec: &PodSpec<'_>, ready: bool) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), spec.namespace);
    let now = now_rfc3339();
    let flag = if ready { "True" } else { "False" };
    let ips: Vec<_> = spec.ips.iter().map(|ip| json!({ "ip": ip })).collect();
    let status = json!({
        "status": {
            "phase": "Running",
            "hostIP": spec.node.ipv4.to_string(),
            "hostIPs": [{ "ip": spec.node.ipv4.to_string() }],
            "podIP": spec.ips.first(),
            "podIPs": ips,
            "startTime": now,
            "conditions": [
                { "type": "PodScheduled", "status": "True", "lastTransitionTime": now },
                { "type": "Initialized", "status": "True", "lastTransitionTime": now },
                { "type": "ContainersReady", "status": flag, "lastTransitionTime": now },
                { "type": "Ready", "status": flag, "lastTransitionTime": now },
            ],
            "containerStatuses": [{
                "name": "responder", "ready": ready, "started": ready, "restartCount": 0,
                "image": "kvip-lab/responder:latest", "imageID": "kvip-lab/responder@sha256:0",
                "state": { "running": { "startedAt": now } },
            }],
        }
    });
    api.patch_status(spec.name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .with_context(|| format!("setting the status of Pod {}/{}", spec.namespace, spec.name))?;
    Ok(())
}

/// Deletes the Pod as a kubelet finishes it: graceful delete (it turns
/// terminating), containers stopped by `stop`, not ready, then gone.
pub async fn delete_pod(
    client: &Client,
    spec: &PodSpec<'_>,
    stop: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), spec.namespace);
    let graceful = DeleteParams {
        grace_period_seconds: Some(30),
        ..Default::default()
    };
    api.delete(spec.name, &graceful)
        .await
        .with_context(|| format!("deleting Pod {}/{}", spec.namespace, spec.name))?;
    // Terminating long enough for the endpointslice controller to notice.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop()?;
    let _ = set_pod_ready(client, spec, false).await;
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    match api.delete(spec.name, &now).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(e) => return Err(e).context("finalising the Pod deletion"),
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.get_opt(spec.name).await?.is_some() {
        if Instant::now() > deadline {
            anyhow::bail!("Pod {}/{} was not removed", spec.namespace, spec.name);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_417), (2025, 11, 25));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
