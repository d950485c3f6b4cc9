//! End to end: migrating from kube-vip to kvip node by node and back, with
//! both running at once in between (the same per-Service Leases in the same
//! namespace, the same timings and interface), while Cluster, Local and
//! shared-address Services are probed every 100 ms from the client and the
//! client asks ARP for every address every 200 ms: no probe may fail and no
//! ARP request may get answers from two MACs with kvip one of them (two
//! kube-vip nodes may each hold a Lease of a shared address and both
//! answer: kube-vip's own race, printed).
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
/// The node that switches last from kube-vip, and first back: the one
/// kube-vip announces every address from when the migration starts.
const LAST: &str = "worker2";

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
    // kube-vip elects each Service on its own Lease, so two kube-vip nodes
    // may each win one of two Services sharing an address and both answer
    // it: its own race, not the migration's. The Services are created while
    // kube-vip runs on the last node to switch alone, which therefore holds
    // every Lease; the others join it before the migration starts.
    for node in NODES {
        let daemon = if node == LAST { KUBE_VIP } else { "none" };
        label(node, &format!("{DAEMON_LABEL}={daemon}"))?;
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
    // shared-a is the older (creation times have whole seconds): kvip
    // elects the shared address through its Lease.
    std::thread::sleep(Duration::from_millis(1100));
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
    for lease in ["cluster", "local", "shared-a", "shared-b"] {
        let lease = format!("kubevip-{lease}");
        wait_for(
            &format!("kube-vip on {LAST} holding {lease}"),
            Duration::from_secs(20),
            Duration::from_millis(200),
            || (lease_holder(NS, &lease).as_deref() == Some(LAST)).then_some(()),
        )?;
    }
    for node in NODES.iter().filter(|n| **n != LAST) {
        label(node, &format!("{DAEMON_LABEL}={KUBE_VIP}"))?;
    }
    deploy(&kube_vip_manifest()?)?;
    Ok(())
}

/// The client's ARP requests for every VIP (one every 200 ms each) and the
/// replies to them, captured while `during` runs: the value, how many
/// replies came, and every request answered by two MACs.
fn arp_while<T>(
    during: impl FnOnce() -> Result<T, String>,
) -> Result<(T, usize, Vec<Pair>), String> {
    let client_mac = node_mac("kvl-client")?;
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
    let (replies, pairs) = two_answerers(&text, &client_mac);
    Ok((value, replies, pairs))
}

fn node_mac(netns: &str) -> Result<String, String> {
    Ok(in_netns(netns, "cat", &["/sys/class/net/eth0/address"])?
        .trim()
        .to_lowercase())
}

/// One ARP request for `ip` answered from two MACs, at `at` (seconds of
/// the day, UTC).
struct Pair {
    at: f64,
    ip: String,
    macs: [String; 2],
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at {:.3}: {} and {}",
            self.ip, self.at, self.macs[0], self.macs[1]
        )
    }
}

/// In tcpdump `-e` output: the ARP replies to `client_mac`, and every pair
/// of them for one address from two MACs less than 100 ms apart (two hosts
/// answering one request; a handover shows as answers a request apart).
fn two_answerers(tcpdump: &str, client_mac: &str) -> (usize, Vec<Pair>) {
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
    let mut pairs = Vec::new();
    for (i, (at, ip, mac)) in replies.iter().enumerate() {
        for (other_at, other_ip, other_mac) in &replies[i + 1..] {
            if other_at - at > 0.1 {
                break;
            }
            if other_ip == ip && other_mac != mac {
                pairs.push(Pair {
                    at: *at,
                    ip: ip.clone(),
                    macs: [mac.clone(), other_mac.clone()],
                });
            }
        }
    }
    (replies.len(), pairs)
}

/// When each node ran kvip (seconds of the day, UTC; an open interval
/// ends at `f64::MAX`).
#[derive(Default)]
struct KvipTimes(std::collections::BTreeMap<String, Vec<(f64, f64)>>);

impl KvipTimes {
    fn started(&mut self, node: &str, at: f64) {
        self.0
            .entry(node.to_string())
            .or_default()
            .push((at, f64::MAX));
    }

    fn stopped(&mut self, node: &str, at: f64) {
        if let Some(last) = self.0.get_mut(node).and_then(|v| v.last_mut()) {
            last.1 = last.1.min(at);
        }
    }

    fn ran(&self, node: &str, at: f64) -> bool {
        self.0
            .get(node)
            .is_some_and(|v| v.iter().any(|(from, to)| *from <= at && at <= *to))
    }
}

/// Moves `nodes`, one by one, from daemon `from` to daemon `to`: label the
/// node `none` (the DaemonSet of `from` leaves it), then `to` (its
/// DaemonSet starts there), wait until the new daemon is ready, let it
/// settle. Each switch is probed and its ARP answers checked on its own:
/// no probe may fail, and kvip may never be one of two MACs answering one
/// request. Two kube-vip nodes answering one request (kube-vip's own race
/// on a shared address) are printed, not kvip's to answer for.
fn migrate(nodes: &[&str], from: &str, to: &str, after: impl Fn(&str) -> Outcome) -> Outcome {
    let kube_vip = kube_vip_manifest()?;
    let kvip = kvip_manifest()?;
    let manifest = |daemon: &str| {
        if daemon == KVIP {
            kvip.clone()
        } else {
            kube_vip.clone()
        }
    };
    let mut macs = std::collections::BTreeMap::new();
    for node in NODES {
        macs.insert(node_mac(&format!("kvl-{node}"))?, node.to_string());
    }
    let mut times = KvipTimes::default();
    if from == KVIP {
        for node in NODES {
            times.started(node, 0.0);
        }
    }
    let targets = targets();
    let mut problems = Vec::new();
    let mut sent_total = 0;
    for node in nodes {
        let prober = Prober::start(
            &targets.iter().map(String::as_str).collect::<Vec<_>>(),
            Duration::from_secs(1),
        );
        let switched = arp_while(|| {
            label(node, &format!("{DAEMON_LABEL}=none"))?;
            deploy(&manifest(from))?;
            if from == KVIP {
                times.stopped(node, time_of_day());
            }
            label(node, &format!("{DAEMON_LABEL}={to}"))?;
            if to == KVIP {
                times.started(node, time_of_day());
            }
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
            after(node)
        });
        let (sent, failed) = prober.finish();
        sent_total += sent;
        let ((), replies, pairs) = switched?;
        let (kvips, kube_vips): (Vec<&Pair>, Vec<&Pair>) = pairs.iter().partition(|p| {
            p.macs
                .iter()
                .any(|m| macs.get(m).is_some_and(|n| times.ran(n, p.at)))
        });
        println!(
            "    {node}: {from} -> {to}: {sent} probes, {} failed; {replies} ARP replies, {} answered by two MACs with kvip one of them, {} by two kube-vip nodes",
            failed.len(),
            kvips.len(),
            kube_vips.len()
        );
        if !kube_vips.is_empty() {
            println!("      kube-vip's own: {kube_vips:?}");
        }
        ensure!(replies > 0, "{node}: the client got no ARP reply");
        if !kvips.is_empty() {
            problems.push(format!(
                "{node}: kvip and another MAC answered one request: {kvips:?}"
            ));
        }
        if !failed.is_empty() {
            problems.push(format!("{node}: failed probes {failed:?}"));
        }
    }
    ensure!(sent_total > 100, "only {sent_total} probes were sent");
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    for target in targets {
        answers(&target).map_err(|e| format!("{target} after the migration: {e}"))?;
    }
    Ok(())
}

/// Clears the holder of `lease` (as a release does) while `holder` holds
/// it, until `wanted` holds it.
fn free_until(lease: &str, holder: &str, wanted: &str) -> Outcome {
    wait_for(
        &format!("{wanted} taking {lease} once {holder} frees it"),
        Duration::from_secs(40),
        Duration::from_millis(100),
        || {
            let now = lease_holder(NS, lease);
            if now.as_deref() == Some(wanted) {
                return Some(());
            }
            if now.as_deref() == Some(holder) {
                let _ = kubectl(&[
                    "patch",
                    "lease",
                    lease,
                    "-n",
                    NS,
                    "--type",
                    "merge",
                    "-p",
                    r#"{"spec":{"holderIdentity":""}}"#,
                ]);
            }
            None
        },
    )
}

/// kube-vip elects each Service on its own Lease, so two kube-vip nodes
/// may each win one of two Services sharing an address (both answer it),
/// and when one of them leaves, kvip may take its Lease while kube-vip
/// keeps the other. Once `node` runs kvip, the test makes that happen:
/// `kubevip-shared-b` is freed until kube-vip on another node than
/// [`LAST`] wins it (kube-vip's own split, which the capture counts as
/// kube-vip's), then `kubevip-shared-a` until kvip takes it. kvip must then
/// leave the address to kube-vip: the address never on a kvip node, never
/// two MACs with kvip one of them (the capture around this step checks),
/// and kvip says why in its log.
fn split_with_kube_vip(node: &str) -> Outcome {
    let other = NODES[1];
    if node == other {
        // kube-vip on `other` left and freed kubevip-shared-b: kvip's holder
        // of kubevip-shared-a took it and answers alone.
        // (kube-vip on LAST may win that race instead: then kvip waits on.)
        let a = lease_holder(NS, "kubevip-shared-a").ok_or("kubevip-shared-a is not held")?;
        let b = wait_for(
            &format!("kvip on {a} (or kube-vip on {LAST}) holding kubevip-shared-b"),
            Duration::from_secs(10),
            Duration::from_millis(100),
            || lease_holder(NS, "kubevip-shared-b").filter(|h| *h == a || h == LAST),
        )?;
        let carriers = nodes_with_address(SHARED_VIP);
        if b == a {
            ensure!(
                carriers == [a.clone()],
                "{SHARED_VIP} is on {carriers:?}, not on kvip's holder {a}"
            );
            println!(
                "    {node}: kube-vip left; kvip on {a} holds both Leases and answers {SHARED_VIP}"
            );
        } else {
            ensure!(
                !carriers.contains(&a),
                "kvip on {a} announces {SHARED_VIP} beside kube-vip on {LAST}: {carriers:?}"
            );
            println!(
                "    {node}: kube-vip left; kube-vip on {LAST} won kubevip-shared-b, kvip waits"
            );
        }
        return Ok(());
    }
    if node != NODES[0] {
        return Ok(());
    }
    free_until("kubevip-shared-b", LAST, other)?;
    free_until("kubevip-shared-a", LAST, node)?;
    let until = std::time::Instant::now() + Duration::from_secs(6);
    while std::time::Instant::now() < until {
        let carriers = nodes_with_address(SHARED_VIP);
        ensure!(
            !carriers.iter().any(|c| c == node),
            "kvip on {node} announces {SHARED_VIP} beside kube-vip: {carriers:?}"
        );
        let b = lease_holder(NS, "kubevip-shared-b");
        ensure!(
            b.as_deref() == Some(other),
            "kubevip-shared-b is held by {b:?}, not kube-vip on {other}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = lab_ok(&["logs", node])?;
    ensure!(
        log.contains("holding the Lease but not announcing"),
        "kvip on {node} does not say why it holds back {SHARED_VIP}"
    );
    let (_, status) = kvip_status(&[])?;
    let shared_a = status
        .lines()
        .find(|l| l.starts_with(&format!("{NS}/shared-a ")))
        .ok_or_else(|| format!("kvip status lists no {NS}/shared-a:\n{status}"))?;
    ensure!(
        shared_a.contains("ForeignHolder") && shared_a.contains(other),
        "kvip status does not say that {other} answers for {SHARED_VIP}: {shared_a}"
    );
    println!(
        "    {node}: kvip holds kubevip-shared-a and leaves {SHARED_VIP} to kube-vip on {other}, which holds kubevip-shared-b"
    );
    Ok(())
}

fn kube_vip_to_kvip_node_by_node() -> Outcome {
    migrate(&NODES, KUBE_VIP, KVIP, split_with_kube_vip)?;
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
    migrate(&back, KVIP, KUBE_VIP, |_| Ok(()))
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
