//! End to end: `kvip status` against the real API server. It starts from the
//! seed's broken layout (the lb instance only on the control-plane node, the
//! Local Service's pod on a worker), shows the fix clearing it, then produces
//! every other pending reason the API can show, and the refused state,
//! asserting each in `kvip status -o json` and its exit code.

mod support;

use std::process::Command;
use std::time::Duration;
use support::*;

const NS: &str = "status-e2e";
/// Its Service claims an address after NS's: NS keeps it (the first claim wins).
const NS_OTHER: &str = "status-e2e-other";
const EXCLUDE: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// A LoadBalancer Service; `vip` None leaves it without an address.
fn service(ns: &str, name: &str, policy: &str, vip: Option<&str>, selector: &str) -> String {
    lb_service(ns, name, policy, vip, selector)
}

fn pod(name: &str, node: &str, app: &str) -> Result<(), String> {
    lab_pod(NS, name, node, app)
}

/// Waits until `ns/name` is announced by `node`; returns the exit code.
fn wait_announced(ns: &str, name: &str, node: &str) -> Result<i32, String> {
    let mut last = serde_json::Value::Null;
    let found = wait_for(
        &format!("{ns}/{name} to be announced by {node}"),
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            let (exit, entry, _) = row(ns, name).ok()?;
            last = entry.clone();
            (entry["state"] == "announced" && entry["announcer"] == node).then_some(exit)
        },
    );
    found.map_err(|e| format!("{e}; last seen {last}"))
}

fn namespaces() -> Result<(), String> {
    for ns in [NS, NS_OTHER] {
        apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{ name: {ns} }}\n"
        ))?;
    }
    Ok(())
}

/// The manifest `kvip manifest all --role lb` prints, with its DaemonSet
/// pinned to control-plane nodes: the layout the seed shipped.
fn control_plane_only_manifest() -> Result<String, String> {
    let mut args = vec!["manifest", "all", "--role", "lb"];
    args.extend_from_slice(&TIMINGS);
    let text = kvip(&args)?;
    let mut docs = Vec::new();
    let mut pinned = 0;
    for doc in serde_norway::Deserializer::from_str(&text) {
        let mut value = <serde_norway::Value as serde::Deserialize>::deserialize(doc)
            .map_err(|e| format!("manifest: {e}"))?;
        if value.is_null() {
            continue;
        }
        if value["kind"] == "DaemonSet" {
            let spec = value
                .get_mut("spec")
                .and_then(|s| s.get_mut("template"))
                .and_then(|t| t.get_mut("spec"))
                .and_then(|s| s.as_mapping_mut())
                .ok_or("the DaemonSet has no spec.template.spec")?;
            let mut selector = serde_norway::Mapping::new();
            selector.insert(
                "node-role.kubernetes.io/control-plane".into(),
                String::new().into(),
            );
            spec.insert("nodeSelector".into(), selector.into());
            pinned += 1;
        }
        docs.push(serde_norway::to_string(&value).map_err(|e| e.to_string())?);
    }
    ensure!(pinned == 1, "expected one DaemonSet, pinned {pinned}");
    Ok(docs.join("---\n"))
}

fn setup() -> Outcome {
    lab_up()?;
    let path = temp_file("lb-cp-only.yaml", &control_plane_only_manifest()?)?;
    let out = lab_ok(&["deploy", &path.display().to_string()])?;
    ensure!(
        out.contains("running on cp1") && !out.contains("worker"),
        "the broken layout should run on cp1 only: {out}"
    );
    namespaces()?;
    wait_for(
        "the kvip instance Lease of cp1",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || (lease_holder("kube-system", "kvip-lb-cp1").as_deref() == Some("cp1")).then_some(()),
    )
}

fn the_broken_layout_is_pending_naming_the_worker() -> Outcome {
    apply(&service(NS, "web", "Local", Some("10.77.0.150"), "web"))?;
    pod("web-1", "worker1", "web")?;
    let (exit, entry) = wait_reason(NS, "web", "EndpointsOnNodesWithoutKvip")?;
    ensure!(exit == 1, "exit code {exit}, want 1 for a pending Service");
    ensure!(entry["state"] == "pending", "state {}", entry["state"]);
    let message = entry["reason"]["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("worker1") && message.contains("--role lb"),
        "the message should name worker1 and the fix: {message}"
    );
    ensure!(
        entry["announcer"].is_null(),
        "announcer {}",
        entry["announcer"]
    );
    ensure!(
        entry["addresses"] == serde_json::json!(["10.77.0.150"]),
        "addresses {}",
        entry["addresses"]
    );
    let (_, _, doc) = row(NS, "web")?;
    let instances = doc["instances"].as_array().cloned().unwrap_or_default();
    let live = |node: &str| {
        instances
            .iter()
            .any(|i| i["node"] == node && i["live"] == true)
    };
    ensure!(
        live("cp1") && !live("worker1") && !live("worker2"),
        "instances {instances:?}"
    );
    let (exit, table) = kvip_status(&["-n", NS])?;
    ensure!(exit == 1, "table exit code {exit}");
    println!("    kvip status -n {NS} (broken layout):");
    for line in table.lines() {
        println!("      {line}");
    }
    ensure!(
        table.contains("Nodes without a live kvip lb instance") && table.contains("worker1"),
        "the table should list the nodes without kvip:\n{table}"
    );
    Ok(())
}

fn deploying_everywhere_announces_from_the_worker() -> Outcome {
    deploy_lb("lb.yaml", &[])?;
    let exit = wait_announced(NS, "web", "worker1")?;
    ensure!(exit == 0, "exit code {exit}, want 0 once announced");
    let (answer, _) = probe_until(
        "10.77.0.150:80",
        Duration::from_secs(10),
        Duration::from_millis(50),
        |_| true,
    )?;
    ensure!(answer == "worker1/web-1", "answered by {answer}");
    let (exit, table) = kvip_status(&["-n", NS])?;
    ensure!(exit == 0, "table exit code {exit}");
    println!("    kvip status -n {NS} (lb instance on every node):");
    for line in table.lines() {
        println!("      {line}");
    }
    Ok(())
}

fn events_and_metrics_say_the_same() -> Outcome {
    let (_, message, _) = wait_for(
        "a VIPPending Event on web",
        Duration::from_secs(15),
        Duration::from_millis(250),
        || {
            kvip_events(NS, "web")
                .into_iter()
                .find(|(r, _, _)| r == "VIPPending")
        },
    )?;
    ensure!(
        message.contains("worker1") && message.contains("--role lb"),
        "the Event should name worker1 and the fix: {message}"
    );
    let describe = kubectl(&["describe", "service", "web", "-n", NS])?;
    ensure!(
        describe.contains("VIPPending"),
        "kubectl describe shows no VIPPending Event:\n{describe}"
    );
    let samples = parse_metrics(&http_get("10.77.0.11:2113", "/metrics")?)?;
    let pending = samples
        .iter()
        .find(|s| s.starts_with("kvip_pending_services{reason=\"EndpointsOnNodesWithoutKvip\"}"))
        .ok_or(format!(
            "no pending metric for EndpointsOnNodesWithoutKvip: {samples:?}"
        ))?;
    let value: f64 = pending
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    ensure!(value == 1.0, "pending metric {pending}");
    println!("    Event: VIPPending: {message}\n    metric: {pending}");
    Ok(())
}

fn the_fix_records_vip_announced() -> Outcome {
    let (_, message, _) = wait_for(
        "a VIPAnnounced Event on web",
        Duration::from_secs(10),
        Duration::from_millis(250),
        || {
            kvip_events(NS, "web")
                .into_iter()
                .find(|(r, _, _)| r == "VIPAnnounced")
        },
    )?;
    ensure!(
        message.contains("worker1") && message.contains("eth0"),
        "VIPAnnounced should name the node and interface: {message}"
    );
    Ok(())
}

fn twenty_moves_make_one_vip_moved_event_each() -> Outcome {
    let mut on = ("web-1".to_string(), "worker1");
    for i in 0..20 {
        let to = if on.1 == "worker1" {
            "worker2"
        } else {
            "worker1"
        };
        let name = format!("web-m{i}");
        pod(&name, to, "web")?;
        lab_ok(&["pod", "delete", &on.0, "-n", NS])?;
        probe_until(
            "10.77.0.150:80",
            Duration::from_secs(10),
            Duration::from_millis(20),
            |a| a.starts_with(to),
        )?;
        on = (name, to);
    }
    // Back to the pod the later scenarios expect (same node: no move).
    pod("web-1", "worker1", "web")?;
    lab_ok(&["pod", "delete", &on.0, "-n", NS])?;
    std::thread::sleep(Duration::from_secs(2));
    let events = kvip_events(NS, "web");
    let moved: i64 = events
        .iter()
        .filter(|(r, _, _)| r == "VIPMoved")
        .map(|(_, _, c)| c)
        .sum();
    println!(
        "    20 moves: {moved} VIPMoved in {} Event objects for the Service",
        events.len()
    );
    ensure!(moved <= 20, "{moved} VIPMoved Events for 20 moves");
    ensure!(moved >= 18, "only {moved} VIPMoved Events for 20 moves");
    ensure!(events.len() <= 8, "an Event storm: {events:?}");
    Ok(())
}

fn metrics_parse_as_exposition_format_on_every_node() -> Outcome {
    for ip in ["10.77.0.11", "10.77.0.12", "10.77.0.13"] {
        let samples = parse_metrics(&http_get(&format!("{ip}:2113"), "/metrics")?)?;
        for name in [
            "kvip_build_info",
            "kvip_api_requests_total",
            "kvip_vips_held",
            "kube_vip_is_leader",
        ] {
            ensure!(
                samples.iter().any(|s| s.starts_with(name)),
                "{ip}: no {name}"
            );
        }
        ensure!(
            http_get(&format!("{ip}:2113"), "/healthz").is_ok(),
            "{ip}: /healthz failed"
        );
        ensure!(
            http_get(&format!("{ip}:2113"), "/readyz").is_ok(),
            "{ip}: /readyz failed"
        );
    }
    let samples = parse_metrics(&http_get("10.77.0.12:2113", "/metrics")?)?;
    let sent = samples
        .iter()
        .filter(|s| s.starts_with("kvip_gratuitous_packets_sent_total"))
        .count();
    ensure!(sent > 0, "worker1 reports no gratuitous packets");
    Ok(())
}

fn no_address() -> Outcome {
    apply(&service(NS, "noaddr", "Cluster", None, "web"))?;
    let (exit, entry) = wait_reason(NS, "noaddr", "NoAddress")?;
    ensure!(exit == 1, "exit code {exit}");
    ensure!(
        entry["addresses"] == serde_json::json!([]),
        "addresses {}",
        entry["addresses"]
    );
    Ok(())
}

fn no_ready_endpoints() -> Outcome {
    apply(&service(
        NS,
        "nopods",
        "Cluster",
        Some("10.77.0.151"),
        "nothing-matches",
    ))?;
    let (exit, _) = wait_reason(NS, "nopods", "NoReadyEndpoints")?;
    ensure!(exit == 1, "exit code {exit}");
    Ok(())
}

/// kubeadm labels every control-plane node to be excluded from external
/// load balancers and kube-vip ignores the label, so by default kvip ignores
/// it too: a Service whose only candidate carries it is still served, and
/// `kvip status` says the label is ignored. With kvip_exclude_lb_label=true
/// the node announces nothing, the Service is pending AllCandidatesExcluded
/// and `kvip status --exclude-lb-label` names the node it excludes.
fn all_candidates_excluded() -> Outcome {
    const VIP: &str = "10.77.0.152";
    apply(&service(NS, "excl", "Local", Some(VIP), "excl"))?;
    pod("excl-1", "worker2", "excl")?;
    wait_announced(NS, "excl", "worker2")?;
    kubectl(&[
        "label",
        "node",
        "worker2",
        &format!("{EXCLUDE}=true"),
        "--overwrite",
    ])?;
    let result = label_ignored_then_honoured(VIP);
    kubectl(&["label", "node", "worker2", &format!("{EXCLUDE}-")])?;
    let restored = deploy_lb("lb.yaml", &[]).map(|_| ());
    result?;
    restored?;
    let exit = wait_announced(NS, "excl", "worker2")?;
    ensure!(exit == 0, "exit code {exit} after removing the label");
    Ok(())
}

/// The part of [`all_candidates_excluded`] that runs while worker2 carries the label.
fn label_ignored_then_honoured(vip: &str) -> Outcome {
    // Long enough for several assessments after the label arrived.
    std::thread::sleep(Duration::from_secs(3));
    let (_, entry, _) = row(NS, "excl")?;
    ensure!(
        entry["state"] == "announced" && entry["announcer"] == "worker2",
        "by default the label is ignored, as kube-vip ignores it: {entry}"
    );
    ensure!(
        nodes_with_address(vip) == ["worker2"],
        "{vip} is on {:?}",
        nodes_with_address(vip)
    );
    let (answer, _) = probe_until(
        &format!("{vip}:80"),
        Duration::from_secs(5),
        Duration::from_millis(50),
        |_| true,
    )?;
    ensure!(answer == "worker2/excl-1", "answered by {answer}");
    let (_, table) = kvip_status(&["-n", NS])?;
    ensure!(
        table.contains("still announce Service VIPs") && table.contains("worker2"),
        "the table should say the label is ignored on worker2:\n{table}"
    );

    deploy_lb("lb.yaml", &HONOUR_EXCLUDE_LABEL)?;
    let mut last = serde_json::Value::Null;
    let (exit, entry) = wait_for(
        "excl to be pending AllCandidatesExcluded",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            let (exit, text) =
                kvip_status(&["-n", NS, "excl", "-o", "json", "--exclude-lb-label"]).ok()?;
            let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
            last = doc["services"][0].clone();
            (code_of(&last) == "AllCandidatesExcluded").then(|| (exit, last.clone()))
        },
    )
    .map_err(|e| format!("{e}; last seen {last}"))?;
    ensure!(exit == 1, "exit code {exit}");
    let message = entry["reason"]["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("worker2") && message.contains("kvip_exclude_lb_label"),
        "message {message}"
    );
    wait_for(
        "worker2 to withdraw the VIP",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || nodes_with_address(vip).is_empty().then_some(()),
    )?;
    let (_, table) = kvip_status(&["-n", NS, "--exclude-lb-label"])?;
    // kubeadm labels the control plane too: worker2 is one of those named.
    let excluded = table
        .lines()
        .find(|l| l.starts_with("Nodes excluded from announcing Service VIPs"))
        .and_then(|l| l.split("kvip_exclude_lb_label=true): ").nth(1))
        .map(|names| names.split(", ").any(|n| n.trim() == "worker2"));
    ensure!(
        excluded == Some(true),
        "the table should name the excluded node:\n{table}"
    );
    Ok(())
}

fn address_conflict_across_namespaces() -> Outcome {
    apply(&service(NS, "claim", "Cluster", Some("10.77.0.153"), "web"))?;
    let (_, entry, _) = row(NS, "claim")?;
    ensure!(
        entry["state"] != "pending",
        "the first claim is pending: {entry}"
    );
    apply(&service(
        NS_OTHER,
        "claim",
        "Cluster",
        Some("10.77.0.153"),
        "web",
    ))?;
    let (exit, entry) = wait_reason(NS_OTHER, "claim", "AddressConflict")?;
    ensure!(exit == 1, "exit code {exit}");
    let message = entry["reason"]["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains(&format!("{NS}/claim")),
        "the message should name the Service that keeps it: {message}"
    );
    let (_, first, _) = row(NS, "claim")?;
    ensure!(
        first["reason"].is_null(),
        "the first claim lost its address: {first}"
    );
    Ok(())
}

fn a_nodes_own_address() -> Outcome {
    let node = get_json(&["node", "worker2"])?;
    let ip = node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .ok_or("worker2 has no InternalIP")?
        .to_string();
    apply(&service(NS, "stolen", "Cluster", Some(&ip), "web"))?;
    let (exit, entry) = wait_reason(NS, "stolen", "AddressInUse")?;
    ensure!(exit == 1, "exit code {exit}");
    let message = entry["reason"]["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("worker2") && message.contains(&ip),
        "message {message}"
    );
    Ok(())
}

fn bad_input_is_refused_and_the_rest_still_served() -> Outcome {
    apply(&service(NS, "bad", "Local", Some("10.77.0.x"), "web"))?;
    let (exit, entry) = wait_reason(NS, "bad", "InvalidInput")?;
    ensure!(exit == 1, "exit code {exit}");
    ensure!(entry["state"] == "refused", "state {}", entry["state"]);
    let message = entry["reason"]["message"].as_str().unwrap_or_default();
    ensure!(message.contains("10.77.0.x"), "message {message}");
    // The daemon keeps serving what it served, and what comes after.
    std::thread::sleep(Duration::from_secs(1));
    ensure!(
        quick_probe("10.77.0.150:80", 1000).as_deref() == Some("worker1/web-1"),
        "web stopped answering after the bad Service"
    );
    apply(&service(NS, "after", "Cluster", Some("10.77.0.154"), "web"))?;
    probe_until(
        "10.77.0.154:80",
        Duration::from_secs(10),
        Duration::from_millis(50),
        |a| a == "worker1/web-1",
    )?;
    let (exit, table) = kvip_status(&["-o", "wide"])?;
    ensure!(exit == 1, "whole-cluster exit code {exit}");
    println!("    kvip status -o wide (every state):");
    for line in table.lines() {
        println!("      {line}");
    }
    Ok(())
}

fn teardown() -> Outcome {
    let kubeconfig = lab_env()?.get("KUBECONFIG").cloned().unwrap_or_default();
    lab_ok(&["down"])?;
    // Without an API server the command must say so with exit code 2.
    let out = Command::new(kvip_bin())
        .args(["status", "--kubeconfig", &kubeconfig])
        .output()
        .map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(2),
        "exit code {:?} without a cluster: {stderr}",
        out.status.code()
    );
    ensure!(stderr.contains("kvip status:"), "stderr {stderr}");
    Ok(())
}

fn main() {
    run_all(
        "status",
        &[
            Scenario {
                name: "setup",
                run: setup,
            },
            Scenario {
                name: "the_broken_layout_is_pending_naming_the_worker",
                run: the_broken_layout_is_pending_naming_the_worker,
            },
            Scenario {
                name: "events_and_metrics_say_the_same",
                run: events_and_metrics_say_the_same,
            },
            Scenario {
                name: "deploying_everywhere_announces_from_the_worker",
                run: deploying_everywhere_announces_from_the_worker,
            },
            Scenario {
                name: "the_fix_records_vip_announced",
                run: the_fix_records_vip_announced,
            },
            Scenario {
                name: "twenty_moves_make_one_vip_moved_event_each",
                run: twenty_moves_make_one_vip_moved_event_each,
            },
            Scenario {
                name: "metrics_parse_as_exposition_format_on_every_node",
                run: metrics_parse_as_exposition_format_on_every_node,
            },
            Scenario {
                name: "no_address",
                run: no_address,
            },
            Scenario {
                name: "no_ready_endpoints",
                run: no_ready_endpoints,
            },
            Scenario {
                name: "all_candidates_excluded",
                run: all_candidates_excluded,
            },
            Scenario {
                name: "address_conflict_across_namespaces",
                run: address_conflict_across_namespaces,
            },
            Scenario {
                name: "a_nodes_own_address",
                run: a_nodes_own_address,
            },
            Scenario {
                name: "bad_input_is_refused_and_the_rest_still_served",
                run: bad_input_is_refused_and_the_rest_still_served,
            },
            Scenario {
                name: "teardown",
                run: teardown,
            },
        ],
    );
}
