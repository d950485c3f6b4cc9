//! End to end: kvip's built-in pools against the allocator they follow,
//! the real kube-vip-cloud-provider v0.0.12 (`kvip-lab cloud-provider`).
//!
//! The differential: one script — the `kubevip` ConfigMap written and
//! rewritten, LoadBalancer Services without an address created in three
//! namespaces with every family policy, some deleted, more created — is
//! played on a fresh dual-stack lab with the cloud provider alone, then on
//! a fresh lab with kvip alone. After each create the Service's
//! `kube-vip.io/loadbalancerIPs` (and `kube-vip.io/serviceInterface`) is
//! recorded; the two recordings must match step by step except where
//! [`DIFFERENCES`] names a difference `docs/ipam-differences.md` documents.
//! The cloud provider's recording must also match [`ORACLE`], so the kvip
//! half can run on its own against what the oracle did.
//!
//! Both at once: the cloud provider and kvip allocate in one lab while 50
//! Services arrive together, then some go and more come: no address may end
//! up on two Services, each Service holds one address of each family it
//! asks for, and nothing moves afterwards. The cloud provider writes its own
//! choice over an annotation that appears while it is choosing (its client
//! allows 5 requests a second, four per allocation, so that window is most
//! of a second under load); such rewrites are printed.
//!
//! Each scenario brings up a fresh dual-stack lab; `teardown` takes it
//! down. `cargo test -p kvip-lab --test ipam_e2e -- differential` runs the
//! two halves, `-- kvip_alone` only kvip's (against [`ORACLE`]).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::*;

const IPS: &str = "kube-vip.io/loadbalancerIPs";
const INTERFACE: &str = "kube-vip.io/serviceInterface";
/// Where pools come from, for both allocators (their shared default).
const POOLS_NS: &str = "kube-system";
const POOLS_NAME: &str = "kubevip";
/// The namespaces the Services live in.
const NAMESPACES: [&str; 3] = ["ipam-a", "ipam-b", "ipam-c"];
/// How long a step that expects no address watches for one.
const NONE_WINDOW: Duration = Duration::from_secs(8);

/// `spec.ipFamilyPolicy` and `spec.ipFamilies` of a Service (None and
/// empty: the API server's defaults, IPv4 single-stack in the lab).
#[derive(Clone, Copy)]
struct Families {
    policy: Option<&'static str>,
    families: &'static [&'static str],
}

const DEFAULT: Families = Families {
    policy: None,
    families: &[],
};
const V4: Families = Families {
    policy: Some("SingleStack"),
    families: &["IPv4"],
};
const V6: Families = Families {
    policy: Some("SingleStack"),
    families: &["IPv6"],
};
const PREFER_V4_FIRST: Families = Families {
    policy: Some("PreferDualStack"),
    families: &["IPv4", "IPv6"],
};
const PREFER_V6_FIRST: Families = Families {
    policy: Some("PreferDualStack"),
    families: &["IPv6", "IPv4"],
};
const REQUIRE_V6_FIRST: Families = Families {
    policy: Some("RequireDualStack"),
    families: &["IPv6", "IPv4"],
};

impl Families {
    fn describe(&self) -> String {
        let policy = self.policy.unwrap_or("default");
        if self.families.is_empty() {
            policy.to_string()
        } else {
            format!("{policy} {}", self.families.join(","))
        }
    }
}

/// One step of the script.
enum Step {
    /// Replace the pools ConfigMap's data with these keys.
    /// Write the pools: the first list, and what a later step adds.
    Pools(
        &'static [(&'static str, &'static str)],
        &'static [(&'static str, &'static str)],
    ),
    /// Create a LoadBalancer Service with no address; `expect_address`
    /// false: the step waits [`NONE_WINDOW`] and expects none.
    Create {
        ns: &'static str,
        name: &'static str,
        families: Families,
        ports: &'static [u16],
        expect_address: bool,
    },
    /// Create a Service whose author chose its address (the annotation).
    Pinned {
        ns: &'static str,
        name: &'static str,
        address: &'static str,
    },
    /// Delete a Service.
    Delete {
        ns: &'static str,
        name: &'static str,
    },
}

/// The first pools: a namespace CIDR with sharing and trimmed ends, a
/// dual-stack namespace range with an interface, a global range.
const POOLS_1: &[(&str, &str)] = &[
    ("cidr-ipam-a", "10.77.0.120/29"),
    ("allow-share-ipam-a", "true"),
    ("skip-end-ips-in-cidr", "true"),
    (
        "range-ipam-b",
        "10.77.0.140-10.77.0.142,fd00:77::1:10-fd00:77::1:12",
    ),
    ("interface-ipam-b", "eth0"),
    (
        "range-global",
        "10.77.0.180-10.77.0.185,fd00:77::1:80-fd00:77::1:85",
    ),
];

/// What the second pools add to the first: a global CIDR, which shadows
/// `range-ipam-b` and `range-global` (the lookup order is cidr-<ns>,
/// cidr-global, range-<ns>, range-global), and the highest address first.
const POOLS_2_ADDED: &[(&str, &str)] = &[
    ("cidr-global", "10.77.0.160/30,fd00:77::1:40/126"),
    ("search-order", "desc"),
];

const fn create(
    ns: &'static str,
    name: &'static str,
    families: Families,
    ports: &'static [u16],
) -> Step {
    Step::Create {
        ns,
        name,
        families,
        ports,
        expect_address: true,
    }
}

const fn delete(ns: &'static str, name: &'static str) -> Step {
    Step::Delete { ns, name }
}

/// The script both allocators play.
const SCRIPT: &[Step] = &[
    Step::Pools(POOLS_1, &[]),
    create("ipam-a", "a1", DEFAULT, &[80]),
    // Sharing: another port on a1's address.
    create("ipam-a", "a2", DEFAULT, &[443]),
    // Port 80 is taken on the shared address: a free one.
    create("ipam-a", "a3", DEFAULT, &[80]),
    create("ipam-b", "b1", V6, &[80]),
    create("ipam-b", "b2", PREFER_V4_FIRST, &[80]),
    create("ipam-b", "b3", REQUIRE_V6_FIRST, &[80]),
    create("ipam-b", "b4", V4, &[80]),
    // range-ipam-b has three IPv4 addresses, all taken.
    Step::Create {
        ns: "ipam-b",
        name: "b5",
        families: V4,
        ports: &[80],
        expect_address: false,
    },
    delete("ipam-b", "b5"),
    create("ipam-c", "c1", DEFAULT, &[80]),
    create("ipam-c", "c2", PREFER_V4_FIRST, &[80]),
    // Freed addresses of both families are handed out again.
    delete("ipam-b", "b2"),
    create("ipam-b", "b6", PREFER_V6_FIRST, &[80]),
    delete("ipam-a", "a3"),
    create("ipam-a", "a5", DEFAULT, &[80]),
    Step::Pools(POOLS_1, POOLS_2_ADDED),
    create("ipam-a", "a7", DEFAULT, &[80]),
    create("ipam-c", "c3", V4, &[80]),
    create("ipam-b", "b7", PREFER_V4_FIRST, &[80]),
    // Another namespace holds an address of ipam-a's namespace pool: the
    // cloud provider looks only at ipam-a's Services (#12), kvip at all.
    Step::Pinned {
        ns: "ipam-c",
        name: "pinned",
        address: "10.77.0.125",
    },
    create("ipam-a", "a8", DEFAULT, &[80]),
    delete("ipam-c", "pinned"),
    delete("ipam-a", "a8"),
    // With the other namespace's address gone both agree again.
    create("ipam-a", "a9", DEFAULT, &[80]),
];

/// What a Service was given: its annotations, "" when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Given {
    ips: String,
    interface: String,
}

impl std::fmt::Display for Given {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.ips.is_empty(), self.interface.is_empty()) {
            (true, _) => f.write_str("(none)"),
            (false, true) => f.write_str(&self.ips),
            (false, false) => write!(f, "{} @{}", self.ips, self.interface),
        }
    }
}

/// One recorded step: the Service and what it was given.
#[derive(Debug, Clone)]
struct Record {
    service: String,
    spec: String,
    given: Given,
    /// From the create to the address seen.
    took: Duration,
}

/// What the cloud provider gave each Service of [`SCRIPT`], in order
/// (recorded by `differential_cloud_provider_alone`, which checks it).
const ORACLE: &[(&str, &str)] = &[
    ("ipam-a/a1", "10.77.0.121"),
    ("ipam-a/a2", "10.77.0.121"),
    ("ipam-a/a3", "10.77.0.122"),
    ("ipam-b/b1", "fd00:77::1:10 @eth0"),
    ("ipam-b/b2", "10.77.0.140,fd00:77::1:11 @eth0"),
    ("ipam-b/b3", "fd00:77::1:12,10.77.0.141 @eth0"),
    ("ipam-b/b4", "10.77.0.142 @eth0"),
    ("ipam-b/b5", "(none)"),
    ("ipam-c/c1", "10.77.0.180"),
    ("ipam-c/c2", "10.77.0.181,fd00:77::1:80"),
    ("ipam-b/b6", "fd00:77::1:11,10.77.0.140 @eth0"),
    ("ipam-a/a5", "10.77.0.122"),
    ("ipam-a/a7", "10.77.0.126"),
    ("ipam-c/c3", "10.77.0.162"),
    ("ipam-b/b7", "10.77.0.161,fd00:77::1:43 @eth0"),
    ("ipam-c/pinned", "10.77.0.125"),
    ("ipam-a/a8", "10.77.0.125"),
    ("ipam-a/a9", "10.77.0.125"),
];

/// A step where kvip gives something else on purpose.
struct Difference {
    service: &'static str,
    kvip: &'static str,
    /// The row of docs/ipam-differences.md and why.
    why: &'static str,
}

/// Every difference the differential expects, and nothing else.
const DIFFERENCES: &[Difference] = &[Difference {
    service: "ipam-a/a8",
    kvip: "10.77.0.124",
    why: "#12: ipam-c/pinned holds 10.77.0.125; the cloud provider counts only ipam-a's Services for ipam-a's namespace pool and hands it out twice, kvip counts every namespace",
}];

/// The cloud provider's recording, when this run made one.
static ORACLE_RUN: Mutex<Option<Vec<Record>>> = Mutex::new(None);

/// A LoadBalancer Service selecting the lab pods `app: web`.
fn service_yaml(
    ns: &str,
    name: &str,
    families: Families,
    ports: &[u16],
    address: Option<&str>,
) -> String {
    let mut yaml =
        format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n");
    if let Some(a) = address {
        yaml.push_str(&format!("  annotations: {{ {IPS}: \"{a}\" }}\n"));
    }
    yaml.push_str("spec:\n  type: LoadBalancer\n  externalTrafficPolicy: Cluster\n");
    if let Some(p) = families.policy {
        yaml.push_str(&format!("  ipFamilyPolicy: {p}\n"));
    }
    if !families.families.is_empty() {
        yaml.push_str(&format!(
            "  ipFamilies: [{}]\n",
            families.families.join(", ")
        ));
    }
    yaml.push_str("  selector: { app: web }\n  ports:\n");
    for port in ports {
        yaml.push_str(&format!(
            "  - {{ name: p{port}, port: {port}, targetPort: 8080 }}\n"
        ));
    }
    yaml
}

/// Writes the pools ConfigMap with exactly `data`.
fn write_pools(data: &[(&str, &str)]) -> Outcome {
    let data: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    let cm = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": POOLS_NAME, "namespace": POOLS_NS },
        "data": data,
    });
    kubectl_input(&["replace", "--force", "-f", "-"], Some(&cm.to_string()))
        .or_else(|_| kubectl_input(&["create", "-f", "-"], Some(&cm.to_string())))
        .map(|_| ())
}

/// The annotations of Service `ns/name`; None when it cannot be read.
fn given(ns: &str, name: &str) -> Option<Given> {
    let svc = get_json(&["service", name, "-n", ns]).ok()?;
    let annotation = |key: &str| {
        svc["metadata"]["annotations"][key]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    Some(Given {
        ips: annotation(IPS),
        interface: annotation(INTERFACE),
    })
}

/// Waits for `ns/name`'s address (30 s), or watches [`NONE_WINDOW`] for
/// none to come; what it was given either way.
fn wait_given(ns: &str, name: &str, expect_address: bool) -> Result<Given, String> {
    if expect_address {
        return wait_for(
            &format!("{ns}/{name} to be given an address"),
            Duration::from_secs(30),
            Duration::from_millis(100),
            || given(ns, name).filter(|g| !g.ips.is_empty()),
        );
    }
    let until = Instant::now() + NONE_WINDOW;
    let mut last = Given::default();
    while Instant::now() < until {
        last = given(ns, name).unwrap_or_default();
        if !last.ips.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(last)
}

/// The lab pods every namespace's Services select, so kvip serves them.
fn namespaces_with_pods() -> Outcome {
    for (ns, node) in NAMESPACES.iter().zip(["worker1", "worker2", "worker1"]) {
        namespace(ns)?;
        lab_pod(ns, "web-1", node, "web")?;
    }
    Ok(())
}

/// Plays [`SCRIPT`] into `records`; `on_no_address` checks a Service that
/// was to get none. On an error `records` holds the steps played so far.
fn play(records: &mut Vec<Record>, on_no_address: &dyn Fn(&str, &str) -> Outcome) -> Outcome {
    for step in SCRIPT {
        match *step {
            Step::Pools(data, added) => {
                let all: Vec<(&str, &str)> = data.iter().chain(added.iter()).copied().collect();
                write_pools(&all)?;
                // kvip reads the ConfigMap from its watch, the cloud
                // provider at each allocation: let the watch catch up.
                std::thread::sleep(Duration::from_secs(2));
            }
            Step::Create {
                ns,
                name,
                families,
                ports,
                expect_address,
            } => {
                let created = Instant::now();
                apply(&service_yaml(ns, name, families, ports, None))?;
                let given = wait_given(ns, name, expect_address)?;
                let took = created.elapsed();
                if !expect_address && given.ips.is_empty() {
                    on_no_address(ns, name)?;
                }
                let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                records.push(Record {
                    service: format!("{ns}/{name}"),
                    spec: format!("{} port {}", families.describe(), ports.join(",")),
                    given,
                    took,
                });
            }
            Step::Pinned { ns, name, address } => {
                apply(&service_yaml(ns, name, DEFAULT, &[80], Some(address)))?;
                records.push(Record {
                    service: format!("{ns}/{name}"),
                    spec: "its own address".into(),
                    given: given(ns, name).unwrap_or_default(),
                    took: Duration::ZERO,
                });
            }
            Step::Delete { ns, name } => {
                kubectl(&["delete", "service", name, "-n", ns, "--timeout=30s"])?;
                // Let a watching allocator see the address go.
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    Ok(())
}

/// Every Service still there kept what it was given when recorded.
fn nothing_moved(records: &[Record]) -> Outcome {
    for r in records {
        let Some((ns, name)) = r.service.split_once('/') else {
            continue;
        };
        if let Some(now) = given(ns, name) {
            ensure!(
                now == r.given,
                "{} was given {} and has {} at the end",
                r.service,
                r.given,
                now
            );
        }
    }
    Ok(())
}

fn differential_cloud_provider_alone() -> Outcome {
    fresh_lab_ipv6()?;
    namespaces_with_pods()?;
    lab_ok(&["cloud-provider", "start"])?;
    let started = Instant::now();
    let mut records = Vec::new();
    play(&mut records, &|ns, name| {
        // It says why on the Service, as an Event.
        let selector = format!("involvedObject.name={name},reason=SyncLoadBalancerFailed");
        let selector = selector.as_str();
        wait_for(
            &format!("the cloud provider's SyncLoadBalancerFailed Event on {ns}/{name}"),
            Duration::from_secs(10),
            Duration::from_millis(300),
            || {
                let events = get_json(&["events", "-n", ns, "--field-selector", selector]).ok()?;
                let items = events["items"].as_array()?;
                items
                    .iter()
                    .any(|e| {
                        e["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("no addresses available"))
                    })
                    .then_some(())
            },
        )
    })?;
    println!(
        "    the cloud provider played the script in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    nothing_moved(&records)?;
    let got: Vec<(String, String)> = records
        .iter()
        .map(|r| (r.service.clone(), r.given.to_string()))
        .collect();
    let pinned: Vec<(String, String)> = ORACLE
        .iter()
        .map(|(s, g)| (s.to_string(), g.to_string()))
        .collect();
    for r in &records {
        println!(
            "    {:<16} {:<36} {:<36} {:>6} ms",
            r.service,
            r.spec,
            r.given.to_string(),
            r.took.as_millis()
        );
    }
    *ORACLE_RUN.lock().map_err(|e| e.to_string())? = Some(records);
    ensure!(
        got == pinned,
        "the cloud provider's allocations are not the ones ORACLE pins:\n got {got:?}\n pinned {pinned:?}"
    );
    lab_ok(&["cloud-provider", "stop"]).map(|_| ())
}

fn differential_kvip_alone() -> Outcome {
    fresh_lab_ipv6()?;
    namespaces_with_pods()?;
    deploy_lb("ipam-lb.yaml", &[])?;
    let mut records = Vec::new();
    let played = play(&mut records, &|ns, name| {
        wait_reason(ns, name, "PoolExhausted").map(|_| ())
    });
    let compared = compare_with_the_oracle(&records);
    played?;
    nothing_moved(&records)?;
    compared
}

/// Prints kvip's `records` beside the cloud provider's and checks every
/// difference is one [`DIFFERENCES`] lists (only the steps played).
fn compare_with_the_oracle(records: &[Record]) -> Outcome {
    let oracle_run = ORACLE_RUN.lock().map_err(|e| e.to_string())?.clone();
    let source = if oracle_run.is_some() {
        "this run"
    } else {
        "ORACLE"
    };
    let oracle: Vec<(String, String)> = match oracle_run {
        Some(run) => run
            .iter()
            .map(|r| (r.service.clone(), r.given.to_string()))
            .collect(),
        None => ORACLE
            .iter()
            .map(|(s, g)| (s.to_string(), g.to_string()))
            .collect(),
    };
    ensure!(
        oracle.len() >= records.len(),
        "{} steps recorded for kvip, {} for the cloud provider",
        records.len(),
        oracle.len()
    );
    println!(
        "    {:<16} {:<36} {:<36} {:<36} note",
        "service", "spec", "cloud provider", "kvip"
    );
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (r, (service, theirs)) in records.iter().zip(&oracle) {
        ensure!(
            &r.service == service,
            "the recordings are out of step: {} against {service}",
            r.service
        );
        let ours = r.given.to_string();
        let listed = DIFFERENCES.iter().find(|d| d.service == r.service);
        let note = match listed {
            Some(d) if ours == d.kvip && &ours != theirs => {
                seen.insert(d.service);
                "documented".to_string()
            }
            Some(d) => {
                problems.push(format!(
                    "{}: kvip gave {ours}, the documented difference says {} ({})",
                    r.service, d.kvip, d.why
                ));
                "UNEXPECTED".to_string()
            }
            None if &ours == theirs => String::new(),
            None => {
                problems.push(format!(
                    "{}: kvip gave {ours}, the cloud provider {theirs}",
                    r.service
                ));
                "DIFFERS".to_string()
            }
        };
        println!(
            "    {:<16} {:<36} {:<36} {:<36} {note}",
            r.service, r.spec, theirs, ours
        );
    }
    println!("    (cloud provider column from {source})");
    for d in DIFFERENCES {
        println!("    documented: {} — {}", d.service, d.why);
    }
    ensure!(
        problems.is_empty(),
        "kvip's allocations differ from the cloud provider's beyond DIFFERENCES:\n    {}",
        problems.join("\n    ")
    );
    ensure!(
        records.len() < oracle.len() || seen.len() == DIFFERENCES.len(),
        "not every documented difference was played"
    );
    Ok(())
}

/// The Services of the both-at-once scenario: name, namespace, families.
fn crowd(from: usize, to: usize) -> Vec<(String, &'static str, Families)> {
    (from..to)
        .map(|i| {
            let families = match i % 5 {
                0 => V6,
                1 => PREFER_V4_FIRST,
                2 => PREFER_V6_FIRST,
                _ => DEFAULT,
            };
            (format!("s{i:02}"), NAMESPACES[i % 3], families)
        })
        .collect()
}

/// Applies all of `services` in one request.
fn apply_all(services: &[(String, &'static str, Families)]) -> Outcome {
    let docs: Vec<String> = services
        .iter()
        .map(|(name, ns, f)| service_yaml(ns, name, *f, &[80], None))
        .collect();
    apply(&docs.join("---\n")).map(|_| ())
}

/// What one Service of the crowd asks for and holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holding {
    /// `spec.ipFamilies`.
    families: Vec<String>,
    /// Its `kube-vip.io/loadbalancerIPs`, split.
    ips: Vec<String>,
    /// `spec.loadBalancerIP` is set: only the cloud provider writes it.
    by_cloud_provider: bool,
}

/// Every Service of the crowd by `ns/name`.
type Crowd = BTreeMap<String, Holding>;

/// Every LoadBalancer Service in the script's namespaces.
fn crowd_addresses() -> Result<Crowd, String> {
    let mut out = BTreeMap::new();
    for ns in NAMESPACES {
        let list = get_json(&["services", "-n", ns])?;
        for svc in list["items"].as_array().into_iter().flatten() {
            let name = svc["metadata"]["name"].as_str().unwrap_or_default();
            let families = svc["spec"]["ipFamilies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(String::from))
                .collect();
            let ips = svc["metadata"]["annotations"][IPS]
                .as_str()
                .unwrap_or_default()
                .split(',')
                .filter(|a| !a.is_empty())
                .map(String::from)
                .collect();
            let by_cloud_provider = svc["spec"]["loadBalancerIP"]
                .as_str()
                .is_some_and(|ip| !ip.is_empty());
            out.insert(
                format!("{ns}/{name}"),
                Holding {
                    families,
                    ips,
                    by_cloud_provider,
                },
            );
        }
    }
    Ok(out)
}

/// No address on two Services; one address of each family each Service
/// asks for (the pool has both), and of no other.
fn crowd_is_sound(all: &Crowd) -> Outcome {
    let mut holders: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (service, Holding { families, ips, .. }) in all {
        for ip in ips {
            holders
                .entry(ip.as_str())
                .or_default()
                .push(service.as_str());
        }
        let mut got: Vec<&str> = ips
            .iter()
            .map(|ip| if ip.contains(':') { "IPv6" } else { "IPv4" })
            .collect();
        got.sort();
        let mut wanted: Vec<&str> = families.iter().map(String::as_str).collect();
        wanted.sort();
        ensure!(
            got == wanted,
            "{service} asks for {families:?} and was given {ips:?}"
        );
    }
    let twice: Vec<String> = holders
        .iter()
        .filter(|(_, s)| s.len() > 1)
        .map(|(ip, s)| format!("{ip} on {}", s.join(" and ")))
        .collect();
    ensure!(
        twice.is_empty(),
        "addresses on two Services: {}",
        twice.join("; ")
    );
    Ok(())
}

/// The addresses each Service was first seen with, and every later change:
/// one allocator writing over the other's annotation.
#[derive(Default)]
struct Rewrites {
    first: BTreeMap<String, Vec<String>>,
    changes: Vec<String>,
}

impl Rewrites {
    fn observe(&mut self, crowd: &Crowd) {
        for (service, h) in crowd.iter().filter(|(_, h)| !h.ips.is_empty()) {
            match self.first.get(service) {
                None => {
                    self.first.insert(service.clone(), h.ips.clone());
                }
                Some(before) if *before != h.ips => {
                    self.changes
                        .push(format!("{service}: {before:?} → {:?}", h.ips));
                    self.first.insert(service.clone(), h.ips.clone());
                }
                Some(_) => {}
            }
        }
    }
}

/// Waits until every Service of the crowd has an address of each family it asks for.
fn crowd_served(count: usize, rewrites: &mut Rewrites) -> Result<Crowd, String> {
    let mut last = BTreeMap::new();
    let done = wait_for(
        &format!("{count} Services to be given their addresses"),
        Duration::from_secs(90),
        Duration::from_millis(500),
        || {
            let all = crowd_addresses().ok()?;
            rewrites.observe(&all);
            let complete =
                all.len() == count && all.values().all(|h| h.ips.len() >= h.families.len());
            last = all.clone();
            complete.then_some(all)
        },
    );
    done.map_err(|e| {
        let waiting: Vec<&String> = last
            .iter()
            .filter(|(_, h)| h.ips.len() < h.families.len())
            .map(|(s, _)| s)
            .collect();
        format!("{e}; still waiting: {waiting:?}")
    })
}

fn both_at_once_never_give_one_address_to_two_services() -> Outcome {
    fresh_lab_ipv6()?;
    namespaces_with_pods()?;
    write_pools(&[(
        "range-global",
        "10.77.0.100-10.77.0.199,fd00:77::1:0-fd00:77::1:ff",
    )])?;
    // kvip first, and ready: it has given a Service an address before the
    // cloud provider starts, so the two really allocate at once below.
    deploy_lb("ipam-both.yaml", &[])?;
    apply(&service_yaml("default", "warm-up", DEFAULT, &[80], None))?;
    wait_given("default", "warm-up", true)?;
    lab_ok(&["cloud-provider", "start"])?;
    std::thread::sleep(Duration::from_secs(3));
    let started = Instant::now();
    let mut rewrites = Rewrites::default();
    apply_all(&crowd(0, 50))?;
    let first = crowd_served(50, &mut rewrites)?;
    println!(
        "    50 Services created at once, all given addresses within {:.1} s ({} with spec.loadBalancerIP, the cloud provider's mark)",
        started.elapsed().as_secs_f64(),
        first.values().filter(|h| h.by_cloud_provider).count()
    );
    crowd_is_sound(&first)?;
    // Once kvip sees the cloud provider allocate, it leaves allocating to
    // it and says so: the two do not race for the rest.
    if first.values().any(|h| h.by_cloud_provider) {
        for node in ["cp1", "worker1", "worker2"] {
            let log = lab_ok(&["logs", node])?;
            ensure!(
                log.contains("kube-vip-cloud-provider allocates in this cluster"),
                "{node}'s kvip did not say it gives way to the cloud provider"
            );
        }
    }
    for (name, ns, _) in crowd(0, 50).into_iter().step_by(9) {
        kubectl(&["delete", "service", &name, "-n", ns, "--timeout=30s"])?;
    }
    apply_all(&crowd(50, 56))?;
    let second = crowd_served(50, &mut rewrites)?;
    crowd_is_sound(&second)?;
    if !rewrites.changes.is_empty() {
        // Not kvip's doing alone: the cloud provider writes its own choice
        // over an annotation that appeared while it was choosing.
        println!(
            "    annotations rewritten while both allocated: {}",
            rewrites.changes.join("; ")
        );
    }
    std::thread::sleep(Duration::from_secs(10));
    let later = crowd_addresses()?;
    let mut moved = Vec::new();
    for (service, before) in &second {
        let now = later.get(service).map(|h| h.ips.clone());
        if now.as_ref() != Some(&before.ips) {
            moved.push(format!("{service}: {:?} → {now:?}", before.ips));
        }
    }
    ensure!(
        moved.is_empty(),
        "addresses moved within 10 s: {}",
        moved.join("; ")
    );
    lab_ok(&["cloud-provider", "stop"]).map(|_| ())
}

fn teardown() -> Outcome {
    lab_down()
}

fn main() {
    if !is_root() {
        println!("ipam_e2e: skipped (needs root for network namespaces)");
        return;
    }
    run_all(
        "ipam_e2e",
        &[
            Scenario {
                name: "differential_cloud_provider_alone",
                run: differential_cloud_provider_alone,
            },
            Scenario {
                name: "differential_kvip_alone",
                run: differential_kvip_alone,
            },
            Scenario {
                name: "both_at_once_never_give_one_address_to_two_services",
                run: both_at_once_never_give_one_address_to_two_services,
            },
            Scenario {
                name: "teardown",
                run: teardown,
            },
        ],
    );
}
