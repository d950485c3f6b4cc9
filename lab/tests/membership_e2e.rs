//! End to end: membership mode (`kvip_membership=true`) in the lab, against
//! the real API server: one Lease per node, owners by rendezvous hashing,
//! the claim on the Service. The same promises as one Lease per Service —
//! one announcer, the VIP follows a Local pod at once, failover within the
//! lease duration — and API writes that do not grow with Services.

mod support;

use std::time::{Duration, Instant};
use support::*;

const NS: &str = "member-e2e";
const NODES: [&str; 3] = ["cp1", "worker1", "worker2"];
/// Cluster Services of the spread and failover scenarios: 10.77.0.110 + i.
const CLUSTER_SERVICES: usize = 12;

fn cluster_vip(i: usize) -> String {
    format!("10.77.0.{}", 110 + i)
}

fn pod(name: &str, node: &str, app: &str) -> Result<(), String> {
    lab_pod(NS, name, node, app)
}

fn setup() -> Outcome {
    lab_up()?;
    let mut flags = vec!["--env", "kvip_membership=true"];
    flags.extend_from_slice(&HONOUR_EXCLUDE_LABEL);
    deploy_lb("membership.yaml", &flags)?;
    namespace(NS)?;
    // The lab's only API server runs on cp1: keep Service VIPs off it, so
    // killing a holder never takes the API down with it (the label counts
    // because the deploy sets kvip_exclude_lb_label=true).
    kubectl(&[
        "label",
        "node",
        "cp1",
        "node.kubernetes.io/exclude-from-external-load-balancers=true",
        "--overwrite",
    ])?;
    wait_for(
        "a membership Lease on every node",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            NODES
                .iter()
                .all(|n| {
                    lease_holder("kube-system", &format!("kvip-lb-{n}")).as_deref() == Some(*n)
                })
                .then_some(())
        },
    )
}

fn local_service_follows_its_pod_with_no_lease_of_its_own() -> Outcome {
    apply(&lb_service(NS, "web", "Local", Some("10.77.0.100"), "web"))?;
    pod("web-1", "worker1", "web")?;
    let (answer, took) = probe_until(
        "10.77.0.100:80",
        Duration::from_secs(10),
        Duration::from_millis(20),
        |_| true,
    )?;
    println!("    pod Ready -> first answer: {} ms", took.as_millis());
    ensure!(answer == "worker1/web-1", "answered by {answer}");
    expect_status(NS, "web", "10.77.0.100", "worker1")?;
    ensure!(
        lease_holder(NS, "kubevip-web").is_none(),
        "membership mode wrote a per-Service Lease"
    );

    pod("web-2", "worker2", "web")?;
    std::thread::sleep(Duration::from_millis(500));
    let took = time_until_answer("10.77.0.100", "worker2/web-2", || {
        lab_ok(&["pod", "delete", "web-1", "-n", NS]).map(|_| ())
    })?;
    println!(
        "    old pod deleted -> new node answers: {} ms",
        took.as_millis()
    );
    ensure!(
        took < Duration::from_secs(3),
        "took {took:?}: that is waiting for a membership to expire"
    );
    ensure!(
        nodes_with_address("10.77.0.100") == ["worker2"],
        "VIP on {:?}",
        nodes_with_address("10.77.0.100")
    );
    let macs = arp_answerers("10.77.0.100");
    let worker2 = node_mac("worker2").ok_or("no MAC for worker2")?;
    ensure!(macs == [worker2], "ARP answered by {macs:?}");
    Ok(())
}

/// Every Cluster VIP on exactly one node; the nodes holding them.
fn holders() -> Result<Vec<String>, String> {
    (0..CLUSTER_SERVICES)
        .map(|i| {
            let nodes = nodes_with_address(&cluster_vip(i));
            match nodes.as_slice() {
                [one] => Ok(one.clone()),
                _ => Err(format!("{} on {nodes:?}", cluster_vip(i))),
            }
        })
        .collect()
}

fn cluster_services_spread_over_the_nodes() -> Outcome {
    // The backing pod runs on cp1, which announces nothing and is never
    // killed: a pod on a killed node stays in its EndpointSlice until the
    // node controller notices (some 40 s in a real cluster), and kube-proxy
    // keeps sending it a share of new connections. That is not the VIP's
    // failover, which is what the kill scenario measures.
    pod("api-1", "cp1", "api")?;
    for i in 0..CLUSTER_SERVICES {
        apply(&lb_service(
            NS,
            &format!("api-{i}"),
            "Cluster",
            Some(&cluster_vip(i)),
            "api",
        ))?;
    }
    let holders = wait_for(
        "every Cluster VIP on exactly one node",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || holders().ok(),
    )?;
    let on = |n: &str| holders.iter().filter(|h| *h == n).count();
    println!(
        "    {} VIPs: worker1 {}, worker2 {}, cp1 {}",
        CLUSTER_SERVICES,
        on("worker1"),
        on("worker2"),
        on("cp1")
    );
    ensure!(on("cp1") == 0, "the excluded node cp1 announces");
    ensure!(
        on("worker1") > 0 && on("worker2") > 0,
        "every VIP on one node: {holders:?}"
    );
    for i in 0..CLUSTER_SERVICES {
        let vip = format!("{}:80", cluster_vip(i));
        probe_until(
            &vip,
            Duration::from_secs(5),
            Duration::from_millis(50),
            |_| true,
        )?;
    }
    Ok(())
}

fn steady_state_writes_do_not_grow_with_services() -> Outcome {
    // Lease writes and claim writes of every daemon over a window, from
    // their own metrics; 13 Services are announced meanwhile.
    let count = |what: &str| -> Result<u64, String> {
        let mut total = 0.0;
        for ip in ["10.77.0.11", "10.77.0.12", "10.77.0.13"] {
            let samples = parse_metrics(&http_get(&format!("{ip}:2113"), "/metrics")?)?;
            total += samples
                .iter()
                .filter(|s| s.starts_with("kvip_api_requests_total{") && s.contains(what))
                .filter_map(|s| s.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
        }
        Ok(total.round() as u64)
    };
    let leases = r#"resource="lease",result="ok",verb="write""#;
    let claims = r#"resource="services",result="ok",verb="claim""#;
    let window = Duration::from_secs(10);
    let (l0, c0) = (count(leases)?, count(claims)?);
    std::thread::sleep(window);
    let (l1, c1) = (count(leases)?, count(claims)?);
    let (lease_writes, claim_writes) = (l1 - l0, c1 - c0);
    println!(
        "    {} s with 13 Services: {lease_writes} Lease writes, {claim_writes} claim writes",
        window.as_secs()
    );
    // One renewal per node and retry period (1 s), with a little slack for
    // the window's edges; nothing per Service.
    let seconds = window.as_secs();
    ensure!(
        lease_writes <= 3 * (seconds + 2),
        "{lease_writes} Lease writes in {window:?}: more than one per node and second"
    );
    ensure!(
        lease_writes >= 3 * (seconds - 2),
        "memberships are not renewed: {lease_writes} writes"
    );
    ensure!(
        claim_writes == 0,
        "{claim_writes} claim writes with nothing changing"
    );
    Ok(())
}

fn a_dead_nodes_vips_move_within_the_lease_duration() -> Outcome {
    let before = holders()?;
    let victim = if before.iter().filter(|h| *h == "worker1").count()
        >= before.iter().filter(|h| *h == "worker2").count()
    {
        "worker1"
    } else {
        "worker2"
    };
    let survivor = if victim == "worker1" {
        "worker2"
    } else {
        "worker1"
    };
    let moved: Vec<usize> = (0..CLUSTER_SERVICES)
        .filter(|i| before[*i] == victim)
        .collect();
    let killed = Instant::now();
    let killed_wall = std::time::SystemTime::now();
    lab_ok(&["fault", "kill-node", victim])?;
    let result = (|| -> Outcome {
        // Every moved VIP probed at once: each one's time to its first answer.
        let took: Vec<Result<Duration, String>> = std::thread::scope(|s| {
            let probes: Vec<_> = moved
                .iter()
                .map(|i| {
                    let vip = format!("{}:80", cluster_vip(*i));
                    s.spawn(move || {
                        probe_until(
                            &vip,
                            Duration::from_secs(15),
                            Duration::from_millis(50),
                            |_| true,
                        )
                        .map(|_| killed.elapsed())
                    })
                })
                .collect();
            probes
                .into_iter()
                .map(|p| {
                    p.join()
                        .unwrap_or_else(|_| Err("probe thread panicked".into()))
                })
                .collect()
        });
        let took = took.into_iter().collect::<Result<Vec<_>, _>>()?;
        let slowest = took.iter().max().copied().unwrap_or_default();
        let mut each: Vec<u128> = took.iter().map(Duration::as_millis).collect();
        each.sort_unstable();
        println!("    each VIP answered after (ms): {each:?}");
        if slowest > Duration::from_millis(6500) {
            // What the survivor did, to tell a slow takeover from a slow client.
            let since = killed_wall
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            println!("    killed at unix {since:.3}; {survivor}'s log after the kill:");
            let log = lab_ok(&["logs", survivor]).unwrap_or_default();
            for line in log.lines().filter(|l| {
                [
                    "announcing",
                    "claim",
                    "VIP added",
                    "live",
                    "membership",
                    "withdraw",
                ]
                .iter()
                .any(|w| l.contains(w))
            }) {
                println!("      {line}");
            }
        }
        println!(
            "    {victim} killed -> its {} VIPs answer from {survivor}: slowest {} ms (bound: lease 5 s + retry 1 s)",
            moved.len(),
            slowest.as_millis()
        );
        ensure!(
            slowest <= Duration::from_millis(6500),
            "failover took {slowest:?}, more than lease duration + retry period"
        );
        // The dead node keeps its addresses (a pulled cable); the survivor
        // must carry every moved VIP.
        for i in &moved {
            let on = nodes_with_address(&cluster_vip(*i));
            ensure!(
                on.iter().any(|n| n == survivor),
                "{} on {on:?}",
                cluster_vip(*i)
            );
        }
        Ok(())
    })();
    lab_ok(&["fault", "revive-node", victim])?;
    result?;
    // Back: every VIP returns to its owner by hash (the layout before the
    // kill), each on exactly one node. The groups move one by one.
    let revived = Instant::now();
    let mut last = Err(String::from("not sampled yet"));
    let back = wait_for(
        "every VIP back on its owner by hash, one node each",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            last = holders();
            last.as_ref().ok().filter(|h| **h == before).map(|_| ())
        },
    );
    ensure!(back.is_ok(), "after revival {last:?}, before {before:?}");
    println!(
        "    {victim} revived -> every VIP back on its owner after {} ms",
        revived.elapsed().as_millis()
    );
    Ok(())
}

/// A VIP outside the lab's subnet: only a node with a default route can place it.
const OFFNET_VIP: &str = "10.78.0.5";

fn default_route(node: &str, present: bool) -> Outcome {
    let verb = if present { "replace" } else { "del" };
    in_netns(
        &format!("kvl-{node}"),
        "ip",
        &["route", verb, "default", "via", "10.77.0.1", "dev", "eth0"],
    )?;
    Ok(())
}

const ALL_NODES: [&str; 3] = ["cp1", "worker1", "worker2"];

fn owners_agree_on_who_cannot_place_an_address() -> Outcome {
    // The client reaches the other network on its link, as through a router.
    in_netns(
        "kvl-client",
        "ip",
        &["route", "replace", "10.78.0.0/24", "dev", "eth0"],
    )?;
    apply(&lb_service(
        NS,
        "offnet",
        "Cluster",
        Some(OFFNET_VIP),
        "api",
    ))?;
    let outcome = (|| -> Outcome {
        // The lab's nodes have a default route, as real nodes do; take it
        // away from all of them.
        for node in ALL_NODES {
            default_route(node, false)?;
        }
        // No node has a default route: nobody can place it, and every node says so.
        let (_, text) = wait_for(
            "kvip status to say nobody can place the address",
            Duration::from_secs(15),
            Duration::from_millis(200),
            || {
                kvip_status(&["-n", NS, "offnet"])
                    .ok()
                    .filter(|(_, t)| t.contains("NoUsableInterface"))
            },
        )?;
        ensure!(
            text.contains("worker1") && text.contains("worker2"),
            "the reason does not name both workers: {text}"
        );
        // Only worker1 can place it: every node must agree it is the owner.
        default_route("worker1", true)?;
        let (answer, took) = probe_until(
            &format!("{OFFNET_VIP}:80"),
            Duration::from_secs(10),
            Duration::from_millis(50),
            |_| true,
        )?;
        ensure!(
            nodes_with_address(OFFNET_VIP) == ["worker1"],
            "carried by {:?}",
            nodes_with_address(OFFNET_VIP)
        );
        println!(
            "    only worker1 can place {OFFNET_VIP}: answered after {} ms ({answer})",
            took.as_millis()
        );
        // The route moves to worker2: so does the address, without waiting for a Lease.
        default_route("worker2", true)?;
        default_route("worker1", false)?;
        let moved = Instant::now();
        wait_for(
            "the address to move to worker2",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || (nodes_with_address(OFFNET_VIP) == ["worker2"]).then_some(()),
        )?;
        probe_until(
            &format!("{OFFNET_VIP}:80"),
            Duration::from_secs(5),
            Duration::from_millis(50),
            |_| true,
        )?;
        let took = moved.elapsed();
        println!(
            "    default route moved to worker2: answering from there after {} ms",
            took.as_millis()
        );
        ensure!(
            took < Duration::from_secs(4),
            "the move took {} ms: the other nodes did not learn at once",
            took.as_millis()
        );
        Ok(())
    })();
    // Every node gets its default route back.
    for node in ALL_NODES {
        let _ = default_route(node, true);
    }
    kubectl(&["delete", "service", "offnet", "-n", NS])?;
    outcome
}

fn main() {
    run_all(
        "membership_e2e",
        &[
            Scenario {
                name: "setup",
                run: setup,
            },
            Scenario {
                name: "local_service_follows_its_pod_with_no_lease_of_its_own",
                run: local_service_follows_its_pod_with_no_lease_of_its_own,
            },
            Scenario {
                name: "cluster_services_spread_over_the_nodes",
                run: cluster_services_spread_over_the_nodes,
            },
            Scenario {
                name: "steady_state_writes_do_not_grow_with_services",
                run: steady_state_writes_do_not_grow_with_services,
            },
            Scenario {
                name: "a_dead_nodes_vips_move_within_the_lease_duration",
                run: a_dead_nodes_vips_move_within_the_lease_duration,
            },
            Scenario {
                name: "owners_agree_on_who_cannot_place_an_address",
                run: owners_agree_on_who_cannot_place_an_address,
            },
            Scenario {
                name: "teardown",
                run: lab_down,
            },
        ],
    );
}
