//! kube-vip-cloud-provider, the allocator kvip's built-in pools follow, run
//! in the infra namespace as the oracle of the IPAM tests: a cloud
//! controller manager with only its service controller, talking to the lab's
//! API endpoint as the admin, reading the `kubevip` ConfigMap it is told to.

use crate::control_plane::PATH;
use crate::layout::{self, INFRA_NETNS};
use crate::pki::Pki;
use crate::state::{Launch, Paths};
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The name its log file and `kvip-lab` messages use.
pub const NAME: &str = "kube-vip-cloud-provider";

/// Which ConfigMap the cloud provider reads its pools from
/// (`KUBEVIP_NAMESPACE`, `KUBEVIP_CONFIG_MAP`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSource {
    /// The ConfigMap's namespace.
    pub namespace: String,
    /// The ConfigMap's name.
    pub config_map: String,
}

impl Default for PoolSource {
    /// The cloud provider's own defaults, which kvip shares: kube-system/kubevip.
    fn default() -> Self {
        Self {
            namespace: kvip_core::ipam::CONFIG_MAP_NAMESPACE.to_string(),
            config_map: kvip_core::ipam::CONFIG_MAP_NAME.to_string(),
        }
    }
}

/// Its home folder: the provider's own client reads `$HOME/.kube/config`
/// when started with `--OutSideCluster=true`.
pub fn home(paths: &Paths) -> PathBuf {
    paths.root.join("cloud-provider")
}

/// The kubeconfig both its clients use.
pub fn kubeconfig(paths: &Paths) -> PathBuf {
    home(paths).join(".kube").join("config")
}

/// Writes [`kubeconfig`]: the admin's credentials, as the admin kubeconfig
/// holds them, but the `kubernetes` ClusterIP as the server, which the infra
/// namespace leads to the healthy API servers (the admin kubeconfig's
/// host-loopback forwarder is not reachable from a lab namespace).
pub fn write_kubeconfig(paths: &Paths, pki: &Pki) -> anyhow::Result<PathBuf> {
    let file = kubeconfig(paths);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let server = format!("https://{}:443", layout::KUBERNETES_SERVICE_IP);
    std::fs::write(
        &file,
        crate::pki::kubeconfig(&server, &pki.ca_cert, &pki.admin_token),
    )
    .with_context(|| format!("writing {}", file.display()))?;
    Ok(file)
}

/// How to start the cloud provider `bin` in the infra namespace: no leader
/// election (one instance), the service controller only, nothing served.
pub fn launch(paths: &Paths, bin: &Path, pools: &PoolSource) -> Launch {
    let env = BTreeMap::from([
        ("PATH".to_string(), PATH.to_string()),
        ("HOME".to_string(), home(paths).display().to_string()),
        ("KUBEVIP_NAMESPACE".to_string(), pools.namespace.clone()),
        ("KUBEVIP_CONFIG_MAP".to_string(), pools.config_map.clone()),
    ]);
    Launch {
        netns: Some(INFRA_NETNS.to_string()),
        argv: vec![
            bin.display().to_string(),
            "--cloud-provider=kubevip".into(),
            format!("--kubeconfig={}", kubeconfig(paths).display()),
            "--OutSideCluster=true".into(),
            "--leader-elect=false".into(),
            "--controllers=service".into(),
            "--secure-port=0".into(),
            "--webhook-secure-port=0".into(),
            "--v=2".into(),
        ],
        env,
        service_account_dir: None,
        files: Default::default(),
        log: paths.log("infra", NAME),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_in_the_infra_namespace_reading_the_pools_it_is_given() {
        let paths = Paths {
            root: PathBuf::from("/run/lab"),
        };
        let pools = PoolSource {
            namespace: "pools".into(),
            config_map: "mine".into(),
        };
        let l = launch(&paths, Path::new("/cache/kvcp"), &pools);
        assert_eq!(l.netns.as_deref(), Some(INFRA_NETNS));
        assert_eq!(l.argv[0], "/cache/kvcp");
        assert!(
            l.argv
                .contains(&"--kubeconfig=/run/lab/cloud-provider/.kube/config".into())
        );
        assert!(l.argv.contains(&"--OutSideCluster=true".into()));
        assert_eq!(l.env["HOME"], "/run/lab/cloud-provider");
        assert_eq!(l.env["KUBEVIP_NAMESPACE"], "pools");
        assert_eq!(l.env["KUBEVIP_CONFIG_MAP"], "mine");
        assert_eq!(
            l.log,
            PathBuf::from("/run/lab/logs/infra/kube-vip-cloud-provider.log")
        );
        assert_eq!(
            PoolSource::default(),
            PoolSource {
                namespace: "kube-system".into(),
                config_map: "kubevip".into()
            }
        );
    }
}
