//! What a benchmark run found, as plain data: written to `results.json`
//! beside the report so the report and plots can be drawn again without
//! running the lab (`kvip-lab bench --render-only`).

use serde::{Deserialize, Serialize};

/// Everything one `kvip-lab bench` run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// The machine and build the numbers come from.
    pub machine: Machine,
    /// How the run was set up.
    pub settings: Settings,
    /// One entry per daemon, kube-vip first.
    pub subjects: Vec<SubjectResults>,
}

/// The machine line of the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// `nproc`.
    pub cores: usize,
    /// CPU model from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `MemTotal` from `/proc/meminfo`, KiB.
    pub mem_total_kib: u64,
    /// `uname -r`.
    pub kernel: String,
    /// When the run started (UTC, RFC 3339).
    pub date: String,
    /// Kubernetes version of the lab's control plane.
    pub kubernetes: String,
    /// How kvip and kvip-lab were built (`release` or `debug`).
    pub build_profile: String,
    /// Git commit of the work tree the benchmark ran from.
    #[serde(default)]
    pub source: String,
}

/// How the run was set up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Repetitions of the create and migration scenarios.
    pub runs: usize,
    /// Repetitions of the node-kill scenario.
    pub failover_runs: usize,
    /// Service counts of the scale scenario.
    pub scale: Vec<usize>,
    /// `vip_leaseduration`, seconds.
    pub lease_duration_s: u32,
    /// `vip_renewdeadline`, seconds.
    pub renew_deadline_s: u32,
    /// `vip_retryperiod`, seconds.
    pub retry_period_s: u32,
    /// Length of each steady-state window, seconds.
    pub window_s: u64,
    /// Wait after deploying before the idle RSS is read, seconds.
    pub idle_wait_s: u64,
}

/// Latency samples of one scenario, and why it stopped early if it did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Series {
    /// One sample per successful run, milliseconds.
    pub samples_ms: Vec<f64>,
    /// The failure that ended the scenario before all runs were done.
    pub error: Option<String>,
}

/// CPU and memory of one daemon process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeUsage {
    /// Lab node.
    pub node: String,
    /// Process id.
    pub pid: i32,
    /// Resident set size at the end of the window, KiB.
    pub rss_kib: u64,
    /// The largest resident set size (`VmHWM`), KiB: for a scale step, over
    /// the whole step (creates, convergence and the window; the peak is reset
    /// when the step begins); for the idle reading, since the daemon started.
    #[serde(default)]
    pub peak_rss_kib: Option<u64>,
    /// CPU used over the window, percent of one core.
    pub cpu_percent: Option<f64>,
}

/// Requests per second for one verb on one resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestRate {
    /// HTTP verb as the API server labels it (GET, LIST, WATCH, PUT, PATCH, POST…).
    pub verb: String,
    /// Resource, with `/subresource` when there is one.
    pub resource: String,
    /// HTTP status code of the answers (429 throttled, 504 timed out, 409 conflict).
    #[serde(default)]
    pub code: String,
    /// Requests per second over the window.
    pub per_second: f64,
}

/// API requests counted at the API server over one window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiRates {
    /// Window length, seconds.
    pub window_s: f64,
    /// Every request, every client.
    pub total_per_second: f64,
    /// Per verb and resource, largest first.
    pub by: Vec<RequestRate>,
}

impl ApiRates {
    /// Requests per second on one resource, all verbs.
    pub fn resource(&self, resource: &str) -> f64 {
        self.by
            .iter()
            .filter(|r| r.resource == resource)
            .map(|r| r.per_second)
            .fold(0.0, |a, b| a + b)
    }

    /// Requests per second the API server refused (429) or failed (5xx).
    pub fn failed_per_second(&self) -> f64 {
        self.by
            .iter()
            .filter(|r| r.code == "429" || r.code.starts_with('5'))
            .map(|r| r.per_second)
            .fold(0.0, |a, b| a + b)
    }
}

/// One step of the scale scenario.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScaleStep {
    /// LoadBalancer Services asked for, created at once.
    pub services: usize,
    /// How many of them the API server accepted (creation stops at the first refusal).
    #[serde(default)]
    pub created: usize,
    /// Time to send every create request, seconds.
    pub created_s: Option<f64>,
    /// From the first create to every Service having `status.loadBalancer.ingress`, seconds.
    pub all_status_s: Option<f64>,
    /// Services with an ingress address when the step stopped waiting.
    pub with_status: usize,
    /// How many VIPs were probed from the client.
    pub sample_size: usize,
    /// From the first create to every probed VIP answering, seconds.
    pub sample_answered_s: Option<f64>,
    /// Probed VIPs that answered.
    pub answered: usize,
    /// API requests during the steady-state window.
    pub api: Option<ApiRates>,
    /// Daemons' RSS and CPU during the window.
    pub usage: Vec<NodeUsage>,
    /// Scale VIPs on each node's interface at the end of the window.
    pub vips_per_node: Vec<(String, usize)>,
    /// VIPs on more than one node at once at the end of the window.
    pub duplicates: usize,
    /// From deleting the Services to the last VIP leaving the interfaces, seconds.
    pub withdrawn_s: Option<f64>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// Everything measured for one daemon.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubjectResults {
    /// `kube-vip` or `kvip`.
    pub subject: String,
    /// Version and build of the binary.
    pub version: String,
    /// Why this daemon could not run at all (its column then says so).
    pub unavailable: Option<String>,
    /// API requests with no daemon deployed (the lab's own background).
    pub baseline: Option<ApiRates>,
    /// Idle RSS per node after the idle wait, no Services.
    pub idle: Vec<NodeUsage>,
    /// Scenario 1: Service create → first successful probe.
    pub create: Series,
    /// Scenario 2, from the old pod's deletion starting.
    pub migration_from_delete: Series,
    /// Scenario 2, from the new pod being Ready.
    pub migration_from_ready: Series,
    /// Scenario 3: holder node killed → first successful probe.
    pub failover: Series,
    /// Scenario 4.
    pub scale: Vec<ScaleStep>,
    /// Anything worth knowing that is not a number.
    pub notes: Vec<String>,
}
