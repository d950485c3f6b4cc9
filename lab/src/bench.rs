//! `kvip-lab bench`: kvip and kube-vip side by side on the lab. For each
//! daemon that can run, a fresh lab is brought up, the daemon deployed from
//! its DaemonSet manifest with the same environment, the five scenarios run,
//! and the lab taken down; then `results.md`, `results.json` and the plots
//! are written. A daemon that cannot run keeps its column with the reason.

pub mod apiserver;
pub mod plots;
pub mod probe;
pub mod report;
pub mod results;
pub mod scenarios;
pub mod stats;
pub mod subject;
pub mod testbed;
pub mod usage;

use crate::commands;
use crate::layout::LabShape;
use anyhow::Context;
use results::{Machine, Results, Settings, SubjectResults};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use subject::{Availability, Subject};
use testbed::Testbed;

/// Length of every steady-state window (API requests, CPU).
pub const WINDOW: Duration = Duration::from_secs(30);
/// Wait after deploying before the idle RSS is read.
pub const IDLE_WAIT: Duration = Duration::from_secs(10);
/// VIPs the scale scenario probes per step at most.
pub const SCALE_SAMPLE: usize = 50;
/// The largest scale step for a daemon with one Lease per Service (kube-vip,
/// kvip as a drop-in); larger steps run in membership mode only: one Lease
/// per Service renewed every second is beyond the lab's one API server well
/// before 3000, and such a step would take most of an hour to time out.
pub const PER_SERVICE_LEASES_MAX: usize = 1000;

/// What `kvip-lab bench` was asked for.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Repetitions of the create and migration scenarios.
    pub runs: usize,
    /// Repetitions of the node-kill scenario.
    pub failover_runs: usize,
    /// Service counts of the scale scenario.
    pub scale: Vec<usize>,
    /// Folder for `results.md`, `results.json` and the PNGs.
    pub out: PathBuf,
    /// Only draw the report and plots again from `out/results.json`.
    pub render_only: bool,
    /// Only the daemons with these slugs (empty: all three).
    pub only: Vec<String>,
}

/// Why the benchmark did not start.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Someone else's lab (or tests) is using the machine's only lab.
    #[error(
        "a lab is up already ({0}); the benchmark brings up its own: wait until whoever uses it is done, or run `kvip-lab down` if it is yours"
    )]
    LabBusy(String),
    /// The kvip binary is missing.
    #[error("kvip cannot run: {0} (build it with `cargo build --release --bins`)")]
    NoKvip(String),
    /// `--runs` or `--failover-runs` of zero, or an empty `--scale`.
    #[error("{0}")]
    BadOptions(String),
}

/// `kvip-lab bench`.
pub fn run(opts: &BenchOptions) -> anyhow::Result<()> {
    let json = opts.out.join("results.json");
    if opts.render_only {
        let text = std::fs::read_to_string(&json)
            .with_context(|| format!("reading {}", json.display()))?;
        let mut results: Results =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", json.display()))?;
        for s in &mut results.subjects {
            s.unavailable = s.unavailable.as_deref().map(subject::redact_hosts);
        }
        return write_report(&results, &opts.out);
    }
    let all = [Subject::KubeVip, Subject::Kvip, Subject::KvipMembership];
    if let Some(unknown) = opts
        .only
        .iter()
        .find(|o| !all.iter().any(|s| s.slug() == o.as_str()))
    {
        return Err(BenchError::BadOptions(format!(
            "--only {unknown:?}: the daemons are {}",
            all.map(Subject::slug).join(", ")
        ))
        .into());
    }
    let wanted = |who: Subject| opts.only.is_empty() || opts.only.iter().any(|o| o == who.slug());
    if opts.runs == 0 || opts.failover_runs == 0 || opts.scale.is_empty() {
        return Err(BenchError::BadOptions(
            "--runs and --failover-runs must be at least 1 and --scale must name a count".into(),
        )
        .into());
    }
    commands::require_root()?;
    let busy = crate::network::lab_namespaces();
    if !busy.is_empty() {
        return Err(BenchError::LabBusy(format!("namespaces {}", busy.join(" "))).into());
    }
    let kvip_bin = match subject::kvip() {
        Availability::Ready(path) => path,
        Availability::Unavailable(reason) => return Err(BenchError::NoKvip(reason).into()),
    };
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let clock = Instant::now();
    let mut log = |line: &str| eprintln!("[bench {:>6.1} s] {line}", clock.elapsed().as_secs_f64());
    let (duration, deadline, retry) = subject::LEASE_TIMINGS;
    let mut results = Results {
        machine: machine(&kvip_bin),
        settings: Settings {
            runs: opts.runs,
            failover_runs: opts.failover_runs,
            scale: opts.scale.clone(),
            lease_duration_s: duration,
            renew_deadline_s: deadline,
            retry_period_s: retry,
            window_s: WINDOW.as_secs(),
            idle_wait_s: IDLE_WAIT.as_secs(),
        },
        subjects: Vec::new(),
    };
    let kube_vip = if wanted(Subject::KubeVip) {
        subject::kube_vip(&mut log)
    } else {
        Availability::Unavailable("not asked for (--only)".into())
    };
    if let Availability::Unavailable(reason) = &kube_vip {
        log(&format!("kube-vip will not run: {reason}"));
    }
    for (who, availability) in [
        (Subject::KubeVip, kube_vip),
        (Subject::Kvip, Availability::Ready(kvip_bin.clone())),
        (Subject::KvipMembership, Availability::Ready(kvip_bin)),
    ] {
        if !wanted(who) {
            continue;
        }
        let outcome = match availability {
            Availability::Ready(bin) => {
                run_subject(who, &bin, opts, &mut results.machine, &mut log)
            }
            Availability::Unavailable(reason) => SubjectResults {
                subject: who.name().into(),
                version: format!(
                    "{}@{} (image ghcr.io/kube-vip/kube-vip:{})",
                    subject::KUBE_VIP_MODULE,
                    subject::KUBE_VIP_VERSION,
                    subject::KUBE_VIP_VERSION
                ),
                unavailable: Some(reason),
                ..Default::default()
            },
        };
        results.subjects.push(outcome);
        // Keep what is measured so far even if a later daemon breaks the run.
        save_json(&results, &json)?;
    }
    write_report(&results, &opts.out)?;
    log(&format!("done: {}", opts.out.join("results.md").display()));
    Ok(())
}

fn save_json(results: &Results, path: &Path) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(results)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Writes `results.json`, the plots and `results.md` into `out`.
fn write_report(results: &Results, out: &Path) -> anyhow::Result<()> {
    save_json(results, &out.join("results.json"))?;
    let (plots, problem) = match plots::draw_all(results, out) {
        Ok(plots) => (plots, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let mut md = report::render(results, &plots);
    if let Some(problem) = problem {
        md.push_str(&format!("## Plots\n\nNot drawn: {problem}.\n"));
    }
    let path = out.join("results.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))
}

/// Takes the lab down when dropped, however the subject's run ended.
/// Only the lab this run brought up is taken down: if another user replaced
/// it meanwhile, theirs is left alone.
struct LabGuard {
    /// etcd's pid in the lab this run brought up: the lab's identity.
    etcd: Option<i32>,
}

impl LabGuard {
    fn etcd_pid() -> Option<i32> {
        let state = crate::state::LabState::load(&crate::state::Paths::new()).ok()??;
        state
            .processes
            .iter()
            .find(|p| p.kind == crate::state::ProcessKind::Etcd)
            .and_then(|p| p.pid)
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        let now = Self::etcd_pid();
        if now.is_some() && now != self.etcd {
            eprintln!(
                "kvip-lab bench: the lab up now is not the one the benchmark started; leaving it alone"
            );
            return;
        }
        if let Err(e) = commands::down() {
            eprintln!("kvip-lab bench: taking the lab down: {e:#}");
        }
    }
}

/// A fresh lab, the daemon deployed, the five scenarios, the lab down.
fn run_subject(
    who: Subject,
    bin: &Path,
    opts: &BenchOptions,
    machine: &mut Machine,
    log: &mut dyn FnMut(&str),
) -> SubjectResults {
    let mut sr = SubjectResults {
        subject: who.name().into(),
        version: version(who, bin),
        ..Default::default()
    };
    log(&format!("{}: bringing a fresh lab up", who.name()));
    if let Err(e) = commands::up(LabShape {
        nodes: 3,
        control_plane: 1,
        ipv6: false,
        ipvs_dummy: false,
    }) {
        sr.notes.push(format!("the lab did not come up: {e:#}"));
        return sr;
    }
    let guard = LabGuard {
        etcd: LabGuard::etcd_pid(),
    };
    let run = scenarios_on_lab(who, bin, opts, machine, &mut sr, log);
    if let Err(e) = run {
        log(&format!("{}: stopped: {e:#}", who.name()));
        sr.notes.push(format!("the run stopped: {e:#}"));
    }
    keep_logs(who, log);
    drop(guard);
    sr
}

fn scenarios_on_lab(
    who: Subject,
    bin: &Path,
    opts: &BenchOptions,
    machine: &mut Machine,
    sr: &mut SubjectResults,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<()> {
    let tb = Testbed::connect()?;
    machine.kubernetes = tb.kubernetes_version.clone();
    tb.ensure_namespace()?;
    log(&format!(
        "{}: {} s of API requests with no daemon (the lab's baseline)",
        who.name(),
        WINDOW.as_secs()
    ));
    let before = tb.request_counts()?;
    let started = Instant::now();
    std::thread::sleep(WINDOW);
    let after = tb.request_counts()?;
    sr.baseline = Some(apiserver::rates(
        &before,
        &after,
        started.elapsed().as_secs_f64(),
    ));
    let manifest = subject::manifest(who)?;
    let path = std::env::temp_dir().join(format!(
        "kvip-bench-{}-{}.yaml",
        std::process::id(),
        who.slug()
    ));
    std::fs::write(&path, manifest).with_context(|| format!("writing {}", path.display()))?;
    commands::deploy(&path, &[], false)?;
    std::thread::sleep(IDLE_WAIT);
    sr.idle = Testbed::usage_between(&[], &tb.daemon_samples(bin), IDLE_WAIT);
    log(&format!(
        "{}: idle RSS {}",
        who.name(),
        sr.idle
            .iter()
            .map(|u| format!("{} {:.1} MB", u.node, u.rss_kib as f64 * 1024.0 / 1e6))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    check_daemons(&tb, bin, "after deployment", sr)?;
    log(&format!("{}: 1. Service create → first answer", who.name()));
    sr.create = scenarios::create_to_probe(&tb, opts.runs, log);
    check_daemons(&tb, bin, "after scenario 1", sr)?;
    log(&format!("{}: 2. graceful migration", who.name()));
    (sr.migration_from_delete, sr.migration_from_ready) = scenarios::migration(&tb, opts.runs, log);
    check_daemons(&tb, bin, "after scenario 2", sr)?;
    log(&format!("{}: 3. holder node killed", who.name()));
    sr.failover = scenarios::failover(&tb, opts.failover_runs, log);
    check_daemons(&tb, bin, "after scenario 3", sr)?;
    let counts: Vec<usize> = opts
        .scale
        .iter()
        .copied()
        .filter(|&n| who == Subject::KvipMembership || n <= PER_SERVICE_LEASES_MAX)
        .collect();
    log(&format!("{}: 4. scale {:?}", who.name(), counts));
    sr.scale = scenarios::scale(
        &tb,
        &scenarios::ScalePlan {
            counts: &counts,
            window: WINDOW,
            binary: bin,
            sample: SCALE_SAMPLE,
        },
        log,
    );
    check_daemons(&tb, bin, "after scenario 4", sr)?;
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// Stops the run when the lab is gone (the lab is one per machine: another
/// user's `kvip-lab down` removes it), and notes when fewer daemons run
/// than nodes (one crashed or never started).
fn check_daemons(
    tb: &Testbed,
    bin: &Path,
    when: &str,
    sr: &mut SubjectResults,
) -> anyhow::Result<()> {
    let namespaces = crate::network::lab_namespaces();
    if namespaces.len() < tb.nodes.len() + crate::layout::SHARED_NAMESPACES {
        anyhow::bail!(
            "the lab disappeared {when} (namespaces left: {namespaces:?}): someone else's `kvip-lab down`, \
             an end-to-end test's teardown perhaps, removed it; run the benchmark again when the machine's lab is free"
        );
    }
    let running = usage::find_daemons(bin, &tb.nodes);
    if running.len() < tb.nodes.len() {
        let on: Vec<&str> = running.iter().map(|d| d.node.as_str()).collect();
        sr.notes.push(format!(
            "{when}: only {} of {} daemons running (on {:?}); see the logs",
            running.len(),
            tb.nodes.len(),
            on
        ));
    }
    Ok(())
}

/// Copies the lab's logs out before `down` removes them.
fn keep_logs(who: Subject, log: &mut dyn FnMut(&str)) {
    let from = crate::state::Paths::new().root.join("logs");
    let to = std::env::temp_dir()
        .join("kvip-bench-logs")
        .join(who.slug());
    let _ = std::fs::remove_dir_all(&to);
    let copied = std::fs::create_dir_all(&to).is_ok()
        && crate::process::run(
            "cp",
            &[
                "-r",
                &format!("{}/.", from.display()),
                &to.display().to_string(),
            ],
        )
        .is_ok();
    if copied {
        log(&format!(
            "{}: lab logs kept in {}",
            who.name(),
            to.display()
        ));
    }
}

/// `BINARY version`'s first line, or the path when it has none.
fn version(who: Subject, bin: &Path) -> String {
    let out = std::process::Command::new(bin).arg("version").output();
    let line = out
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            // kube-vip prints a title, then `Version:  vX.Y.Z`.
            let version = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("Version:"))
                .map(|v| format!("{} {}", who.name(), v.trim()));
            version.or_else(|| {
                text.lines()
                    .find(|l| !l.trim().is_empty())
                    .map(|l| l.trim().to_string())
            })
        })
        .unwrap_or_else(|| who.name().to_string());
    format!("{line} ({})", bin.display())
}

/// The machine line: cores, CPU, memory, kernel, date, build profile.
fn machine(kvip_bin: &Path) -> Machine {
    let cores = crate::process::run("nproc", &[])
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_total_kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = crate::process::run("uname", &["-r"])
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let lab_profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let kvip_release = kvip_bin.components().any(|c| c.as_os_str() == "release");
    let build_profile = if lab_profile == "release" && kvip_release {
        "release".to_string()
    } else {
        format!("kvip-lab {lab_profile}, kvip from {}", kvip_bin.display())
    };
    Machine {
        cores,
        cpu_model,
        mem_total_kib,
        kernel,
        date: crate::cluster::now_rfc3339(),
        kubernetes: String::new(),
        build_profile,
        source: source_revision(),
    }
}

/// The commit of the work tree the benchmark runs in, and whether it has
/// uncommitted changes (then the numbers are not those of the commit alone).
fn source_revision() -> String {
    let head = crate::process::run("git", &["rev-parse", "--short=12", "HEAD"])
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if head.is_empty() {
        return "unknown (not run from a git work tree)".into();
    }
    let dirty = crate::process::run("git", &["status", "--porcelain", "--untracked-files=no"])
        .map(|s| !s.trim().is_empty())
        .unwrap_or(false);
    if dirty {
        format!("{head} plus uncommitted changes")
    } else {
        head
    }
}
