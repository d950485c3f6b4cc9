//! End to end: kvip on a network that changes under it and a wire that
//! lies to it. Addresses removed by hand or by a link flap come back, an
//! interface recreated or given a new MAC is announced again, addresses
//! kvip did not add (an IPVS `kube-ipvs0`, the control-plane VIP) are never
//! taken or removed, forged claims get a bounded answer and never take a
//! VIP down, and a node that cannot place an address never wins it. The
//! metrics endpoint answers over both families and cannot be starved by
//! slow or silent clients.
//!
//! One kvip process per node runs both roles (`--role all`), as kube-vip's
//! own manifests do. cp1 carries the control-plane VIP; Service VIPs stay
//! on the workers.

mod support;

use std::time::{Duration, Instant};
use support::*;

const NS: &str = "net-e2e";
const CP_VIP: &str = "10.77.0.198";
const VIP: &str = "10.77.0.130";
const VIP6: &str = "fd00:77::1:30";
const LOCAL_VIP: &str = "10.77.0.135";
const STALE_VIP: &str = "10.77.0.137";
const LEFTOVER_VIP: &str = "10.77.0.138";
/// A MAC no lab host has, for forged claims.
const FORGED_MAC: &str = "02:66:6f:72:67:65";

fn setup() -> Outcome {
    fresh_lab_ipv6()?;
    // The lab's only API server runs on cp1; keep Service VIPs on the workers.
    kubectl(&[
        "label",
        "node",
        "cp1",
        "node.kubernetes.io/exclude-from-external-load-balancers=true",
        "--overwrite",
    ])?;
    let mut flags = vec!["--role", "all", "--address", CP_VIP, "--interface", "eth0"];
    flags.extend_from_slice(&TIMINGS);
    flags.extend_from_slice(&HONOUR_EXCLUDE_LABEL);
    deploy_kvip("all.yaml", &flags)?;
    namespace(NS)?;
    apply(&lb_service(NS, "v4", "Cluster", Some(VIP), "web"))?;
    apply(&lb_service6(NS, "v6", "Cluster", VIP6, "web"))?;
    lab_pod(NS, "web-1", "worker1", "web")?;
    lab_pod(NS, "web-2", "worker2", "web")?;
    for target in [format!("{VIP}:80"), format!("[{VIP6}]:80")] {
        probe_until(
            &target,
            Duration::from_secs(20),
            Duration::from_millis(50),
            |_| true,
        )?;
    }
    wait_for(
        "cp1 to carry the control-plane VIP",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || (nodes_with_address(CP_VIP) == ["cp1"]).then_some(()),
    )?;
    Ok(())
}

fn in_node(node: &str, program: &str, args: &[&str]) -> Result<String, String> {
    in_netns(&format!("kvl-{node}"), program, args)
}

fn answers_within(target: &str, bound: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    probe_until(target, bound, Duration::from_millis(50), |_| true)?;
    Ok(started.elapsed())
}

fn an_address_removed_by_hand_comes_back() -> Outcome {
    let node = holder_of(VIP)?;
    in_node(
        &node,
        "ip",
        &["addr", "del", &format!("{VIP}/32"), "dev", "eth0"],
    )?;
    let removed = Instant::now();
    let back = wait_for(
        "the VIP to come back on its node",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || (nodes_with_address(VIP) == [node.clone()]).then(|| removed.elapsed()),
    )?;
    let took = answers_within(&format!("{VIP}:80"), Duration::from_secs(5))?;
    println!(
        "    removed from {node}: back after {} ms, answering after {} ms",
        back.as_millis(),
        took.as_millis()
    );
    ensure!(
        lease_holder(NS, "kubevip-v4").as_deref() == Some(node.as_str()),
        "the Lease moved away from {node}"
    );
    Ok(())
}

fn an_ipv6_vip_answers_again_after_a_link_flap_of_its_holder() -> Outcome {
    let node = holder_of(VIP6)?;
    lab_ok(&["fault", "link-flap", &node, "--down-ms", "1000"])?;
    let flapped = Instant::now();
    // It may stay or move: a link down is a reason to hand over.
    let (answer, _) = probe_until(
        &format!("[{VIP6}]:80"),
        Duration::from_secs(15),
        Duration::from_millis(100),
        |_| true,
    )?;
    let carriers = wait_for(
        "one node to carry the IPv6 VIP",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let n = nodes_with_address(VIP6);
            (n.len() == 1).then_some(n)
        },
    )?;
    println!(
        "    {node}'s link down 1 s: answering again after {} ms ({answer}), carried by {}",
        flapped.elapsed().as_millis(),
        carriers.join(",")
    );
    // Wherever it is, it must keep answering (the address is really there).
    std::thread::sleep(Duration::from_secs(2));
    probe_until(
        &format!("[{VIP6}]:80"),
        Duration::from_secs(2),
        Duration::from_millis(50),
        |_| true,
    )?;
    Ok(())
}

fn a_recreated_interface_is_announced_again() -> Outcome {
    let node = holder_of(VIP)?;
    let before = node_mac(&node).ok_or("no MAC")?;
    lab_ok(&["fault", "recreate-link", &node])?;
    let after = node_mac(&node).ok_or("no MAC")?;
    ensure!(before != after, "the recreated link kept its MAC {before}");
    let took = answers_within(&format!("{VIP}:80"), Duration::from_secs(15))?;
    let carriers = nodes_with_address(VIP);
    println!(
        "    {node}'s eth0 recreated: answering after {} ms, carried by {}",
        took.as_millis(),
        carriers.join(",")
    );
    ensure!(carriers.len() == 1, "carried by {carriers:?}");
    // Announcements keep coming from the carrier's current MAC, never the old socket.
    let carrier = carriers[0].clone();
    let mac = node_mac(&carrier).ok_or("no MAC")?;
    let frames = capture_claims(VIP, Duration::from_secs(4), || Ok(()))?;
    ensure!(
        frames.contains(&mac),
        "no announcement of {VIP} from {carrier}'s MAC {mac} in 4 s: {frames:?}"
    );
    ensure!(
        frames.iter().all(|m| *m == mac),
        "announcements of {VIP} from other MACs: {frames:?}"
    );
    Ok(())
}

fn a_changed_mac_is_announced() -> Outcome {
    let node = holder_of(VIP)?;
    let new_mac = "02:6b:76:69:70:01";
    let frames = capture_claims(VIP, Duration::from_secs(5), || {
        lab_ok(&["fault", "set-mac", &node, new_mac]).map(|_| ())
    })?;
    println!("    {node} now at {new_mac}: claims heard {frames:?}");
    ensure!(
        frames.iter().any(|m| m == new_mac),
        "{VIP} was never announced at the new MAC"
    );
    // After the change nothing may announce the old MAC (the kernel's own
    // notice and kvip's refreshes must agree).
    let after = capture_claims(VIP, Duration::from_secs(4), || Ok(()))?;
    ensure!(
        !after.is_empty() && after.iter().all(|m| m == new_mac),
        "announcements after the change: {after:?}"
    );
    answers_within(&format!("{VIP}:80"), Duration::from_secs(5))?;
    Ok(())
}

/// The MACs (sender hardware address) of every ARP frame claiming `ip`
/// the client hears while `during` runs and for `window` in all.
fn capture_claims(
    ip: &str,
    window: Duration,
    during: impl FnOnce() -> Result<(), String>,
) -> Result<Vec<String>, String> {
    let ((), text) = capture_in_client("arp", window, during)?;
    Ok(claims_in(&text, ip))
}

/// Sender MACs of the ARP frames in tcpdump `-e` output that claim `ip`
/// (a request or reply whose sender address is `ip`: a gratuitous one).
fn claims_in(tcpdump: &str, ip: &str) -> Vec<String> {
    tcpdump
        .lines()
        .filter(|l| l.contains(&format!("tell {ip},")) || l.contains(&format!("Reply {ip} is-at")))
        .filter_map(|l| l.split_whitespace().nth(1).map(|m| m.to_lowercase()))
        .collect()
}

fn kube_ipvs0_survives_kvip_restarts_untouched() -> Outcome {
    let nodes = ["cp1", "worker1", "worker2"];
    for node in nodes {
        // Kernels without the dummy link type: an empty bridge holds
        // addresses the same way kube-proxy's IPVS mode keeps them.
        in_node(node, "ip", &["link", "add", "kube-ipvs0", "type", "bridge"])?;
        for ip in [VIP, CP_VIP] {
            in_node(
                node,
                "ip",
                &["addr", "add", &format!("{ip}/32"), "dev", "kube-ipvs0"],
            )?;
        }
    }
    let holder = holder_of(VIP)?;
    for round in 0..2 {
        for node in nodes {
            lab_ok(&["fault", "crash-daemons", node])?;
        }
        // Past the adoption window of the restarted daemons.
        std::thread::sleep(Duration::from_secs(7));
        for node in nodes {
            let have = in_node(node, "ip", &["-o", "addr", "show", "dev", "kube-ipvs0"])?;
            for ip in [VIP, CP_VIP] {
                ensure!(
                    have.contains(&format!("{ip}/32")),
                    "round {round}: kvip removed {ip} from {node}'s kube-ipvs0: {have}"
                );
            }
        }
        answers_within(&format!("{VIP}:80"), Duration::from_secs(10))?;
    }
    let carriers = nodes_with_address(VIP);
    println!(
        "    kube-ipvs0 untouched on every node after 2 restarts; {VIP} on {carriers:?} (was {holder})"
    );
    ensure!(carriers.len() == 1, "carried by {carriers:?}");
    for node in nodes {
        in_node(node, "ip", &["link", "del", "kube-ipvs0"])?;
    }
    Ok(())
}

fn a_service_cannot_take_the_control_plane_vip() -> Outcome {
    apply(&lb_service(NS, "steal", "Cluster", Some(CP_VIP), "web"))?;
    let events = wait_for(
        "a VIPPending Event naming the control-plane VIP",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || {
            let e = kvip_events(NS, "steal");
            e.iter()
                .any(|(_, m, _)| m.contains("control-plane VIP"))
                .then_some(e)
        },
    )?;
    println!("    steal: {:?}", events.first().map(|e| &e.1));
    let (_, text) = kvip_status(&["-n", NS, "steal"])?;
    ensure!(!text.contains("announced"), "kvip status says: {text}");
    ensure!(
        nodes_with_address(CP_VIP) == ["cp1"],
        "the control-plane VIP is on {:?}",
        nodes_with_address(CP_VIP)
    );
    kubectl(&["delete", "service", "steal", "-n", NS])?;
    // Whatever the Service's deletion does, the control-plane VIP stays.
    for _ in 0..30 {
        let carriers = nodes_with_address(CP_VIP);
        ensure!(
            carriers == ["cp1"],
            "after the Service was deleted the control-plane VIP is on {carriers:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        lease_holder("kube-system", "plndr-cp-lock").as_deref() == Some("cp1"),
        "the control-plane Lease moved"
    );
    Ok(())
}

fn a_flood_of_forged_claims_gets_a_bounded_answer_and_the_vip_stays() -> Outcome {
    let node = holder_of(VIP)?;
    let mac = node_mac(&node).ok_or("no MAC")?;
    // 300 forged claims in 3 s, then 2 s more of listening.
    let heard = capture_claims(VIP, Duration::from_secs(6), || {
        forge_claims(VIP, FORGED_MAC, 300, 10).map(|_| ())
    })?;
    let forged = heard.iter().filter(|m| *m == FORGED_MAC).count();
    let answers = heard.iter().filter(|m| **m == mac).count();
    println!("    {forged} forged claims heard; {node} answered with {answers} frames");
    ensure!(
        forged >= 250,
        "only {forged} forged claims reached the client"
    );
    // One defence burst (4 rounds of 2 frames) plus the 3 s refreshes
    // (2 frames each) over 6 s: 8 + 3 * 2 = 14; a little slack for timing.
    ensure!(
        answers <= 18,
        "{answers} frames answered {forged} forged claims"
    );
    ensure!(
        nodes_with_address(VIP) == [node.clone()],
        "the VIP left {node}: {:?}",
        nodes_with_address(VIP)
    );
    ensure!(
        lease_holder(NS, "kubevip-v4").as_deref() == Some(node.as_str()),
        "the Lease left {node}"
    );
    let events = wait_for(
        "a VIPAddressConflict Event naming the forged MAC",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || {
            let e = kvip_events(NS, "v4");
            e.iter()
                .any(|(r, m, _)| r == "VIPAddressConflict" && m.contains(FORGED_MAC))
                .then_some(e)
        },
    )?;
    let conflicts = events
        .iter()
        .filter(|(r, _, _)| r == "VIPAddressConflict")
        .count();
    ensure!(
        conflicts == 1,
        "{conflicts} conflict Events for one run of claims"
    );
    // The client's cache was poisoned; the next refresh puts it right.
    let took = answers_within(&format!("{VIP}:80"), Duration::from_secs(5))?;
    println!(
        "    answering again {} ms after the flood",
        took.as_millis()
    );
    Ok(())
}

fn one_forged_frame_during_an_api_outage_takes_no_vip_down() -> Outcome {
    let node = holder_of(VIP)?;
    lab_ok(&["fault", "apiserver-stop"])?;
    let outcome = (|| -> Outcome {
        // Past the Lease's term: the holder keeps the VIP only by its outage hold.
        std::thread::sleep(Duration::from_secs(7));
        ensure!(
            nodes_with_address(VIP) == [node.clone()],
            "the VIP left {node} during the outage before any forged frame"
        );
        // One forged frame, then one from the other worker's own MAC (a kvip
        // node, but not the one the Lease names): neither is convincing.
        forge_claims(VIP, FORGED_MAC, 1, 10)?;
        let other = if node == "worker1" {
            "worker2"
        } else {
            "worker1"
        };
        let other_mac = node_mac(other).ok_or("no MAC")?;
        forge_claims(VIP, &other_mac, 1, 10)?;
        for _ in 0..30 {
            ensure!(
                nodes_with_address(VIP) == [node.clone()],
                "one forged frame took the VIP off {node}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        answers_within(&format!("{VIP}:80"), Duration::from_secs(3))?;
        Ok(())
    })();
    lab_ok(&["fault", "apiserver-start"])?;
    outcome?;
    println!("    {node} kept {VIP} through the outage and a forged claim");
    // The cluster comes back; the VIP keeps answering.
    answers_within(&format!("{VIP}:80"), Duration::from_secs(20))?;
    wait_for(
        "the API server",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || kubectl(&["get", "--raw", "/readyz"]).ok(),
    )?;
    Ok(())
}

fn a_node_without_the_configured_interface_never_wins_and_status_says_why() -> Outcome {
    let yaml = lb_service(NS, "only-w2", "Local", Some(LOCAL_VIP), "w2");
    apply(&yaml)?;
    lab_pod(NS, "w2-1", "worker2", "w2")?;
    probe_until(
        &format!("{LOCAL_VIP}:80"),
        Duration::from_secs(15),
        Duration::from_millis(50),
        |_| true,
    )?;
    // worker2's NIC is renamed, as on a node with other NIC names; it
    // keeps reaching the API server through it.
    for args in [
        &["link", "set", "eth0", "down"][..],
        &["link", "set", "eth0", "name", "ens5"],
        &["link", "set", "ens5", "up"],
        &[
            "route",
            "replace",
            kvip_lab::layout::SERVICE_RANGE4,
            "dev",
            "ens5",
        ],
    ] {
        in_node("worker2", "ip", args)?;
    }
    let outcome = (|| -> Outcome {
        let (code, text) = wait_for(
            "kvip status to say why worker2 cannot announce",
            Duration::from_secs(20),
            Duration::from_millis(200),
            || {
                kvip_status(&["-n", NS, "only-w2"])
                    .ok()
                    .filter(|(_, t)| t.contains("NoUsableInterface") || t.contains("interface"))
                    .filter(|(_, t)| t.contains("pending"))
            },
        )?;
        ensure!(code == 1, "kvip status exited {code}: {text}");
        ensure!(
            text.contains("worker2") && text.contains("eth0"),
            "the reason does not name the node and the interface: {text}"
        );
        println!(
            "    {}",
            text.lines().find(|l| l.contains("worker2")).unwrap_or("")
        );
        for _ in 0..30 {
            let holder = lease_holder(NS, "kubevip-only-w2").unwrap_or_default();
            ensure!(
                holder != "worker2",
                "worker2 holds the Lease without the interface"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    })();
    for args in [
        &["link", "set", "ens5", "down"][..],
        &["link", "set", "ens5", "name", "eth0"],
    ] {
        in_node("worker2", "ip", args)?;
    }
    lab_ok(&["fault", "link-flap", "worker2", "--down-ms", "0"])?;
    outcome?;
    // With its interface back, worker2 serves it again.
    probe_until(
        &format!("{LOCAL_VIP}:80"),
        Duration::from_secs(15),
        Duration::from_millis(50),
        |a| a.starts_with("worker2/"),
    )?;
    Ok(())
}

/// kube-proxy masquerades a node's traffic to the `kubernetes` ClusterIP,
/// and the kernel forgets masqueraded connections when their interface goes
/// down: after a link flap, kvip's watches hang on dead connections with no
/// error. kvip notices that the Lease watch does not show the Lease writes
/// the API server stored, starts its watches again, and sees new Services.
fn watches_come_back_after_a_link_flap_drops_kube_proxys_nat() -> Outcome {
    let node = "worker1";
    const RESTART: &str = "starting every watch again";
    let restarts = || {
        lab_ok(&["logs", node])
            .unwrap_or_default()
            .matches(RESTART)
            .count()
    };
    let before = restarts();
    lab_ok(&["fault", "link-flap", node, "--down-ms", "500"])?;
    let flapped = Instant::now();
    let ready = || {
        http_get("10.77.0.12:2112", "/readyz")
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    // A Local Service whose only pod runs on the flapped node: only that
    // node may announce it, and only once it sees the Service again.
    apply(&lb_service(
        NS,
        "after-flap",
        "Local",
        Some("10.77.0.139"),
        "flap",
    ))?;
    lab_pod(NS, "flap-1", node, "flap")?;
    let (answer, took) = probe_until(
        "10.77.0.139:80",
        Duration::from_secs(20),
        Duration::from_millis(100),
        |_| true,
    )?;
    ensure!(answer == format!("{node}/flap-1"), "answered by {answer}");
    wait_for(
        "worker1 ready again",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || ready().ok(),
    )?;
    println!(
        "    {node}'s link flapped: a new Service on it answered after {} ms (the watches hung until started again)",
        took.as_millis()
    );
    ensure!(
        flapped.elapsed() < Duration::from_secs(25),
        "took {:?}: the watches stayed dead",
        flapped.elapsed()
    );
    // The flap did kill the watches, and kvip noticed: otherwise this
    // scenario would prove nothing.
    ensure!(
        restarts() > before,
        "{node} never logged {RESTART:?}: the flap left the watches alive, or kvip did not notice"
    );
    kubectl(&["delete", "service", "after-flap", "-n", NS])?;
    lab_ok(&["pod", "delete", "flap-1", "-n", NS])?;
    Ok(())
}

fn health_reports_the_network_side() -> Outcome {
    // Every node's kvip follows the kernel and listens where it holds VIPs.
    for (node, ip) in [
        ("cp1", "10.77.0.11"),
        ("worker1", "10.77.0.12"),
        ("worker2", "10.77.0.13"),
    ] {
        let at = format!("{ip}:2112");
        let samples = parse_metrics(&http_get(&at, "/metrics")?)?;
        ensure!(
            samples.iter().any(|s| s == "kvip_netlink_up{} 1"),
            "{node}: kvip_netlink_up is not 1"
        );
        ensure!(
            !samples
                .iter()
                .any(|s| s.starts_with("kvip_conflict_listeners_down") && !s.ends_with(" 0")),
            "{node}: a conflict listener is down"
        );
        http_get(&at, "/readyz").map_err(|e| format!("{node}: /readyz: {e}"))?;
        http_get(&at, "/healthz").map_err(|e| format!("{node}: /healthz: {e}"))?;
    }
    Ok(())
}

/// Slow clients opened against one node's metrics endpoint.
const SLOW_CLIENTS: usize = 200;
/// kvip's header read timeout (`HEADER_READ_TIMEOUT` in daemon/src/http.rs).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How much later than the header timeout a slow client may be closed.
const CLOSE_MARGIN: Duration = Duration::from_secs(2);

/// One connection that sends nothing, or a request head a byte a second.
struct SlowClient {
    stream: std::net::TcpStream,
    opened: Instant,
    dribbles: bool,
    sent: usize,
    closed: Option<Instant>,
}

impl SlowClient {
    /// Whether the server has closed it (checked without blocking).
    fn check(&mut self) {
        use std::io::Read;
        if self.closed.is_some() {
            return;
        }
        let mut buf = [0u8; 256];
        match self.stream.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            // End of stream, a reset, or (never, for a partial head) an answer.
            _ => self.closed = Some(Instant::now()),
        }
    }

    /// Sends the next byte of a request head that never ends.
    fn dribble(&mut self) {
        use std::io::Write;
        const HEAD: &[u8] =
            b"GET /metrics HTTP/1.1\r\nHost: slow\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa";
        if !self.dribbles || self.closed.is_some() {
            return;
        }
        let byte = HEAD[self.sent % HEAD.len()];
        if self.stream.write_all(&[byte]).is_err() {
            self.closed = Some(Instant::now());
        }
        self.sent += 1;
    }
}

/// `kvip_http_connections_closed_total{reason}` on the endpoint at `addr`.
fn closed_by(addr: &str, reason: &str) -> Result<u64, String> {
    let samples = parse_metrics(&http_get(addr, "/metrics")?)?;
    let name = format!("kvip_http_connections_closed_total{{reason=\"{reason}\"}} ");
    Ok(samples
        .iter()
        .find_map(|s| s.strip_prefix(&name)?.parse::<f64>().ok())
        .map_or(0, |v| v as u64))
}

/// GETs `path` at `addr` from the client; fails unless it answers within 1 s.
fn answers_in_a_second(addr: &str, path: &str) -> Result<Duration, String> {
    let asked = Instant::now();
    let body = http_get(addr, path).map_err(|e| format!("GET {path} at {addr}: {e}"))?;
    let took = asked.elapsed();
    ensure!(
        took < Duration::from_secs(1),
        "GET {path} at {addr} took {} ms",
        took.as_millis()
    );
    ensure!(
        path != "/metrics" || body.contains("kvip_build_info"),
        "GET /metrics at {addr}: not the exposition: {body}"
    );
    Ok(took)
}

fn a_slow_client_cannot_exhaust_the_metrics_listener() -> Outcome {
    // worker1's endpoint, reached on both of its addresses (`:2112` is dual-stack).
    let (v4, v6) = ("10.77.0.12:2112", "[fd00:77::12]:2112");
    let evicted_before = closed_by(v4, "evicted")?;
    let timed_out_before = closed_by(v4, "header_timeout")?;
    let target: std::net::SocketAddr = v4.parse().map_err(|e| format!("{v4}: {e}"))?;
    // All from the client namespace, as a host on the node's network would.
    let opened = kvip_lab::netns::in_netns("kvl-client", move || {
        (0..SLOW_CLIENTS)
            .map(|i| {
                let stream = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
                stream.set_nonblocking(true)?;
                Ok(SlowClient {
                    stream,
                    opened: Instant::now(),
                    dribbles: i % 2 == 1,
                    sent: 0,
                    closed: None,
                })
            })
            .collect::<std::io::Result<Vec<_>>>()
    })
    .map_err(|e| format!("{e:#}"))?;
    let mut clients = opened.map_err(|e| format!("opening {SLOW_CLIENTS} connections: {e}"))?;
    let first_opened = clients.first().map_or_else(Instant::now, |c| c.opened);
    for c in &mut clients {
        c.dribble();
        c.check();
    }
    let open = clients.iter().filter(|c| c.closed.is_none()).count();
    ensure!(
        open > 0,
        "every slow connection was closed at once: the test shows nothing"
    );
    ensure!(
        first_opened.elapsed() < HEADER_TIMEOUT - Duration::from_secs(2),
        "opening the connections took {} ms: too slow to test the endpoint while they are open",
        first_opened.elapsed().as_millis()
    );
    // While they are open: scrapes and probes answer within a second, on
    // both families.
    let mut slowest = Duration::ZERO;
    for addr in [v4, v6] {
        slowest = slowest.max(answers_in_a_second(addr, "/metrics")?);
    }
    slowest = slowest.max(answers_in_a_second(v4, "/healthz")?);
    println!(
        "    {open} of {SLOW_CLIENTS} slow connections open; /metrics (IPv4, IPv6) and /healthz answered, slowest after {} ms",
        slowest.as_millis()
    );
    // Every slow connection is closed by the server within the header
    // timeout plus the margin, dribbling or not.
    let bound = HEADER_TIMEOUT + CLOSE_MARGIN;
    let mut last_byte = Instant::now();
    while clients.iter().any(|c| c.closed.is_none())
        && first_opened.elapsed() < bound + Duration::from_secs(1)
    {
        if last_byte.elapsed() >= Duration::from_secs(1) {
            last_byte = Instant::now();
            for c in &mut clients {
                c.dribble();
            }
        }
        for c in &mut clients {
            c.check();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let late: Vec<String> = clients
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            c.closed
                .is_none_or(|at| at.duration_since(c.opened) > bound)
        })
        .map(|(i, c)| {
            format!(
                "#{i} ({}, {})",
                if c.dribbles { "dribbling" } else { "silent" },
                c.closed.map_or("still open".into(), |at| format!(
                    "closed after {} ms",
                    at.duration_since(c.opened).as_millis()
                ))
            )
        })
        .collect();
    ensure!(
        late.is_empty(),
        "{} slow connections were not closed within {} ms: {}",
        late.len(),
        bound.as_millis(),
        late.join(", ")
    );
    let longest = clients
        .iter()
        .filter_map(|c| Some(c.closed?.duration_since(c.opened)))
        .max()
        .unwrap_or_default();
    println!(
        "    every slow connection closed by the server, the last after {} ms",
        longest.as_millis()
    );
    // Answers again once they are gone, and says what it closed.
    answers_in_a_second(v6, "/metrics")?;
    let evicted = closed_by(v4, "evicted")?.saturating_sub(evicted_before);
    let timed_out = closed_by(v4, "header_timeout")?.saturating_sub(timed_out_before);
    ensure!(
        evicted >= 100,
        "only {evicted} connections were evicted to make room (expected most of the {SLOW_CLIENTS} beyond the cap of 64)"
    );
    ensure!(
        timed_out >= 1,
        "no connection was closed for its header timeout"
    );
    println!("    kvip counted {evicted} evicted, {timed_out} header timeouts");
    Ok(())
}

fn someone_elses_copy_on_another_node_stops_the_announcement_until_removed() -> Outcome {
    let holder = holder_of(VIP)?;
    let other = if holder == "worker1" {
        "worker2"
    } else {
        "worker1"
    };
    // As a leftover of kube-vip, or keepalived, would: an unmarked host address.
    in_node(
        other,
        "ip",
        &["addr", "add", &format!("{VIP}/32"), "dev", "eth0"],
    )?;
    let outcome = (|| -> Outcome {
        let (code, text) = wait_for(
            "kvip status to name the other node's copy",
            Duration::from_secs(15),
            Duration::from_millis(200),
            || {
                kvip_status(&["-n", NS, "v4"])
                    .ok()
                    .filter(|(_, t)| t.contains("AddressOnNode"))
            },
        )?;
        ensure!(code == 1, "kvip status exited {code}: {text}");
        ensure!(
            text.contains(other),
            "the reason does not name {other}: {text}"
        );
        wait_for(
            "the holder to withdraw (one host answers, not two)",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || (nodes_with_address(VIP) == [other.to_string()]).then_some(()),
        )?;
        let have = in_node(other, "ip", &["-o", "addr", "show", "dev", "eth0"])?;
        ensure!(
            have.contains(&format!("{VIP}/32")),
            "kvip removed the copy it did not add from {other}"
        );
        Ok(())
    })();
    in_node(
        other,
        "ip",
        &["addr", "del", &format!("{VIP}/32"), "dev", "eth0"],
    )?;
    outcome?;
    let took = answers_within(&format!("{VIP}:80"), Duration::from_secs(15))?;
    let carriers = wait_for(
        "one node to carry the VIP again",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let n = nodes_with_address(VIP);
            (n.len() == 1).then_some(n)
        },
    )?;
    println!(
        "    copy on {other}: pending AddressOnNode, {holder} withdrew; copy removed: answering after {} ms from {}",
        took.as_millis(),
        carriers[0]
    );
    Ok(())
}

fn a_vip_left_for_a_deleted_service_is_removed_at_restart() -> Outcome {
    apply(&lb_service(NS, "stale", "Cluster", Some(STALE_VIP), "web"))?;
    probe_until(
        &format!("{STALE_VIP}:80"),
        Duration::from_secs(15),
        Duration::from_millis(50),
        |_| true,
    )?;
    let node = holder_of(STALE_VIP)?;
    // The node dies with the VIP on its interface; meanwhile the Service goes.
    lab_ok(&["fault", "kill-node", &node])?;
    kubectl(&["delete", "service", "stale", "-n", NS])?;
    std::thread::sleep(Duration::from_secs(2));
    lab_ok(&["fault", "revive-node", &node])?;
    let revived = Instant::now();
    let gone = wait_for(
        "the revived node to remove the VIP nobody asks for",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            nodes_with_address(STALE_VIP)
                .is_empty()
                .then(|| revived.elapsed())
        },
    )?;
    println!(
        "    {node} revived: the VIP of the deleted Service removed after {} ms",
        gone.as_millis()
    );
    Ok(())
}

fn an_unmarked_copy_left_on_the_holder_is_kept_as_its_own() -> Outcome {
    apply(&lb_service(
        NS,
        "leftover",
        "Cluster",
        Some(LEFTOVER_VIP),
        "web",
    ))?;
    probe_until(
        &format!("{LEFTOVER_VIP}:80"),
        Duration::from_secs(15),
        Duration::from_millis(50),
        |_| true,
    )?;
    let node = holder_of(LEFTOVER_VIP)?;
    // A kvip without marks dies holding the VIP: its copy carries no mark.
    lab_ok(&["fault", "kill-node", &node])?;
    let cidr = format!("{LEFTOVER_VIP}/32");
    in_node(&node, "ip", &["addr", "del", &cidr, "dev", "eth0"])?;
    in_node(&node, "ip", &["addr", "add", &cidr, "dev", "eth0"])?;
    lab_ok(&["fault", "revive-node", &node])?;
    // The restarted kvip finds the Lease still naming its node: the copy is its own.
    std::thread::sleep(Duration::from_secs(8));
    let carriers = nodes_with_address(LEFTOVER_VIP);
    ensure!(
        carriers == [node.clone()],
        "after the restart {LEFTOVER_VIP} is on {carriers:?}, not only on {node}"
    );
    let (code, text) = kvip_status(&["-n", NS, "leftover"])?;
    ensure!(
        code == 0 && text.contains("announced"),
        "kvip status: {text}"
    );
    answers_within(&format!("{LEFTOVER_VIP}:80"), Duration::from_secs(5))?;
    kubectl(&["delete", "service", "leftover", "-n", NS])?;
    wait_for(
        "the kept copy to be withdrawn with its Service",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || nodes_with_address(LEFTOVER_VIP).is_empty().then_some(()),
    )?;
    Ok(())
}

fn teardown() -> Outcome {
    lab_down()
}

fn main() {
    run_all(
        "network",
        &[
            Scenario {
                name: "setup",
                run: setup,
            },
            Scenario {
                name: "health_reports_the_network_side",
                run: health_reports_the_network_side,
            },
            Scenario {
                name: "a_slow_client_cannot_exhaust_the_metrics_listener",
                run: a_slow_client_cannot_exhaust_the_metrics_listener,
            },
            Scenario {
                name: "an_address_removed_by_hand_comes_back",
                run: an_address_removed_by_hand_comes_back,
            },
            Scenario {
                name: "a_changed_mac_is_announced",
                run: a_changed_mac_is_announced,
            },
            Scenario {
                name: "a_recreated_interface_is_announced_again",
                run: a_recreated_interface_is_announced_again,
            },
            Scenario {
                name: "an_ipv6_vip_answers_again_after_a_link_flap_of_its_holder",
                run: an_ipv6_vip_answers_again_after_a_link_flap_of_its_holder,
            },
            Scenario {
                name: "watches_come_back_after_a_link_flap_drops_kube_proxys_nat",
                run: watches_come_back_after_a_link_flap_drops_kube_proxys_nat,
            },
            Scenario {
                name: "kube_ipvs0_survives_kvip_restarts_untouched",
                run: kube_ipvs0_survives_kvip_restarts_untouched,
            },
            Scenario {
                name: "a_service_cannot_take_the_control_plane_vip",
                run: a_service_cannot_take_the_control_plane_vip,
            },
            Scenario {
                name: "a_flood_of_forged_claims_gets_a_bounded_answer_and_the_vip_stays",
                run: a_flood_of_forged_claims_gets_a_bounded_answer_and_the_vip_stays,
            },
            Scenario {
                name: "one_forged_frame_during_an_api_outage_takes_no_vip_down",
                run: one_forged_frame_during_an_api_outage_takes_no_vip_down,
            },
            Scenario {
                name: "a_node_without_the_configured_interface_never_wins_and_status_says_why",
                run: a_node_without_the_configured_interface_never_wins_and_status_says_why,
            },
            Scenario {
                name: "someone_elses_copy_on_another_node_stops_the_announcement_until_removed",
                run: someone_elses_copy_on_another_node_stops_the_announcement_until_removed,
            },
            Scenario {
                name: "a_vip_left_for_a_deleted_service_is_removed_at_restart",
                run: a_vip_left_for_a_deleted_service_is_removed_at_restart,
            },
            Scenario {
                name: "an_unmarked_copy_left_on_the_holder_is_kept_as_its_own",
                run: an_unmarked_copy_left_on_the_holder_is_kept_as_its_own,
            },
            Scenario {
                name: "teardown",
                run: teardown,
            },
        ],
    );
}
