//! End to end: kvip on its worst day — API outages, a holder cut off from
//! the API, crashes, rolling restarts, bad input, and a seeded chaos run —
//! with clients probing the VIPs throughout.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const NS: &str = "fail-e2e";
const CLUSTER_VIP: &str = "10.77.0.120";
const LOCAL_VIP: &str = "10.77.0.121";
/// vip_arpRate: the refresh interval the contract measures overlaps against.
const REFRESH: Duration = Duration::from_secs(3);
const LEASE: Duration = Duration::from_secs(5);
/// How long kube-proxy may take to program a rule after a fault: client-go's
/// reflectors back off up to 30 s after an API outage.
const KUBE_PROXY_RESYNC: Duration = Duration::from_secs(35);

fn service(name: &str, namespace: &str, policy: &str, annotation: &str, selector: &str) -> String {
    lb_service(namespace, name, policy, Some(annotation), selector)
}

/// A stretch of time with two or more nodes carrying one VIP.
struct Stretch {
    vip: String,
    nodes: Vec<String>,
    /// Since the sampler started.
    from: Duration,
    length: Duration,
}

/// Samples which nodes carry each VIP every 50 ms and records every stretch
/// with two or more nodes carrying the same VIP.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<Stretch>>,
    holders: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
    started: Instant,
}

impl Sampler {
    fn start(vips: &[&str]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let holders = Arc::new(Mutex::new(BTreeMap::new()));
        let vips: Vec<String> = vips.iter().map(|v| v.to_string()).collect();
        let started = Instant::now();
        let (flag, seen) = (stop.clone(), holders.clone());
        let handle = std::thread::spawn(move || {
            let mut stretches = Vec::new();
            let mut open: BTreeMap<String, (Instant, Vec<String>)> = BTreeMap::new();
            let close = |vip: String, (start, nodes): (Instant, Vec<String>)| Stretch {
                vip,
                nodes,
                from: start.duration_since(started),
                length: start.elapsed(),
            };
            while !flag.load(Ordering::Relaxed) {
                for vip in &vips {
                    let nodes = nodes_with_address(vip);
                    if nodes.len() >= 2 {
                        open.entry(vip.clone())
                            .or_insert_with(|| (Instant::now(), nodes.clone()));
                    } else if let Some(o) = open.remove(vip) {
                        stretches.push(close(vip.clone(), o));
                    }
                    if let Ok(mut h) = seen.lock() {
                        h.insert(vip.clone(), nodes);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            stretches.extend(open.into_iter().map(|(vip, o)| close(vip, o)));
            stretches
        });
        Self {
            stop,
            handle,
            holders,
            started,
        }
    }

    /// Seconds since the sampler started, to line events up with stretches.
    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn holders(&self, vip: &str) -> Vec<String> {
        self.holders
            .lock()
            .ok()
            .and_then(|h| h.get(vip).cloned())
            .unwrap_or_default()
    }

    /// Every two-carrier stretch, in the order they ended.
    fn finish(self) -> Vec<Stretch> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// The longest two-carrier stretch per VIP.
fn longest(stretches: &[Stretch]) -> BTreeMap<String, Duration> {
    let mut out: BTreeMap<String, Duration> = BTreeMap::new();
    for s in stretches {
        let d = out.entry(s.vip.clone()).or_default();
        *d = (*d).max(s.length);
    }
    out
}

fn setup() -> Outcome {
    lab_ok(&["down"])?;
    lab_up()?;
    // The lab's only API server runs on cp1; keep VIPs on the workers.
    kubectl(&[
        "label",
        "node",
        "cp1",
        "node.kubernetes.io/exclude-from-external-load-balancers=true",
        "--overwrite",
    ])?;
    deploy_lb("lb.yaml", &HONOUR_EXCLUDE_LABEL)?;
    namespace(NS)?;
    apply(&service("cluster", NS, "Cluster", CLUSTER_VIP, "api"))?;
    apply(&service("local", NS, "Local", LOCAL_VIP, "loc"))?;
    for (pod, node, app) in [
        ("api-1", "worker1", "api"),
        ("api-2", "worker2", "api"),
        ("loc-1", "worker2", "loc"),
    ] {
        lab_ok(&[
            "pod",
            pod,
            "--node",
            node,
            "--labels",
            &format!("app={app}"),
            "--port",
            "8080",
            "-n",
            NS,
        ])?;
    }
    for vip in [CLUSTER_VIP, LOCAL_VIP] {
        probe_until(
            &format!("{vip}:80"),
            Duration::from_secs(15),
            Duration::from_millis(50),
            |_| true,
        )?;
    }
    Ok(())
}

fn api_outage_drops_no_probe() -> Outcome {
    let targets = [format!("{CLUSTER_VIP}:80"), format!("{LOCAL_VIP}:80")];
    let before = holder_of(CLUSTER_VIP)?;
    let prober = Prober::start(&[&targets[0], &targets[1]], Duration::from_secs(1));
    std::thread::sleep(Duration::from_secs(1));
    lab_ok(&["fault", "apiserver-stop"])?;
    std::thread::sleep(Duration::from_secs(30));
    lab_ok(&["fault", "apiserver-start"])?;
    let restarted = std::time::Instant::now();
    // Converged: a Service created after the outage gets its VIP.
    apply(&service("after", NS, "Cluster", "10.77.0.122", "api"))?;
    let (_, took) = probe_until(
        "10.77.0.122:80",
        Duration::from_secs(90),
        Duration::from_millis(200),
        |_| true,
    )?;
    let (sent, failed) = prober.finish();
    println!(
        "    30 s without any API server: {sent} probes, {} failed; new Service served {} ms after restart",
        failed.len(),
        took.as_millis()
    );
    ensure!(failed.is_empty(), "failed probes: {failed:?}");
    // Nobody could see the holder renew while the API was down, so nobody
    // may judge its Lease expired from before the outage: the Cluster VIP
    // stays where it was, a lease duration and more after the restart.
    let settle = Duration::from_secs(8);
    std::thread::sleep(settle.saturating_sub(restarted.elapsed()));
    let after = holder_of(CLUSTER_VIP)?;
    println!("    holder of {CLUSTER_VIP}: {before} before the outage, {after} after");
    ensure!(
        after == before,
        "the VIP moved from {before} to {after} after the API outage"
    );
    Ok(())
}

fn cut_off_holder_hands_over_with_one_answerer() -> Outcome {
    let old = holder_of(CLUSTER_VIP)?;
    let sampler = Sampler::start(&[CLUSTER_VIP]);
    let cut = Instant::now();
    lab_ok(&["fault", "isolate-api", &old])?;
    let new = wait_for(
        "another node to take the VIP",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let h = sampler.holders(CLUSTER_VIP);
            (h.len() == 1 && h[0] != old).then(|| h[0].clone())
        },
    )?;
    let took = cut.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    lab_ok(&["fault", "heal", &old])?;
    std::thread::sleep(LEASE + Duration::from_secs(2));
    let after_heal = holder_of(CLUSTER_VIP)?;
    let overlap = longest(&sampler.finish())
        .get(CLUSTER_VIP)
        .copied()
        .unwrap_or_default();
    println!(
        "    {old} cut off -> {new} announces after {} ms; both carried it for {} ms; after heal: {after_heal}",
        took.as_millis(),
        overlap.as_millis()
    );
    ensure!(
        took <= LEASE + Duration::from_secs(3),
        "takeover took {took:?}"
    );
    ensure!(
        overlap < REFRESH,
        "two nodes carried the VIP for {overlap:?}, more than one refresh interval"
    );
    ensure!(after_heal == new, "heal moved the VIP back to {after_heal}");
    Ok(())
}

fn crashed_kvip_readopts_without_a_gap() -> Outcome {
    let holder = holder_of(CLUSTER_VIP)?;
    let prober = Prober::start(&[&format!("{CLUSTER_VIP}:80")], Duration::from_secs(1));
    lab_ok(&["fault", "crash-daemons", &holder])?;
    std::thread::sleep(LEASE + Duration::from_secs(2));
    let (sent, failed) = prober.finish();
    let now = holder_of(CLUSTER_VIP)?;
    println!(
        "    kvip on {holder} crashed and restarted: {sent} probes, {} failed; VIP on {now}",
        failed.len()
    );
    ensure!(failed.is_empty(), "failed probes: {failed:?}");
    ensure!(
        now == holder,
        "the VIP moved to {now} although {holder} kept its Lease"
    );
    Ok(())
}

fn rolling_restart_drops_no_probe() -> Outcome {
    let prober = Prober::start(&[&format!("{CLUSTER_VIP}:80")], Duration::from_secs(3));
    let started = Instant::now();
    // The same manifest again, restarted as `kubectl rollout restart` does.
    let path = deploy_lb("lb.yaml", &HONOUR_EXCLUDE_LABEL)?;
    lab_ok(&["deploy", "--restart", &path.display().to_string()])?;
    std::thread::sleep(Duration::from_secs(3));
    let (sent, failed) = prober.finish();
    println!(
        "    rolling restart of 3 nodes in {} ms: {sent} probes, {} failed",
        started.elapsed().as_millis(),
        failed.len()
    );
    ensure!(failed.is_empty(), "failed probes: {failed:?}");
    Ok(())
}

fn bad_input_never_hurts_other_services() -> Outcome {
    namespace("fail-other")?;
    let cases: [(&str, &str, &str); 7] = [
        ("malformed", NS, "10.77.0.x"),
        ("wrong-family", NS, "fd00:77::1:99"),
        ("broadcast", NS, "255.255.255.255"),
        ("unspecified", NS, "0.0.0.0"),
        ("node-address", NS, "10.77.0.12"),
        ("subnet-broadcast", NS, "10.77.0.255"),
        ("conflict", "fail-other", CLUSTER_VIP),
    ];
    for (name, ns, ip) in cases {
        apply(&service(name, ns, "Cluster", ip, "api"))?;
    }
    // A Lease edited by hand to garbage, for a valid Service.
    apply(&service(
        "garbage-lease",
        NS,
        "Cluster",
        "10.77.0.123",
        "api",
    ))?;
    kubectl(&[
        "delete",
        "lease",
        "kubevip-garbage-lease",
        "-n",
        NS,
        "--ignore-not-found",
    ])?;
    apply(&format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{ name: kubevip-garbage-lease, namespace: {NS} }}\nspec: {{ holderIdentity: ghost-node-that-never-renews, leaseDurationSeconds: 86400, leaseTransitions: 7 }}\n"
    ))?;
    // An EndpointSlice naming a node that does not exist.
    apply(&format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{ name: unknown-node, namespace: {NS}, annotations: {{ kube-vip.io/loadbalancerIPs: "10.77.0.124" }} }}
spec: {{ type: LoadBalancer, externalTrafficPolicy: Local, ports: [{{ port: 80, targetPort: 8080 }}] }}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{ name: unknown-node-1, namespace: {NS}, labels: {{ kubernetes.io/service-name: unknown-node }} }}
addressType: IPv4
ports: [{{ port: 8080 }}]
endpoints: [{{ addresses: ["10.78.9.9"], nodeName: no-such-node, conditions: {{ ready: true }} }}]
"#
    ))?;
    let (_, took) = probe_until(
        "10.77.0.123:80",
        Duration::from_secs(20),
        Duration::from_millis(100),
        |_| true,
    )?;
    std::thread::sleep(Duration::from_secs(3));
    let events = kubectl(&[
        "get",
        "events",
        "-A",
        "--field-selector",
        "source=kvip",
        "-o",
        "json",
    ])
    .unwrap_or_default();
    let events: serde_json::Value = serde_json::from_str(&events).unwrap_or_default();
    let message_for = |ns: &str, name: &str| -> String {
        events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| {
                e["involvedObject"]["name"] == name && e["involvedObject"]["namespace"] == ns
            })
            .filter_map(|e| {
                Some(format!(
                    "{}: {}",
                    e["reason"].as_str()?,
                    e["message"].as_str()?
                ))
            })
            .next_back()
            .unwrap_or_else(|| "(no Event)".into())
    };
    println!(
        "    {:<18} {:<18} {:<10} what kvip said",
        "case", "input", "ingress"
    );
    let mut all = cases.to_vec();
    all.push(("garbage-lease", NS, "10.77.0.123"));
    all.push(("unknown-node", NS, "10.77.0.124"));
    let mut problems = Vec::new();
    for (name, ns, ip) in &all {
        let (ingress, _) = service_status(ns, name).unwrap_or_default();
        let said = message_for(ns, name);
        println!(
            "    {:<18} {:<18} {:<10} {said}",
            name,
            ip,
            if ingress.is_empty() { "none" } else { "served" }
        );
        let should_serve = *name == "garbage-lease";
        if should_serve == ingress.is_empty() {
            problems.push(format!("{name}: ingress {ingress:?}"));
        }
        if !should_serve && !said.starts_with("VIPPending") {
            problems.push(format!("{name}: no VIPPending Event ({said})"));
        }
    }
    println!(
        "    the garbage Lease was taken over after {} ms",
        took.as_millis()
    );
    ensure!(
        quick_probe(&format!("{CLUSTER_VIP}:80"), 1000).is_some(),
        "the good Service stopped answering"
    );
    ensure!(
        nodes_with_address("10.77.0.12").len() == 1,
        "a node's own address was announced by another node"
    );
    ensure!(problems.is_empty(), "{problems:?}");
    for (name, ns, _) in &all {
        let _ = kubectl(&["delete", "service", name, "-n", ns, "--wait=false"]);
    }
    Ok(())
}

fn absurd_settings_stop_start_up_with_the_variable_named() -> Outcome {
    let cases = [
        // Beyond a 32-bit integer: kube-vip cannot parse it either (a
        // value below 500 ms is raised to 3000 ms, as kube-vip does).
        ("vip_arpRate", "99999999999"),
        ("vip_loglevel", "debug"),
        ("vip_leaseduration", "99999999999"),
        ("svc_enable", "yes"),
        ("vip_interface", "a/b"),
        ("port", "70000"),
    ];
    for (variable, value) in cases {
        let out = std::process::Command::new(kvip_bin())
            .arg("manager")
            .env_clear()
            .env("vip_nodename", "worker1")
            .env("svc_enable", "true")
            .env(variable, value)
            .output()
            .map_err(|e| e.to_string())?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "{variable}={value} was accepted");
        ensure!(
            !stderr.contains("panicked"),
            "{variable}={value} panicked: {stderr}"
        );
        ensure!(
            stderr.contains(variable),
            "{variable}={value}: message does not name it: {stderr}"
        );
        println!(
            "    {variable}={value}: {}",
            stderr.lines().nth(1).unwrap_or(stderr.trim()).trim()
        );
    }
    Ok(())
}

/// A tiny seeded generator (xorshift), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

fn chaos() -> Outcome {
    let seed: u64 = std::env::var("KVIP_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261125);
    let steps: usize = std::env::var("KVIP_CHAOS_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let mut rng = Rng(seed);
    println!("    seed {seed}, {steps} steps (KVIP_CHAOS_SEED / KVIP_CHAOS_STEPS to replay)");
    let sampler = Sampler::start(&[CLUSTER_VIP, LOCAL_VIP]);
    let workers = ["worker1", "worker2"];
    let mut local_pod = ("loc-1".to_string(), "worker2".to_string());
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut worst_recovery = Duration::ZERO;
    let mut worst_answer = Duration::ZERO;
    let mut steps_log = Vec::new();
    for step in 0..steps {
        let action = *rng.pick(&[
            "move-pod",
            "kill-node",
            "api-outage",
            "crash-kvip",
            "isolate",
        ]);
        *counts.entry(action).or_default() += 1;
        let node = rng.pick(&workers).to_string();
        steps_log.push(format!(
            "{:.1} s: step {step} {action} {node}",
            sampler.now()
        ));
        match action {
            "move-pod" => {
                let to = if local_pod.1 == "worker1" {
                    "worker2"
                } else {
                    "worker1"
                };
                let name = format!("loc-c{step}");
                lab_ok(&[
                    "pod", &name, "--node", to, "--labels", "app=loc", "--port", "8080", "-n", NS,
                ])?;
                lab_ok(&["pod", "delete", &local_pod.0, "-n", NS])?;
                local_pod = (name, to.to_string());
            }
            "kill-node" => {
                lab_ok(&["fault", "kill-node", &node])?;
                std::thread::sleep(Duration::from_secs(3));
                lab_ok(&["fault", "revive-node", &node])?;
            }
            "api-outage" => {
                lab_ok(&["fault", "apiserver-stop"])?;
                std::thread::sleep(Duration::from_secs(5));
                lab_ok(&["fault", "apiserver-start"])?;
            }
            "crash-kvip" => {
                lab_ok(&["fault", "crash-daemons", &node])?;
            }
            _ => {
                lab_ok(&["fault", "isolate-api", &node])?;
                std::thread::sleep(Duration::from_secs(3));
                lab_ok(&["fault", "heal", &node])?;
            }
        }
        // Every Service with a candidate is announced within lease + 1 s of
        // the fault's end: one node carries it, the Local one where its pod
        // runs. It answers once that node's kube-proxy has its rule too: the
        // real kube-proxy may still be backing off after an API outage.
        let fault_end = Instant::now();
        for (vip, on) in [(CLUSTER_VIP, None), (LOCAL_VIP, Some(local_pod.1.as_str()))] {
            wait_for(
                &format!(
                    "{vip} on one node{}",
                    on.map(|n| format!(", {n}")).unwrap_or_default()
                ),
                LEASE + Duration::from_secs(1),
                Duration::from_millis(50),
                || {
                    let carriers = nodes_with_address(vip);
                    (carriers.len() == 1 && on.is_none_or(|n| carriers[0] == n)).then_some(())
                },
            )
            .map_err(|e| format!("step {step} ({action} {node}): {e}"))?;
        }
        worst_recovery = worst_recovery.max(fault_end.elapsed());
        for vip in [CLUSTER_VIP, LOCAL_VIP] {
            probe_until(
                &format!("{vip}:80"),
                KUBE_PROXY_RESYNC,
                Duration::from_millis(50),
                |_| true,
            )
            .map_err(|e| format!("step {step} ({action} {node}): announced, but {e}"))?;
        }
        worst_answer = worst_answer.max(fault_end.elapsed());
    }
    let stretches = sampler.finish();
    let overlaps = longest(&stretches);
    println!(
        "    actions: {counts:?}; slowest announcement {} ms, slowest answer {} ms; longest two-announcer stretch: {overlaps:?}",
        worst_recovery.as_millis(),
        worst_answer.as_millis()
    );
    for (vip, d) in &overlaps {
        ensure!(
            *d < REFRESH,
            "{vip} was carried by two nodes for {d:?}\n    steps: {}\n    two-carrier stretches: {}",
            steps_log.join("; "),
            stretches
                .iter()
                .map(|s| format!(
                    "{} on {} from {:.1} s for {:.1} s",
                    s.vip,
                    s.nodes.join("+"),
                    s.from.as_secs_f64(),
                    s.length.as_secs_f64()
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    Ok(())
}

fn main() {
    run_all(
        "failures",
        &[
            Scenario {
                name: "setup",
                run: setup,
            },
            Scenario {
                name: "api_outage_drops_no_probe",
                run: api_outage_drops_no_probe,
            },
            Scenario {
                name: "cut_off_holder_hands_over_with_one_answerer",
                run: cut_off_holder_hands_over_with_one_answerer,
            },
            Scenario {
                name: "crashed_kvip_readopts_without_a_gap",
                run: crashed_kvip_readopts_without_a_gap,
            },
            Scenario {
                name: "rolling_restart_drops_no_probe",
                run: rolling_restart_drops_no_probe,
            },
            Scenario {
                name: "bad_input_never_hurts_other_services",
                run: bad_input_never_hurts_other_services,
            },
            Scenario {
                name: "absurd_settings_stop_start_up_with_the_variable_named",
                run: absurd_settings_stop_start_up_with_the_variable_named,
            },
            Scenario {
                name: "chaos",
                run: chaos,
            },
            Scenario {
                name: "teardown",
                run: lab_down,
            },
        ],
    );
}
