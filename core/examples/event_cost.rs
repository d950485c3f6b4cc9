//! What one event costs the Service role's decisions, at 10 to 3000
//! Services: `cargo run --release -p kvip-core --example event_cost`.
//! Prints a Markdown table (the numbers in `bench/event-cost.md`).
//!
//! - another node's renewal: the Lease watch classifies it (`is_renewal`)
//!   and nothing else runs;
//! - one Lease's election step: what a timer or a finished write costs per
//!   election this node runs;
//! - a whole assessment: what a Service, EndpointSlice or Node change costs
//!   (everything is assessed again);
//! - a wake of the elections: `Elections::step` over every Lease this node
//!   holds, what a timer or a finished write costs in all.

use kvip_core::election::is_renewal;
use kvip_core::elections::{Ballot, Elections};
use kvip_core::endpoints::EndpointInput;
use kvip_core::{
    Campaign, Decision, Elector, LbClassRule, LeaseKey, LeaseRecord, Mono, NodeInput, Observed,
    ServiceInput, ServiceKey, SliceInput, WallTime, WriteResult, assess,
};
use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn service(i: usize) -> ServiceInput {
    ServiceInput {
        key: ServiceKey {
            namespace: "bench".into(),
            name: format!("svc-{i:05}"),
        },
        type_: "LoadBalancer".into(),
        load_balancer_class: None,
        load_balancer_ip: None,
        annotations: BTreeMap::from([(
            "kube-vip.io/loadbalancerIPs".to_string(),
            format!("10.200.{}.{}", i / 250, i % 250 + 1),
        )]),
        external_traffic_policy: Some(
            if i.is_multiple_of(2) {
                "Cluster"
            } else {
                "Local"
            }
            .into(),
        ),
        ip_families: vec!["IPv4".into()],
        ports: vec![("TCP".into(), 80)],
        ..ServiceInput::default()
    }
}

fn slice(i: usize) -> SliceInput {
    SliceInput {
        service: service(i).key,
        slice_name: format!("svc-{i:05}-abc"),
        address_type: "IPv4".into(),
        endpoints: (1..=2)
            .map(|w| EndpointInput {
                node_name: Some(format!("worker{w}")),
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
                addresses: vec![format!("10.78.{w}.{}", i % 250 + 1)],
            })
            .collect(),
    }
}

fn nodes() -> Vec<NodeInput> {
    ["cp1", "worker1", "worker2"]
        .iter()
        .map(|n| NodeInput {
            name: n.to_string(),
            excluded: false,
            runs_service_instance: true,
        })
        .collect()
}

/// Mean time of `f` over enough runs to fill about 200 ms.
fn time(mut f: impl FnMut()) -> Duration {
    let started = Instant::now();
    let mut runs = 0u32;
    while started.elapsed() < Duration::from_millis(200) || runs < 3 {
        f();
        runs += 1;
    }
    started.elapsed() / runs
}

fn record(holder: &str, renewed: i64) -> LeaseRecord {
    LeaseRecord {
        holder: Some(holder.into()),
        lease_duration_seconds: Some(5),
        acquire_time: Some(WallTime(1)),
        renew_time: Some(WallTime(renewed)),
        lease_transitions: Some(0),
        kvip_renewed: None,
    }
}

fn main() {
    println!(
        "| Services | another node's renewal | one election step | whole assessment | a wake of the elections (all held here) |"
    );
    println!("|---|---|---|---|---|");
    for n in [10usize, 100, 1000, 3000] {
        let services: Vec<ServiceInput> = (0..n).map(service).collect();
        let slices: Vec<SliceInput> = (0..n).map(slice).collect();
        let nodes = nodes();
        let rule = LbClassRule::default();
        let before = record("worker2", 10);
        let mut renewed = 10;
        let renewal = time(|| {
            renewed += 1;
            black_box(is_renewal(&before, &record("worker2", renewed)));
        });
        let secs = Duration::from_secs;
        let Ok(elector) = Elector::new("worker1", secs(5), secs(3), secs(1)) else {
            return;
        };
        let mut campaign = Campaign::new(elector);
        let mut version = 0u64;
        let step = time(|| {
            version += 1;
            let now = Mono(Duration::from_millis(version));
            campaign.observe(
                Observed {
                    record: Some(record("worker2", i64::try_from(version).unwrap_or(0))),
                    resource_version: Some(version.to_string()),
                },
                now,
            );
            black_box(campaign.decide(now, WallTime(0), true));
        });
        let whole = time(|| {
            black_box(assess(&services, slices.iter().cloned(), &nodes, &rule));
        });
        let Some(mut held) = holding(n) else {
            return;
        };
        let mut at = 10_000u64;
        let wake = time(|| {
            at += 1;
            let now = Mono(Duration::from_millis(at));
            black_box(held.step(now, WallTime(0), None, |_| (Observed::default(), now)));
        });
        println!(
            "| {n} | {:.2} µs | {:.2} µs | {:.2} ms | {:.2} ms |",
            renewal.as_secs_f64() * 1e6,
            step.as_secs_f64() * 1e6,
            whole.as_secs_f64() * 1e3,
            wake.as_secs_f64() * 1e3
        );
    }
}

/// Elections for `n` Leases, every one taken by this node.
fn holding(n: usize) -> Option<Elections> {
    let secs = Duration::from_secs;
    let mut e = Elections::new("worker1", secs(5), secs(3), secs(1), 50, "gone").ok()?;
    let wanted: BTreeMap<LeaseKey, Ballot> = (0..n)
        .map(|i| {
            let key = LeaseKey {
                namespace: "bench".into(),
                name: format!("kubevip-svc-{i}"),
            };
            let ballot = Ballot {
                addresses: BTreeSet::from([std::net::IpAddr::from([
                    10,
                    200,
                    (i / 250) as u8,
                    (i % 250) as u8,
                ])]),
                services: BTreeSet::from([ServiceKey {
                    namespace: "bench".into(),
                    name: format!("svc-{i}"),
                }]),
                candidate: true,
                companions: BTreeSet::new(),
            };
            (key, ballot)
        })
        .collect();
    e.want(&wanted);
    let now = Mono(secs(1));
    let round = e.step(now, WallTime(0), None, |_| (Observed::default(), now));
    for (key, decision) in round.writes {
        if let Decision::Create(record) = decision {
            let ok = WriteResult::Ok {
                record,
                resource_version: "1".into(),
            };
            e.finished(&key, ok, now, now);
        }
    }
    Some(e)
}
