//! `kvip-lab cloud-provider start|stop`: kube-vip-cloud-provider as one
//! more lab process in the infra namespace, recorded in the lab's state so
//! `down` stops it too.

use super::{load, lock, require_root};
use crate::cloud_provider::{self, NAME, PoolSource};
use crate::control_plane::log_tail;
use crate::pki::Pki;
use crate::process;
use crate::state::{Paths, Process, ProcessKind};
use anyhow::bail;
use std::time::{Duration, Instant};

/// How long a fresh process must stay up before it counts as started: a
/// bad flag or kubeconfig stops it at once.
const SETTLE: Duration = Duration::from_secs(2);

/// `kvip-lab cloud-provider start`: builds the binary on first use, then
/// starts it reading `pools`. Starting it while it runs is an error, so two
/// never allocate at once.
pub fn cloud_provider_start(pools: &PoolSource) -> anyhow::Result<()> {
    require_root()?;
    let bin = crate::toolchain::ensure_cloud_provider(&mut |line| eprintln!("{line}"))?;
    let paths = Paths::new();
    let _lock = lock(&paths, true)?;
    let mut state = load(&paths)?;
    if let Some(pid) = running(&state.processes) {
        bail!("{NAME} is already running (pid {pid}); `kvip-lab cloud-provider stop` first");
    }
    let pki = Pki::load(&paths.pki())?;
    cloud_provider::write_kubeconfig(&paths, &pki)?;
    let launch = cloud_provider::launch(&paths, &bin, pools);
    let log = launch.log.clone();
    let pid = process::spawn(&launch)?;
    state
        .processes
        .retain(|p| p.kind != ProcessKind::CloudProvider);
    state.processes.push(Process {
        kind: ProcessKind::CloudProvider,
        node: None,
        pid: Some(pid),
        launch,
    });
    state.save(&paths)?;
    let settled = Instant::now() + SETTLE;
    while Instant::now() < settled {
        if !process::alive(pid) {
            bail!("{NAME} exited at once:\n{}", log_tail(&log, 10));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "{NAME} started (pid {pid}), pools from ConfigMap {}/{}; log {}",
        pools.namespace,
        pools.config_map,
        log.display()
    );
    Ok(())
}

/// `kvip-lab cloud-provider stop`; stopping it when it is not running is fine.
pub fn cloud_provider_stop() -> anyhow::Result<()> {
    require_root()?;
    let paths = Paths::new();
    let _lock = lock(&paths, true)?;
    let mut state = load(&paths)?;
    match running(&state.processes) {
        Some(pid) => {
            process::stop(pid, Duration::from_secs(5));
            eprintln!("{NAME} stopped");
        }
        None => eprintln!("{NAME} is not running"),
    }
    state
        .processes
        .retain(|p| p.kind != ProcessKind::CloudProvider);
    state.save(&paths)
}

/// The pid of the cloud provider the lab started, while it runs.
fn running(processes: &[Process]) -> Option<i32> {
    processes
        .iter()
        .filter(|p| p.kind == ProcessKind::CloudProvider)
        .find_map(|p| p.pid.filter(|pid| process::alive(*pid)))
}
