//! Prometheus metrics (prefix `kvip_`, plus kube-vip's names where the
//! meaning matches), and the signals `/healthz` and `/readyz` are judged by
//! ([`crate::health`]): the loops' beats, the start, the conflict
//! listeners and what each API watch delivered.

use crate::health::{self, Health};
use kvip_core::Mono;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Labels of an API request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// Kubernetes resource.
    pub resource: String,
    /// Verb.
    pub verb: String,
    /// `ok` or `error`.
    pub result: String,
}

/// Labels carrying a role.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    /// `lb` or `cp`.
    pub role: String,
}

/// Labels carrying a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Short reason code.
    pub reason: String,
}

/// Labels carrying an address family.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FamilyLabels {
    /// `ipv4` or `ipv6`.
    pub family: String,
}

/// Build information.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// kvip version.
    pub version: String,
}

/// Every metric kvip exports.
pub struct Metrics {
    registry: Registry,
    /// API requests by resource, verb and result.
    pub api_requests: Family<ApiLabels, Counter>,
    /// VIPs on this node's interfaces, per role.
    pub vips_held: Family<RoleLabels, Gauge>,
    /// Leases won.
    pub elections_won: Family<RoleLabels, Counter>,
    /// Leases lost or released.
    pub elections_lost: Family<RoleLabels, Counter>,
    /// Handovers by reason.
    pub handovers: Family<ReasonLabels, Counter>,
    /// Gratuitous ARP / NA frames sent.
    pub gratuitous_sent: Family<FamilyLabels, Counter>,
    /// Seconds from the decision to take a VIP to its first gratuitous packet.
    pub takeover_seconds: Histogram,
    /// Services kvip owns that are pending, by reason.
    pub pending: Family<ReasonLabels, Gauge>,
    /// Address conflicts seen on the wire.
    pub conflicts: Counter,
    /// kube-vip compatible: 1 while this node holds a control-plane or services Lease.
    pub kube_vip_is_leader: Gauge,
    /// kube-vip compatible: Services this node announces.
    pub kube_vip_active_services: Gauge,
    /// API writes held back by the write budget or a backoff, by resource.
    pub api_throttled: Family<ResourceLabels, Counter>,
    /// Objects whose writes back off after a 429, 5xx or 403.
    pub api_backing_off: Gauge,
    /// How many times the configured Lease timings this node writes (1: as configured).
    pub lease_stretch: Gauge,
    /// 1 while the kernel's interface state is followed, 0 while netlink fails.
    pub netlink_up: Gauge,
    /// Interfaces holding a role's VIPs without a working conflict listener.
    pub listeners_down: Family<RoleLabels, Gauge>,
    /// Claims heard but dropped because the consumer was behind.
    pub claims_dropped: Counter,
    /// Defences of a claimed VIP by outcome (`sent`, `suppressed`).
    pub defences: Family<StateLabels, Counter>,
    /// VIPs found missing from the kernel (removed by someone else) and put back.
    pub addresses_restored: Counter,
    /// Connections to the metrics endpoint open now.
    pub http_connections: Gauge,
    /// Connections to the metrics endpoint closed by kvip, by reason.
    pub http_closed: Family<ReasonLabels, Counter>,
    /// Failed accepts on the metrics endpoint (out of file descriptors, ...).
    pub http_accept_errors: Counter,
    /// Times the control-plane VIP changed because its DNS name resolved anew.
    pub control_plane_address_changes: Counter,
    /// 1 while RBAC refuses a permission kvip uses (it does without, or
    /// writes with `update` instead of `patch`).
    pub permission_missing: Family<PermissionLabels, Gauge>,
    /// Addresses of each pool by family and state (used, free).
    pub pool_addresses: Family<PoolLabels, Gauge>,
    /// Values of the pools' ConfigMap that cannot be used as written.
    pub pool_config_problems: Gauge,
}

/// Labels of one pool's addresses.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct PoolLabels {
    /// The ConfigMap key, such as `cidr-global`.
    pub pool: String,
    /// `IPv4` or `IPv6`.
    pub family: String,
    /// `used` or `free`.
    pub state: String,
}

/// Labels naming an RBAC permission.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PermissionLabels {
    /// The verbs and resource, such as `create,patch events`.
    pub permission: String,
}

/// Labels carrying a state or outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// The state, such as `up`.
    pub state: String,
}

/// Labels naming an API resource.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    /// The resource, such as `lease`.
    pub resource: String,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            api_requests: Family::default(),
            vips_held: Family::default(),
            elections_won: Family::default(),
            elections_lost: Family::default(),
            handovers: Family::default(),
            gratuitous_sent: Family::default(),
            takeover_seconds: Histogram::new([
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            pending: Family::default(),
            conflicts: Counter::default(),
            kube_vip_is_leader: Gauge::default(),
            kube_vip_active_services: Gauge::default(),
            api_throttled: Family::default(),
            api_backing_off: Gauge::default(),
            lease_stretch: Gauge::default(),
            netlink_up: Gauge::default(),
            listeners_down: Family::default(),
            claims_dropped: Counter::default(),
            defences: Family::default(),
            addresses_restored: Counter::default(),
            http_connections: Gauge::default(),
            http_closed: Family::default(),
            http_accept_errors: Counter::default(),
            control_plane_address_changes: Counter::default(),
            permission_missing: Family::default(),
            pool_addresses: Family::default(),
            pool_config_problems: Gauge::default(),
        };
        m.lease_stretch.set(1);
        registry.register(
            "kvip_lease_stretch",
            "How many times the configured Lease timings this node writes, because its Leases outgrow the write budget (1: as configured)",
            m.lease_stretch.clone(),
        );
        registry.register(
            "kvip_api_throttled",
            "API writes not sent because of the write budget (kvip_api_qps) or a backoff after 429, 5xx or 403",
            m.api_throttled.clone(),
        );
        registry.register(
            "kvip_api_backing_off",
            "Objects whose writes back off after the API server answered 429, 5xx or 403",
            m.api_backing_off.clone(),
        );
        registry.register(
            "kvip_api_requests",
            "Kubernetes API requests by resource, verb and result",
            m.api_requests.clone(),
        );
        registry.register(
            "kvip_vips_held",
            "VIPs on this node's interfaces",
            m.vips_held.clone(),
        );
        registry.register(
            "kvip_elections_won",
            "Leases this node won",
            m.elections_won.clone(),
        );
        registry.register(
            "kvip_elections_lost",
            "Leases this node lost or released",
            m.elections_lost.clone(),
        );
        registry.register("kvip_handovers", "Handovers by reason", m.handovers.clone());
        registry.register(
            "kvip_gratuitous_packets_sent",
            "Gratuitous ARP and unsolicited NA frames sent",
            m.gratuitous_sent.clone(),
        );
        registry.register(
            "kvip_takeover_seconds",
            "Decision to take a VIP to its first gratuitous packet",
            m.takeover_seconds.clone(),
        );
        registry.register(
            "kvip_pending_services",
            "Services kvip owns but cannot announce, by reason",
            m.pending.clone(),
        );
        registry.register(
            "kvip_address_conflicts",
            "Other MACs seen claiming one of our VIPs",
            m.conflicts.clone(),
        );
        registry.register(
            "kube_vip_is_leader",
            "1 while this node holds a Lease (kube-vip compatible)",
            m.kube_vip_is_leader.clone(),
        );
        registry.register(
            "kube_vip_active_services",
            "Services this node announces (kube-vip compatible)",
            m.kube_vip_active_services.clone(),
        );
        registry.register(
            "kvip_control_plane_address_changes",
            "Times the control-plane VIP was set from its DNS name in address: the first resolution and every move after it",
            m.control_plane_address_changes.clone(),
        );
        registry.register(
            "kvip_netlink_up",
            "1 while kvip follows the kernel's interfaces and addresses, 0 while netlink fails",
            m.netlink_up.clone(),
        );
        registry.register(
            "kvip_conflict_listeners_down",
            "Interfaces holding VIPs of the role without a working listener for other hosts' ARP and neighbour advertisements (0 when healthy)",
            m.listeners_down.clone(),
        );
        registry.register(
            "kvip_claims_dropped",
            "Claims heard on the wire but dropped because kvip was behind (a flood)",
            m.claims_dropped.clone(),
        );
        registry.register(
            "kvip_defences",
            "Defences of a claimed VIP by outcome: sent, or suppressed (at most one per address per 10 s)",
            m.defences.clone(),
        );
        registry.register(
            "kvip_addresses_restored",
            "VIPs found missing from the kernel (removed by someone else, or by a link flap) and put back",
            m.addresses_restored.clone(),
        );
        registry.register(
            "kvip_http_connections",
            "Connections to the metrics and health endpoint open now",
            m.http_connections.clone(),
        );
        registry.register(
            "kvip_http_connections_closed",
            "Connections to the metrics and health endpoint kvip closed: refused (every slot busy answering), evicted (the oldest idle one, to make room), header_timeout, lifetime",
            m.http_closed.clone(),
        );
        registry.register(
            "kvip_http_accept_errors",
            "Failed accepts on the metrics and health endpoint (such as out of file descriptors); kvip waits 10 ms doubling to 1 s between them",
            m.http_accept_errors.clone(),
        );
        registry.register(
            "kvip_permission_missing",
            "1 while RBAC refuses a permission kvip uses: `patch <resource>` (kvip writes with update instead), `create,patch events` (no Events), `delete leases` (the instance Lease expires instead), `list servicecidrs` (only ClusterIPs are refused as VIPs)",
            m.permission_missing.clone(),
        );
        registry.register(
            "kvip_pool_addresses",
            "Addresses of each pool of the kubevip ConfigMap by family and state (used, free); free saturates at the largest gauge",
            m.pool_addresses.clone(),
        );
        registry.register(
            "kvip_pool_config_problems",
            "Values of the kubevip ConfigMap kvip cannot use as written (each is logged naming its key)",
            m.pool_config_problems.clone(),
        );
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        registry.register("kvip_build_info", "kvip's version", build);
        Metrics { registry, ..m }
    })
}

/// This node started announcing an election's addresses (`role`: lb or cp).
pub fn won(role: &str) {
    get()
        .elections_won
        .get_or_create(&RoleLabels { role: role.into() })
        .inc();
}

/// This node stopped announcing, for `why` (a `kvip_handovers_total` reason).
pub fn lost(role: &str, why: &str) {
    get()
        .elections_lost
        .get_or_create(&RoleLabels { role: role.into() })
        .inc();
    get()
        .handovers
        .get_or_create(&ReasonLabels { reason: why.into() })
        .inc();
}

/// Counts one API request.
pub fn api_request(resource: &str, verb: &str, ok: bool) {
    get()
        .api_requests
        .get_or_create(&ApiLabels {
            resource: resource.into(),
            verb: verb.into(),
            result: if ok { "ok" } else { "error" }.into(),
        })
        .inc();
}

/// Says whether RBAC refuses `permission` now.
pub fn permission_missing(permission: &str, missing: bool) {
    get()
        .permission_missing
        .get_or_create(&PermissionLabels {
            permission: permission.into(),
        })
        .set(i64::from(missing));
}

/// Counts a write the budget held back.
pub fn throttled(resource: &str) {
    get()
        .api_throttled
        .get_or_create(&ResourceLabels {
            resource: resource.into(),
        })
        .inc();
}

/// Sets how many objects back off now.
pub fn backing_off(n: usize) {
    get()
        .api_backing_off
        .set(i64::try_from(n).unwrap_or(i64::MAX));
}

/// The exposition text.
pub fn render() -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &get().registry).is_err() {
        out.clear();
    }
    out
}

/// Counts a connection to the metrics endpoint kvip closed, for `why`.
pub fn http_closed(why: &str) {
    get()
        .http_closed
        .get_or_create(&ReasonLabels { reason: why.into() })
        .inc();
}

/// The roles have started (the load-balancer role's caches synced once).
static STARTED: AtomicBool = AtomicBool::new(false);
/// Each role's last pass, in milliseconds on [`crate::clock`] plus one (0: none yet):
/// the lb role's, then the cp role's.
static LOOP_BEAT: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// Interfaces without a working listener: the lb role's, then the cp role's.
static LISTENERS_DOWN: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// The API watches by name: what each delivered, and its heartbeat.
static WATCHES: Mutex<BTreeMap<&'static str, (health::WatchSeen, Option<Duration>)>> =
    Mutex::new(BTreeMap::new());

/// The two roles' slots: 0 for `lb`, 1 for `cp`.
fn slot(role: &str) -> usize {
    usize::from(role == "cp")
}

/// Marks the roles started: readiness is judged from now on.
pub fn set_started() {
    STARTED.store(true, Ordering::Relaxed);
}

/// Called by `role`'s reconcile loop on every pass (and at least every second).
pub fn beat(role: &str, now: Mono) {
    let ms = u64::try_from(now.0.as_millis()).unwrap_or(u64::MAX - 1);
    LOOP_BEAT[slot(role)].store(ms + 1, Ordering::Relaxed);
}

/// How many interfaces holding `role`'s VIPs have no working conflict listener.
pub fn set_listeners_down(role: &str, down: usize) {
    let down = u64::try_from(down).unwrap_or(u64::MAX);
    LISTENERS_DOWN[slot(role)].store(down, Ordering::Relaxed);
    get()
        .listeners_down
        .get_or_create(&RoleLabels { role: role.into() })
        .set(i64::try_from(down).unwrap_or(i64::MAX));
}

fn watches()
-> std::sync::MutexGuard<'static, BTreeMap<&'static str, (health::WatchSeen, Option<Duration>)>> {
    // Nothing in the map can be left half-changed by a panic elsewhere.
    WATCHES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers the API watch `name`; with a `heartbeat`, readiness fails when
/// it delivers nothing for that long.
pub fn watch_started(name: &'static str, heartbeat: Option<Duration>) {
    watches().entry(name).or_default().1 = heartbeat;
}

/// The API watch `name` delivered something (an object, a delete, a relist).
pub fn watch_delivered(name: &'static str) {
    watches()
        .entry(name)
        .or_default()
        .0
        .delivered(crate::clock::now());
}

/// The API watch `name` failed.
pub fn watch_failed(name: &'static str) {
    watches()
        .entry(name)
        .or_default()
        .0
        .failed(crate::clock::now());
}

/// Health now: a role loop that has not passed for `stuck_after` is stuck;
/// `netlink_age` says how long ago the kernel's state was last read.
pub fn health(stuck_after: Duration, netlink_age: Option<Duration>) -> Health {
    let beat = |role: &'static str| {
        let ms = LOOP_BEAT[slot(role)].load(Ordering::Relaxed);
        (role, (ms > 0).then(|| Mono(Duration::from_millis(ms - 1))))
    };
    let signals = health::Signals {
        beats: vec![beat("lb"), beat("cp")],
        netlink_age,
        netlink_up: get().netlink_up.get() == 1,
        started: STARTED.load(Ordering::Relaxed),
        listeners_down: LISTENERS_DOWN
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .fold(0, u64::saturating_add),
        watches: watches()
            .iter()
            .map(|(name, (seen, heartbeat))| health::Watch {
                name,
                seen: *seen,
                heartbeat: *heartbeat,
            })
            .collect(),
    };
    let limits = health::Limits {
        stuck_after,
        kernel_refresh: crate::net::kernel::REFRESH,
    };
    health::judge(&signals, crate::clock::now(), &limits)
}

/// The pools' ConfigMap has `n` values that cannot be used as written.
pub fn pool_problems(n: usize) {
    get()
        .pool_config_problems
        .set(i64::try_from(n).unwrap_or(i64::MAX));
}

/// The pools' usage now; pools gone are dropped.
pub fn pool_usage(usage: &[kvip_core::ipam::PoolUsage]) {
    static SHOWN: Mutex<BTreeSet<PoolLabels>> = Mutex::new(BTreeSet::new());
    let mut shown = SHOWN.lock().unwrap_or_else(|e| e.into_inner());
    let mut now = BTreeSet::new();
    for pool in usage {
        for family in &pool.families {
            for (state, n) in [("used", family.used), ("free", family.free)] {
                let labels = PoolLabels {
                    pool: pool.key.clone(),
                    family: family.family.name().to_string(),
                    state: state.to_string(),
                };
                get()
                    .pool_addresses
                    .get_or_create(&labels)
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
                now.insert(labels);
            }
        }
    }
    for gone in shown.difference(&now) {
        get().pool_addresses.remove(gone);
    }
    *shown = now;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_family_once_and_ends_with_eof() {
        api_request("leases", "write", true);
        get()
            .vips_held
            .get_or_create(&RoleLabels { role: "lb".into() })
            .set(1);
        get().takeover_seconds.observe(0.02);
        get()
            .pending
            .get_or_create(&ReasonLabels {
                reason: "NoAddress".into(),
            })
            .set(1);
        let text = render();
        if let Ok(path) = std::env::var("KVIP_METRICS_SAMPLE") {
            std::fs::write(path, &text).unwrap();
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("kvip_api_requests_total{"), "{text}");
        assert!(
            text.contains("kvip_takeover_seconds_bucket{le=\"0.025\"} 1"),
            "{text}"
        );
    }
}
