//! `kvip-lab`: bring the lab up, deploy DaemonSets, run pods, probe VIPs,
//! inject faults, tear it down. See `kvip-lab --help`.

use clap::{Parser, Subcommand};
use kvip_lab::commands::{self, Fault, PodArgs};
use kvip_lab::layout::LabShape;
use kvip_lab::network::Mac;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// A real Kubernetes control plane and a multi-node layer-2 lab for kvip.
#[derive(Parser)]
#[command(name = "kvip-lab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build what is missing and bring the lab up (idempotent); prints what `env` prints.
    Up {
        /// Nodes in all.
        #[arg(long, default_value_t = 3)]
        nodes: u8,
        /// How many of them are control-plane nodes.
        #[arg(long = "control-plane", default_value_t = 1)]
        control_plane: u8,
        /// Give the bridge and pods IPv6 addresses too.
        #[arg(long)]
        ipv6: bool,
        /// Give every node a `kube-ipvs0` holding every LoadBalancer address,
        /// as kube-proxy's IPVS mode does.
        #[arg(long = "ipvs-dummy")]
        ipvs_dummy: bool,
    },
    /// Print shell `export` lines for the running lab.
    Env,
    /// Apply a manifest: objects to the API server, DaemonSets run on their nodes, Pods as static Pods on the nodes given.
    Deploy {
        /// YAML manifest.
        file: PathBuf,
        /// Restart the containers whose pod template did not change too, as
        /// `kubectl rollout restart` does (unchanged ones are left running).
        #[arg(long)]
        restart: bool,
        /// A node whose kubelet runs the manifest's Pods as static Pods (repeat for more).
        #[arg(long = "node")]
        nodes: Vec<String>,
    },
    /// Stop the DaemonSets and static Pods of a manifest.
    Undeploy {
        /// YAML manifest.
        file: PathBuf,
    },
    /// Create a Ready pod with a responder (`pod NAME --node N --port P`), or `pod delete NAME`.
    Pod {
        /// NAME, or `delete` NAME.
        #[arg(num_args = 1..=2, required = true)]
        words: Vec<String>,
        /// Node to bind the pod to.
        #[arg(long)]
        node: Option<String>,
        /// Labels, k=v[,k=v].
        #[arg(long, default_value = "")]
        labels: String,
        /// Container port the responder listens on.
        #[arg(long)]
        port: Option<u16>,
        /// Kubernetes namespace.
        #[arg(long, short = 'n', default_value = "default")]
        namespace: String,
    },
    /// Connect from the client namespace and print the answer; exit 1 on failure.
    Probe {
        /// ADDR:PORT ([ADDR]:PORT for IPv6).
        target: String,
        /// Give up after this long.
        #[arg(long = "timeout-ms", default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Send frames from the client namespace claiming IP for MAC, as another
    /// host taking the address would (a gratuitous ARP reply, or for IPv6 an
    /// unsolicited neighbour advertisement); prints how many went out.
    ForgeClaim {
        /// The address to claim.
        #[arg(long)]
        ip: IpAddr,
        /// The MAC to claim it for (aa:bb:cc:dd:ee:ff).
        #[arg(long)]
        mac: Mac,
        /// How many frames to send (at most 10000).
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Pause between two frames.
        #[arg(long = "interval-ms", default_value_t = 10)]
        interval_ms: u64,
    },
    /// Start or stop kube-vip-cloud-provider (built on first use) in the
    /// infra namespace: the allocator kvip's built-in pools follow.
    CloudProvider {
        #[command(subcommand)]
        action: CloudProviderCommand,
    },
    /// Inject or undo a fault.
    Fault {
        #[command(subcommand)]
        fault: FaultCommand,
    },
    /// Print the kvip logs of a node.
    Logs {
        /// Node name.
        node: String,
    },
    /// Stop everything and remove every namespace and link the lab made.
    Down,
    /// Bring the lab up and run the demo.
    Demo,
    /// Measure kvip (and kube-vip when it can be built) on a fresh lab of its
    /// own; writes OUT/results.md, results.json and PNG plots. Run the release
    /// build (`cargo build --release --bins`), as root, with no other lab up.
    Bench {
        /// Repetitions of the create and graceful-migration scenarios.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Repetitions of the node-kill failover scenario (each takes about a Lease duration).
        #[arg(long = "failover-runs", default_value_t = 5)]
        failover_runs: usize,
        /// LoadBalancer Service counts of the scale scenario, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "1,100,1000,3000")]
        scale: Vec<usize>,
        /// Folder for the report, its JSON and the plots.
        #[arg(long, default_value = "bench")]
        out: PathBuf,
        /// Only draw results.md and the plots again from OUT/results.json.
        #[arg(long = "render-only")]
        render_only: bool,
        /// Only these daemons, comma separated: kube-vip, kvip, kvip-membership
        /// (a quick look; the published report measures all three in one run).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// (internal) the lab daemon: API forwarder, API endpoint and the IPVS dummy addresses.
    #[command(hide = true)]
    Labd,
    /// (internal) a pod's responder.
    #[command(hide = true)]
    Responder {
        /// Addresses to listen on.
        #[arg(long, required = true)]
        listen: Vec<SocketAddr>,
        /// Addresses to listen on too when free (the node's, like a hostPort).
        #[arg(long)]
        also: Vec<SocketAddr>,
        /// The line to answer with.
        #[arg(long)]
        text: String,
    },
}

#[derive(Subcommand)]
enum CloudProviderCommand {
    /// Start it: the service controller only, no leader election.
    Start {
        /// Namespace of the ConfigMap with the pools (`KUBEVIP_NAMESPACE`).
        #[arg(long, default_value = kvip_core::ipam::CONFIG_MAP_NAMESPACE)]
        namespace: String,
        /// Name of the ConfigMap with the pools (`KUBEVIP_CONFIG_MAP`).
        #[arg(long = "config-map", default_value = kvip_core::ipam::CONFIG_MAP_NAME)]
        config_map: String,
    },
    /// Stop it.
    Stop,
}

#[derive(Subcommand)]
enum FaultCommand {
    /// Stop every process of NODE and take its link down.
    KillNode { node: String },
    /// Bring NODE back.
    ReviveNode { node: String },
    /// Cut only NODE's traffic to the API servers.
    IsolateApi { node: String },
    /// Undo isolate-api.
    Heal { node: String },
    /// Stop NODE's API server, or every API server.
    ApiserverStop { node: Option<String> },
    /// Start NODE's API server, or every API server.
    ApiserverStart { node: Option<String> },
    /// Crash the DaemonSet containers on NODE (SIGKILL) and restart them at once.
    CrashDaemons { node: String },
    /// Take NODE's eth0 down on the node's side, then up again with the
    /// node's addresses and routes restored, as its network manager would.
    LinkFlap {
        node: String,
        /// How long the link stays down.
        #[arg(long = "down-ms", default_value_t = 1000)]
        down_ms: u64,
    },
    /// Delete NODE's eth0 and make it again: new ifindex and MAC, same
    /// name, addresses and routes.
    RecreateLink { node: String },
    /// Give NODE's eth0 another MAC address (aa:bb:cc:dd:ee:ff); the link stays up.
    SetMac { node: String, mac: Mac },
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up {
            nodes,
            control_plane,
            ipv6,
            ipvs_dummy,
        } => commands::up(LabShape {
            nodes,
            control_plane,
            ipv6,
            ipvs_dummy,
        }),
        Command::Env => commands::env(),
        Command::Deploy {
            file,
            restart,
            nodes,
        } => commands::deploy(&file, &nodes, restart),
        Command::Undeploy { file } => commands::undeploy(&file),
        Command::Pod {
            words,
            node,
            labels,
            port,
            namespace,
        } => match words.as_slice() {
            [verb, name] if verb == "delete" => commands::pod_delete(name, &namespace),
            [name] => {
                let node = node.ok_or_else(|| anyhow::anyhow!("pod {name}: --node is required"))?;
                let port = port.ok_or_else(|| anyhow::anyhow!("pod {name}: --port is required"))?;
                let labels = commands::parse_labels(&labels)?;
                commands::pod_create(PodArgs {
                    name: name.clone(),
                    node,
                    labels,
                    port,
                    namespace,
                })
            }
            _ => anyhow::bail!(
                "usage: kvip-lab pod NAME --node NODE --port P [--labels k=v] | kvip-lab pod delete NAME"
            ),
        },
        Command::Probe { target, timeout_ms } => {
            let line = commands::probe(&target, Duration::from_millis(timeout_ms))
                .map_err(|e| anyhow::anyhow!("probe {target}: {e:#}"))?;
            println!("{line}");
            Ok(())
        }
        Command::ForgeClaim {
            ip,
            mac,
            count,
            interval_ms,
        } => {
            let sent = commands::forge_claim(ip, mac, count, Duration::from_millis(interval_ms))?;
            println!("{sent} frame(s) claiming {ip} for {mac} sent from the client");
            Ok(())
        }
        Command::CloudProvider { action } => match action {
            CloudProviderCommand::Start {
                namespace,
                config_map,
            } => commands::cloud_provider_start(&kvip_lab::cloud_provider::PoolSource {
                namespace,
                config_map,
            }),
            CloudProviderCommand::Stop => commands::cloud_provider_stop(),
        },
        Command::Fault { fault } => commands::fault(match fault {
            FaultCommand::KillNode { node } => Fault::KillNode(node),
            FaultCommand::ReviveNode { node } => Fault::ReviveNode(node),
            FaultCommand::IsolateApi { node } => Fault::IsolateApi(node),
            FaultCommand::Heal { node } => Fault::Heal(node),
            FaultCommand::ApiserverStop { node } => Fault::ApiserverStop(node),
            FaultCommand::ApiserverStart { node } => Fault::ApiserverStart(node),
            FaultCommand::CrashDaemons { node } => Fault::CrashDaemons(node),
            FaultCommand::LinkFlap { node, down_ms } => Fault::LinkFlap {
                node,
                down: Duration::from_millis(down_ms),
            },
            FaultCommand::RecreateLink { node } => Fault::RecreateLink(node),
            FaultCommand::SetMac { node, mac } => Fault::SetMac { node, mac },
        }),
        Command::Logs { node } => commands::logs(&node),
        Command::Down => commands::down(),
        Command::Demo => kvip_lab::demo::run(),
        Command::Bench {
            runs,
            failover_runs,
            scale,
            out,
            render_only,
            only,
        } => kvip_lab::bench::run(&kvip_lab::bench::BenchOptions {
            runs,
            failover_runs,
            scale,
            out,
            render_only,
            only,
        }),
        Command::Labd => kvip_lab::labd::run(),
        Command::Responder { listen, also, text } => {
            kvip_lab::responder::run(&listen, &also, &text)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvip-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}
