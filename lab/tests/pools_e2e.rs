//! End to end: addresses from pools. kvip reads kube-vip-cloud-provider's
//! `kubevip` ConfigMap and gives every LoadBalancer Service without an
//! address one, in the cloud provider's order, written as the cloud provider
//! writes it; an exhausted pool leaves the next Service pending
//! `PoolExhausted`; a freed address is reused; dual-stack policies, sharing
//! and bad values behave as documented; fifty Services created at once over
//! three namespaces get fifty different addresses from three kvip
//! instances, kept across a restart of every instance and an API server
//! outage in the middle of a burst; and
//! `kvip_restrict_to_pools=true` refuses an address outside the pool.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::{Duration, Instant};
use support::*;

const ANNOTATION: &str = "kube-vip.io/loadbalancerIPs";
const NAMESPACES: [&str; 4] = ["pool-a", "pool-b", "pool-c", "pool-d"];
const CONCURRENT: [&str; 3] = ["conc-1", "conc-2", "conc-3"];

/// The pools of the suite: a namespace CIDR, a namespace range, a global
/// dual-stack range with sharing for pool-b, one CIDR for three namespaces.
fn pools(extra: &[(&str, &str)]) -> String {
    let mut data: BTreeMap<&str, &str> = BTreeMap::from([
        ("cidr-pool-a", "10.77.0.200/30"),
        (
            "range-global",
            "10.77.0.210-10.77.0.219,fd00:77::210-fd00:77::219",
        ),
        ("allow-share-pool-b", "true"),
        ("range-pool-c", "10.77.0.220-10.77.0.221"),
        ("cidr-conc-1", "10.77.0.64/26"),
        ("cidr-conc-2", "10.77.0.64/26"),
        ("cidr-conc-3", "10.77.0.64/26"),
    ]);
    data.extend(extra.iter().copied());
    let lines: Vec<String> = data
        .iter()
        .map(|(k, v)| format!("  {k}: \"{v}\""))
        .collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: kubevip, namespace: kube-system }}\ndata:\n{}\n",
        lines.join("\n")
    )
}

fn setup() -> Outcome {
    fresh_lab_ipv6()?;
    deploy_lb("lb.yaml", &[])?;
    for ns in NAMESPACES.iter().chain(&CONCURRENT) {
        namespace(ns)?;
    }
    for ns in NAMESPACES {
        lab_pod(ns, "web-1", "worker1", "web")?;
    }
    apply(&pools(&[]))?;
    Ok(())
}

/// A LoadBalancer Service without an address on `port`, with `families`
/// lines (`ipFamilyPolicy`, `ipFamilies`) as given.
fn service(ns: &str, name: &str, port: u16, families: &str) -> String {
    let type_line = "  type: LoadBalancer\n";
    lb_service_on_port(ns, name, "Cluster", None, "web", port)
        .replace(type_line, &format!("{type_line}{families}"))
}

fn plain(ns: &str, name: &str) -> String {
    service(ns, name, 80, "")
}

/// The Service's `kube-vip.io/loadbalancerIPs` and whether it carries the
/// label `implementation: kube-vip`.
fn allocated(ns: &str, name: &str) -> Option<(String, bool)> {
    let svc = get_json(&["svc", "-n", ns, name, "-o", "json"]).ok()?;
    let value = svc["metadata"]["annotations"][ANNOTATION]
        .as_str()?
        .to_string();
    let labelled = svc["metadata"]["labels"]["implementation"].as_str() == Some("kube-vip");
    Some((value, labelled))
}

/// Waits for the Service's address from a pool; checks the label came with it.
fn address_of(ns: &str, name: &str) -> Result<String, String> {
    let (value, labelled) = wait_for(
        &format!("{ns}/{name} to get an address"),
        Duration::from_secs(15),
        Duration::from_millis(100),
        || allocated(ns, name),
    )?;
    ensure!(
        labelled,
        "{ns}/{name} got {value} without the label implementation: kube-vip"
    );
    Ok(value)
}

/// Sets `spec.type` of `ns/name`.
fn set_type(ns: &str, name: &str, type_: &str) -> Outcome {
    let patch = format!(r#"{{"spec":{{"type":"{type_}"}}}}"#);
    kubectl(&["patch", "svc", "-n", ns, name, "--type=merge", "-p", &patch]).map(|_| ())
}

/// Waits for kvip's VIPPending Event on `ns/name` naming `pool`; its message.
fn pending_event(ns: &str, name: &str, pool: &str) -> Result<String, String> {
    wait_for(
        &format!("a VIPPending Event on {ns}/{name} naming {pool}"),
        Duration::from_secs(10),
        Duration::from_millis(300),
        || {
            kvip_events(ns, name)
                .into_iter()
                .find(|(reason, message, _)| reason == "VIPPending" && message.contains(pool))
                .map(|(_, message, _)| message)
        },
    )
}

fn services_without_an_address_get_one_from_their_pool_in_order_and_answer() -> Outcome {
    let created = Instant::now();
    apply(&plain("pool-a", "first"))?;
    let first = address_of("pool-a", "first")?;
    println!(
        "    pool-a/first: {first} after {} ms",
        created.elapsed().as_millis()
    );
    apply(&plain("pool-a", "second"))?;
    apply(&plain("pool-b", "first"))?;
    let second = address_of("pool-a", "second")?;
    let global = address_of("pool-b", "first")?;
    ensure!(
        (first.as_str(), second.as_str(), global.as_str())
            == ("10.77.0.200", "10.77.0.201", "10.77.0.210"),
        "cidr-pool-a gives .200 then .201, range-global .210: got {first}, {second}, {global}"
    );
    for address in [&first, &second, &global] {
        answers(&format!("{address}:80"))?;
    }
    let events = kvip_events("pool-a", "first");
    ensure!(
        events
            .iter()
            .any(|(reason, message, _)| reason == "AddressAllocated"
                && message.contains("10.77.0.200")
                && message.contains("cidr-pool-a")),
        "no AddressAllocated Event naming the address and pool: {events:?}"
    );
    let holder = lease_holder("kube-system", "kvip-ipam");
    ensure!(
        holder.as_deref().is_some_and(|h| !h.is_empty()),
        "one node allocates, holding kube-system/kvip-ipam: {holder:?}"
    );
    let (_, text) = kvip_status(&[])?;
    ensure!(
        text.contains("cidr-pool-a") && text.contains("POOL"),
        "kvip status lists the pools:\n{text}"
    );
    Ok(())
}

fn an_exhausted_pool_leaves_the_next_service_pending_and_a_freed_address_is_reused() -> Outcome {
    apply(&plain("pool-c", "c1"))?;
    ensure!(address_of("pool-c", "c1")? == "10.77.0.220", "c1");
    apply(&plain("pool-c", "c2"))?;
    ensure!(address_of("pool-c", "c2")? == "10.77.0.221", "c2");
    apply(&plain("pool-c", "c3"))?;
    let (exit, entry) = wait_reason("pool-c", "c3", "PoolExhausted")?;
    ensure!(exit == 1, "kvip status exits {exit} with a pending Service");
    let message = entry["reason"]["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("range-pool-c"),
        "the reason names the pool: {message}"
    );
    println!("    c3: {}", pending_event("pool-c", "c3", "range-pool-c")?);
    // kvip status and every node's metrics count the pool full.
    let (_, _, doc) = row("pool-c", "c3")?;
    let pool = doc["pools"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["key"] == "range-pool-c"))
        .cloned()
        .unwrap_or_default();
    ensure!(
        pool["families"][0]["family"] == "IPv4"
            && pool["families"][0]["used"] == 2
            && pool["families"][0]["free"] == 0,
        "kvip status shows range-pool-c as {pool}"
    );
    for ip in ["10.77.0.11", "10.77.0.12", "10.77.0.13"] {
        let samples = parse_metrics(&http_get(&format!("{ip}:2113"), "/metrics")?)?;
        for (state, n) in [("used", 2), ("free", 0)] {
            let want = format!(
                "kvip_pool_addresses{{family=\"IPv4\",pool=\"range-pool-c\",state=\"{state}\"}} {n}"
            );
            ensure!(
                samples.contains(&want),
                "{ip}: no {want} among {:?}",
                samples
                    .iter()
                    .filter(|s| s.starts_with("kvip_pool"))
                    .collect::<Vec<_>>()
            );
        }
    }
    ensure!(allocated("pool-c", "c3").is_none(), "c3 got an address");
    kubectl(&["delete", "svc", "-n", "pool-c", "c1", "--wait=true"])?;
    ensure!(
        address_of("pool-c", "c3")? == "10.77.0.220",
        "c3 takes the address c1 freed"
    );
    // A Service turned into another type frees its address, too.
    set_type("pool-c", "c2", "ClusterIP")?;
    apply(&plain("pool-c", "c4"))?;
    ensure!(
        address_of("pool-c", "c4")? == "10.77.0.221",
        "c4 takes the address of c2, now a ClusterIP Service"
    );
    answers("10.77.0.221:80")?;
    // c2 turned back into LoadBalancer names .221 again: c4 serves it and
    // keeps it; c2 waits, naming c4, and one node carries it.
    set_type("pool-c", "c2", "LoadBalancer")?;
    let (_, entry) = wait_reason("pool-c", "c2", "PortConflict")?;
    let message = entry["reason"]["message"].as_str().unwrap_or_default();
    ensure!(message.contains("pool-c/c4"), "{message}");
    ensure!(
        allocated("pool-c", "c4").is_some_and(|(v, _)| v == "10.77.0.221"),
        "c4 keeps its address"
    );
    holder_of("10.77.0.221")?;
    answers("10.77.0.221:80")?;
    kubectl(&["delete", "svc", "-n", "pool-c", "c2"])?;
    Ok(())
}

fn addresses_of_services_kvip_does_not_serve_are_never_handed_out() -> Outcome {
    namespace("pool-f")?;
    apply(&pools(&[("range-pool-f", "10.77.0.230-10.77.0.231")]))?;
    // Another controller's Service, and one kvip is told to ignore.
    let theirs = lb_service("pool-f", "theirs", "Cluster", Some("10.77.0.230"), "web").replace(
        "  type: LoadBalancer\n",
        "  type: LoadBalancer\n  loadBalancerClass: example.com/other\n",
    );
    apply(&theirs)?;
    let ignored = lb_service("pool-f", "ignored", "Cluster", Some("10.77.0.231"), "web").replace(
        "  annotations: {",
        "  annotations: { kube-vip.io/ignore: \"true\",",
    );
    apply(&ignored)?;
    apply(&plain("pool-f", "new"))?;
    let (_, entry) = wait_reason("pool-f", "new", "PoolExhausted")?;
    println!("    pool-f/new: {}", entry["reason"]["message"]);
    ensure!(allocated("pool-f", "new").is_none(), "it got an address");
    Ok(())
}

fn a_hand_set_twin_does_not_move_a_fresh_allocation() -> Outcome {
    apply(&service("pool-b", "dns-tcp", 53, ""))?;
    let tcp = address_of("pool-b", "dns-tcp")?;
    // Its author gives the UDP twin the same address by hand, at once.
    let udp = lb_service_on_port("pool-b", "dns-udp", "Cluster", Some(&tcp), "web", 53)
        .replace("targetPort: 8080 }", "targetPort: 8080, protocol: UDP }");
    apply(&udp)?;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let now = allocated("pool-b", "dns-tcp").map(|(v, _)| v);
        ensure!(
            now.as_deref() == Some(tcp.as_str()),
            "dns-tcp moved from {tcp} to {now:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn dual_stack_policies_take_the_families_they_ask_for() -> Outcome {
    let cases = [
        (
            "require",
            "  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n",
        ),
        (
            "prefer6",
            "  ipFamilyPolicy: PreferDualStack\n  ipFamilies: [IPv6, IPv4]\n",
        ),
        (
            "single6",
            "  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv6]\n",
        ),
    ];
    let mut got = BTreeMap::new();
    for (name, families) in cases {
        apply(&service("pool-d", name, 80, families))?;
    }
    // pool-d takes range-global, as pool-b.
    for (name, _) in cases {
        got.insert(name, address_of("pool-d", name)?);
    }
    let family = |a: &str| if a.contains(':') { "IPv6" } else { "IPv4" };
    let shape = |name: &str| -> Vec<&str> { got[name].split(',').map(family).collect() };
    ensure!(
        shape("require") == ["IPv4", "IPv6"],
        "RequireDualStack: {}",
        got["require"]
    );
    ensure!(
        shape("prefer6") == ["IPv6", "IPv4"],
        "PreferDualStack, IPv6 first: {}",
        got["prefer6"]
    );
    ensure!(
        shape("single6") == ["IPv6"],
        "SingleStack IPv6: {}",
        got["single6"]
    );
    let require: Vec<&str> = got["require"].split(',').collect();
    answers(&format!("{}:80", require[0]))?;
    answers(&format!("[{}]:80", require[1]))?;
    // cidr-pool-a has no IPv6: a Service that requires both stays pending.
    apply(&service(
        "pool-a",
        "needs-both",
        80,
        "  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n",
    ))?;
    let (_, entry) = wait_reason("pool-a", "needs-both", "NoPoolForFamily")?;
    println!("    pool-a/needs-both: {}", entry["reason"]["message"]);
    ensure!(allocated("pool-a", "needs-both").is_none(), "it got one");
    println!("    {got:?}");
    Ok(())
}

fn allow_share_shares_only_addresses_whose_ports_do_not_overlap() -> Outcome {
    // pool-b/first holds .210 on port 80 (allow-share-pool-b: true).
    apply(&service("pool-b", "dns", 5353, ""))?;
    apply(&service("pool-b", "web2", 80, ""))?;
    let dns = address_of("pool-b", "dns")?;
    let web2 = address_of("pool-b", "web2")?;
    ensure!(
        dns == "10.77.0.210",
        "port 5353 shares pool-b/first's .210: got {dns}"
    );
    ensure!(
        web2 != "10.77.0.210" && web2 != dns,
        "port 80 again must not share .210: got {web2}"
    );
    answers("10.77.0.210:5353")?;
    answers("10.77.0.210:80")?;
    // pool-a may not share (no allow-share key): port 5353 gets its own.
    apply(&service("pool-a", "dns", 5353, ""))?;
    let own = address_of("pool-a", "dns")?;
    ensure!(
        !["10.77.0.200", "10.77.0.201"].contains(&own.as_str()),
        "pool-a shares nothing: got {own}"
    );
    Ok(())
}

fn a_bad_value_is_reported_naming_its_key_and_the_other_pools_keep_working() -> Outcome {
    namespace("pool-e")?;
    apply(&pools(&[("cidr-pool-e", "10.77.0.300/30")]))?;
    apply(&plain("pool-e", "bad"))?;
    let (_, entry) = wait_reason("pool-e", "bad", "BadPoolConfig")?;
    let message = entry["reason"]["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("cidr-pool-e") && message.contains("10.77.0.300/30"),
        "the reason names the key and the value: {message}"
    );
    let (_, _, doc) = row("pool-e", "bad")?;
    let problems = doc["pool_problems"].to_string();
    ensure!(
        problems.contains("cidr-pool-e"),
        "kvip status names the key: {problems}"
    );
    apply(&plain("pool-b", "still"))?;
    let still = address_of("pool-b", "still")?;
    ensure!(still.starts_with("10.77.0.21"), "pool-b: {still}");
    Ok(())
}

/// Every Service of `namespaces` with its address, as the API has them.
fn addresses_in(namespaces: &[&str]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for ns in namespaces {
        let list = get_json(&["svc", "-n", ns, "-o", "json"])?;
        for svc in list["items"].as_array().into_iter().flatten() {
            let name = svc["metadata"]["name"].as_str().unwrap_or_default();
            if let Some(value) = svc["metadata"]["annotations"][ANNOTATION].as_str() {
                out.insert(format!("{ns}/{name}"), value.to_string());
            }
        }
    }
    Ok(out)
}

/// Creates `prefix-i` for each `i` of `range`, over the three namespaces
/// of [`CONCURRENT`], in one request.
fn create_burst(prefix: &str, range: Range<usize>) -> Outcome {
    let yaml: String = range
        .map(|i| format!("---{}", plain(CONCURRENT[i % 3], &format!("{prefix}-{i}"))))
        .collect();
    kubectl_input(&["apply", "-f", "-"], Some(&yaml)).map(|_| ())
}

/// Waits until every Service of a burst has an address; every address of
/// the [`CONCURRENT`] namespaces then, each on one Service only.
fn burst_addresses(
    prefix: &str,
    range: Range<usize>,
    timeout: Duration,
) -> Result<BTreeMap<String, String>, String> {
    let all = wait_for(
        &format!("the Services {prefix}-{range:?} to get addresses"),
        timeout,
        Duration::from_millis(200),
        || {
            let got = addresses_in(&CONCURRENT).ok()?;
            range
                .clone()
                .all(|i| got.contains_key(&format!("{}/{prefix}-{i}", CONCURRENT[i % 3])))
                .then_some(got)
        },
    )?;
    let distinct: BTreeSet<&String> = all.values().collect();
    ensure!(
        distinct.len() == all.len(),
        "one address given twice: {all:?}"
    );
    Ok(all)
}

/// [`create_burst`], then [`burst_addresses`].
fn burst(
    prefix: &str,
    range: Range<usize>,
    timeout: Duration,
) -> Result<BTreeMap<String, String>, String> {
    create_burst(prefix, range.clone())?;
    burst_addresses(prefix, range, timeout)
}

fn fifty_services_at_once_over_three_namespaces_get_fifty_different_addresses() -> Outcome {
    // Three namespaces whose pools are the same CIDR: kvip counts every
    // namespace's addresses as used.
    let started = Instant::now();
    let all = burst("burst", 0..50, Duration::from_secs(60))?;
    println!(
        "    fifty addresses in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    ensure!(all.len() == 50, "other Services in the namespaces: {all:?}");
    for (service, value) in &all {
        ensure!(
            !value.contains(','),
            "two addresses for one Service: {service} {value}"
        );
        let last: u8 = value
            .rsplit('.')
            .next()
            .and_then(|o| o.parse().ok())
            .unwrap_or(0);
        ensure!(
            value.starts_with("10.77.0.") && (64..128).contains(&last),
            "{service} got {value}, outside 10.77.0.64/26"
        );
    }
    // Nothing moves afterwards.
    std::thread::sleep(Duration::from_secs(5));
    ensure!(
        addresses_in(&CONCURRENT)? == all,
        "addresses changed after they were given"
    );
    // Deleting some frees them for new ones, still without a duplicate.
    for i in [0, 1, 2, 3, 4] {
        kubectl(&[
            "delete",
            "svc",
            "-n",
            CONCURRENT[i % 3],
            &format!("burst-{i}"),
            "--wait=false",
        ])?;
    }
    let after = burst("burst", 50..55, Duration::from_secs(30))?;
    ensure!(after.len() == 50, "{after:?}");
    Ok(())
}

/// Every Service of the suite's namespaces with its addresses.
fn every_address() -> Result<BTreeMap<String, String>, String> {
    let namespaces: Vec<&str> = NAMESPACES.iter().chain(&CONCURRENT).copied().collect();
    addresses_in(&namespaces)
}

/// Every Service of `before` still has the addresses it had.
fn kept(before: &BTreeMap<String, String>) -> Outcome {
    let after = every_address()?;
    for (service, value) in before {
        ensure!(
            after.get(service) == Some(value),
            "{service} had {value}, now {:?}",
            after.get(service)
        );
    }
    Ok(())
}

fn a_restart_of_every_kvip_changes_no_address() -> Outcome {
    let before = every_address()?;
    let path = deploy_lb("lb.yaml", &[])?;
    lab_ok(&["deploy", "--restart", &path.display().to_string()])?;
    apply(&plain("pool-b", "after-restart"))?;
    let new = address_of("pool-b", "after-restart")?;
    kept(&before)?;
    let used: BTreeSet<&str> = before.values().flat_map(|v| v.split(',')).collect();
    ensure!(
        !used.contains(new.as_str()),
        "the new Service got {new}, in use already"
    );
    Ok(())
}

fn an_api_server_outage_in_a_burst_changes_no_address_and_gives_none_twice() -> Outcome {
    let before = every_address()?;
    create_burst("outage", 0..5)?;
    // The API server goes while the allocator writes, for longer than a
    // Lease duration.
    lab_ok(&["fault", "apiserver-stop"])?;
    std::thread::sleep(Duration::from_secs(8));
    lab_ok(&["fault", "apiserver-start"])?;
    let restarted = Instant::now();
    burst_addresses("outage", 0..5, Duration::from_secs(90))?;
    println!(
        "    the burst had its addresses {:.1} s after the API server came back",
        restarted.elapsed().as_secs_f64()
    );
    kept(&before)?;
    Ok(())
}

/// `address` is on exactly `nodes` nodes, checked every 100 ms for 3 s.
fn carried_by(address: &str, nodes: usize, when: &str) -> Outcome {
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let carriers = nodes_with_address(address);
        ensure!(
            carriers.len() == nodes,
            "{address} {when}: on {carriers:?}, not {nodes} node(s)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn restrict_to_pools_refuses_an_address_outside_the_pool_and_no_node_takes_it() -> Outcome {
    deploy_lb("lb.yaml", &["--env", "kvip_restrict_to_pools=true"])?;
    lab_ok(&[
        "deploy",
        "--restart",
        &deploy_lb("lb.yaml", &["--env", "kvip_restrict_to_pools=true"])?
            .display()
            .to_string(),
    ])?;
    apply(&lb_service(
        "pool-a",
        "outside",
        "Cluster",
        Some("10.77.0.150"),
        "web",
    ))?;
    apply(&lb_service(
        "pool-a",
        "inside",
        "Cluster",
        Some("10.77.0.203"),
        "web",
    ))?;
    let (exit, entry) = wait_for(
        "pool-a/outside to be refused",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            let (exit, text) = kvip_status(&[
                "-n",
                "pool-a",
                "outside",
                "-o",
                "json",
                "--restrict-to-pools",
            ])
            .ok()?;
            let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
            let entry = doc["services"].as_array()?.first()?.clone();
            (code_of(&entry) == "AddressOutsidePools").then_some((exit, entry))
        },
    )?;
    ensure!(exit == 1, "kvip status exits {exit}");
    println!("    {}", entry["reason"]["message"]);
    answers("10.77.0.203:80")?;
    carried_by("10.77.0.150", 0, "refused")?;
    // The ConfigMap deleted and created again, or edited badly: the fence
    // goes by the pools it read last, and withdraws nothing.
    kubectl(&["delete", "configmap", "kubevip", "-n", "kube-system"])?;
    let bad = pools(&[("cidr-pool-a", "10.77.0.200/30, 10.77.0.204/30")]);
    carried_by("10.77.0.203", 1, "without the ConfigMap")?;
    apply(&bad)?;
    carried_by("10.77.0.203", 1, "with a bad value")?;
    answers("10.77.0.203:80")?;
    apply(&pools(&[]))?;
    // The daemon says so too: the Event carries the reason.
    pending_event("pool-a", "outside", "cidr-pool-a")?;
    Ok(())
}

fn teardown() -> Outcome {
    lab_down()
}

fn main() {
    run_all(
        "pools_e2e",
        &[
            Scenario {
                name: "setup",
                run: setup,
            },
            Scenario {
                name: "services_without_an_address_get_one_from_their_pool_in_order_and_answer",
                run: services_without_an_address_get_one_from_their_pool_in_order_and_answer,
            },
            Scenario {
                name: "an_exhausted_pool_leaves_the_next_service_pending_and_a_freed_address_is_reused",
                run:
                    an_exhausted_pool_leaves_the_next_service_pending_and_a_freed_address_is_reused,
            },
            Scenario {
                name: "addresses_of_services_kvip_does_not_serve_are_never_handed_out",
                run: addresses_of_services_kvip_does_not_serve_are_never_handed_out,
            },
            Scenario {
                name: "a_hand_set_twin_does_not_move_a_fresh_allocation",
                run: a_hand_set_twin_does_not_move_a_fresh_allocation,
            },
            Scenario {
                name: "dual_stack_policies_take_the_families_they_ask_for",
                run: dual_stack_policies_take_the_families_they_ask_for,
            },
            Scenario {
                name: "allow_share_shares_only_addresses_whose_ports_do_not_overlap",
                run: allow_share_shares_only_addresses_whose_ports_do_not_overlap,
            },
            Scenario {
                name: "a_bad_value_is_reported_naming_its_key_and_the_other_pools_keep_working",
                run: a_bad_value_is_reported_naming_its_key_and_the_other_pools_keep_working,
            },
            Scenario {
                name: "fifty_services_at_once_over_three_namespaces_get_fifty_different_addresses",
                run: fifty_services_at_once_over_three_namespaces_get_fifty_different_addresses,
            },
            Scenario {
                name: "a_restart_of_every_kvip_changes_no_address",
                run: a_restart_of_every_kvip_changes_no_address,
            },
            Scenario {
                name: "an_api_server_outage_in_a_burst_changes_no_address_and_gives_none_twice",
                run: an_api_server_outage_in_a_burst_changes_no_address_and_gives_none_twice,
            },
            Scenario {
                name: "restrict_to_pools_refuses_an_address_outside_the_pool_and_no_node_takes_it",
                run: restrict_to_pools_refuses_an_address_outside_the_pool_and_no_node_takes_it,
            },
            Scenario {
                name: "teardown",
                run: teardown,
            },
        ],
    );
}
