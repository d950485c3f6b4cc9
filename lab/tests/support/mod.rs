//! What the lab's end-to-end tests share: driving `kvip-lab` and `kubectl`
//! as a user would, waiting for conditions, and a tiny test runner that ends
//! with the line `N passed, N failed`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Result of one scenario.
pub type Outcome = Result<(), String>;

/// Fails the scenario with a message.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// The `kvip-lab` binary under test.
pub fn lab_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kvip-lab")
}

/// Runs `kvip-lab args` and returns its output.
pub fn lab(args: &[&str]) -> Output {
    Command::new(lab_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run kvip-lab: {e}"))
}

/// Runs `kvip-lab args`; Err with its stderr on failure, Ok(stdout) otherwise.
pub fn lab_ok(args: &[&str]) -> Result<String, String> {
    let out = lab(args);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "kvip-lab {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The variables `kvip-lab env` prints.
pub fn lab_env() -> Result<BTreeMap<String, String>, String> {
    let text = lab_ok(&["env"])?;
    Ok(parse_env(&text))
}

/// Parses `export K=V` lines.
pub fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// Runs the lab's kubectl with the lab's kubeconfig.
pub fn kubectl(args: &[&str]) -> Result<String, String> {
    kubectl_input(args, None)
}

/// Runs kubectl with `input` on standard input.
pub fn kubectl_input(args: &[&str], input: Option<&str>) -> Result<String, String> {
    use std::io::Write;
    let env = lab_env()?;
    let bin = env
        .get("PATH")
        .and_then(|p| p.split(':').next())
        .map(|dir| format!("{dir}/kubectl"))
        .ok_or("kvip-lab env printed no PATH")?;
    let mut child = Command::new(bin)
        .args(args)
        .env(
            "KUBECONFIG",
            env.get("KUBECONFIG").cloned().unwrap_or_default(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("kubectl: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.unwrap_or_default().as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Applies YAML with kubectl.
pub fn apply(yaml: &str) -> Result<String, String> {
    kubectl_input(&["apply", "-f", "-"], Some(yaml))
}

/// Reads an object as JSON.
pub fn get_json(args: &[&str]) -> Result<serde_json::Value, String> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let text = kubectl(&all)?;
    serde_json::from_str(&text).map_err(|e| format!("kubectl output is not JSON: {e}"))
}

/// Polls `check` every `every` until it returns Some or `timeout` passes.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(every);
    }
}

/// One `kvip-lab probe`; Some(answer) on success.
pub fn probe(target: &str, timeout_ms: u64) -> Option<String> {
    let out = lab(&["probe", target, "--timeout-ms", &timeout_ms.to_string()]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs a command inside a lab namespace.
pub fn in_netns(netns: &str, program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, program])
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// What tcpdump `-e` printed of the frames matching `filter` that the client
/// hears while `during` runs, capturing for at least `at_least` in all.
pub fn capture_in_client<T>(
    filter: &str,
    at_least: Duration,
    during: impl FnOnce() -> Result<T, String>,
) -> Result<(T, String), String> {
    let started = Instant::now();
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            "kvl-client",
            "tcpdump",
            "-i",
            "eth0",
            "-nn",
            "-e",
            "-l",
            filter,
        ])
        // Times of day in UTC, as `time_of_day` gives them.
        .env("TZ", "UTC")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("tcpdump: {e}"))?;
    // Let tcpdump open its socket first.
    std::thread::sleep(Duration::from_millis(500));
    let result = during();
    std::thread::sleep(
        at_least
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(500)),
    );
    let _ = child.kill();
    let out = child
        .wait_with_output()
        .map_err(|e| format!("tcpdump: {e}"))?;
    Ok((result?, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Seconds since midnight UTC now, as tcpdump prints its times in
/// [`capture_in_client`].
pub fn time_of_day() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() % 86_400.0)
}

/// `kvip-lab down`, then `kvip-lab up --ipv6`: a fresh dual-stack lab.
pub fn fresh_lab_ipv6() -> Outcome {
    lab_ok(&["down"])?;
    let up = lab(&["up", "--ipv6"]);
    ensure!(
        up.status.success(),
        "lab up --ipv6: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    Ok(())
}

/// Waits up to 30 s for `target` to answer from the client; how long it took.
pub fn answers(target: &str) -> Result<Duration, String> {
    probe_until(
        target,
        Duration::from_secs(30),
        Duration::from_millis(100),
        |_| true,
    )
    .map(|(_, took)| took)
}

/// A named scenario.
pub struct Scenario {
    /// Printed name.
    pub name: &'static str,
    /// The body.
    pub run: fn() -> Outcome,
}

/// Runs scenarios in order, prints one line each and the closing
/// `N passed, N failed` line; exits non-zero on any failure.
pub fn run_all(suite: &str, scenarios: &[Scenario]) {
    if !is_root() {
        println!("the lab's end-to-end tests need root\n\n{suite}: 0 passed, 1 failed");
        std::process::exit(1);
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed) = (0, 0);
    for s in scenarios {
        if !filter.is_empty() && !filter.iter().any(|f| s.name.contains(f.as_str())) {
            continue;
        }
        let started = Instant::now();
        let result = std::panic::catch_unwind(s.run).unwrap_or_else(|p| {
            Err(p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default())
        });
        match result {
            Ok(()) => {
                passed += 1;
                println!(
                    "test {suite}::{} ... ok ({:.1} s)",
                    s.name,
                    started.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                failed += 1;
                println!(
                    "test {suite}::{} ... FAILED ({:.1} s)\n    {e}",
                    s.name,
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    println!("\n{suite}: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

/// True when running as root (the lab needs it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// One in-process probe from the client namespace (no process start, so
/// timings are not blurred); Some(answer) on success.
pub fn quick_probe(target: &str, timeout_ms: u64) -> Option<String> {
    kvip_lab::commands::probe(target, Duration::from_millis(timeout_ms)).ok()
}

/// Probes every `every` until an answer satisfies `accept`; returns it and
/// how long it took.
pub fn probe_until(
    target: &str,
    timeout: Duration,
    every: Duration,
    accept: impl Fn(&str) -> bool,
) -> Result<(String, Duration), String> {
    let started = Instant::now();
    let answer = wait_for(&format!("{target} to answer"), timeout, every, || {
        quick_probe(target, 200).filter(|a| accept(a))
    })?;
    Ok((answer, started.elapsed()))
}

/// The kvip binary built beside kvip-lab.
pub fn kvip_bin() -> std::path::PathBuf {
    std::path::Path::new(lab_bin()).with_file_name("kvip")
}

/// Output of `kvip args` (e.g. a manifest).
pub fn kvip(args: &[&str]) -> Result<String, String> {
    let out = Command::new(kvip_bin())
        .args(args)
        .output()
        .map_err(|e| format!("kvip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "kvip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Writes `text` to a temporary file and returns its path.
pub fn temp_file(name: &str, text: &str) -> Result<std::path::PathBuf, String> {
    let path = std::env::temp_dir().join(format!("kvip-e2e-{}-{name}", std::process::id()));
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok(path)
}

/// Deploys `kvip manifest all` with `flags` through `kvip-lab deploy`.
pub fn deploy_kvip(name: &str, flags: &[&str]) -> Result<std::path::PathBuf, String> {
    let mut args = vec!["manifest", "all"];
    args.extend_from_slice(flags);
    let yaml = kvip(&args)?;
    let path = temp_file(name, &yaml)?;
    lab_ok(&["deploy", &path.display().to_string()])?;
    Ok(path)
}

/// `--env` flags for suites that keep Service VIPs off cp1 (the lab's only
/// API server) with the exclusion label: kvip honours it only when asked.
pub const HONOUR_EXCLUDE_LABEL: [&str; 2] = ["--env", "kvip_exclude_lb_label=true"];

/// The permissions kube-vip's ClusterRole lacks and kvip uses, as kvip's
/// log says each (once per process).
pub const LEASE_PATCH: &str =
    "RBAC does not grant patch on leases (coordination.k8s.io), only update";
pub const STATUS_PATCH: &str = "RBAC does not grant patch on services/status, only update";
pub const SERVICE_PATCH: &str = "RBAC does not grant patch on services, only update";
pub const EVENTS: &str = "RBAC does not grant create,patch events";

/// The Lease timings every suite deploys kvip with: the lab's 5 s / 3 s / 1 s.
pub const TIMINGS: [&str; 6] = kvip_lab::layout::LEASE_TIMING_FLAGS;

/// `kvip-lab up`; an error carries its output.
pub fn lab_up() -> Outcome {
    let up = lab(&["up"]);
    ensure!(
        up.status.success(),
        "lab up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    Ok(())
}

/// `kvip-lab down`: every suite's last scenario.
pub fn lab_down() -> Outcome {
    lab_ok(&["down"]).map(|_| ())
}

/// Deploys the load-balancer role on every node with [`TIMINGS`] and `extra` flags.
pub fn deploy_lb(name: &str, extra: &[&str]) -> Result<std::path::PathBuf, String> {
    let mut flags = vec!["--role", "lb"];
    flags.extend_from_slice(&TIMINGS);
    flags.extend_from_slice(extra);
    deploy_kvip(name, &flags)
}

/// Waits until Service `ns/name` has `vip` as its only ingress address and
/// `kube-vip.io/vipHost` names `node`.
pub fn expect_status(ns: &str, name: &str, vip: &str, node: &str) -> Outcome {
    let (ips, host) = wait_for(
        "status and vipHost",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || service_status(ns, name).filter(|(ips, host)| !ips.is_empty() && host.is_some()),
    )?;
    ensure!(ips == [vip], "ingress {ips:?}");
    ensure!(host.as_deref() == Some(node), "vipHost {host:?}");
    Ok(())
}

/// Runs `action`, then probes `vip`:80 every 20 ms until `expected`
/// (`NODE/POD`) answers; the time from the start of `action`.
pub fn time_until_answer(
    vip: &str,
    expected: &str,
    action: impl FnOnce() -> Outcome,
) -> Result<Duration, String> {
    let started = Instant::now();
    action()?;
    probe_until(
        &format!("{vip}:80"),
        Duration::from_secs(10),
        Duration::from_millis(20),
        |a| a == expected,
    )?;
    Ok(started.elapsed())
}

/// Which lab nodes carry `ip`: have it on their eth0 while the link is up.
/// A killed node keeps its addresses on a link that is down; it answers
/// nothing until it is revived, and from then on it counts again.
pub fn nodes_with_address(ip: &str) -> Vec<String> {
    let env = lab_env().unwrap_or_default();
    env.get("KVIP_LAB_NODES")
        .map(|n| n.split(' ').map(String::from).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|node| {
            in_netns(
                &format!("kvl-{node}"),
                "ip",
                &["-o", "addr", "show", "dev", "eth0", "up"],
            )
            .is_ok_and(|out| {
                out.split_whitespace()
                    .any(|w| w.split('/').next() == Some(ip))
            })
        })
        .collect()
}

/// A Service's (ingress IPs, vipHost annotation).
pub fn service_status(namespace: &str, name: &str) -> Option<(Vec<String>, Option<String>)> {
    let svc = get_json(&["service", name, "-n", namespace]).ok()?;
    let ips = svc["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str().map(String::from))
        .collect();
    let host = svc["metadata"]["annotations"]["kube-vip.io/vipHost"]
        .as_str()
        .map(String::from);
    Some((ips, host))
}

/// The holder of Lease `namespace/name` ("" when released, None when absent).
pub fn lease_holder(namespace: &str, name: &str) -> Option<String> {
    let lease = get_json(&["lease", name, "-n", namespace]).ok()?;
    Some(
        lease["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// MAC addresses answering one ARP request for `ip` from the client.
pub fn arp_answerers(ip: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            "kvl-client",
            "arping",
            "-c",
            "1",
            "-w",
            "1",
            "-I",
            "eth0",
            ip,
        ])
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut macs: Vec<String> = text
        .lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| {
            l.split('[')
                .nth(1)?
                .split(']')
                .next()
                .map(|m| m.to_lowercase())
        })
        .collect();
    macs.sort();
    macs.dedup();
    macs
}

/// The MAC of a lab node's eth0.
pub fn node_mac(node: &str) -> Option<String> {
    let out = in_netns(
        &format!("kvl-{node}"),
        "cat",
        &["/sys/class/net/eth0/address"],
    )
    .ok()?;
    Some(out.trim().to_lowercase())
}

/// `kvip-lab forge-claim`: `count` frames from the client claiming `ip`
/// for `mac`, `interval_ms` apart; its output (how many went out).
pub fn forge_claims(ip: &str, mac: &str, count: u32, interval_ms: u64) -> Result<String, String> {
    lab_ok(&[
        "forge-claim",
        "--ip",
        ip,
        "--mac",
        mac,
        "--count",
        &count.to_string(),
        "--interval-ms",
        &interval_ms.to_string(),
    ])
}

/// `GET path` over plain HTTP from the client namespace; the body.
pub fn http_get(addr: &str, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let sock: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut stream = kvip_lab::netns::connect_in("kvl-client", sock, Duration::from_secs(2))
        .map_err(|e| format!("{e:#}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .map_err(|e| e.to_string())?;
    let (head, body) = reply.split_once("\r\n\r\n").ok_or("no HTTP header")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "GET {path}: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    Ok(body.to_string())
}

/// Parses Prometheus / OpenMetrics text with the Python `prometheus_client`
/// parser; Ok(sample lines "name{labels} value") or the parser's error.
pub fn parse_metrics(text: &str) -> Result<Vec<String>, String> {
    use std::io::Write;
    let script = "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families\nfor f in text_string_to_metric_families(sys.stdin.read()):\n    for s in f.samples:\n        labels=','.join(f'{k}=\"{v}\"' for k,v in sorted(s.labels.items()))\n        print(f'{s.name}{{{labels}}} {s.value}')\n";
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("python3: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "not valid exposition format: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect())
}

/// Events kvip recorded on a Service: (reason, message, count).
pub fn kvip_events(namespace: &str, service: &str) -> Vec<(String, String, i64)> {
    let selector = format!("involvedObject.name={service},source=kvip");
    let Ok(events) = get_json(&["events", "-n", namespace, "--field-selector", &selector]) else {
        return Vec::new();
    };
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["reason"].as_str()?.to_string(),
                e["message"].as_str()?.to_string(),
                e["count"].as_i64().unwrap_or(1),
            ))
        })
        .collect()
}

/// A LoadBalancer Service on port 80 → 8080 selecting `app: selector`;
/// `vip` None leaves it without an address.
pub fn lb_service(ns: &str, name: &str, policy: &str, vip: Option<&str>, selector: &str) -> String {
    lb_service_on_port(ns, name, policy, vip, selector, 80)
}

/// [`lb_service`] on `port` (→ 8080).
pub fn lb_service_on_port(
    ns: &str,
    name: &str,
    policy: &str,
    vip: Option<&str>,
    selector: &str,
    port: u16,
) -> String {
    let annotations = vip
        .map(|v| format!("  annotations: {{ kube-vip.io/loadbalancerIPs: \"{v}\" }}\n"))
        .unwrap_or_default();
    format!(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {ns}
{annotations}spec:
  type: LoadBalancer
  externalTrafficPolicy: {policy}
  selector: {{ app: {selector} }}
  ports: [{{ port: {port}, targetPort: 8080 }}]
"#
    )
}

/// Creates (or keeps) the Kubernetes namespace `name`.
pub fn namespace(name: &str) -> Result<(), String> {
    let yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{ name: {name} }}\n");
    kubectl_input(&["apply", "-f", "-"], Some(&yaml)).map(|_| ())
}

/// Creates a Ready lab pod labelled `app=app` with its responder on 8080.
pub fn lab_pod(namespace: &str, name: &str, node: &str, app: &str) -> Result<(), String> {
    let labels = format!("app={app}");
    lab_ok(&[
        "pod", name, "--node", node, "--labels", &labels, "--port", "8080", "-n", namespace,
    ])
    .map(|_| ())
}

/// Runs `kvip status args` with the lab's kubeconfig: (exit code, stdout).
/// Exit code 2 (the cluster could not be read) is an error.
pub fn kvip_status(args: &[&str]) -> Result<(i32, String), String> {
    let env = lab_env()?;
    let out = Command::new(kvip_bin())
        .arg("status")
        .args(args)
        .env(
            "KUBECONFIG",
            env.get("KUBECONFIG").cloned().unwrap_or_default(),
        )
        .output()
        .map_err(|e| format!("kvip status: {e}"))?;
    let code = out.status.code().unwrap_or(-1);
    if code != 0 && code != 1 {
        return Err(format!(
            "kvip status {} exited {code}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok((code, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The one node carrying `vip` on its eth0, once exactly one does (15 s).
pub fn holder_of(vip: &str) -> Result<String, String> {
    wait_for(
        &format!("one node to carry {vip}"),
        Duration::from_secs(15),
        Duration::from_millis(100),
        || {
            let nodes = nodes_with_address(vip);
            (nodes.len() == 1).then(|| nodes[0].clone())
        },
    )
}

/// A LoadBalancer Service like [`lb_service`] whose address is IPv6
/// (`PreferDualStack`, IPv6 first).
pub fn lb_service6(ns: &str, name: &str, policy: &str, vip: &str, selector: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {ns}
  annotations: {{ kube-vip.io/loadbalancerIPs: "{vip}" }}
spec:
  type: LoadBalancer
  ipFamilyPolicy: PreferDualStack
  ipFamilies: [IPv6, IPv4]
  externalTrafficPolicy: {policy}
  selector: {{ app: {selector} }}
  ports: [{{ port: 80, targetPort: 8080 }}]
"#
    )
}

/// `kvip status -n ns name -o json`: (exit code, the Service's entry, the whole document).
pub fn row(ns: &str, name: &str) -> Result<(i32, serde_json::Value, serde_json::Value), String> {
    let (code, text) = kvip_status(&["-n", ns, name, "-o", "json"])?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("not JSON ({e}): {text}"))?;
    let entry = doc["services"]
        .as_array()
        .and_then(|s| s.first())
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    Ok((code, entry, doc))
}

pub fn code_of(entry: &serde_json::Value) -> &str {
    entry["reason"]["code"].as_str().unwrap_or_default()
}

/// Waits until `ns/name` is pending (or refused) with `code`; returns (exit code, entry).
pub fn wait_reason(ns: &str, name: &str, code: &str) -> Result<(i32, serde_json::Value), String> {
    let mut last = serde_json::Value::Null;
    let found = wait_for(
        &format!("{ns}/{name} to report {code}"),
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            let (exit, entry, _) = row(ns, name).ok()?;
            last = entry.clone();
            (code_of(&entry) == code).then_some((exit, entry))
        },
    );
    found.map_err(|e| format!("{e}; last seen {last}"))
}

/// Probes targets every 100 ms in the background; a probe fails when no
/// answer comes within `timeout` (TCP's own SYN retry included).
pub struct Prober {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Prober {
    pub fn start(targets: &[&str], timeout: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let targets: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let (mut sent, mut failed) = (0, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                for t in &targets {
                    sent += 1;
                    if kvip_lab::commands::probe(t, timeout).is_err() {
                        failed.push(format!("{t} at {:.1} s", started.elapsed().as_secs_f64()));
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (sent, failed)
        });
        Self { stop, handle }
    }

    pub fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .unwrap_or((0, vec!["the prober panicked".into()]))
    }
}
