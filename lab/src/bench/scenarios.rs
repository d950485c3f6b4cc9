//! The five measurements, each against the daemon currently deployed on the
//! lab. Every latency is taken from an instant on this machine's monotonic
//! clock just before the triggering action to the arrival of the first
//! accepted answer at the client (see [`probe`] for the resolution). A
//! scenario that fails stops, keeps the samples it has, and says why.

use crate::bench::probe;
use crate::bench::results::{ScaleStep, Series};
use crate::bench::testbed::{BenchService, NAMESPACE, POD_PORT, Policy, SERVICE_PORT, Testbed};
use crate::commands::{self, Fault, PodArgs};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

/// The label that keeps a node from announcing load-balancer addresses.
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// How long one probe target may stay silent before a run counts as failed.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Prints progress on standard error.
pub type Log<'a> = &'a mut dyn FnMut(&str);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn target(vip: Ipv4Addr) -> SocketAddr {
    SocketAddr::from((vip, SERVICE_PORT))
}

fn pod(name: &str, node: &str, app: &str) -> anyhow::Result<()> {
    commands::pod_create(PodArgs {
        name: name.to_string(),
        node: node.to_string(),
        labels: vec![("app".to_string(), app.to_string())],
        port: POD_PORT,
        namespace: NAMESPACE.to_string(),
    })
}

fn delete_pod(name: &str) -> anyhow::Result<()> {
    commands::pod_delete(name, NAMESPACE)
}

fn series(run: impl FnOnce(&mut Vec<f64>) -> anyhow::Result<()>) -> Series {
    let mut samples = Vec::new();
    let error = run(&mut samples).err().map(|e| format!("{e:#}"));
    Series {
        samples_ms: samples,
        error,
    }
}

/// Scenario 1: a Local Service is created for a pod already Ready on
/// worker1; time from the create request to the first answer through the
/// VIP. The client forgets the VIP's neighbour entry before each run, as a
/// client meeting a new address would have none. Each run uses its own
/// Service name and VIP, and waits for the VIP to leave every node after.
pub fn create_to_probe(tb: &Testbed, runs: usize, log: Log<'_>) -> Series {
    series(|samples| {
        pod("create-pod", "worker1", "bench-create")?;
        for i in 0..runs {
            let vip = Ipv4Addr::new(10, 77, 0, 110 + (i % 40) as u8);
            let svc = BenchService {
                name: format!("create-{i}"),
                policy: Policy::Local,
                vip,
                app: "bench-create".into(),
                group: "create".into(),
            };
            tb.forget_neighbour(vip);
            let started = Instant::now();
            tb.create_service(&svc)?;
            let answer =
                probe::first_answer(target(vip), ANSWER_TIMEOUT, |a| a.starts_with("worker1/"))?;
            let took = answer.at - started;
            samples.push(ms(took));
            log(&format!(
                "  create {}/{runs}: {:.0} ms ({})",
                i + 1,
                ms(took),
                answer.text
            ));
            tb.delete_service(&svc.name)?;
            tb.wait_withdrawn(vip, Duration::from_secs(20))?;
        }
        delete_pod("create-pod")
    })
}

/// Scenario 2: graceful migration of a Local Service's only pod between the
/// workers, as a rolling update does it: the new pod becomes Ready on the
/// other worker, then the old pod's deletion starts at once (graceful
/// delete: its endpoint turns terminating, its process stops 300 ms later,
/// then the object goes). Returns (from the deletion's start, from the new
/// pod being Ready) to the first answer from the new pod's node. "Ready" is
/// when `kvip-lab pod` returns, just after it wrote the Ready condition.
pub fn migration(tb: &Testbed, runs: usize, log: Log<'_>) -> (Series, Series) {
    let mut from_ready = Vec::new();
    let vip = Ipv4Addr::new(10, 77, 0, 150);
    let from_delete = series(|samples| {
        let svc = BenchService {
            name: "migrate".into(),
            policy: Policy::Local,
            vip,
            app: "bench-migrate".into(),
            group: "migrate".into(),
        };
        tb.create_service(&svc)?;
        pod("migrate-0", "worker1", "bench-migrate")?;
        probe::first_answer(target(vip), ANSWER_TIMEOUT, |a| a.starts_with("worker1/"))?;
        let (mut node, mut old) = ("worker1".to_string(), "migrate-0".to_string());
        for i in 1..=runs {
            let next = if node == "worker1" {
                "worker2"
            } else {
                "worker1"
            };
            let name = format!("migrate-{i}");
            pod(&name, next, "bench-migrate")?;
            let ready = Instant::now();
            let deleting = {
                let old = old.clone();
                std::thread::spawn(move || delete_pod(&old))
            };
            let delete_started = Instant::now();
            let prefix = format!("{next}/");
            let answer =
                probe::first_answer(target(vip), ANSWER_TIMEOUT, |a| a.starts_with(&prefix));
            let deleted = deleting
                .join()
                .map_err(|_| anyhow::anyhow!("deleting pod {old} panicked"))?;
            let answer = answer?;
            deleted?;
            samples.push(ms(answer.at - delete_started));
            from_ready.push(ms(answer.at - ready));
            log(&format!(
                "  migration {i}/{runs} {node} -> {next}: {:.0} ms from deletion, {:.0} ms from Ready",
                ms(answer.at - delete_started),
                ms(answer.at - ready)
            ));
            (node, old) = (next.to_string(), name);
            std::thread::sleep(Duration::from_millis(500));
        }
        tb.delete_service(&svc.name)?;
        delete_pod(&old)?;
        tb.wait_withdrawn(vip, Duration::from_secs(20))
    });
    let from_ready = Series {
        samples_ms: from_ready,
        error: from_delete.error.clone(),
    };
    (from_delete, from_ready)
}

/// Scenario 3: a Local Service with a pod on each worker, so with either
/// daemon the holder is a worker (cp1 runs the only API server and no pod;
/// neither kube-vip nor kvip by default honours the exclusion label cp1
/// also carries). The holder node is killed (`kvip-lab fault kill-node`: every
/// process SIGKILLed, link down); time to the first answer through the
/// survivor. The node is revived and the VIP left to settle between runs.
pub fn failover(tb: &Testbed, runs: usize, log: Log<'_>) -> Series {
    let vip = Ipv4Addr::new(10, 77, 0, 160);
    let result = series(|samples| {
        tb.label_node("cp1", EXCLUDE_LABEL, Some("true"))?;
        let svc = BenchService {
            name: "failover".into(),
            policy: Policy::Local,
            vip,
            app: "bench-failover".into(),
            group: "failover".into(),
        };
        tb.create_service(&svc)?;
        pod("failover-w1", "worker1", "bench-failover")?;
        pod("failover-w2", "worker2", "bench-failover")?;
        probe::first_answer(target(vip), ANSWER_TIMEOUT, |_| true)?;
        for i in 1..=runs {
            let holder = tb.wait_single_holder(vip, Duration::from_secs(20))?;
            if holder == "cp1" {
                anyhow::bail!(
                    "the VIP is on cp1, which has no pod of the Service and runs the lab's only API server: not killing it"
                );
            }
            let started = Instant::now();
            commands::fault(Fault::KillNode(holder.clone()))?;
            let answer = probe::first_answer(target(vip), ANSWER_TIMEOUT, |_| true);
            let revived = commands::fault(Fault::ReviveNode(holder.clone()));
            let answer = answer?;
            revived?;
            samples.push(ms(answer.at - started));
            log(&format!(
                "  failover {i}/{runs}: {holder} killed, {} answered after {:.0} ms",
                answer.text,
                ms(answer.at - started)
            ));
            tb.wait_single_holder(vip, Duration::from_secs(30))?;
            // Let the revived node's daemon start and sync before the next kill.
            std::thread::sleep(Duration::from_secs(5));
        }
        tb.delete_service(&svc.name)?;
        delete_pod("failover-w1")?;
        delete_pod("failover-w2")?;
        tb.wait_withdrawn(vip, Duration::from_secs(20))
    });
    if let Err(e) = tb.label_node("cp1", EXCLUDE_LABEL, None) {
        log(&format!(
            "  could not remove the exclusion label from cp1: {e:#}"
        ));
    }
    result
}

/// VIP of the i-th scale Service: 10.200.0.1 onwards, outside the bridge
/// subnet (its VIP range holds only 100) but only inside the lab.
pub fn scale_vip(i: usize) -> Ipv4Addr {
    let hi = u8::try_from(i / 250).unwrap_or(u8::MAX);
    let lo = u8::try_from(i % 250 + 1).unwrap_or(1);
    Ipv4Addr::new(10, 200, hi, lo)
}

/// The on-link route the client needs for [`scale_vip`] addresses.
pub const SCALE_CIDR: &str = "10.200.0.0/16";

/// Which Services of `n` the client probes: all up to `max`, else `max`
/// spread evenly (always including the first and the last).
pub fn sample_indices(n: usize, max: usize) -> Vec<usize> {
    if n <= max || max < 2 {
        return (0..n).collect();
    }
    let mut picked: BTreeSet<usize> = (0..max).map(|k| k * (n - 1) / (max - 1)).collect();
    picked.insert(n - 1);
    picked.into_iter().collect()
}

/// Settings of the scale scenario.
pub struct ScalePlan<'a> {
    /// Service counts, one step each.
    pub counts: &'a [usize],
    /// Steady-state window.
    pub window: Duration,
    /// The daemon binary (to find its processes).
    pub binary: &'a Path,
    /// VIPs probed per step at most.
    pub sample: usize,
}

/// Scenario 4: N Cluster Services at once, backed by one pod per worker.
/// Per step: time until every Service has an ingress address and every
/// sampled VIP answers; then, after 10 s to settle, a steady-state window
/// for API requests (at the API server, with their answer codes) and the
/// daemons' RSS and CPU; then the Services are deleted and the VIPs'
/// withdrawal is timed. A step that does not converge (the API server
/// refuses creates, or not every VIP answers in time) is still measured
/// over the window — what the API server sees then is the finding — and
/// ends the scenario; its Services are left for the lab's teardown.
pub fn scale(tb: &Testbed, plan: &ScalePlan<'_>, log: Log<'_>) -> Vec<ScaleStep> {
    let mut steps = Vec::new();
    let setup = (|| {
        tb.client_route(SCALE_CIDR)?;
        pod("scale-w1", "worker1", "bench-scale")?;
        pod("scale-w2", "worker2", "bench-scale")
    })();
    if let Err(e) = setup {
        steps.push(ScaleStep {
            error: Some(format!("setting up: {e:#}")),
            ..Default::default()
        });
        return steps;
    }
    for &n in plan.counts {
        let mut step = ScaleStep {
            services: n,
            ..Default::default()
        };
        if let Err(e) = scale_step(tb, plan, n, &mut step, log) {
            log(&format!("  scale {n}: {e:#}"));
            let text = format!("{e:#}");
            step.error = Some(match step.error.take() {
                Some(first) => format!("{first}; then {text}"),
                None => text,
            });
        }
        let broken = step.error.is_some();
        steps.push(step);
        if broken {
            return steps;
        }
    }
    let _ = tb.delete_group("scale", 16);
    let _ = delete_pod("scale-w1");
    let _ = delete_pod("scale-w2");
    steps
}

fn scale_step(
    tb: &Testbed,
    plan: &ScalePlan<'_>,
    n: usize,
    step: &mut ScaleStep,
    log: Log<'_>,
) -> anyhow::Result<()> {
    let services: Vec<BenchService> = (0..n)
        .map(|i| BenchService {
            name: format!("scale-{i:04}"),
            policy: Policy::Cluster,
            vip: scale_vip(i),
            app: "bench-scale".into(),
            group: "scale".into(),
        })
        .collect();
    let sample = sample_indices(n, plan.sample);
    step.sample_size = sample.len();
    // The step's peak RSS counts from here: creates, convergence, the window.
    for (d, e) in tb.reset_peaks(plan.binary) {
        log(&format!(
            "  scale {n}: cannot reset the peak RSS of {} on {}: {e}",
            d.pid, d.node
        ));
    }
    let started = Instant::now();
    let (created, refused) = tb.create_services(&services, 16);
    step.created = created;
    step.created_s = Some(started.elapsed().as_secs_f64());
    log(&format!(
        "  scale {n}: {created} created in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    match refused {
        Some(e) => {
            let text = format!(
                "the API server refused a create after {created} of {n} Services ({:.0} s in): {e:#}",
                started.elapsed().as_secs_f64()
            );
            log(&format!("  scale {n}: {text}"));
            step.error = Some(text);
        }
        None => {
            if let Err(e) = converge(tb, n, &sample, started, step, log) {
                log(&format!("  scale {n}: {e:#}"));
                step.error = Some(format!("{e:#}"));
            }
        }
    }
    std::thread::sleep(Duration::from_secs(10));
    let counts_before = tb.request_counts()?;
    let usage_before = tb.daemon_samples(plan.binary);
    let window_started = Instant::now();
    std::thread::sleep(plan.window);
    let counts_after = tb.request_counts()?;
    let usage_after = tb.daemon_samples(plan.binary);
    let window = window_started.elapsed();
    let rates = crate::bench::apiserver::rates(&counts_before, &counts_after, window.as_secs_f64());
    step.usage = Testbed::usage_between(&usage_before, &usage_after, window);
    log(&format!(
        "  scale {n}: {:.1} API requests/s ({:.1} on leases, {:.1} refused or failed); RSS at the end (peak) {}",
        rates.total_per_second,
        rates.resource("leases"),
        rates.failed_per_second(),
        step.usage
            .iter()
            .map(|u| format!(
                "{} {:.1} MB ({})",
                u.node,
                u.rss_kib as f64 * 1024.0 / 1e6,
                u.peak_rss_kib
                    .map_or("—".into(), |p| format!("{:.1}", p as f64 * 1024.0 / 1e6))
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    step.api = Some(rates);
    let (per_node, duplicates) = scale_addresses(tb);
    step.vips_per_node = per_node;
    step.duplicates = duplicates;
    if step.error.is_some() {
        return Ok(());
    }
    let deleting = Instant::now();
    tb.delete_group("scale", 16)?;
    let deadline = deleting + Duration::from_secs(60) + Duration::from_millis(100) * n as u32;
    loop {
        let (per_node, _) = scale_addresses(tb);
        let left: usize = per_node.iter().map(|(_, c)| c).sum();
        if left == 0 {
            step.withdrawn_s = Some(deleting.elapsed().as_secs_f64());
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{left} VIPs still on the interfaces {:.0} s after their Services were deleted",
                deleting.elapsed().as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}

/// Waits until every Service has an ingress address and every sampled VIP
/// answers; gives up 120 s + 0.3 s per Service after the creates were sent.
fn converge(
    tb: &Testbed,
    n: usize,
    sample: &[usize],
    started: Instant,
    step: &mut ScaleStep,
    log: Log<'_>,
) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(120) + Duration::from_millis(300) * n as u32;
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<Ipv4Addr> = sample.iter().map(|i| scale_vip(*i)).collect();
    let mut last_report = Instant::now();
    loop {
        if step.all_status_s.is_none() {
            match tb.with_ingress("scale") {
                Ok(count) => step.with_status = count,
                Err(e) => log(&format!("  scale {n}: listing Services: {e:#}")),
            }
            if step.with_status >= n {
                step.all_status_s = Some(started.elapsed().as_secs_f64());
            }
        }
        if !pending.is_empty() {
            let answered = probe_all(&pending);
            pending.retain(|vip| !answered.contains(vip));
            step.answered = step.sample_size - pending.len();
            if pending.is_empty() {
                step.sample_answered_s = Some(started.elapsed().as_secs_f64());
            }
        }
        if step.all_status_s.is_some() && pending.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{:.0} s after the first create: {}/{n} Services have an ingress address, {}/{} sampled VIPs answer",
                started.elapsed().as_secs_f64(),
                step.with_status,
                step.answered,
                step.sample_size
            );
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            log(&format!(
                "  scale {n}: {:.0} s: {}/{n} with status, {}/{} sampled VIPs answer",
                started.elapsed().as_secs_f64(),
                step.with_status,
                step.answered,
                step.sample_size
            ));
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    log(&format!(
        "  scale {n}: all with status after {:.1} s, {} sampled VIPs answer after {:.1} s",
        step.all_status_s.unwrap_or_default(),
        step.sample_size,
        step.sample_answered_s.unwrap_or_default()
    ));
    Ok(())
}

/// Scale VIPs per node, and how many are on more than one node.
fn scale_addresses(tb: &Testbed) -> (Vec<(String, usize)>, usize) {
    let mut seen: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    let per_node = tb
        .addresses()
        .into_iter()
        .map(|(node, ips)| {
            let ours: Vec<Ipv4Addr> = ips
                .into_iter()
                .filter(|ip| ip.octets()[..2] == [10, 200])
                .collect();
            for ip in &ours {
                *seen.entry(*ip).or_default() += 1;
            }
            (node, ours.len())
        })
        .collect();
    (per_node, seen.values().filter(|c| **c > 1).count())
}

/// Probes every address at once; returns those that answered.
fn probe_all(vips: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
    let handles: Vec<_> = vips
        .iter()
        .map(|vip| {
            let vip = *vip;
            std::thread::spawn(move || {
                probe::once(target(vip), Duration::from_millis(500)).map(|_| vip)
            })
        })
        .collect();
    handles
        .into_iter()
        .filter_map(|h| h.join().ok().flatten())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_vips_stay_in_10_200_and_are_distinct() {
        let vips: BTreeSet<Ipv4Addr> = (0..5000).map(scale_vip).collect();
        assert_eq!(vips.len(), 5000);
        assert!(vips.iter().all(|v| v.octets()[..2] == [10, 200]));
        assert_eq!(scale_vip(0), Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!(scale_vip(250), Ipv4Addr::new(10, 200, 1, 1));
    }

    #[test]
    fn samples_spread_over_all_services() {
        assert_eq!(sample_indices(3, 50), vec![0, 1, 2]);
        let s = sample_indices(1000, 50);
        assert_eq!(s.len(), 50);
        assert_eq!((s[0], s[49]), (0, 999));
        assert!(s.windows(2).all(|w| w[0] < w[1]));
    }
}
