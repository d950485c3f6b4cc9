//! `results.md`: the benchmark's numbers as a person reads them — the
//! machine, the Lease timings, the goals with pass or fail, one table per
//! scenario group with a kube-vip and a kvip column, and how each number is
//! taken. Pure: [`render`] turns [`Results`] into Markdown.

use crate::bench::results::{ApiRates, NodeUsage, Results, ScaleStep, Series, SubjectResults};
use crate::bench::stats::{Summary, summarize};
use std::fmt::Write;

/// The issue-3 latency goal for create → probe and graceful migration, ms.
pub const LATENCY_GOAL_MS: f64 = 200.0;
/// The idle memory goal, bytes (15 MB).
pub const IDLE_RSS_GOAL_BYTES: f64 = 15e6;
/// Failover may take the Lease duration plus this much, ms.
pub const FAILOVER_SLACK_MS: f64 = 500.0;
/// kvip should be this many times faster than kube-vip (issue 7).
pub const SPEEDUP_GOAL: f64 = 10.0;
/// kvip's API requests at 1000 Services should be at most this share of kube-vip's.
pub const API_SHARE_GOAL: f64 = 0.2;
/// The scale steps whose memory issue 13 asks for.
pub const RSS_STEPS: [usize; 2] = [1000, 3000];

/// Chooses one latency series of a daemon's results.
type Pick = fn(&SubjectResults) -> &Series;

/// A plot written beside the report.
pub struct Plot {
    /// File name inside the output folder.
    pub file: String,
    /// What it shows.
    pub caption: String,
}

fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

fn subject<'a>(r: &'a Results, name: &str) -> Option<&'a SubjectResults> {
    r.subjects.iter().find(|s| s.subject == name)
}

/// A cell for a subject that did not run at all.
fn not_run(s: Option<&SubjectResults>) -> Option<String> {
    match s {
        None => Some("not run".into()),
        Some(s) if s.unavailable.is_some() => Some("not run ¹".into()),
        Some(_) => None,
    }
}

fn latency_cell(s: Option<&SubjectResults>, pick: Pick) -> String {
    if let Some(cell) = not_run(s) {
        return cell;
    }
    let Some(s) = s else {
        return "not run".into();
    };
    let series = pick(s);
    let mut cell = match summarize(&series.samples_ms) {
        Some(sum) => format!(
            "{:.0} / {:.0} / {:.0} ms (n={})",
            sum.median, sum.p95, sum.p99, sum.n
        ),
        None => "no sample".into(),
    };
    if series.error.is_some() {
        cell.push_str(" ²");
    }
    cell
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.1}×", a / b),
        _ => "—".into(),
    }
}

fn median_of(s: Option<&SubjectResults>, pick: Pick) -> Option<f64> {
    s.filter(|s| s.unavailable.is_none())
        .and_then(|s| summarize(&pick(s).samples_ms))
        .map(|x| x.median)
}

fn step(s: Option<&SubjectResults>, n: usize) -> Option<&ScaleStep> {
    s.filter(|s| s.unavailable.is_none())?
        .scale
        .iter()
        .find(|st| st.services == n)
}

fn net_rate(s: &SubjectResults, api: &ApiRates) -> f64 {
    let base = s.baseline.as_ref().map_or(0.0, |b| b.total_per_second);
    (api.total_per_second - base).max(0.0)
}

fn max_rss(usage: &[NodeUsage]) -> Option<u64> {
    usage.iter().map(|u| u.rss_kib).max()
}

fn max_peak_rss(usage: &[NodeUsage]) -> Option<u64> {
    usage.iter().filter_map(|u| u.peak_rss_kib).max()
}

/// The largest daemon's RSS at the end of a step's window and the largest
/// peak over the step: `64.9 MB, peak 80.1 MB`.
fn rss_end_and_peak(st: &ScaleStep) -> Option<String> {
    let end = max_rss(&st.usage)?;
    Some(match max_peak_rss(&st.usage) {
        Some(peak) => format!("{:.1} MB, peak {:.1} MB", mb(end), mb(peak)),
        None => format!("{:.1} MB", mb(end)),
    })
}

fn secs(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.1} s"))
}

fn pass(ok: bool) -> &'static str {
    if ok { "**pass**" } else { "**FAIL**" }
}

/// The whole report.
pub fn render(r: &Results, plots: &[Plot]) -> String {
    let mut out = String::new();
    let kv = subject(r, "kube-vip");
    // kvip in each of its election modes, in the order they ran.
    let variants: Vec<&SubjectResults> = r
        .subjects
        .iter()
        .filter(|s| s.subject != "kube-vip")
        .collect();
    header(&mut out, r, kv);
    let _ = writeln!(
        out,
        "## Goals\n\n| goal | target | daemon | measured | result |\n|---|---|---|---|---|"
    );
    for v in &variants {
        goals(&mut out, r, kv, v);
    }
    out.push('\n');
    latency_table(&mut out, r, kv, &variants);
    scale_table(&mut out, r, kv, &variants);
    footnotes(&mut out, r, kv);
    scale_details(&mut out, r);
    definitions(&mut out, r);
    if !plots.is_empty() {
        let _ = writeln!(out, "## Plots\n");
        for p in plots {
            let _ = writeln!(out, "**{}**\n\n![{}]({})\n", p.caption, p.caption, p.file);
        }
    }
    out
}

fn header(out: &mut String, r: &Results, kv: Option<&SubjectResults>) {
    let m = &r.machine;
    let s = &r.settings;
    let _ = writeln!(
        out,
        "# Benchmarks: kvip and kube-vip in the lab\n\n\
         Regenerated by `kvip-lab bench --runs {} --failover-runs {} --scale {}` \
         (raw numbers: [`results.json`](results.json)). Do not edit by hand.\n",
        s.runs,
        s.failover_runs,
        s.scale
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    let _ = writeln!(
        out,
        "- **Machine:** {} cores ({}), {:.1} GiB RAM, Linux {}; run started {}.",
        m.cores,
        m.cpu_model,
        m.mem_total_kib as f64 / 1024.0 / 1024.0,
        m.kernel,
        m.date
    );
    let _ = writeln!(
        out,
        "- **Lab:** a fresh `kvip-lab up` per daemon: 3 nodes (cp1 control plane, worker1, worker2) \
         as network namespaces on one bridge, a real kube-apiserver, etcd and kube-controller-manager \
         (Kubernetes {}) with kube-proxy (nftables mode) on every node, the lab playing kubelet. Everything shares the machine's {} cores.",
        m.kubernetes, m.cores
    );
    let _ = writeln!(
        out,
        "- **Build:** `cargo build --release --bins` (profile `{}`: opt-level 3, thin LTO); the release \
         `kvip-lab` runs the benchmark and deploys the `kvip` binary beside it.",
        m.build_profile
    );
    if !m.source.is_empty() {
        let _ = writeln!(out, "- **Source:** commit {}.", m.source);
    }
    if m.build_profile != "release" {
        let _ = writeln!(
            out,
            "- **Warning:** this run used a `{}` build; its numbers are not representative.",
            m.build_profile
        );
    }
    let _ = writeln!(
        out,
        "- **Lease timings (every daemon):** lease duration {} s, renew deadline {} s, retry period {} s; \
         the same DaemonSet environment for every daemon (`vip_arp=true`, `svc_enable=true`, `svc_election=true`, \
         `vip_interface=eth0`), DaemonSet on every node. **kvip** is the drop-in (one Lease per Service, \
         as kube-vip); **kvip membership** adds `kvip_membership=true` (one Lease per node, owners by \
         rendezvous hashing, a claim on the Service: API writes grow with nodes, not Services).",
        s.lease_duration_s, s.renew_deadline_s, s.retry_period_s
    );
    for sub in &r.subjects {
        let _ = writeln!(out, "- **{}:** {}", sub.subject, sub.version);
    }
    if let Some(reason) = kv.and_then(|k| k.unavailable.as_deref()) {
        let _ = writeln!(
            out,
            "\n**kube-vip did not run.** ¹ {reason}. Its column is kept and says so; no number in it is estimated.\n"
        );
    } else {
        out.push('\n');
    }
}

/// The goal rows of one kvip variant.
fn goals(out: &mut String, r: &Results, kv: Option<&SubjectResults>, kvip: &SubjectResults) {
    let who = kvip.subject.as_str();
    let kvip = Some(kvip);
    let latency_goal = |out: &mut String, name: &str, pick: Pick| {
        let m = median_of(kvip, pick);
        let _ = writeln!(
            out,
            "| {name}, median | < {LATENCY_GOAL_MS:.0} ms (issue 3) | {who} | {} | {} |",
            m.map_or("no sample".into(), |m| format!("{m:.0} ms")),
            m.map_or("**not measured**", |m| pass(m < LATENCY_GOAL_MS))
        );
    };
    latency_goal(out, "Service create → first answer", |s| &s.create);
    latency_goal(out, "graceful migration from new pod Ready", |s| {
        &s.migration_from_ready
    });
    latency_goal(out, "graceful migration from old pod deletion", |s| {
        &s.migration_from_delete
    });
    let kv_ran = kv.is_some_and(|k| k.unavailable.is_none());
    for (name, pick) in [
        (
            "create → first answer",
            (|s: &SubjectResults| &s.create) as Pick,
        ),
        ("graceful migration (from Ready)", |s| {
            &s.migration_from_ready
        }),
    ] {
        let verdict = match (median_of(kv, pick), median_of(kvip, pick)) {
            (Some(a), Some(b)) if b > 0.0 => {
                format!("{:.1}× — {}", a / b, pass(a / b >= SPEEDUP_GOAL))
            }
            _ if !kv_ran => "not judged: kube-vip did not run ¹".into(),
            _ => "not judged: a median is missing".into(),
        };
        let _ = writeln!(
            out,
            "| {name} vs kube-vip | ≥ {SPEEDUP_GOAL:.0}× faster (issue 7) | {who} | {} | {verdict} |",
            median_of(kvip, pick).map_or("—".into(), |m| format!("{m:.0} ms"))
        );
    }
    let bound = f64::from(r.settings.lease_duration_s) * 1000.0 + FAILOVER_SLACK_MS;
    let failover = kvip.and_then(|s| summarize(&s.failover.samples_ms));
    let _ = writeln!(
        out,
        "| holder node killed → first answer, every run | ≤ lease duration + 0.5 s = {:.1} s | {who} | {} | {} |",
        bound / 1000.0,
        failover.map_or("no sample".into(), |f: Summary| format!(
            "median {:.2} s, max {:.2} s (n={})",
            f.median / 1000.0,
            f.max / 1000.0,
            f.n
        )),
        failover.map_or("**not measured**", |f| pass(f.max <= bound))
    );
    // The largest step kube-vip runs too (larger ones run membership mode only).
    let biggest = r
        .settings
        .scale
        .iter()
        .copied()
        .filter(|&n| n <= crate::bench::PER_SERVICE_LEASES_MAX)
        .max()
        .unwrap_or(0);
    let kvip_api = step(kvip, biggest).and_then(|s| s.api.as_ref());
    let kv_api = step(kv, biggest).and_then(|s| s.api.as_ref());
    let api_verdict = match (kv_api, kvip_api) {
        (Some(a), Some(b)) if a.total_per_second > 0.0 => {
            let share = b.total_per_second / a.total_per_second;
            format!(
                "{:.0} % of kube-vip's — {}",
                share * 100.0,
                pass(share <= API_SHARE_GOAL)
            )
        }
        _ if !kv_ran => "not judged: kube-vip did not run ¹".into(),
        _ => "**not measured**".into(),
    };
    let _ = writeln!(
        out,
        "| steady-state API requests at {biggest} Services | ≤ {:.0} % of kube-vip's (issue 7) | {who} | {} | {api_verdict} |",
        API_SHARE_GOAL * 100.0,
        match (kvip, kvip_api) {
            (Some(s), Some(a)) => {
                let mut cell = format!(
                    "{:.1} req/s at the API server ({:.1} above the lab's baseline, {:.1} of them refused or failed)",
                    a.total_per_second,
                    net_rate(s, a),
                    a.failed_per_second()
                );
                let share =
                    kv_api.map(|k| a.total_per_second / k.total_per_second.max(f64::MIN_POSITIVE));
                if who == "kvip" && share.is_some_and(|x| x > API_SHARE_GOAL) {
                    cell.push_str(
                        "; still behind: the drop-in keeps kube-vip's one Lease per Service, renewed every retry period, so its requests grow with Services as kube-vip's do (it sends fewer: no GET before each write, and no refused request); membership mode, next rows, is the answer",
                    );
                }
                if let Some(st) = step(kvip, biggest).filter(|st| st.created < st.services) {
                    cell.push_str(&format!(
                        "; only {} of the {} Services could be created ²",
                        st.created, st.services
                    ));
                }
                cell
            }
            _ => "not measured".into(),
        }
    );
    scale_goals(out, kv, kvip, who);
    rss_goals(out, r, kv, kvip, who);
    let idle = kvip.and_then(|s| max_rss(&s.idle));
    let _ = writeln!(
        out,
        "| idle RSS of one daemon (largest of the 3) | < 15 MB | {who} | {} | {} |",
        idle.map_or("not measured".into(), |k| format!("{:.1} MB", mb(k))),
        idle.map_or("**not measured**", |k| pass(
            mb(k) * 1e6 < IDLE_RSS_GOAL_BYTES
        ))
    );
}

/// The memory rows of issue 13: the daemon's RSS at the end of the 1000-
/// and 3000-Service steps and its peak over each, beside kube-vip's.
fn rss_goals(
    out: &mut String,
    r: &Results,
    kv: Option<&SubjectResults>,
    kvip: Option<&SubjectResults>,
    who: &str,
) {
    let kv_ran = kv.is_some_and(|k| k.unavailable.is_none());
    for n in RSS_STEPS
        .into_iter()
        .filter(|n| r.settings.scale.contains(n))
    {
        let not_run = n > crate::bench::PER_SERVICE_LEASES_MAX;
        let theirs = match step(kv, n).and_then(rss_end_and_peak) {
            Some(cell) => format!("kube-vip {cell}"),
            None if !kv_ran => "kube-vip did not run ¹".into(),
            None if not_run => "kube-vip: not run at this scale (one Lease per Service)".into(),
            None => "kube-vip: not measured".into(),
        };
        let (cell, verdict) = match step(kvip, n).and_then(rss_end_and_peak) {
            Some(ours) => (format!("{ours} ({theirs})"), "measured"),
            None if not_run && !who.contains("membership") => {
                ("not run: one Lease per Service".to_string(), "—")
            }
            None => (format!("not measured ({theirs})"), "**not measured**"),
        };
        let _ = writeln!(
            out,
            "| daemon RSS, largest node, {n} Services: at the end, and the peak of the step | measured (issue 13) | {who} | {cell} | {verdict} |"
        );
    }
}

/// The busiest daemon's CPU over a step's window, percent of one core.
fn busiest_cpu(st: &ScaleStep) -> Option<f64> {
    st.usage
        .iter()
        .filter_map(|u| u.cpu_percent)
        .max_by(f64::total_cmp)
}

/// Seconds from the last create to every Service having its status.
fn served_after_last_create(st: &ScaleStep) -> Option<f64> {
    Some((st.all_status_s? - st.created_s?).max(0.0))
}

/// The scale goals of issue 11: kvip no worse than kube-vip at 100 Services,
/// every one of 1000 served within the budget, membership mode served within
/// 5 s of the last create.
fn scale_goals(
    out: &mut String,
    kv: Option<&SubjectResults>,
    kvip: Option<&SubjectResults>,
    who: &str,
) {
    let kv_ran = kv.is_some_and(|k| k.unavailable.is_none());
    let versus = |ours: Option<f64>, theirs: Option<f64>, unit: &str| match (ours, theirs) {
        (Some(a), Some(b)) => (
            format!("{a:.1} {unit} (kube-vip {b:.1} {unit})"),
            pass(a <= b).to_string(),
        ),
        (Some(a), None) if !kv_ran => (
            format!("{a:.1} {unit}"),
            "not judged: kube-vip did not run ¹".into(),
        ),
        (Some(a), None) => (
            format!("{a:.1} {unit}"),
            "not judged: kube-vip has no number".into(),
        ),
        (None, _) => ("not measured".into(), "**not measured**".into()),
    };
    let (cell, verdict) = versus(
        step(kvip, 100).and_then(busiest_cpu),
        step(kv, 100).and_then(busiest_cpu),
        "% of a core",
    );
    let _ = writeln!(
        out,
        "| daemon CPU, busiest node, 100 Services | ≤ kube-vip's (issue 11) | {who} | {cell} | {verdict} |"
    );
    let (mut cell, verdict) = versus(
        step(kvip, 100).and_then(|st| st.all_status_s),
        step(kv, 100).and_then(|st| st.all_status_s),
        "s",
    );
    // The time runs from the first create, so it holds how fast the API
    // server took the creates while each daemon loaded it: say so.
    let after_last = |st: &ScaleStep| Some((st.created_s?, served_after_last_create(st)?));
    if let (Some((ours_created, ours_after)), Some((theirs_created, theirs_after))) = (
        step(kvip, 100).and_then(after_last),
        step(kv, 100).and_then(after_last),
    ) {
        let _ = write!(
            cell,
            "; the API server took the 100 creates in {ours_created:.1} s (kube-vip's run: {theirs_created:.1} s), and the last Service had its status {ours_after:.1} s after its create (kube-vip {theirs_after:.1} s)"
        );
    }
    let _ = writeln!(
        out,
        "| every Service has its status, 100 Services | no later than kube-vip (issue 11) | {who} | {cell} | {verdict} |"
    );
    let big = step(kvip, 1000);
    let (cell, verdict) = match big {
        None => ("not measured".to_string(), "**not measured**".to_string()),
        Some(st) => {
            let refused = st.api.as_ref().map_or(0.0, |a| a.failed_per_second());
            let ours = st.api.as_ref().map(|a| a.total_per_second);
            let theirs = step(kv, 1000)
                .and_then(|k| k.api.as_ref())
                .map(|a| a.total_per_second);
            let served = st.created == st.services && st.with_status == st.services;
            let within = match (ours, theirs) {
                (Some(a), Some(b)) => a <= b,
                _ => false,
            };
            (
                format!(
                    "{} of {} created, {} with status; {} req/s ({:.1} refused or failed); kube-vip {}",
                    st.created,
                    st.services,
                    st.with_status,
                    ours.map_or("—".into(), |a| format!("{a:.1}")),
                    refused,
                    theirs.map_or("—".into(), |b| format!("{b:.1} req/s"))
                ),
                if theirs.is_none() {
                    "not judged: kube-vip has no number".into()
                } else {
                    pass(served && refused == 0.0 && within).to_string()
                },
            )
        }
    };
    let _ = writeln!(
        out,
        "| 1000 Services: all created and served, none refused, requests/s ≤ kube-vip's | (issue 11) | {who} | {cell} | {verdict} |"
    );
    if who.contains("membership") {
        let after = step(kvip, 1000).and_then(served_after_last_create);
        let _ = writeln!(
            out,
            "| 1000 Services served after the last create | ≤ 5 s (issue 11) | {who} | {} | {} |",
            after.map_or("not measured".into(), |a| format!("{a:.1} s")),
            after.map_or("**not measured**", |a| pass(a <= 5.0))
        );
    }
}

/// A table head: the scenario, kube-vip, each kvip variant, and one ratio
/// column per variant.
fn table_head(out: &mut String, title: &str, variants: &[&SubjectResults]) {
    let mut head = String::from("| scenario | kube-vip |");
    let mut rule = String::from("|---|---|");
    for v in variants {
        head.push_str(&format!(" {} |", v.subject));
        rule.push_str("---|");
    }
    for v in variants {
        head.push_str(&format!(" ratio (kube-vip ÷ {}) |", v.subject));
        rule.push_str("---|");
    }
    let _ = writeln!(out, "## {title}\n\n{head}\n{rule}");
}

/// One table row: kube-vip's cell, each variant's, then the ratios.
fn table_row(
    out: &mut String,
    name: &str,
    kv: (String, Option<f64>),
    cells: Vec<(String, Option<f64>)>,
) {
    let mut row = format!("| {name} | {} |", kv.0);
    for (cell, _) in &cells {
        row.push_str(&format!(" {cell} |"));
    }
    for (_, value) in &cells {
        row.push_str(&format!(" {} |", ratio(kv.1, *value)));
    }
    let _ = writeln!(out, "{row}");
}

fn latency_table(
    out: &mut String,
    r: &Results,
    kv: Option<&SubjectResults>,
    variants: &[&SubjectResults],
) {
    table_head(out, "Latency (median / p95 / p99)", variants);
    let rows: [(&str, Pick); 4] = [
        (
            "1. Service create → first answer (Local, pod Ready on worker1)",
            |s| &s.create,
        ),
        (
            "2a. graceful migration (Local), from the old pod's deletion starting",
            |s| &s.migration_from_delete,
        ),
        (
            "2b. graceful migration (Local), from the new pod Ready",
            |s| &s.migration_from_ready,
        ),
        (
            "3. holder node killed → first answer (Local, a pod on each worker)",
            |s| &s.failover,
        ),
    ];
    for (name, pick) in rows {
        let cells = variants
            .iter()
            .map(|v| (latency_cell(Some(v), pick), median_of(Some(v), pick)))
            .collect();
        table_row(
            out,
            name,
            (latency_cell(kv, pick), median_of(kv, pick)),
            cells,
        );
    }
    let idle = |s: Option<&SubjectResults>| -> (String, Option<f64>) {
        if let Some(cell) = not_run(s) {
            return (cell, None);
        }
        match s.and_then(|s| max_rss(&s.idle)) {
            Some(k) => (
                format!(
                    "{:.1} MB (per node: {})",
                    mb(k),
                    s.map(|s| s
                        .idle
                        .iter()
                        .map(|u| format!("{} {:.1}", u.node, mb(u.rss_kib)))
                        .collect::<Vec<_>>()
                        .join(", "))
                        .unwrap_or_default()
                ),
                Some(mb(k)),
            ),
            None => ("not measured".into(), None),
        }
    };
    let name = format!(
        "5. idle RSS, no Services, {} s after start (largest daemon)",
        r.settings.idle_wait_s
    );
    let cells = variants.iter().map(|v| idle(Some(v))).collect();
    table_row(out, &name, idle(kv), cells);
    out.push('\n');
}

fn scale_cell(
    s: Option<&SubjectResults>,
    n: usize,
    f: fn(&SubjectResults, &ScaleStep) -> Option<String>,
) -> (String, Option<f64>) {
    if let Some(cell) = not_run(s) {
        return (cell, None);
    }
    let (Some(sub), Some(st)) = (s, step(s, n)) else {
        if n > crate::bench::PER_SERVICE_LEASES_MAX
            && s.is_some_and(|s| s.subject != "kvip membership")
        {
            return ("not run: one Lease per Service".into(), None);
        }
        return ("not reached".into(), None);
    };
    match f(sub, st) {
        Some(v) => {
            let num = v
                .split_whitespace()
                .next()
                .and_then(|x| x.parse::<f64>().ok());
            (v, num)
        }
        None if st.error.is_some() => ("failed ²".into(), None),
        None => ("—".into(), None),
    }
}

fn scale_table(
    out: &mut String,
    r: &Results,
    kv: Option<&SubjectResults>,
    variants: &[&SubjectResults],
) {
    table_head(
        out,
        "Scale (Cluster policy, one backing pod per worker)",
        variants,
    );
    type Cell = fn(&SubjectResults, &ScaleStep) -> Option<String>;
    let rows: [(&str, Cell); 8] = [
        ("4. Services the API server accepted", |_, st| {
            Some(format!("{} of {}", st.created, st.services))
        }),
        (
            "4. every Service has status.loadBalancer.ingress",
            |_, st| st.all_status_s.map(|v| format!("{v:.1} s")),
        ),
        ("4. every sampled VIP answers the client", |_, st| {
            st.sample_answered_s
                .map(|v| format!("{v:.1} s ({} sampled)", st.sample_size))
        }),
        ("4. API requests/s at steady state, all clients", |_, st| {
            st.api
                .as_ref()
                .map(|a| format!("{:.1} req/s", a.total_per_second))
        }),
        ("4. API requests/s above the no-daemon baseline", |s, st| {
            st.api
                .as_ref()
                .map(|a| format!("{:.1} req/s", net_rate(s, a)))
        }),
        (
            "4. of those, refused by the API server (429) or failed (5xx)",
            |_, st| {
                st.api
                    .as_ref()
                    .map(|a| format!("{:.1} req/s", a.failed_per_second()))
            },
        ),
        (
            "4. daemon RSS, largest node: at the end, and the peak of the step",
            |_, st| rss_end_and_peak(st),
        ),
        ("4. daemon CPU, busiest node", |_, st| {
            st.usage
                .iter()
                .filter_map(|u| u.cpu_percent)
                .max_by(f64::total_cmp)
                .map(|c| format!("{c:.1} % of a core"))
        }),
    ];
    for &n in &r.settings.scale {
        for (name, f) in rows {
            let cells = variants.iter().map(|v| scale_cell(Some(v), n, f)).collect();
            let name = format!("{name} — {n} Service{}", if n == 1 { "" } else { "s" });
            table_row(out, &name, scale_cell(kv, n, f), cells);
        }
    }
    out.push('\n');
}

fn footnotes(out: &mut String, r: &Results, kv: Option<&SubjectResults>) {
    if let Some(reason) = kv.and_then(|k| k.unavailable.as_deref()) {
        let _ = writeln!(out, "¹ kube-vip did not run: {reason}.\n");
    }
    let mut problems = Vec::new();
    for s in &r.subjects {
        let named: [(&str, &Series); 3] = [
            ("create", &s.create),
            ("migration", &s.migration_from_delete),
            ("failover", &s.failover),
        ];
        for (name, series) in named {
            if let Some(e) = &series.error {
                problems.push(format!(
                    "{} — {name}: stopped after {} run(s): {e}",
                    s.subject,
                    series.samples_ms.len()
                ));
            }
        }
        for st in &s.scale {
            if let Some(e) = &st.error {
                problems.push(format!("{} — scale {}: {e}", s.subject, st.services));
            }
        }
        for n in &s.notes {
            problems.push(format!("{} — {n}", s.subject));
        }
    }
    if !problems.is_empty() {
        let _ = writeln!(out, "² What went wrong or looked wrong during the run:\n");
        for p in problems {
            let _ = writeln!(out, "- {p}");
        }
        out.push('\n');
    }
}

fn scale_details(out: &mut String, r: &Results) {
    for s in r.subjects.iter().filter(|s| s.unavailable.is_none()) {
        let _ = writeln!(
            out,
            "## Scale details: {}\n\n| Services (created) | creates sent in | all have status | sampled VIPs answer | req/s total | req/s baseline | req/s refused (429) or failed (5xx) | req/s on Leases (by verb) | req/s on services/status | RSS MB at the end (peak) cp1 / worker1 / worker2 | CPU % cp1 / worker1 / worker2 | VIPs per node | on two nodes | all withdrawn after delete |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            s.subject
        );
        let base = s.baseline.as_ref().map(|b| b.total_per_second);
        for st in &s.scale {
            let (total, failed, leases, status) = match &st.api {
                Some(a) => (
                    format!("{:.1}", a.total_per_second),
                    format!("{:.1}", a.failed_per_second()),
                    lease_verbs(a),
                    format!("{:.2}", a.resource("services/status")),
                ),
                None => ("—".into(), "—".into(), "—".into(), "—".into()),
            };
            let per_node = |f: &dyn Fn(&NodeUsage) -> String| {
                ["cp1", "worker1", "worker2"]
                    .iter()
                    .map(|n| st.usage.iter().find(|u| u.node == *n).map_or("—".into(), f))
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            let _ = writeln!(
                out,
                "| {} ({}) | {} | {} | {} | {total} | {} | {failed} | {leases} | {status} | {} | {} | {} | {} | {} |",
                st.services,
                st.created,
                secs(st.created_s),
                if st.all_status_s.is_some() {
                    secs(st.all_status_s)
                } else if st.created < st.services {
                    "not waited for: creates stopped".into()
                } else {
                    format!("no: {}/{}", st.with_status, st.services)
                },
                if st.sample_answered_s.is_some() {
                    format!("{} ({})", secs(st.sample_answered_s), st.sample_size)
                } else if st.created < st.services {
                    "not probed: creates stopped".into()
                } else {
                    format!("no: {}/{}", st.answered, st.sample_size)
                },
                base.map_or("—".into(), |b| format!("{b:.1}")),
                per_node(&|u| match u.peak_rss_kib {
                    Some(peak) => format!("{:.1} ({:.1})", mb(u.rss_kib), mb(peak)),
                    None => format!("{:.1}", mb(u.rss_kib)),
                }),
                per_node(&|u| u.cpu_percent.map_or("—".into(), |c| format!("{c:.1}"))),
                st.vips_per_node
                    .iter()
                    .map(|(n, c)| format!("{n} {c}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                st.duplicates,
                secs(st.withdrawn_s),
            );
        }
        out.push('\n');
        if let Some(b) = &s.baseline {
            let _ = writeln!(
                out,
                "Baseline with no daemon deployed (the lab's own clients: controller manager, kube-proxy on every node, this benchmark's scrapes): {:.2} req/s.\n",
                b.total_per_second
            );
        }
        for st in &s.scale {
            if let Some(a) = &st.api {
                let _ = writeln!(
                    out,
                    "<details><summary>{} — {} Service{}: every verb and resource (req/s)</summary>\n\n| verb | resource | code | req/s |\n|---|---|---|---|",
                    s.subject,
                    st.services,
                    if st.services == 1 { "" } else { "s" }
                );
                for rate in &a.by {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {:.2} |",
                        rate.verb, rate.resource, rate.code, rate.per_second
                    );
                }
                let _ = writeln!(out, "\n</details>\n");
            }
        }
    }
}

fn lease_verbs(a: &ApiRates) -> String {
    let parts: Vec<String> =
        a.by.iter()
            .filter(|r| r.resource == "leases")
            .map(|r| format!("{} {} {:.1}", r.verb, r.code, r.per_second))
            .collect();
    if parts.is_empty() {
        "0".into()
    } else {
        format!("{:.1} ({})", a.resource("leases"), parts.join(", "))
    }
}

fn definitions(out: &mut String, r: &Results) {
    let s = &r.settings;
    let _ = writeln!(
        out,
        "## How each number is taken\n\n\
All times are read on the machine's monotonic clock. \"First answer\" is the arrival at the client \
namespace of the first line a pod's responder sends through the VIP (`NODE/POD`), from a node that \
is allowed to answer. Probes start every 10 ms, each on its own connection with a 1 s timeout, so a \
dropped SYN does not hide a later success; the resolution is about 10 ms. Median: the middle sample \
(mean of the two middle ones for an even count). p95 and p99: nearest rank (with 20 samples, the 19th smallest and the largest).\n\n\
1. **Service create → first answer** ({} runs): a pod is Ready on worker1 beforehand; the clock starts \
just before the create request for a `LoadBalancer` Service (`externalTrafficPolicy: Local`, VIP in \
`kube-vip.io/loadbalancerIPs`) is sent. It includes the endpointslice controller writing the \
EndpointSlice, the daemon's election and ARP, its status write, and kube-proxy \
programming the DNAT (it acts on `status.loadBalancer.ingress`). kube-proxy applies changes at most \
once a second by default (its minimum sync period): it syncs for the create at once and for the status \
written a moment later only a second after that, so this scenario has a floor of about one second for \
every daemon on a cluster with kube-proxy's defaults; scenario 2 shows the daemons' own speed. The client forgets \
its neighbour entry for the VIP before each run. Each run uses a new Service and waits until its VIP \
has left every node after deletion.\n\
2. **Graceful migration** ({} runs, alternating worker1 ↔ worker2): the Service's only pod is replaced \
as a rolling update does it. The new pod is created on the other worker and made Ready; at once the \
old pod's deletion starts (graceful delete: its endpoint turns terminating, its process stops 300 ms \
later, then it is removed). The clock stops at the first answer from the new pod's node. \
**2a** starts the clock when the old pod's deletion starts; **2b** when `kvip-lab pod` returned \
after writing the new pod's Ready condition (a few ms earlier than 2a's start). The client keeps its \
neighbour entry (it points at the old node until the new holder's gratuitous ARP).\n\
3. **Holder node killed** ({} runs): `externalTrafficPolicy: Local`, a pod on each worker, so with \
either daemon the holder is a worker (cp1 runs the lab's only API server and no pod of the Service; \
it is also labelled `{}`, which kube-vip, and kvip unless `kvip_exclude_lb_label=true`, ignore). The clock starts just \
before `kvip-lab fault kill-node` (every process of the node SIGKILLed, its link down); it stops at the \
first answer through the other worker. The node is revived and the VIP left to settle between runs. \
The goal allows lease duration + 0.5 s = {:.1} s.\n\
4. **Scale** ({}): N `Cluster` Services created at once (16 requests in flight) with VIPs 10.200.x.y \
(outside the bridge subnet, on-link for the client through a route in its namespace; both daemons put \
them on `eth0`), backed by one pod per worker. \"All have status\" is read from \
`status.loadBalancer.ingress` of every Service; \"sampled VIPs answer\" probes min(N, 50) VIPs spread \
over the range from the client. After 10 s to settle, a {} s window: API requests are counted at the \
API server from `apiserver_request_total` (`kubectl get --raw /metrics` before and after, every client \
included — the baseline row is the same window with no daemon deployed — and split by verb, resource \
and answer code: 429 means the API server's in-flight limit refused the request, 504 that it timed \
out, 409 a lost Lease race), and each daemon's RSS \
(`VmRSS` from `/proc/PID/status` at the end of the window, and its peak `VmHWM` over the whole step: \
reset through `/proc/PID/clear_refs` when the step begins, so it covers the creates, convergence, \
settling and the window) and CPU (utime + stime delta from `/proc/PID/stat` \
over the window, percent of one core). Daemons are found as the processes whose command line is the \
daemon binary followed by `manager`; their node is the network namespace they run in. Then the \
Services are deleted and the time until the last VIP leaves the interfaces is taken. Creates stop at \
the first one the API server refuses or leaves unanswered for 30 s (the client's own retries included); a step that does not converge is still measured over the window \
and ends the scenario. Steps above {} Services run only for kvip membership: with one Lease per Service (kube-vip, the \
drop-in) they are beyond the lab's one API server.\n\
5. **Idle RSS**: `VmRSS` of each daemon {} s after deployment, no Service in the cluster. \
MB here means 10⁶ bytes.\n",
        s.runs,
        s.runs,
        s.failover_runs,
        crate::bench::scenarios::EXCLUDE_LABEL,
        (f64::from(s.lease_duration_s) * 1000.0 + FAILOVER_SLACK_MS) / 1000.0,
        s.scale
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        s.window_s,
        crate::bench::PER_SERVICE_LEASES_MAX,
        s.idle_wait_s,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::results::{Machine, Settings};

    fn scale_step(n: usize, cpu: f64, status_s: f64, req: f64, refused: f64) -> ScaleStep {
        ScaleStep {
            services: n,
            created: n,
            created_s: Some(10.0),
            all_status_s: Some(status_s),
            with_status: n,
            api: Some(ApiRates {
                window_s: 30.0,
                total_per_second: req,
                by: vec![crate::bench::results::RequestRate {
                    verb: "PUT".into(),
                    resource: "leases".into(),
                    code: if refused > 0.0 { "429" } else { "200" }.into(),
                    per_second: if refused > 0.0 { refused } else { req },
                }],
            }),
            usage: vec![NodeUsage {
                node: "worker1".into(),
                pid: 1,
                rss_kib: 1,
                peak_rss_kib: None,
                cpu_percent: Some(cpu),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn scale_goals_compare_with_kube_vip_at_100_and_1000_services() {
        let mut r = results();
        r.settings.scale = vec![100, 1000];
        r.subjects[0] = SubjectResults {
            subject: "kube-vip".into(),
            scale: vec![
                scale_step(100, 8.7, 8.2, 225.0, 0.0),
                scale_step(1000, 9.0, 400.0, 200.0, 0.0),
            ],
            ..Default::default()
        };
        r.subjects[1].scale = vec![
            scale_step(100, 3.1, 7.0, 100.0, 0.0),
            scale_step(1000, 20.0, 60.0, 471.0, 379.0),
        ];
        let mut membership = r.subjects[1].clone();
        membership.subject = "kvip membership".into();
        membership.scale = vec![
            scale_step(100, 1.0, 5.0, 3.0, 0.0),
            scale_step(1000, 5.0, 13.0, 4.0, 0.0),
        ];
        r.subjects.push(membership);
        let md = render(&r, &[]);
        assert!(md.contains("| daemon CPU, busiest node, 100 Services | ≤ kube-vip's (issue 11) | kvip | 3.1 % of a core (kube-vip 8.7 % of a core) | **pass** |"), "{md}");
        assert!(md.contains("| every Service has its status, 100 Services | no later than kube-vip (issue 11) | kvip | 7.0 s (kube-vip 8.2 s); the API server took the 100 creates in 10.0 s (kube-vip's run: 10.0 s), and the last Service had its status 0.0 s after its create (kube-vip 0.0 s) | **pass** |"), "{md}");
        assert!(
            md.contains("471.0 req/s (379.0 refused or failed); kube-vip 200.0 req/s | **FAIL** |"),
            "{md}"
        );
        assert!(md.contains("| kvip membership | 1000 of 1000 created, 1000 with status; 4.0 req/s (0.0 refused or failed); kube-vip 200.0 req/s | **pass** |"), "{md}");
        assert!(md.contains("| 1000 Services served after the last create | ≤ 5 s (issue 11) | kvip membership | 3.0 s | **pass** |"), "{md}");
    }

    fn results() -> Results {
        Results {
            machine: Machine {
                cores: 2,
                cpu_model: "Test CPU".into(),
                mem_total_kib: 24 * 1024 * 1024,
                kernel: "6.1.0".into(),
                date: "2026-01-01T00:00:00Z".into(),
                kubernetes: "v1.34.4".into(),
                build_profile: "release".into(),
                source: "abc".into(),
            },
            settings: Settings {
                runs: 3,
                failover_runs: 2,
                scale: vec![1],
                lease_duration_s: 5,
                renew_deadline_s: 3,
                retry_period_s: 1,
                window_s: 30,
                idle_wait_s: 10,
            },
            subjects: vec![
                SubjectResults {
                    subject: "kube-vip".into(),
                    unavailable: Some("the module proxy said no".into()),
                    ..Default::default()
                },
                SubjectResults {
                    subject: "kvip".into(),
                    version: "kvip 0.1.0".into(),
                    create: Series {
                        samples_ms: vec![100.0, 150.0, 120.0],
                        error: None,
                    },
                    migration_from_ready: Series {
                        samples_ms: vec![300.0, 250.0, 260.0],
                        error: None,
                    },
                    failover: Series {
                        samples_ms: vec![5200.0, 5800.0],
                        error: None,
                    },
                    idle: vec![NodeUsage {
                        node: "cp1".into(),
                        pid: 1,
                        rss_kib: 9000,
                        peak_rss_kib: Some(9500),
                        cpu_percent: None,
                    }],
                    scale: vec![ScaleStep {
                        services: 1,
                        error: Some("boom".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn goals_say_pass_and_fail_and_why_kube_vip_is_missing() {
        let md = render(&results(), &[]);
        assert!(
            md.contains(
                "| Service create → first answer, median | < 200 ms (issue 3) | kvip | 120 ms | **pass** |"
            ),
            "{md}"
        );
        assert!(md.contains("graceful migration from new pod Ready, median | < 200 ms (issue 3) | kvip | 260 ms | **FAIL**"), "{md}");
        assert!(md.contains("max 5.80 s (n=2) | **FAIL**"), "{md}");
        assert!(md.contains("9.2 MB | **pass**"), "{md}");
        assert!(md.contains("kube-vip did not run: the module proxy said no."));
        assert!(
            md.contains("| not run ¹ | 120 / 150 / 150 ms (n=3) | — |"),
            "{md}"
        );
        assert!(md.contains("kvip — scale 1: boom"), "{md}");
    }

    /// Usage of two nodes' daemons: RSS at the end and peak, MB.
    fn usage(worker1: (f64, f64), worker2: (f64, f64)) -> Vec<NodeUsage> {
        let kib = |mb: f64| (mb * 1e6 / 1024.0).round() as u64;
        [("worker1", worker1), ("worker2", worker2)]
            .into_iter()
            .map(|(node, (end, peak))| NodeUsage {
                node: node.into(),
                pid: 1,
                rss_kib: kib(end),
                peak_rss_kib: Some(kib(peak)),
                cpu_percent: Some(1.0),
            })
            .collect()
    }

    #[test]
    fn rss_at_1000_and_3000_services_is_reported_with_its_peak_beside_kube_vip() {
        let mut r = results();
        r.settings.scale = vec![100, 1000, 3000];
        let mut kv_1000 = scale_step(1000, 9.0, 400.0, 200.0, 0.0);
        kv_1000.usage = usage((98.5, 120.0), (90.0, 130.2));
        r.subjects[0] = SubjectResults {
            subject: "kube-vip".into(),
            scale: vec![scale_step(100, 8.7, 8.2, 225.0, 0.0), kv_1000],
            ..Default::default()
        };
        let mut ours_1000 = scale_step(1000, 20.0, 60.0, 100.0, 0.0);
        ours_1000.usage = usage((52.4, 61.0), (64.9, 80.1));
        r.subjects[1].scale = vec![scale_step(100, 3.1, 7.0, 100.0, 0.0), ours_1000.clone()];
        let mut membership = r.subjects[1].clone();
        membership.subject = "kvip membership".into();
        let mut ours_3000 = scale_step(3000, 5.0, 13.0, 4.0, 0.0);
        ours_3000.usage = usage((111.9, 150.0), (100.0, 140.0));
        membership.scale = vec![ours_1000, ours_3000];
        r.subjects.push(membership);
        let md = render(&r, &[]);
        let goal = "| daemon RSS, largest node, 1000 Services: at the end, and the peak of the step | measured (issue 13) |";
        assert!(
            md.contains(&format!(
                "{goal} kvip | 64.9 MB, peak 80.1 MB (kube-vip 98.5 MB, peak 130.2 MB) | measured |"
            )),
            "{md}"
        );
        let goal = "| daemon RSS, largest node, 3000 Services: at the end, and the peak of the step | measured (issue 13) |";
        assert!(
            md.contains(&format!(
                "{goal} kvip | not run: one Lease per Service | — |"
            )),
            "{md}"
        );
        assert!(
            md.contains(&format!("{goal} kvip membership | 111.9 MB, peak 150.0 MB (kube-vip: not run at this scale (one Lease per Service)) | measured |")),
            "{md}"
        );
        // The scale table: kube-vip, kvip, membership, then the ratios of the ends.
        assert!(
            md.contains("| 4. daemon RSS, largest node: at the end, and the peak of the step — 1000 Services | 98.5 MB, peak 130.2 MB | 64.9 MB, peak 80.1 MB | 64.9 MB, peak 80.1 MB | 1.5× | 1.5× |"),
            "{md}"
        );
        // Per node in the details: the end, the peak in brackets.
        assert!(md.contains("| — / 52.4 (61.0) / 64.9 (80.1) |"), "{md}");
    }
}
