//! What each `kvip-lab` command does, one file per concern: bringing the lab
//! up and down (`lifecycle`), running manifests (`daemonsets`), lab pods
//! (`pods`), kube-vip-cloud-provider (`cloud_provider`), faults
//! (`faults`), probes and forged address claims from the client namespace
//! (`probe`, `forge`) and the daemons' logs (`logs`);
//! `binaries` finds the kvip and kube-vip binaries the DaemonSets run.
//! Commands that change the lab hold the lab's lock; `up` either finishes or
//! tears everything down again, so a failed `up` leaves nothing half-built.

mod binaries;
mod cloud_provider;
mod daemonsets;
mod faults;
mod forge;
mod lifecycle;
mod logs;
mod pods;
mod probe;

pub use binaries::{kube_vip_binary, kvip_binary};
pub use cloud_provider::{cloud_provider_start, cloud_provider_stop};
pub use daemonsets::{deploy, undeploy};
pub use faults::{Fault, fault};
pub use forge::forge_claim;
pub use lifecycle::{down, env, up};
pub use logs::logs;
pub use pods::{PodArgs, parse_labels, pod_create, pod_delete};
pub use probe::probe;

use crate::state::{LabState, Paths};
use anyhow::bail;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;

/// Refuses to run without root, in one sentence.
pub fn require_root() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "kvip-lab must run as root: it creates network namespaces, links and addresses (try sudo)"
        );
    }
    Ok(())
}

/// Takes the lab's lock; `wait` false fails at once when another command holds it.
pub fn lock(paths: &Paths, wait: bool) -> anyhow::Result<Flock<File>> {
    std::fs::create_dir_all(&paths.root)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(paths.lock_file())?;
    let arg = if wait {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockExclusiveNonblock
    };
    Flock::lock(file, arg).map_err(|_| {
        anyhow::anyhow!("another kvip-lab command is changing the lab right now (an `up` still running?); wait for it to finish")
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn load(paths: &Paths) -> anyhow::Result<LabState> {
    match LabState::load(paths)? {
        Some(s) if s.ready => Ok(s),
        Some(_) => bail!("the lab is half built; run `kvip-lab down`, then `kvip-lab up`"),
        None => bail!("no lab is up; run `kvip-lab up` first"),
    }
}
