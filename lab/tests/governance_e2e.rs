//! End to end: a Service author kvip does not trust. Addresses another host
//! uses, the cluster's own addresses (the control-plane VIP, a node's
//! address, link-local, the Service network) are refused and no node takes
//! them; a contested address stays with the Service that had it whatever
//! the names; Services share an address only with different ports, and
//! adding or deleting them never interrupts it; a Lease name annotation
//! cannot make kvip write another controller's Lease; a forged instance
//! Lease outside kvip's namespace does not count.
//!
//! One kvip process per node runs both roles, with one Lease per Service
//! (`svc_election=true`), so a shared address's Lease really changes hands
//! when its first Service goes.

mod support;

use std::time::{Duration, Instant};
use support::*;

const NS: &str = "gov-e2e";
const CP_VIP: &str = "10.77.0.198";
/// The client namespace's own addresses (the lab's "other host").
const CLIENT_V4: &str = "10.77.0.5";
const CLIENT_V6: &str = "fd00:77::5";
/// An address the client takes for a while, then gives up.
const BORROWED: &str = "10.77.0.6";
/// An address the client holds while many Services arrive at once.
const BUSY: &str = "10.77.0.7";
const EXCLUDE: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

fn setup() -> Outcome {
    fresh_lab_ipv6()?;
    kubectl(&[
        "label",
        "node",
        "cp1",
        &format!("{EXCLUDE}=true"),
        "--overwrite",
    ])?;
    let mut flags = vec![
        "--role",
        "all",
        "--address",
        CP_VIP,
        "--interface",
        "eth0",
        "--env",
        "svc_election=true",
    ];
    flags.extend_from_slice(&TIMINGS);
    // cp1 (the lab's only API server) carries the exclusion label.
    flags.extend_from_slice(&HONOUR_EXCLUDE_LABEL);
    deploy_kvip("all.yaml", &flags)?;
    for ns in [NS, "gov-a", "gov-z"] {
        namespace(ns)?;
    }
    for (ns, pod, node) in [
        (NS, "web-1", "worker1"),
        (NS, "web-2", "worker2"),
        ("gov-a", "web-1", "worker1"),
        ("gov-z", "web-1", "worker2"),
    ] {
        lab_pod(ns, pod, node, "web")?;
    }
    // Something served, so every later "nobody took it" means something.
    apply(&lb_service(
        NS,
        "control",
        "Cluster",
        Some("10.77.0.160"),
        "web",
    ))?;
    answers("10.77.0.160:80")?;
    Ok(())
}

/// A Cluster-policy LoadBalancer Service in `ns` on `port` (→ 8080) with `vip`.
fn service_on_port(ns: &str, name: &str, vip: &str, port: u16) -> String {
    lb_service_on_port(ns, name, "Cluster", Some(vip), "web", port)
}

/// No node carries `vip`, checked every 100 ms for `for_`.
fn nobody_carries(vip: &str, for_: Duration) -> Outcome {
    let until = Instant::now() + for_;
    while Instant::now() < until {
        let carriers = nodes_with_address(vip);
        ensure!(carriers.is_empty(), "{vip} is on {carriers:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn client_mac() -> Result<String, String> {
    Ok(
        in_netns("kvl-client", "cat", &["/sys/class/net/eth0/address"])?
            .trim()
            .to_lowercase(),
    )
}

fn an_address_another_host_uses_is_refused_naming_its_mac_and_no_node_takes_it() -> Outcome {
    let mac = client_mac()?;
    let created = Instant::now();
    apply(&service_on_port(NS, "squat", CLIENT_V4, 80))?;
    apply(&lb_service6(NS, "squat6", "Cluster", CLIENT_V6, "web"))?;
    for name in ["squat", "squat6"] {
        let (exit, entry) = wait_reason(NS, name, "AddressInUse")?;
        ensure!(exit == 1, "kvip status exits {exit}");
        let message = entry["reason"]["message"].as_str().unwrap_or_default();
        ensure!(
            message.contains(&mac),
            "the reason should name the client's MAC {mac}: {message}"
        );
        println!(
            "    {name}: AddressInUse after {} ms: {message}",
            created.elapsed().as_millis()
        );
    }
    nobody_carries(CLIENT_V4, Duration::from_secs(3))?;
    nobody_carries(CLIENT_V6, Duration::from_secs(1))?;
    let event = wait_for(
        "a VIPPending Event naming the MAC",
        Duration::from_secs(20),
        Duration::from_millis(300),
        || {
            kvip_events(NS, "squat")
                .into_iter()
                .find(|(_, m, _)| m.contains(&mac))
        },
    )?;
    println!("    Event {}: {}", event.0, event.1);
    // Asked from the client, nobody else answers for the client's address.
    let answers = arp_answerers(CLIENT_V4);
    ensure!(
        answers.is_empty(),
        "other hosts answer for the client's address: {answers:?}"
    );
    for name in ["squat", "squat6"] {
        kubectl(&["delete", "service", name, "-n", NS])?;
    }
    Ok(())
}

fn an_address_freed_by_its_host_is_taken_after_a_recheck() -> Outcome {
    in_netns(
        "kvl-client",
        "ip",
        &["addr", "add", &format!("{BORROWED}/24"), "dev", "eth0"],
    )?;
    apply(&service_on_port(NS, "borrow", BORROWED, 80))?;
    wait_reason(NS, "borrow", "AddressInUse")?;
    nobody_carries(BORROWED, Duration::from_secs(2))?;
    in_netns(
        "kvl-client",
        "ip",
        &["addr", "del", &format!("{BORROWED}/24"), "dev", "eth0"],
    )?;
    let freed = Instant::now();
    // Rechecked every 30 s; then every node learns it at the next assessment.
    probe_until(
        &format!("{BORROWED}:80"),
        Duration::from_secs(45),
        Duration::from_millis(200),
        |_| true,
    )?;
    println!(
        "    freed by its host: served {} ms later (rechecked every 30 s)",
        freed.elapsed().as_millis()
    );
    kubectl(&["delete", "service", "borrow", "-n", NS])?;
    Ok(())
}

/// A node assessing many Services at once steps far apart: its probe must
/// still send every frame and listen after the last, or a host answering
/// them looks like nobody. 120 IPv6 Services arrive in one apply with one
/// that asks for an address the client holds; the client sees three probes
/// from the node that takes it up, and the Service is refused naming its MAC.
fn an_address_in_use_is_found_while_many_services_arrive_at_once() -> Outcome {
    let mac = client_mac()?;
    in_netns(
        "kvl-client",
        "ip",
        &["addr", "add", &format!("{BUSY}/24"), "dev", "eth0"],
    )?;
    let mut many: Vec<String> = (0..120)
        .map(|i| {
            lb_service6(
                NS,
                &format!("many-{i}"),
                "Cluster",
                &format!("fd00:77::1:{i:x}"),
                "web",
            )
        })
        .collect();
    many.push(service_on_port(NS, "busy", BUSY, 80));
    let created = Instant::now();
    // ARP probes (sender 0.0.0.0) for BUSY.
    let ((_, entry), text) = capture_in_client(
        "arp and arp[6:2] == 1 and arp[14:4] == 0 and arp[24:4] == 0x0a4d0007",
        Duration::ZERO,
        || {
            apply(&many.join("\n---\n"))?;
            wait_reason(NS, "busy", "AddressInUse")
        },
    )?;
    let message = entry["reason"]["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains(&mac),
        "the reason should name the client's MAC {mac}: {message}"
    );
    let mut per_node: std::collections::BTreeMap<&str, usize> = Default::default();
    for line in text.lines() {
        // The sender's MAC follows the timestamp.
        if let Some(sender) = line.split_whitespace().nth(1) {
            *per_node.entry(sender).or_default() += 1;
        }
    }
    println!(
        "    AddressInUse after {} ms among 120 new Services; probes by sender MAC: {per_node:?}",
        created.elapsed().as_millis()
    );
    ensure!(
        per_node.values().any(|n| *n >= 3),
        "no node sent all three probes: {per_node:?}"
    );
    nobody_carries(BUSY, Duration::from_secs(2))?;
    let mut names: Vec<String> = (0..120).map(|i| format!("many-{i}")).collect();
    names.push("busy".to_string());
    let mut args = vec!["delete", "service", "-n", NS, "--wait=false"];
    args.extend(names.iter().map(String::as_str));
    kubectl(&args)?;
    in_netns(
        "kvl-client",
        "ip",
        &["addr", "del", &format!("{BUSY}/24"), "dev", "eth0"],
    )?;
    Ok(())
}

fn the_clusters_own_addresses_are_refused() -> Outcome {
    let cluster_ip = kubectl(&[
        "get",
        "service",
        "kubernetes",
        "-n",
        "default",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])?;
    // (name, address, kvip status's code, what its message says)
    let cases = [
        // kvip status cannot know the control-plane VIP (it is configuration):
        // it sees an address on cp1 kvip's lb role did not put there.
        ("cp-vip", CP_VIP.to_string(), "AddressOnNode", "cp1"),
        (
            "node-ip",
            "10.77.0.12".to_string(),
            "AddressInUse",
            "worker1",
        ),
        (
            "metadata",
            "169.254.169.254".to_string(),
            "InvalidInput",
            "link-local",
        ),
        (
            "cluster-ip",
            cluster_ip.trim().to_string(),
            "ServiceNetwork",
            "kubernetes",
        ),
        (
            "service-range",
            "10.96.200.200".to_string(),
            "ServiceNetwork",
            "10.96.0.0/16",
        ),
    ];
    for (name, address, _, _) in &cases {
        apply(&service_on_port(NS, name, address, 80))?;
    }
    for (name, address, code, says) in &cases {
        let (exit, entry) = wait_reason(NS, name, code)?;
        ensure!(exit == 1, "kvip status exits {exit}");
        let message = entry["reason"]["message"].as_str().unwrap_or_default();
        ensure!(message.contains(says), "{name}: {message}");
        println!("    {name} ({address}): {code}: {message}");
    }
    // The daemon agrees: a VIPPending Event for each, and no node took any.
    // What the daemon's Event says where it knows more than kvip status.
    let event_says = |name: &str, says: &str| match name {
        "cp-vip" => "control-plane VIP".to_string(),
        _ => says.to_string(),
    };
    for (name, _, _, says) in &cases {
        let says = event_says(name, says);
        wait_for(
            &format!("the daemon's Event for {name}"),
            Duration::from_secs(20),
            Duration::from_millis(300),
            || {
                kvip_events(NS, name)
                    .iter()
                    .any(|(r, m, _)| r == "VIPPending" && m.contains(&says))
                    .then_some(())
            },
        )?;
    }
    ensure!(
        nodes_with_address(CP_VIP) == ["cp1"],
        "the control-plane VIP moved"
    );
    ensure!(
        nodes_with_address("10.77.0.12") == ["worker1"],
        "worker1's address is on {:?}",
        nodes_with_address("10.77.0.12")
    );
    for address in ["169.254.169.254", cluster_ip.trim(), "10.96.200.200"] {
        nobody_carries(address, Duration::from_millis(300))?;
    }
    for (name, _, _, _) in &cases {
        kubectl(&["delete", "service", name, "-n", NS])?;
    }
    Ok(())
}

/// `first` claims `vip` and is served; `second`, in another namespace,
/// claims it too; the first keeps it and answers throughout.
fn first_claim_keeps(first: (&str, &str), second: (&str, &str), vip: &str) -> Outcome {
    apply(&service_on_port(first.0, first.1, vip, 80))?;
    let target = format!("{vip}:80");
    answers(&target)?;
    let holder = holder_of(vip)?;
    let probes = Prober::start(&[&target], Duration::from_millis(1500));
    apply(&service_on_port(second.0, second.1, vip, 80))?;
    let (_, entry) = wait_reason(second.0, second.1, "AddressConflict")?;
    let message = entry["reason"]["message"].as_str().unwrap_or_default();
    let keeper = format!("{}/{}", first.0, first.1);
    ensure!(
        message.contains(&keeper),
        "the reason should name {keeper}: {message}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let (sent, failed) = probes.finish();
    ensure!(failed.is_empty(), "failed probes: {failed:?}");
    ensure!(holder_of(vip)? == holder, "the address moved");
    let (_, kept, _) = row(first.0, first.1)?;
    ensure!(kept["state"] == "announced", "the first claim: {kept}");
    println!(
        "    {keeper} kept {vip} against {}/{}: {sent} probes, none failed",
        second.0, second.1
    );
    Ok(())
}

fn a_contested_address_stays_with_the_first_claim_in_both_name_orders() -> Outcome {
    // The later claim's namespace sorts first, then last.
    first_claim_keeps(("gov-z", "prod"), ("gov-a", "newcomer"), "10.77.0.161")?;
    first_claim_keeps(("gov-a", "prod"), ("gov-z", "newcomer"), "10.77.0.162")?;
    Ok(())
}

fn an_overlapping_port_is_refused_naming_the_other() -> Outcome {
    let vip = "10.77.0.163";
    apply(&service_on_port(NS, "port-one", vip, 80))?;
    answers(&format!("{vip}:80"))?;
    apply(&service_on_port(NS, "port-two", vip, 80))?;
    apply(&service_on_port(NS, "port-three", vip, 8443))?;
    let (exit, entry) = wait_reason(NS, "port-two", "PortConflict")?;
    ensure!(exit == 1, "exit {exit}");
    let message = entry["reason"]["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains(&format!("{NS}/port-one")) && message.contains("80/TCP"),
        "{message}"
    );
    println!("    port-two: {message}");
    // A different port shares the address.
    probe_until(
        &format!("{vip}:8443"),
        Duration::from_secs(20),
        Duration::from_millis(100),
        |_| true,
    )?;
    let (_, three, _) = row(NS, "port-three")?;
    ensure!(three["state"] == "announced", "port-three: {three}");
    for name in ["port-one", "port-two", "port-three"] {
        kubectl(&["delete", "service", name, "-n", NS])?;
    }
    Ok(())
}

fn services_added_to_and_deleted_from_a_shared_address_never_interrupt_it() -> Outcome {
    let vip = "10.77.0.164";
    // "alpha" is first: the group is elected through its Lease.
    apply(&service_on_port(NS, "alpha", vip, 81))?;
    answers(&format!("{vip}:81"))?;
    apply(&service_on_port(NS, "beta", vip, 80))?;
    let target = format!("{vip}:80");
    answers(&target)?;
    let holder = holder_of(vip)?;
    ensure!(
        lease_holder(NS, "kubevip-alpha").as_deref() == Some(holder.as_str()),
        "alpha's Lease should elect the shared address"
    );
    let probes = Prober::start(&[&target], Duration::from_millis(1500));
    let mut carriers_seen = std::collections::BTreeSet::new();
    let mut watch = |for_: Duration| {
        let until = Instant::now() + for_;
        while Instant::now() < until {
            carriers_seen.insert(nodes_with_address(vip));
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    apply(&service_on_port(NS, "gamma", vip, 82))?;
    watch(Duration::from_secs(3));
    // The first Service goes: the group's Lease becomes beta's.
    kubectl(&["delete", "service", "alpha", "-n", NS])?;
    watch(Duration::from_secs(4));
    kubectl(&["delete", "service", "gamma", "-n", NS])?;
    watch(Duration::from_secs(3));
    let (sent, failed) = probes.finish();
    ensure!(failed.is_empty(), "failed probes: {failed:?}");
    ensure!(
        carriers_seen == std::collections::BTreeSet::from([vec![holder.clone()]]),
        "carriers seen: {carriers_seen:?}"
    );
    ensure!(
        lease_holder(NS, "kubevip-beta").as_deref() == Some(holder.as_str()),
        "beta's Lease is held by {:?}",
        lease_holder(NS, "kubevip-beta")
    );
    println!(
        "    added gamma, deleted alpha (Lease handed to beta) and gamma: {sent} probes, none failed, {vip} stayed on {holder}"
    );
    kubectl(&["delete", "service", "beta", "-n", NS])?;
    Ok(())
}

fn the_lease_name_annotation_cannot_point_kvip_at_another_controllers_lease() -> Outcome {
    let lease = |labels: &str| {
        format!(
            r#"
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: ingress-leader
  namespace: {NS}
{labels}spec:
  holderIdentity: ingress-controller-0
  leaseDurationSeconds: 1
  renewTime: "2020-01-01T00:00:00.000000Z"
"#
        )
    };
    // Expired long ago: kvip would take it at once if it were allowed to.
    apply(&lease(""))?;
    let before = get_json(&["lease", "ingress-leader", "-n", NS])?;
    let svc = format!(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: hijack
  namespace: {NS}
  annotations: {{ kube-vip.io/loadbalancerIPs: "10.77.0.165", kube-vip.io/leaseName: ingress-leader }}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {{ app: web }}
  ports: [{{ port: 80, targetPort: 8080 }}]
"#
    );
    apply(&svc)?;
    let (_, entry) = wait_reason(NS, "hijack", "InvalidInput")?;
    let message = entry["reason"]["message"].as_str().unwrap_or_default();
    ensure!(message.contains("ingress-leader"), "{message}");
    std::thread::sleep(Duration::from_secs(5));
    let after = get_json(&["lease", "ingress-leader", "-n", NS])?;
    ensure!(
        after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"],
        "kvip wrote the Lease: {}",
        after["spec"]
    );
    nobody_carries("10.77.0.165", Duration::from_millis(300))?;
    println!("    hijack: refused ({message}); the Lease untouched");
    // An administrator who labels a Lease kvip's may name it.
    apply(&lease("  labels: { app.kubernetes.io/managed-by: kvip }\n"))?;
    probe_until(
        "10.77.0.165:80",
        Duration::from_secs(30),
        Duration::from_millis(200),
        |_| true,
    )?;
    let holder = lease_holder(NS, "ingress-leader").unwrap_or_default();
    ensure!(
        holder.starts_with("worker"),
        "the labelled Lease is held by {holder:?}"
    );
    kubectl(&["delete", "service", "hijack", "-n", NS])?;
    Ok(())
}

fn a_forged_instance_lease_in_another_namespace_does_not_count() -> Outcome {
    // A Node without kvip, and a selector-less Local Service whose only
    // endpoint is on it: nobody may announce it.
    apply(
        r#"
apiVersion: v1
kind: Node
metadata: { name: ghost }
"#,
    )?;
    apply(&format!(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: ghostly
  namespace: {NS}
  annotations: {{ kube-vip.io/loadbalancerIPs: "10.77.0.166" }}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  ports: [{{ port: 80, targetPort: 8080 }}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ghostly-1
  namespace: {NS}
  labels: {{ kubernetes.io/service-name: ghostly }}
addressType: IPv4
ports: [{{ port: 8080, protocol: TCP }}]
endpoints:
- addresses: ["10.77.0.250"]
  nodeName: ghost
  conditions: {{ ready: true }}
"#
    ))?;
    wait_reason(NS, "ghostly", "EndpointsOnNodesWithoutKvip")?;
    let forged = |ns: &str| {
        format!(
            r#"
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: kvip-lb-ghost
  namespace: {ns}
  labels: {{ kvip.io/instance: "true", kvip.io/node: ghost, kvip.io/role: lb }}
spec:
  holderIdentity: ghost
  leaseDurationSeconds: 3600
  renewTime: "{}"
"#,
            chrono_now()
        )
    };
    namespace("tenant")?;
    apply(&forged("tenant"))?;
    // The daemon and kvip status both still see no instance on ghost.
    std::thread::sleep(Duration::from_secs(4));
    let (_, entry) = wait_reason(NS, "ghostly", "EndpointsOnNodesWithoutKvip")?;
    ensure!(
        entry["reason"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("ghost"),
        "{entry}"
    );
    let events = kvip_events(NS, "ghostly");
    ensure!(
        events
            .iter()
            .any(|(r, m, _)| r == "VIPPending" && m.contains("without a kvip")),
        "the daemon's Event: {events:?}"
    );
    // The control: the same Lease in kvip's own namespace does count, so
    // the check above could fail.
    apply(&forged("kube-system"))?;
    wait_for(
        "kvip status to count the instance in kvip's namespace",
        Duration::from_secs(20),
        Duration::from_millis(300),
        || {
            let (_, e, _) = row(NS, "ghostly").ok()?;
            (code_of(&e) != "EndpointsOnNodesWithoutKvip").then_some(())
        },
    )?;
    println!("    a forged instance Lease in namespace tenant: ignored; in kube-system: counted");
    kubectl(&["delete", "lease", "kvip-lb-ghost", "-n", "kube-system"])?;
    kubectl(&["delete", "lease", "kvip-lb-ghost", "-n", "tenant"])?;
    kubectl(&["delete", "service", "ghostly", "-n", NS])?;
    kubectl(&["delete", "node", "ghost"])?;
    Ok(())
}

/// The wall clock as a Lease's MicroTime.
fn chrono_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.000000Z"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn an_old_service_cannot_take_a_served_address_by_adding_it_to_its_list() -> Outcome {
    // gov-a/old is older and served on its own address; gov-z/web is served on .171.
    apply(&service_on_port("gov-a", "old", "10.77.0.172", 80))?;
    answers("10.77.0.172:80")?;
    apply(&service_on_port("gov-z", "web", "10.77.0.171", 80))?;
    let target = "10.77.0.171:80";
    answers(target)?;
    let holder = holder_of("10.77.0.171")?;
    let probes = Prober::start(&[target], Duration::from_millis(1500));
    kubectl(&[
        "annotate",
        "--overwrite",
        "service",
        "old",
        "-n",
        "gov-a",
        "kube-vip.io/loadbalancerIPs=10.77.0.172,10.77.0.171",
    ])?;
    let (_, entry) = wait_reason("gov-a", "old", "AddressConflict")?;
    let message = entry["reason"]["message"].as_str().unwrap_or_default();
    ensure!(message.contains("gov-z/web"), "{message}");
    std::thread::sleep(Duration::from_secs(3));
    let (sent, failed) = probes.finish();
    ensure!(failed.is_empty(), "failed probes: {failed:?}");
    ensure!(holder_of("10.77.0.171")? == holder, "the address moved");
    println!("    gov-a/old added gov-z/web's address: refused; {sent} probes, none failed");
    kubectl(&["delete", "service", "old", "-n", "gov-a"])?;
    kubectl(&["delete", "service", "web", "-n", "gov-z"])?;
    Ok(())
}

fn another_load_balancers_status_does_not_spare_the_probe() -> Outcome {
    let address = "10.77.0.170";
    // A Service of another load balancer, its status claiming the address.
    apply(&format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{ name: elsewhere, namespace: {NS} }}
spec:
  type: LoadBalancer
  loadBalancerClass: other.example/lb
  selector: {{ app: web }}
  ports: [{{ port: 80, targetPort: 8080 }}]
"#
    ))?;
    kubectl(&[
        "patch",
        "service",
        "elsewhere",
        "-n",
        NS,
        "--subresource=status",
        "--type=merge",
        "-p",
        &format!(r#"{{"status":{{"loadBalancer":{{"ingress":[{{"ip":"{address}"}}]}}}}}}"#),
    ])?;
    in_netns(
        "kvl-client",
        "ip",
        &["addr", "add", &format!("{address}/24"), "dev", "eth0"],
    )?;
    apply(&service_on_port("gov-a", "late", address, 80))?;
    let outcome = (|| {
        let (_, entry) = wait_reason("gov-a", "late", "AddressInUse")?;
        let mac = client_mac()?;
        let message = entry["reason"]["message"].as_str().unwrap_or_default();
        ensure!(message.contains(&mac), "{message}");
        nobody_carries(address, Duration::from_secs(2))
    })();
    in_netns(
        "kvl-client",
        "ip",
        &["addr", "del", &format!("{address}/24"), "dev", "eth0"],
    )?;
    kubectl(&["delete", "service", "late", "-n", "gov-a"])?;
    kubectl(&["delete", "service", "elsewhere", "-n", NS])?;
    outcome
}

fn a_newcomer_with_an_address_in_use_does_not_take_a_shared_address_down() -> Outcome {
    let vip = "10.77.0.174";
    apply(&service_on_port(NS, "shared-web", vip, 80))?;
    let target = format!("{vip}:80");
    answers(&target)?;
    let holder = holder_of(vip)?;
    let probes = Prober::start(&[&target], Duration::from_millis(1500));
    apply(&lb_service_on_port(
        NS,
        "shared-new",
        "Cluster",
        Some(&format!("{vip},{CLIENT_V4}")),
        "web",
        81,
    ))?;
    let (_, entry) = wait_reason(NS, "shared-new", "AddressInUse")?;
    std::thread::sleep(Duration::from_secs(5));
    let (sent, failed) = probes.finish();
    ensure!(failed.is_empty(), "failed probes: {failed:?}");
    ensure!(holder_of(vip)? == holder, "the shared address moved");
    let (_, web, _) = row(NS, "shared-web")?;
    ensure!(web["state"] == "announced", "shared-web: {web}");
    println!(
        "    shared-new: {}; shared-web kept {vip}: {sent} probes, none failed",
        entry["reason"]["code"]
    );
    kubectl(&["delete", "service", "shared-new", "shared-web", "-n", NS])?;
    Ok(())
}

fn an_older_service_joining_a_shared_address_does_not_move_it() -> Outcome {
    let vip = "10.77.0.177";
    apply(&service_on_port(NS, "join-old", "10.77.0.178", 80))?;
    answers("10.77.0.178:80")?;
    std::thread::sleep(Duration::from_secs(1));
    apply(&service_on_port(NS, "join-alpha", vip, 81))?;
    let target = format!("{vip}:81");
    answers(&target)?;
    let holder = holder_of(vip)?;
    let probes = Prober::start(&[&target], Duration::from_millis(1500));
    // The older Service moves onto the shared address, port 80.
    kubectl(&[
        "annotate",
        "--overwrite",
        "service",
        "join-old",
        "-n",
        NS,
        &format!("kube-vip.io/loadbalancerIPs={vip}"),
    ])?;
    probe_until(
        &format!("{vip}:80"),
        Duration::from_secs(20),
        Duration::from_millis(100),
        |_| true,
    )?;
    let mut carriers = std::collections::BTreeSet::new();
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        carriers.insert(nodes_with_address(vip));
        std::thread::sleep(Duration::from_millis(50));
    }
    let (sent, failed) = probes.finish();
    ensure!(failed.is_empty(), "failed probes: {failed:?}");
    ensure!(
        carriers == std::collections::BTreeSet::from([vec![holder.clone()]]),
        "carriers seen: {carriers:?}"
    );
    // The group is elected through a member's Lease its announcer holds
    // (the one it has held longest); no other node holds either.
    let held: Vec<Option<String>> = ["kubevip-join-alpha", "kubevip-join-old"]
        .iter()
        .map(|l| lease_holder(NS, l).filter(|h| !h.is_empty()))
        .collect();
    ensure!(
        held.iter().any(|h| h.as_deref() == Some(holder.as_str()))
            && held.iter().flatten().all(|h| *h == holder),
        "the members' Leases are held by {held:?}, the address by {holder}"
    );
    println!(
        "    an older Service joined {vip}: it stayed on {holder}; {sent} probes, none failed"
    );
    kubectl(&["delete", "service", "join-old", "join-alpha", "-n", NS])?;
    Ok(())
}

fn a_service_cannot_point_its_election_at_kvips_own_leases() -> Outcome {
    for (name, lease) in [
        ("grab-instance", "kvip-lb-worker1"),
        ("grab-cp", "plndr-cp-lock"),
    ] {
        apply(&format!(
            r#"
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: kube-system
  annotations: {{ kube-vip.io/loadbalancerIPs: "10.77.0.179", kube-vip.io/leaseName: {lease} }}
spec:
  type: LoadBalancer
  selector: {{ app: web }}
  ports: [{{ port: 80, targetPort: 8080 }}]
"#
        ))?;
        let (_, entry) = wait_reason("kube-system", name, "InvalidInput")?;
        let message = entry["reason"]["message"].as_str().unwrap_or_default();
        ensure!(message.contains(lease), "{message}");
        kubectl(&["delete", "service", name, "-n", "kube-system"])?;
    }
    ensure!(
        lease_holder("kube-system", "kvip-lb-worker1").as_deref() == Some("worker1"),
        "worker1's instance Lease: {:?}",
        lease_holder("kube-system", "kvip-lb-worker1")
    );
    ensure!(
        lease_holder("kube-system", "plndr-cp-lock").as_deref() == Some("cp1"),
        "the control-plane Lease: {:?}",
        lease_holder("kube-system", "plndr-cp-lock")
    );
    nobody_carries("10.77.0.179", Duration::from_millis(300))?;
    Ok(())
}

fn teardown() -> Outcome {
    lab_down()
}

fn main() {
    if !is_root() {
        println!("governance_e2e: skipped (needs root for network namespaces)");
        return;
    }
    run_all(
        "governance_e2e",
        &[
            Scenario {
                name: "setup",
                run: setup,
            },
            Scenario {
                name: "an_address_another_host_uses_is_refused_naming_its_mac_and_no_node_takes_it",
                run: an_address_another_host_uses_is_refused_naming_its_mac_and_no_node_takes_it,
            },
            Scenario {
                name: "an_address_freed_by_its_host_is_taken_after_a_recheck",
                run: an_address_freed_by_its_host_is_taken_after_a_recheck,
            },
            Scenario {
                name: "an_address_in_use_is_found_while_many_services_arrive_at_once",
                run: an_address_in_use_is_found_while_many_services_arrive_at_once,
            },
            Scenario {
                name: "the_clusters_own_addresses_are_refused",
                run: the_clusters_own_addresses_are_refused,
            },
            Scenario {
                name: "a_contested_address_stays_with_the_first_claim_in_both_name_orders",
                run: a_contested_address_stays_with_the_first_claim_in_both_name_orders,
            },
            Scenario {
                name: "an_overlapping_port_is_refused_naming_the_other",
                run: an_overlapping_port_is_refused_naming_the_other,
            },
            Scenario {
                name: "services_added_to_and_deleted_from_a_shared_address_never_interrupt_it",
                run: services_added_to_and_deleted_from_a_shared_address_never_interrupt_it,
            },
            Scenario {
                name: "the_lease_name_annotation_cannot_point_kvip_at_another_controllers_lease",
                run: the_lease_name_annotation_cannot_point_kvip_at_another_controllers_lease,
            },
            Scenario {
                name: "a_forged_instance_lease_in_another_namespace_does_not_count",
                run: a_forged_instance_lease_in_another_namespace_does_not_count,
            },
            Scenario {
                name: "an_old_service_cannot_take_a_served_address_by_adding_it_to_its_list",
                run: an_old_service_cannot_take_a_served_address_by_adding_it_to_its_list,
            },
            Scenario {
                name: "another_load_balancers_status_does_not_spare_the_probe",
                run: another_load_balancers_status_does_not_spare_the_probe,
            },
            Scenario {
                name: "a_newcomer_with_an_address_in_use_does_not_take_a_shared_address_down",
                run: a_newcomer_with_an_address_in_use_does_not_take_a_shared_address_down,
            },
            Scenario {
                name: "an_older_service_joining_a_shared_address_does_not_move_it",
                run: an_older_service_joining_a_shared_address_does_not_move_it,
            },
            Scenario {
                name: "a_service_cannot_point_its_election_at_kvips_own_leases",
                run: a_service_cannot_point_its_election_at_kvips_own_leases,
            },
            Scenario {
                name: "teardown",
                run: teardown,
            },
        ],
    );
}
