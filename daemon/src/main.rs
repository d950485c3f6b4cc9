//! `kvip`: the virtual-IP daemon and its command line.

mod access;
mod budget;
mod cache;
mod claims;
mod clock;
mod cp;
mod dns;
mod elections;
mod events;
mod health;
mod http;
mod ingress;
mod ipam;
mod lb;
mod leases;
mod manifest;
mod membership;
mod metrics;
mod net;
mod report;
mod service_network;
mod settings;
mod translate;
mod trim;
mod vips;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kvip_core::Config;
use kvip_core::config::{LogFormat, LogVerbosity};
use std::time::{Duration, Instant};

/// kvip announces Kubernetes virtual IPs from exactly one healthy node.
#[derive(Parser)]
#[command(name = "kvip", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up; boxing the big variant would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the daemon (kube-vip manifests call it with `args: ["manager"]`).
    ///
    /// Settings are kube-vip's environment variables (vip_arp, vip_interface,
    /// svc_enable, svc_election, vip_leaseduration, ...), each also accepted as
    /// a flag of the same name: --vip_arp=true.
    Manager {
        /// kube-vip variables as flags, e.g. --svc_enable=true.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        settings: Vec<String>,
    },
    /// Print ready-to-apply YAML: the DaemonSet of a role, its access (RBAC and admission policy), or both.
    Manifest {
        #[command(subcommand)]
        what: ManifestCommand,
    },
    /// Per Service: VIP, policy, announcer, candidates, state and why it is pending; kvip instances per node.
    ///
    /// Reads the cluster once through the API (KUBECONFIG, --kubeconfig or in-cluster).
    /// Exit code 0 when every Service shown is served, 1 when any is pending or refused,
    /// 2 when the cluster cannot be read.
    Status(report::StatusArgs),
    /// Print the version and build.
    Version,
}

#[derive(Subcommand)]
enum ManifestCommand {
    /// The DaemonSet of one role.
    Daemonset(ManifestFlags),
    /// A role's ServiceAccount, least-privilege roles and bindings, and admission policy.
    Rbac {
        /// Namespace of the ServiceAccounts, the instance Leases and the control-plane Lease.
        #[arg(long, default_value = "kube-system")]
        namespace: String,
        /// cp, lb or all; unset: cp and lb, the two-instance layout.
        #[arg(long)]
        role: Option<manifest::Role>,
        /// Also print the ValidatingAdmissionPolicy and its binding (false where the cluster lacks the API).
        #[arg(long = "admission-policy")]
        admission_policy: Option<bool>,
    },
    /// The role's access (as rbac prints it) and its DaemonSet in one stream.
    All(ManifestFlags),
}

/// Flags of `kvip manifest daemonset|all`; unset ones keep the role's defaults.
#[derive(clap::Args)]
struct ManifestFlags {
    /// cp (control-plane VIP, control-plane nodes), lb (Service VIPs, every node) or all.
    #[arg(long)]
    role: manifest::Role,
    /// Namespace of the DaemonSet.
    #[arg(long)]
    namespace: Option<String>,
    /// Container image.
    #[arg(long)]
    image: Option<String>,
    /// vip_interface.
    #[arg(long)]
    interface: Option<String>,
    /// vip_servicesinterface.
    #[arg(long = "services-interface")]
    services_interface: Option<String>,
    /// The control-plane VIP (address); cp and all.
    #[arg(long)]
    address: Option<String>,
    /// API server port behind the control-plane VIP.
    #[arg(long)]
    port: Option<u16>,
    /// vip_leaseduration, seconds.
    #[arg(long = "lease-duration")]
    lease_duration: Option<u32>,
    /// vip_renewdeadline, seconds.
    #[arg(long = "renew-deadline")]
    renew_deadline: Option<u32>,
    /// vip_retryperiod, seconds.
    #[arg(long = "retry-period")]
    retry_period: Option<u32>,
    /// vip_arpRate, milliseconds.
    #[arg(long = "arp-rate")]
    arp_rate: Option<u32>,
    /// svc_election.
    #[arg(long = "svc-election")]
    svc_election: Option<bool>,
    /// lb_class_only.
    #[arg(long = "lb-class-only")]
    lb_class_only: Option<bool>,
    /// lb_class_name.
    #[arg(long = "lb-class-name")]
    lb_class_name: Option<String>,
    /// svc_namespace: serve Services of this namespace only.
    #[arg(long = "service-namespace")]
    service_namespace: Option<String>,
    /// Port of metrics and health (2112 for cp and all, 2113 for lb).
    #[arg(long = "metrics-port")]
    metrics_port: Option<u16>,
    /// vip_loglevel (slog level as kube-vip 1.x: -4 debug, 0 info, 4 warn, 8 error).
    #[arg(long = "log-level", allow_hyphen_values = true)]
    log_level: Option<i32>,
    /// Extra environment, NAME=VALUE (repeatable).
    #[arg(long = "env")]
    env: Vec<String>,
    /// With all: also print the ValidatingAdmissionPolicy and its binding (default true).
    #[arg(long = "admission-policy")]
    admission_policy: Option<bool>,
}

impl ManifestFlags {
    fn options(self) -> anyhow::Result<manifest::ManifestOptions> {
        let mut o = manifest::ManifestOptions::new(self.role);
        if let Some(v) = self.namespace {
            o.namespace = v;
        }
        if let Some(v) = self.image {
            o.image = v;
        }
        if self.interface.is_some() {
            o.interface = self.interface;
        }
        if self.services_interface.is_some() {
            o.services_interface = self.services_interface;
        }
        if self.address.is_some() {
            o.address = self.address;
        }
        if let Some(v) = self.port {
            o.port = v;
        }
        if let Some(v) = self.lease_duration {
            o.lease_duration = v;
        }
        if let Some(v) = self.renew_deadline {
            o.renew_deadline = v;
        }
        if let Some(v) = self.retry_period {
            o.retry_period = v;
        }
        if let Some(v) = self.arp_rate {
            o.arp_rate_ms = v;
        }
        if let Some(v) = self.svc_election {
            o.svc_election = v;
        }
        if let Some(v) = self.lb_class_only {
            o.lb_class_only = v;
        }
        if self.lb_class_name.is_some() {
            o.lb_class_name = self.lb_class_name;
        }
        if self.service_namespace.is_some() {
            o.service_namespace = self.service_namespace;
        }
        if self.metrics_port.is_some() {
            o.metrics_port = self.metrics_port;
        }
        if let Some(v) = self.log_level {
            o.log_level = v;
        }
        if let Some(v) = self.admission_policy {
            o.admission_policy = v;
        }
        for pair in self.env {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--env: {pair:?} is not NAME=VALUE"))?;
            o.extra_env.push((k.to_string(), v.to_string()));
        }
        Ok(o)
    }
}

fn init_logging(config: &Config) {
    // kube-vip 1.x's vip_loglevel is a log/slog level: -4 debug, 0 info, 4 warn, 8 error.
    let level = match kvip_core::config::log_verbosity(config.log_level) {
        LogVerbosity::Debug => "debug",
        LogVerbosity::Info => "info",
        LogVerbosity::Warn => "warn",
        LogVerbosity::Error => "error",
        LogVerbosity::Off => "off",
    };
    // netlink-packet-route warns on every dump that a newer kernel sends
    // attributes it does not know; that says nothing about kvip's work.
    let filter = tracing_subscriber::EnvFilter::try_from_env("KVIP_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{level},kube=warn,hyper=warn,tower=warn,rustls=warn,netlink_packet_route=error"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Where kube-vip looks for credentials first: kubeadm's admin kubeconfig,
/// which kube-vip's static Pod manifest mounts there.
const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";

/// Reads the kubeconfig at `path`; `source` says why that file.
async fn kubeconfig_file(path: &str, source: &str) -> anyhow::Result<kube::Config> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("{source}: cannot read {path}"))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .with_context(|| format!("{source}: {path} is not a usable kubeconfig"))
}

/// The credentials: `k8s_config_file` when set (kvip's own reading; kube-vip
/// uses it only to write manifests), else as kube-vip finds them —
/// /etc/kubernetes/admin.conf when it exists (with `cp_enable`, aimed at
/// this node's API server, as kube-vip aims it at `kubernetes:<port>`),
/// else `KUBECONFIG` or ~/.kube/config, else the pod's ServiceAccount.
async fn kube_config(config: &Config) -> anyhow::Result<kube::Config> {
    if let Some(path) = &config.k8s_config_file {
        return kubeconfig_file(path, "k8s_config_file").await;
    }
    if std::path::Path::new(ADMIN_CONF).is_file() {
        tracing::info!(
            path = ADMIN_CONF,
            "using the admin kubeconfig, as kube-vip does"
        );
        let mut admin = kubeconfig_file(ADMIN_CONF, "the admin kubeconfig").await?;
        if config.cp_enable {
            // As kube-vip: a control-plane node's own API server, not the
            // endpoint in the file (often the VIP this process brings up).
            admin.cluster_url = format!("https://127.0.0.1:{}", config.port).parse()?;
            admin.tls_server_name = Some("kubernetes".to_string());
        }
        return Ok(admin);
    }
    kube::Config::infer().await.context(
        "no Kubernetes credentials: not in a pod, no KUBECONFIG, no /etc/kubernetes/admin.conf, and k8s_config_file is not set",
    )
}

async fn manager(settings: Vec<String>) -> anyhow::Result<()> {
    let vars = settings::variables(std::env::vars(), &settings).map_err(anyhow::Error::msg)?;
    let (config, warnings) =
        Config::from_env(&vars).map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    init_logging(&config);
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let node = config
        .node_name
        .clone()
        .context("vip_nodename is not set: the DaemonSet sets it from spec.nodeName")?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), node = %node, svc = config.svc_enable, cp = config.cp_enable, "kvip starting");
    let started = Instant::now();
    clock::start();
    budget::init(config.api_qps, config.api_burst);
    if !config.prometheus_server.is_empty() {
        let listen = http::Listen::parse(&config.prometheus_server).map_err(anyhow::Error::msg)?;
        let stuck_after = (config.lease_duration * 2).max(Duration::from_secs(10));
        tokio::spawn(async move {
            if let Err(e) = http::serve(listen, started, stuck_after).await {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        });
    }
    let mut base = kube_config(&config).await?;
    // The client's own retry layer resends a write up to 15 times on 429,
    // 503 or 504, behind the write budget's back: an overloaded API server
    // would get a retry storm. kvip's budget and backoff decide instead.
    base.default_retry = false;
    let client = kube::Client::try_from(base.clone())?;
    let netlink = net::Netlink::new().context("netlink")?;
    let kernel = net::kernel::watch(netlink.clone(), started)
        .await
        .context("reading the node's interfaces")?;
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = shutdown_tx.send(true);
    });
    let mut roles = tokio::task::JoinSet::new();
    if config.cp_enable {
        let local = cp::local_client(&base, config.port)?;
        let vips = vips::Vips::new(
            netlink.clone(),
            kernel.clone(),
            kvip_core::placement::CP_ADDRESS_PROTOCOL,
            "cp",
            config.arp_rate,
        );
        let role = cp::ControlPlane::start(config.clone(), node.clone(), local, vips)?;
        roles.spawn(role.run(shutdown_rx.clone()));
    }
    if config.svc_enable {
        let pod_namespace = settings::pod_namespace();
        let instance_namespace = pod_namespace
            .clone()
            .unwrap_or_else(|| config.cp_namespace.clone());
        let global_lease = config.services_lease(pod_namespace.as_deref());
        if !config.svc_election {
            tracing::info!(lease = %format!("{}/{}", global_lease.namespace, global_lease.name), "global Services Lease");
        }
        let cache = cache::Cache::start(
            &client,
            config.svc_namespace.as_deref(),
            health::lease_heartbeat(config.lease_duration),
        );
        tracing::info!("waiting for the caches to sync");
        cache
            .wait_synced()
            .await
            .context("the watches stopped before syncing")?;
        tracing::info!(
            after_ms = started.elapsed().as_millis() as u64,
            "caches synced"
        );
        let vips = vips::Vips::new(
            netlink.clone(),
            kernel.clone(),
            kvip_core::placement::LB_ADDRESS_PROTOCOL,
            "lb",
            config.arp_rate,
        );
        let role = lb::LbRole::new(
            config.clone(),
            node.clone(),
            client,
            cache,
            vips,
            instance_namespace,
            global_lease,
        )?;
        roles.spawn(role.run(shutdown_rx.clone()));
    }
    metrics::set_started();
    if roles.is_empty() {
        tracing::warn!("neither svc_enable nor cp_enable is true: nothing to do");
        let mut rx = shutdown_rx;
        let _ = rx.changed().await;
        return Ok(());
    }
    while let Some(done) = roles.join_next().await {
        done??;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Version => {
            println!(
                "kvip {} (core {})",
                env!("CARGO_PKG_VERSION"),
                env!("CARGO_PKG_VERSION")
            );
            Ok(())
        }
        Command::Manifest { what } => (|| -> anyhow::Result<()> {
            let text = match what {
                ManifestCommand::Daemonset(flags) => manifest::daemonset(&flags.options()?)?,
                ManifestCommand::Rbac {
                    namespace,
                    role,
                    admission_policy,
                } => manifest::rbac(&manifest::RbacOptions {
                    roles: role
                        .map_or_else(|| vec![manifest::Role::Cp, manifest::Role::Lb], |r| vec![r]),
                    namespace,
                    admission_policy: admission_policy.unwrap_or(true),
                })?,
                ManifestCommand::All(flags) => manifest::all(&flags.options()?)?,
            };
            print!("{text}");
            Ok(())
        })(),
        Command::Status(args) => return report::run(args),
        Command::Manager { settings } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(manager(settings))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvip: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
