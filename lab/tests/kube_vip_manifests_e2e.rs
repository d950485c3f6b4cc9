//! End to end: kube-vip's own manifests, as the kube-vip binary the lab
//! builds prints them (`kube-vip manifest rbac`, `daemonset` with and
//! without `--taint`, and `pod`), with only the image swapped for kvip's.
//! Under kube-vip's RBAC (no patch, no Events, no Lease delete, no
//! ServiceCIDR list) kvip must serve the control-plane VIP and a Cluster and
//! a Local Service, say each missing permission once, and never crash or
//! storm the API server with refused requests.
//!
//! The lab is all control plane (three nodes, kubeadm's taint on each), as
//! the small clusters that run kube-vip's DaemonSet often are. Last, kvip's
//! own load balancer reads the Service fields kube-vip reads:
//! `kube-vip.io/serviceInterface`, `kube-vip.io/serviceVLAN` (refused) and
//! `status.loadBalancer.ingress` as the address.

mod support;

use kvip_lab::kube_vip::{self, KVIP_IMAGE};
use kvip_lab::state::{LabState, Paths, ProcessKind};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;
use support::*;

const NODES: [&str; 3] = ["cp1", "cp2", "cp3"];
const CP_VIP: &str = "10.77.0.198";
const INTERFACE: &str = "eth0";
const NS: &str = "shop";
const CP_TAINT: &str = "node-role.kubernetes.io/control-plane";

fn setup() -> Outcome {
    lab_ok(&["down"])?;
    let up = lab(&["up", "--nodes", "3", "--control-plane", "3"]);
    ensure!(
        up.status.success(),
        "lab up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    namespace(NS)
}

/// `kube-vip manifest ARGS` from the lab's kube-vip binary.
fn kube_vip_manifest(args: &[&str]) -> Result<String, String> {
    kube_vip::manifest(args).map_err(|e| format!("{e:#}"))
}

/// kube-vip's manifest with kvip's image, nothing else changed.
fn drop_in(args: &[&str]) -> Result<String, String> {
    let text = kube_vip_manifest(args)?;
    let swapped = kube_vip::with_image(&text, KVIP_IMAGE).map_err(|e| format!("{e:#}"))?;
    let changed: Vec<(&str, &str)> = text
        .lines()
        .zip(swapped.lines())
        .filter(|(a, b)| a != b)
        .collect();
    ensure!(
        changed.len() == 1 && changed[0].1.trim() == format!("image: {KVIP_IMAGE}"),
        "more than the image changed: {changed:?}"
    );
    Ok(swapped)
}

fn daemonset_args(taint: bool) -> Vec<&'static str> {
    let mut args = vec![
        "daemonset",
        "--controlplane",
        "--services",
        "--arp",
        "--leaderElection",
        "--inCluster",
        "--interface",
        INTERFACE,
        "--address",
        CP_VIP,
    ];
    if taint {
        args.push("--taint");
    }
    args
}

/// `kubectl get --raw PATH` from the client namespace, against `server`
/// (an API server or the control-plane VIP, both inside the lab).
fn kubectl_in_client(server: &str, path: &str) -> Result<String, String> {
    let env = lab_env()?;
    let kubectl = format!(
        "{}/kubectl",
        env.get("PATH")
            .and_then(|p| p.split(':').next())
            .ok_or("the lab's env has no PATH")?
    );
    let out = Command::new("ip")
        .args(["netns", "exec", "kvl-client", &kubectl, "--kubeconfig"])
        .arg(
            env.get("KUBECONFIG")
                .ok_or("the lab's env has no KUBECONFIG")?,
        )
        .args([
            "--server",
            server,
            "--request-timeout=2s",
            "get",
            "--raw",
            path,
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "kubectl --server {server} get --raw {path}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `kubectl get --raw /readyz` through the control-plane VIP, from the
/// client namespace.
fn api_through_vip() -> Option<String> {
    kubectl_in_client(&format!("https://{CP_VIP}:6443"), "/readyz").ok()
}

/// The log file of a container on `node` (`<daemonset or pod>-<container>`).
fn log_path(node: &str, owner: &str) -> std::path::PathBuf {
    Paths::new().log(node, &format!("{owner}-kube-vip"))
}

/// How long each node's log of `owner` is now: what a deployment writes
/// from here on is read past it.
fn log_marks(owner: &str) -> BTreeMap<String, usize> {
    NODES
        .iter()
        .map(|n| {
            let len = std::fs::read(log_path(n, owner)).map_or(0, |b| b.len());
            (n.to_string(), len)
        })
        .collect()
}

/// What `owner`'s container on each node wrote since `marks`.
fn logs_since(owner: &str, marks: &BTreeMap<String, usize>) -> BTreeMap<String, String> {
    NODES
        .iter()
        .map(|n| {
            let bytes = std::fs::read(log_path(n, owner)).unwrap_or_default();
            let from = marks.get(*n).copied().unwrap_or(0).min(bytes.len());
            (
                n.to_string(),
                String::from_utf8_lossy(&bytes[from..]).into_owned(),
            )
        })
        .collect()
}

/// Every process of `kind` runs still (the lab restarts nothing, so a
/// crash leaves it dead), one per node.
fn all_alive(kind: &ProcessKind) -> Outcome {
    let state = LabState::load(&Paths::new())
        .map_err(|e| format!("{e:#}"))?
        .ok_or("no lab state")?;
    let ours: Vec<_> = state.processes.iter().filter(|p| &p.kind == kind).collect();
    ensure!(
        ours.len() == NODES.len(),
        "{} processes of {kind:?}, expected one per node",
        ours.len()
    );
    for p in ours {
        let alive = p.pid.is_some_and(kvip_lab::process::alive);
        ensure!(alive, "{kind:?} on {:?} is not running", p.node);
    }
    Ok(())
}

/// Requests the API servers answered with 403, summed over every
/// control-plane node's API server.
fn forbidden_requests() -> Result<f64, String> {
    let nodes = get_json(&["nodes"])?;
    let mut total = 0.0;
    for node in nodes["items"].as_array().into_iter().flatten() {
        let Some(ip) = node["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == "InternalIP")
            .and_then(|a| a["address"].as_str())
        else {
            continue;
        };
        // Lab addresses are dialled from inside the lab only.
        let text = kubectl_in_client(&format!("https://{ip}:6443"), "/metrics")?;
        total += text
            .lines()
            .filter(|l| l.starts_with("apiserver_request_total{") && l.contains("code=\"403\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    Ok(total)
}

/// A Cluster Service answered by a pod on cp2 and a Local one answered by
/// a pod on cp3, named with `suffix`, at `.{first}` and `.{first + 1}`.
fn services(suffix: &str, first: u8) -> Result<[(String, String, String); 2], String> {
    let cluster = (format!("web-{suffix}"), format!("10.77.0.{first}"), "cp2");
    let local = (
        format!("local-{suffix}"),
        format!("10.77.0.{}", first + 1),
        "cp3",
    );
    for ((name, vip, node), policy) in [(&cluster, "Cluster"), (&local, "Local")] {
        apply(&lb_service(NS, name, policy, Some(vip), name))?;
        lab_pod(NS, &format!("{name}-1"), node, name)?;
    }
    Ok([
        (
            cluster.0.clone(),
            cluster.1,
            format!("{}/{}-1", cluster.2, cluster.0),
        ),
        (
            local.0.clone(),
            local.1,
            format!("{}/{}-1", local.2, local.0),
        ),
    ])
}

/// Deletes the Services (and pods) an earlier scenario made.
fn delete_services(suffix: &str) -> Outcome {
    for name in [format!("web-{suffix}"), format!("local-{suffix}")] {
        kubectl(&["-n", NS, "delete", "--ignore-not-found", "service", &name])?;
        let _ = lab_ok(&["pod", "delete", &format!("{name}-1"), "-n", NS]);
    }
    Ok(())
}

/// The control-plane VIP answers the API, and its Lease holder carries it.
fn control_plane_vip_answers() -> Outcome {
    let answer = wait_for(
        "the API through the control-plane VIP",
        Duration::from_secs(30),
        Duration::from_millis(200),
        api_through_vip,
    )?;
    ensure!(answer == "ok", "readyz through {CP_VIP} said {answer}");
    let holder = lease_holder("kube-system", "plndr-cp-lock").unwrap_or_default();
    ensure!(
        nodes_with_address(CP_VIP) == [holder.clone()],
        "{CP_VIP} on {:?}, plndr-cp-lock held by {holder:?}",
        nodes_with_address(CP_VIP)
    );
    Ok(())
}

/// Each Service gets its address in its status, named by vipHost, and
/// answers from the client with its pod; the Local one from its pod's node.
/// Returns the nodes named by vipHost.
fn services_are_served(services: &[(String, String, String)]) -> Result<Vec<String>, String> {
    let mut hosts = Vec::new();
    for (name, vip, answer) in services {
        let (ips, host) = wait_for(
            &format!("{NS}/{name} status and vipHost"),
            Duration::from_secs(30),
            Duration::from_millis(200),
            || service_status(NS, name).filter(|(ips, host)| !ips.is_empty() && host.is_some()),
        )?;
        ensure!(
            ips == [vip.clone()],
            "{NS}/{name}: ingress {ips:?}, expected {vip}"
        );
        let host = host.unwrap_or_default();
        let (got, took) = probe_until(
            &format!("{vip}:80"),
            Duration::from_secs(20),
            Duration::from_millis(50),
            |a| a == answer,
        )?;
        println!(
            "    {NS}/{name} at {vip}: vipHost {host}, {got} answered after {} ms",
            took.as_millis()
        );
        ensure!(
            nodes_with_address(vip) == [host.clone()],
            "{vip} on {:?}, vipHost {host}",
            nodes_with_address(vip)
        );
        hosts.push(host);
    }
    let local_node = services[1].2.split('/').next().unwrap_or_default();
    ensure!(
        hosts[1] == local_node,
        "the Local Service is announced by {}, its only pod runs on {local_node}",
        hosts[1]
    );
    Ok(hosts)
}

/// Each node said each missing permission at most once; every node fell
/// back for Leases; the nodes that wrote a Service's status (`writers`)
/// said status, Service and Events once.
fn permissions_said_once(logs: &BTreeMap<String, String>, writers: &[String]) -> Outcome {
    for (node, log) in logs {
        ensure!(
            log.matches("kvip starting").count() == 1,
            "{node}: kvip started {} times since the deploy (a crash and restart?)",
            log.matches("kvip starting").count()
        );
        ensure!(!log.contains("panicked"), "{node}: kvip panicked");
        for line in [LEASE_PATCH, STATUS_PATCH, SERVICE_PATCH, EVENTS] {
            let seen = log.matches(line).count();
            let want = if line == LEASE_PATCH || writers.contains(node) {
                1
            } else {
                seen.min(1)
            };
            ensure!(
                seen == want,
                "{node} logged {line:?} {seen} times, expected {want}"
            );
        }
        println!(
            "    {node}: each missing permission said once ({} lines of log)",
            log.lines().count()
        );
    }
    Ok(())
}

/// For 20 s with everything served, the API servers refuse next to
/// nothing: no write is retried per object against a refusal. (Each
/// process meets each refusal once, at start-up or at its first write;
/// 10 s are left for those to pass first.)
fn no_refusal_storm() -> Outcome {
    std::thread::sleep(Duration::from_secs(10));
    let before = forbidden_requests()?;
    std::thread::sleep(Duration::from_secs(20));
    let after = forbidden_requests()?;
    let refused = (after - before).round() as i64;
    println!("    403 answers in 20 s: {refused}");
    ensure!(
        refused <= 3,
        "{refused} requests refused with 403 in 20 s: kvip retries what RBAC refuses"
    );
    Ok(())
}

/// The kube-vip RBAC applied is kube-vip's: no patch anywhere, no Events.
fn kube_vips_rbac_grants_no_patch() -> Outcome {
    let rbac = kube_vip_manifest(&["rbac"])?;
    let file = temp_file("kube-vip-rbac.yaml", &rbac)?;
    lab_ok(&["deploy", &file.display().to_string()])?;
    let account = "system:serviceaccount:kube-system:kube-vip";
    let can = |verb: &str, resource: &str| -> bool {
        kubectl(&["auth", "can-i", verb, resource, "-n", NS, "--as", account])
            .is_ok_and(|out| out.trim() == "yes")
    };
    let wanted = [
        ("update", "services/status", true),
        ("patch", "services/status", false),
        ("update", "services", true),
        ("patch", "services", false),
        ("update", "leases.coordination.k8s.io", true),
        ("patch", "leases.coordination.k8s.io", false),
        ("delete", "leases.coordination.k8s.io", false),
        ("create", "events", false),
        ("list", "servicecidrs.networking.k8s.io", false),
    ];
    let answer = wait_for(
        "the authorizer to follow kube-vip's role",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || {
            let got: Vec<_> = wanted.iter().map(|(v, r, _)| can(v, r)).collect();
            let want: Vec<_> = wanted.iter().map(|(_, _, w)| *w).collect();
            (got == want).then_some(got)
        },
    );
    ensure!(
        answer.is_ok(),
        "kube-vip's role does not grant what kube-vip's RBAC says: {:?}",
        wanted
            .iter()
            .map(|(v, r, _)| format!("{v} {r}: {}", can(v, r)))
            .collect::<Vec<_>>()
    );
    Ok(())
}

/// Runs one of kube-vip's DaemonSets with kvip's image and checks it all.
fn daemonset_serves(taint: bool, suffix: &str, first: u8) -> Outcome {
    let owner = "kube-vip-ds";
    let marks = log_marks(owner);
    let rbac = kube_vip_manifest(&["rbac"])?;
    let daemonset = drop_in(&daemonset_args(taint))?;
    let file = temp_file(
        &format!("kube-vip-ds-{suffix}.yaml"),
        &format!("{rbac}---\n{daemonset}"),
    )?;
    let out = lab_ok(&["deploy", &file.display().to_string()])?;
    ensure!(
        out.contains("running on cp1 cp2 cp3"),
        "kube-vip's DaemonSet landed elsewhere: {out}"
    );
    control_plane_vip_answers()?;
    let services = services(suffix, first)?;
    let writers = services_are_served(&services)?;
    no_refusal_storm()?;
    all_alive(&ProcessKind::DaemonSet {
        daemonset: format!("kube-system/{owner}"),
    })?;
    permissions_said_once(&logs_since(owner, &marks), &writers)?;
    lab_ok(&["undeploy", &file.display().to_string()])?;
    delete_services(suffix)
}

/// `kube-vip manifest daemonset … --taint`: control-plane nodes only,
/// tolerating their taint.
fn daemonset_with_taint() -> Outcome {
    daemonset_serves(true, "taint", 181)
}

/// `kube-vip manifest daemonset …` without `--taint`: no affinity, no
/// tolerations, so it runs where pods may run; on this all-control-plane
/// cluster, as on a homelab that lets pods run on its control plane, the
/// taint is lifted first.
fn daemonset_without_taint() -> Outcome {
    let taint = format!("{CP_TAINT}:NoSchedule-");
    let mut args = vec!["taint", "nodes"];
    args.extend(NODES);
    args.push(&taint);
    kubectl(&args)?;
    daemonset_serves(false, "notaint", 183)
}

/// `kube-vip manifest pod …` as a static Pod on each node, its admin.conf
/// hostPath the node's admin kubeconfig: kvip reads it where kube-vip's
/// Pod mounts it, and, as admin, is refused nothing.
fn static_pod_serves() -> Outcome {
    let owner = "kube-vip";
    let marks = log_marks(owner);
    let pod = drop_in(&[
        "pod",
        "--controlplane",
        "--services",
        "--arp",
        "--leaderElection",
        "--interface",
        INTERFACE,
        "--address",
        CP_VIP,
    ])?;
    let file = temp_file("kube-vip-pod.yaml", &pod)?;
    let mut args = vec!["deploy".to_string(), file.display().to_string()];
    for node in NODES {
        args.extend(["--node".to_string(), node.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = lab_ok(&args)?;
    ensure!(
        out.contains("static pod kube-system/kube-vip: running on cp1 cp2 cp3"),
        "{out}"
    );
    control_plane_vip_answers()?;
    let services = services("static", 185)?;
    services_are_served(&services)?;
    all_alive(&ProcessKind::StaticPod {
        pod: "kube-system/kube-vip".to_string(),
    })?;
    for (node, log) in logs_since(owner, &marks) {
        ensure!(
            log.matches("kvip starting").count() == 1,
            "{node}: kvip started {} times",
            log.matches("kvip starting").count()
        );
        ensure!(
            !log.contains("RBAC does not grant"),
            "{node}: refused something as admin: {log}"
        );
    }
    lab_ok(&["undeploy", &file.display().to_string()])?;
    delete_services("static")
}

const ANNOTATED: &str = "annotated";

/// A Cluster Service `name` at `vip` (None: no address of its own) with
/// `annotations`, answered by a pod on cp1.
fn annotated_service(name: &str, vip: Option<&str>, annotations: &[(&str, &str)]) -> Outcome {
    let mut all: Vec<String> = annotations
        .iter()
        .map(|(k, v)| format!("{k}: \"{v}\""))
        .collect();
    if let Some(vip) = vip {
        all.push(format!("kube-vip.io/loadbalancerIPs: \"{vip}\""));
    }
    apply(&format!(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {ANNOTATED}
  annotations: {{ {} }}
spec:
  type: LoadBalancer
  selector: {{ app: {name} }}
  ports: [{{ port: 80, targetPort: 8080 }}]
"#,
        all.join(", ")
    ))?;
    lab_pod(ANNOTATED, &format!("{name}-1"), "cp1", name)
}

/// The pending or refusal message of `name` once its code is `code`.
fn reason_message(name: &str, code: &str) -> Result<String, String> {
    let (_, entry) = wait_reason(ANNOTATED, name, code)?;
    Ok(entry["reason"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// kvip's own load balancer with `vip_servicesinterface` naming an
/// interface no node has: a Service without `kube-vip.io/serviceInterface`
/// cannot be placed, one naming eth0 is served on eth0, one naming a
/// missing interface is pending naming the annotation, a bad name and a
/// `kube-vip.io/serviceVLAN` are refused naming theirs.
fn service_interface_annotation_overrides_the_configured_interface() -> Outcome {
    deploy_lb("lb-ghost.yaml", &["--services-interface", "ghost0"])?;
    namespace(ANNOTATED)?;
    annotated_service("configured", Some("10.77.0.190"), &[])?;
    annotated_service(
        "chosen",
        Some("10.77.0.191"),
        &[("kube-vip.io/serviceInterface", INTERFACE)],
    )?;
    annotated_service(
        "missing",
        Some("10.77.0.192"),
        &[("kube-vip.io/serviceInterface", "ghost9")],
    )?;
    annotated_service(
        "badname",
        Some("10.77.0.194"),
        &[("kube-vip.io/serviceInterface", "eth0/1")],
    )?;
    annotated_service(
        "vlan",
        Some("10.77.0.195"),
        &[
            ("kube-vip.io/serviceInterface", INTERFACE),
            ("kube-vip.io/serviceVLAN", "10"),
        ],
    )?;

    let (answer, took) = probe_until(
        "10.77.0.191:80",
        Duration::from_secs(20),
        Duration::from_millis(50),
        |a| a == "cp1/chosen-1",
    )?;
    println!(
        "    chosen (serviceInterface eth0): {answer} after {} ms",
        took.as_millis()
    );
    let host = wait_for(
        "chosen's vipHost",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || service_status(ANNOTATED, "chosen").and_then(|(_, h)| h),
    )?;
    ensure!(
        nodes_with_address("10.77.0.191") == [host.clone()],
        "10.77.0.191 on the eth0 of {:?}, vipHost {host}",
        nodes_with_address("10.77.0.191")
    );

    let configured = reason_message("configured", "NoUsableInterface")?;
    ensure!(configured.contains("ghost0"), "configured: {configured}");
    let missing = reason_message("missing", "NoUsableInterface")?;
    ensure!(
        missing.contains("kube-vip.io/serviceInterface ghost9"),
        "missing: {missing}"
    );
    let badname = reason_message("badname", "InvalidInput")?;
    ensure!(
        badname.contains("kube-vip.io/serviceInterface") && badname.contains("eth0/1"),
        "badname: {badname}"
    );
    let vlan = reason_message("vlan", "InvalidInput")?;
    ensure!(
        vlan.contains("kube-vip.io/serviceVLAN") && vlan.contains("not supported"),
        "vlan: {vlan}"
    );
    for (name, vip) in [
        ("configured", "10.77.0.190"),
        ("missing", "10.77.0.192"),
        ("badname", "10.77.0.194"),
        ("vlan", "10.77.0.195"),
    ] {
        ensure!(
            nodes_with_address(vip).is_empty(),
            "{name}'s {vip} is on {:?}",
            nodes_with_address(vip)
        );
        ensure!(
            service_status(ANNOTATED, name).is_some_and(|(ips, _)| ips.is_empty()),
            "{name} got an ingress: {:?}",
            service_status(ANNOTATED, name)
        );
    }
    // The good one is unaffected by its neighbours.
    ensure!(
        quick_probe("10.77.0.191:80", 500).as_deref() == Some("cp1/chosen-1"),
        "chosen stopped answering"
    );
    Ok(())
}

/// Writes `ip` into Service `name`'s status, as another controller (or an
/// earlier kube-vip) would have left it.
fn set_status_ingress(name: &str, ip: &str) -> Outcome {
    kubectl(&[
        "-n",
        ANNOTATED,
        "patch",
        "service",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &format!(r#"{{"status":{{"loadBalancer":{{"ingress":[{{"ip":"{ip}"}}]}}}}}}"#),
    ])
    .map(|_| ())
}

/// A Service with no address but in its status (as another controller or
/// an earlier kube-vip left it) is served there, as kube-vip serves it; when
/// it loses its endpoints only vipHost is cleared, and with a pod again it
/// answers at the same address.
fn the_status_ingress_is_an_address_source() -> Outcome {
    const VIP: &str = "10.77.0.193";
    annotated_service(
        "fromstatus",
        None,
        &[("kube-vip.io/serviceInterface", INTERFACE)],
    )?;
    set_status_ingress("fromstatus", VIP)?;
    let target = format!("{VIP}:80");
    probe_until(
        &target,
        Duration::from_secs(20),
        Duration::from_millis(50),
        |a| a == "cp1/fromstatus-1",
    )?;
    wait_for(
        "fromstatus's vipHost",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || service_status(ANNOTATED, "fromstatus").and_then(|(_, h)| h),
    )?;
    lab_ok(&["pod", "delete", "fromstatus-1", "-n", ANNOTATED])?;
    let (ips, _) = wait_for(
        "fromstatus pending: vipHost cleared",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || service_status(ANNOTATED, "fromstatus").filter(|(_, h)| h.is_none()),
    )?;
    ensure!(ips == [VIP], "the ingress went with the endpoints: {ips:?}");
    wait_for(
        &format!("{VIP} withdrawn"),
        Duration::from_secs(10),
        Duration::from_millis(200),
        || nodes_with_address(VIP).is_empty().then_some(()),
    )?;
    lab_pod(ANNOTATED, "fromstatus-2", "cp1", "fromstatus")?;
    let (answer, took) = probe_until(
        &target,
        Duration::from_secs(20),
        Duration::from_millis(50),
        |a| a == "cp1/fromstatus-2",
    )?;
    println!(
        "    fromstatus back at {VIP}: {answer} after {} ms",
        took.as_millis()
    );
    Ok(())
}

/// Anyone who may write a Service's status could name any address there,
/// the site's gateway included: an address only the status names, that no
/// daemon announced, is probed before it is taken. The lab's router answers
/// for its own address, so the Service is refused and no node carries it.
fn a_status_naming_the_gateway_is_probed_first() -> Outcome {
    const GATEWAY: &str = "10.77.0.1";
    annotated_service(
        "gateway",
        None,
        &[("kube-vip.io/serviceInterface", INTERFACE)],
    )?;
    set_status_ingress("gateway", GATEWAY)?;
    let message = reason_message("gateway", "AddressInUse")?;
    println!("    gateway: {message}");
    for _ in 0..20 {
        ensure!(
            nodes_with_address(GATEWAY).is_empty(),
            "{GATEWAY} taken by {:?}",
            nodes_with_address(GATEWAY)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    kubectl(&["-n", ANNOTATED, "delete", "service", "gateway"])?;
    Ok(())
}

fn main() {
    run_all(
        "kube-vip-manifests",
        &[
            Scenario {
                name: "setup",
                run: setup,
            },
            Scenario {
                name: "kube_vips_rbac_grants_no_patch",
                run: kube_vips_rbac_grants_no_patch,
            },
            Scenario {
                name: "daemonset_with_taint",
                run: daemonset_with_taint,
            },
            Scenario {
                name: "daemonset_without_taint",
                run: daemonset_without_taint,
            },
            Scenario {
                name: "static_pod_serves",
                run: static_pod_serves,
            },
            Scenario {
                name: "service_interface_annotation_overrides_the_configured_interface",
                run: service_interface_annotation_overrides_the_configured_interface,
            },
            Scenario {
                name: "the_status_ingress_is_an_address_source",
                run: the_status_ingress_is_an_address_source,
            },
            Scenario {
                name: "a_status_naming_the_gateway_is_probed_first",
                run: a_status_naming_the_gateway_is_probed_first,
            },
            Scenario {
                name: "teardown",
                run: lab_down,
            },
        ],
    );
}
