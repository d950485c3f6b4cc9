//! End to end: migrating from kube-vip to kvip node by node and back, with
//! both running at once in between (the same per-Service Leases in the same
//! namespace, the same timings and interface), while Cluster, Local and
//! shared-address Services are probed every 100 ms from the client and the
//! client asks ARP for every address every 200 ms: no probe may fail and no
//! ARP request may get answers from two MACs.
//!
//! The procedure is the one docs/migrate-from-kube-vip.md gives: the label
//! `kvip.io/daemon` decides which DaemonSet runs on a node; each node in
//! turn is labelled `none` (the old daemon's pod goes), then for the new
//! daemon, whose instance must be ready before the next node. Back the same
//! way.

mod support;

use std::time::Duration;
use support::*;

const NS: &str = "migrate-e2e";
const CLUSTER_VIP: &str = "10.77.0.140";
const LOCAL_VIP: &str = "10.77.0.141";
const SHARED_VIP: &str = "10.77.0.142";
/// The node label that picks the daemon, and its values.
const DAEMON_LABEL: &str = "kvip.io/daemon";
const KUBE_VIP: &str = "kube-vip";
const KVIP: &str = "kvip";
const NODES: [&str; 3] = ["cp1", "worker1", "worker2"];

/// `manifest` with `nodeSelector: { kvip.io/daemon: daemon }` in its pod template.
fn select_by(manifest: &str, daemon: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut inserted = 0;
    for line in manifest.lines() {
        out.push_str(line);
        out.push('\n');
        if line.trim() == "hostNetwork: true" {
            let indent = &line[..line.len() - line.trim_start().len()];
            out.push_str(&format!(
                "{indent}nodeSelector: {{ {DAEMON_LABEL}: \"{daemon}\" }}\n"
            ));
            inserted += 1;
        }
    }
    ensure!(inserted == 1, "expected one pod template, found {inserted}");
    Ok(out)
}

fn kube_vip_manifest() -> Result<std::path::PathBuf, String> {
    let rbac = kvip_lab::kube_vip::rbac().map_err(|e| format!("{e:#}"))?;
    let yaml = select_by(
        &kvip_lab::bench::subject::kube_vip_manifest(&rbac),
        KUBE_VIP,
    )?;
    temp_file("migrate-kube-vip.yaml", &yaml)
}

fn kvip_manifest() -> Result<std::path::PathBuf, String> {
    let mut args = vec!["manifest", "all", "--role", "lb", "--interface", "eth0"];
    args.extend_from_slice(&TIMINGS);
    let yaml = select_by(&kvip(&args)?, KVIP)?;
    temp_file("migrate-kvip.yaml", &yaml)
}

fn label(node: &str, change: &str) -> Outcome {
    kubectl(&["label", "node", node, change, "--overwrite"]).map(|_| ())
}

fn deploy(path: &std::path::Path) -> Outcome {
    lab_ok(&["deploy", &path.display().to_string()]).map(|_| ())
}

fn targets() -> Vec<String> {
    vec![
        format!("{CLUSTER_VIP}:80"),
        format!("{LOCAL_VIP}:80"),
        format!("{SHARED_VIP}:80"),
        format!("{SHARED_VIP}:81"),
    ]
}

fn setup() -> Outcome {
    lab_up()?;
    for node in NODES {
        label(node, &format!("{DAEMON_LABEL}={KUBE_VIP}"))?;
    }
    deploy(&kube_vip_manifest()?)?;
    deploy(&kvip_manifest()?)?;
    namespace(NS)?;
    apply(&lb_service(
        NS,
        "cluster",
        "Cluster",
        Some(CLUSTER_VIP),
        "mc",
    ))?;
    apply(&lb_service(NS, "local", "Local", Some(LOCAL_VIP), "ml"))?;
    apply(&lb_service_on_port(
        NS,
        "shared-a",
        "Cluster",
        Some(SHARED_VIP),
        "mc",
        80,
    ))?;
    apply(&lb_service_on_port(
        NS,
        "shared-b",
        "Cluster",
        Some(SHARED_VIP),
        "mc",
        81,
    ))?;
    lab_pod(NS, "mc-1", "worker1", "mc")?;
    lab_pod(NS, "mc-2", "worker2", "mc")?;
    lab_pod(NS, "ml-1", "worker2", "ml")?;
    for target in targets() {
        answers(&target).map_err(|e| format!("{target} under kube-vip: {e}"))?;
    }
    Ok(())
}

/// The client's ARP requests for every VIP (one every 200 ms each) and the
/// replies to them, captured while `during` runs; an error names every
/// request that got answers from more than one MAC.
fn one_answerer_while<T>(during: impl FnOnce() -> Result<T, String>) -> Result<(T, usize), String> {
    let client_mac = in_netns("kvl-client", "cat", &["/sys/class/net/eth0/address"])?
        .trim()
        .to_lowercase();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let askers: Vec<_> = [CLUSTER_VIP, LOCAL_VIP, SHARED_VIP]
        .into_iter()
        .map(|vip| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = in_netns(
                        "kvl-client",
                        "arping",
                        &["-c", "1", "-w", "1", "-I", "eth0", vip],
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        })
        .collect();
    let result = capture_in_client("arp", Duration::from_secs(1), during);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for asker in askers {
        let _ = asker.join();
    }
    let (value, text) = result?;
    let (replies, problems) = two_answerers(&text, &client_mac);
    ensure!(
        problems.is_empty(),
        "ARP requests answered by two MACs: {problems:?}"
    );
    ensure!(replies > 0, "the client got no ARP reply");
    Ok((value, replies))
}

/// In tcpdump `-e` output: the ARP replies to `client_mac`, and every pair
/// of them for one address from two MACs less than 100 ms apart (two hosts
/// answering one request; a handover shows as answers a request apart).
fn two_answerers(tcpdump: &str, client_mac: &str) -> (usize, Vec<String>) {
    let mut replies: Vec<(f64, String, String)> = Vec::new();
    for line in tcpdump.lines() {
        if !line.contains(&format!("> {client_mac},")) {
            continue;
        }
        let Some((_, rest)) = line.split_once(": Reply ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(ip), Some("is-at"), Some(mac)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let seconds = line
            .split_whitespace()
            .next()
            .and_then(|t| {
                let mut parts = t.split(':');
                let h: f64 = parts.next()?.parse().ok()?;
                let m: f64 = parts.next()?.parse().ok()?;
                let s: f64 = parts.next()?.parse().ok()?;
                Some(h * 3600.0 + m * 60.0 + s)
            })
            .unwrap_or(0.0);
        replies.push((
            seconds,
            ip.to_string(),
            mac.trim_end_matches(',').to_lowercase(),
        ));
    }
    let mut problems = Vec::new();
    for (i, (at, ip, mac)) in replies.iter().enumerate() {
        for (other_at, other_ip, other_mac) in &replies[i + 1..] {
            if other_at - at > 0.1 {
                break;
            }
            if other_ip == ip && other_mac != mac {
                problems.push(format!("{ip} at {at:.3}: {mac} and {other_mac}"));
            }
        }
    }
    (replies.len(), problems)
}

/// Moves `nodes`, one by one, from daemon `from` to daemon `to`: label the
/// node `none` (the DaemonSet of `from` leaves it), then `to` (its
/// DaemonSet starts there), wait until the new daemon is ready, let it
/// settle.
fn migrate(nodes: &[&str], from: &str, to: &str) -> Outcome {
    let kube_vip = kube_vip_manifest()?;
    let kvip = kvip_manifest()?;
    let manifest = |daemon: &str| {
        if daemon == KVIP {
            kvip.clone()
        } else {
            kube_vip.clone()
        }
    };
    let prober = Prober::start(
        &targets().iter().map(String::as_str).collect::<Vec<_>>(),
        Duration::from_secs(1),
    );
    let moved = one_answerer_while(|| {
        for node in nodes {
            label(node, &format!("{DAEMON_LABEL}=none"))?;
            deploy(&manifest(from))?;
            label(node, &format!("{DAEMON_LABEL}={to}"))?;
            deploy(&manifest(to))?;
            if to == KVIP {
                wait_for(
                    &format!("kvip's instance Lease on {node}"),
                    Duration::from_secs(20),
                    Duration::from_millis(200),
                    || {
                        (lease_holder("kube-system", &format!("kvip-lb-{node}")).as_deref()
                            == Some(*node))
                        .then_some(())
                    },
                )?;
            }
            std::thread::sleep(Duration::from_secs(7));
            println!("    {node}: {from} -> {to}");
        }
        Ok(())
    });
    let (sent, failed) = prober.finish();
    let ((), replies) = moved?;
    println!(
        "    {sent} probes, {} failed; {replies} ARP replies, never two MACs for one request",
        failed.len()
    );
    ensure!(sent > 100, "only {sent} probes were sent");
    ensure!(failed.is_empty(), "failed probes: {failed:?}");
    for target in targets() {
        answers(&target).map_err(|e| format!("{target} after the migration: {e}"))?;
    }
    Ok(())
}

fn kube_vip_to_kvip_node_by_node() -> Outcome {
    migrate(&NODES, KUBE_VIP, KVIP)?;
    for (ns, name, vip) in [
        (NS, "cluster", CLUSTER_VIP),
        (NS, "local", LOCAL_VIP),
        (NS, "shared-a", SHARED_VIP),
    ] {
        let (ingress, _) = service_status(ns, name).ok_or(format!("{name} has no status"))?;
        ensure!(ingress == [vip], "{name}: ingress {ingress:?}");
    }
    let local = holder_of(LOCAL_VIP)?;
    ensure!(
        local == "worker2",
        "the Local VIP is on {local}, not with its pod"
    );
    Ok(())
}

fn kvip_to_kube_vip_node_by_node() -> Outcome {
    let mut back = NODES;
    back.reverse();
    migrate(&back, KVIP, KUBE_VIP)
}

fn main() {
    run_all(
        "migration",
        &[
            Scenario {
                name: "setup",
                run: setup,
            },
            Scenario {
                name: "kube_vip_to_kvip_node_by_node",
                run: kube_vip_to_kvip_node_by_node,
            },
            Scenario {
                name: "kvip_to_kube_vip_node_by_node",
                run: kvip_to_kube_vip_node_by_node,
            },
            Scenario {
                name: "teardown",
                run: lab_down,
            },
        ],
    );
}
