//! The daemons under test and how each is deployed. Both get the same
//! DaemonSet environment (ARP, Service role with per-Service election,
//! 5 s / 3 s / 1 s Lease timings, VIPs on `eth0`), so the numbers compare
//! like with like. kube-vip is built from its Go module when the module
//! proxy serves it; otherwise the reason is kept for the report.

use crate::commands;
use anyhow::Context;
use std::path::PathBuf;
use std::process::Command;

pub use crate::layout::LEASE_TIMINGS;

/// The kube-vip release the benchmark builds and the image its DaemonSet names.
pub const KUBE_VIP_MODULE: &str = "github.com/kube-vip/kube-vip";
/// Released version of [`KUBE_VIP_MODULE`].
pub const KUBE_VIP_VERSION: &str = "v1.0.0";

/// Interface both daemons put VIPs on (the lab nodes have no default route).
pub const VIP_INTERFACE: &str = "eth0";

/// A daemon under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// kube-vip, the daemon kvip replaces.
    KubeVip,
    /// kvip as a drop-in: one Lease per Service, like kube-vip.
    Kvip,
    /// kvip in membership mode (`kvip_membership=true`): one Lease per node.
    KvipMembership,
}

impl Subject {
    /// The name in the report's columns.
    pub fn name(self) -> &'static str {
        match self {
            Subject::KubeVip => "kube-vip",
            Subject::Kvip => "kvip",
            Subject::KvipMembership => "kvip membership",
        }
    }

    /// The name as a file name.
    pub fn slug(self) -> &'static str {
        match self {
            Subject::KubeVip => "kube-vip",
            Subject::Kvip => "kvip",
            Subject::KvipMembership => "kvip-membership",
        }
    }
}

/// Whether a daemon's binary is there to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// The binary `kvip-lab deploy` will run.
    Ready(PathBuf),
    /// Why it cannot run, precisely enough to act on.
    Unavailable(String),
}

/// The kvip binary `deploy` runs (beside kvip-lab, or `KVIP_LAB_KVIP`).
pub fn kvip() -> Availability {
    match commands::kvip_binary() {
        Ok(path) if path.is_file() => Availability::Ready(path),
        Ok(path) => Availability::Unavailable(format!("{} does not exist", path.display())),
        Err(e) => Availability::Unavailable(format!("{e:#}")),
    }
}

/// kube-vip: `KVIP_LAB_KUBE_VIP`, or a `kube-vip` beside kvip-lab, or the
/// released module built from `lab/kube-vip` (see
/// [`crate::toolchain::ensure_kube_vip`]). Nothing of kube-vip's code is in
/// the repository: only the module requirement and its hashes.
pub fn kube_vip(log: &mut dyn FnMut(&str)) -> Availability {
    match commands::kube_vip_binary(log) {
        Ok(path) => Availability::Ready(path),
        Err(e) => Availability::Unavailable(format!(
            "it cannot be built here: {}",
            redact_hosts(&format!("{e:#}"))
        )),
    }
}

/// Replaces `https://HOST` with `https://<module proxy>`: the report is
/// committed, and the project names no registry host in what it commits.
/// Already redacted text stays as it is.
pub fn redact_hosts(text: &str) -> String {
    const PROXY: &str = "<module proxy>";
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("https://") {
        out.push_str(&rest[..at]);
        out.push_str("https://");
        out.push_str(PROXY);
        let after = &rest[at + "https://".len()..];
        let host_end = if after.starts_with(PROXY) {
            PROXY.len()
        } else {
            after
                .find(|c: char| c == '/' || c.is_whitespace() || c == '"')
                .unwrap_or(after.len())
        };
        rest = &after[host_end..];
    }
    out.push_str(rest);
    // The checksum database is named in the path too: /sumdb/HOST/lookup/…
    if let Some(at) = out.find("/sumdb/") {
        let start = at + "/sumdb/".len();
        let end = out[start..].find('/').map_or(out.len(), |e| start + e);
        out.replace_range(start..end, "<checksum database>");
    }
    out
}

/// The manifest `kvip-lab deploy` gets for `subject`.
pub fn manifest(subject: Subject) -> anyhow::Result<String> {
    match subject {
        Subject::Kvip => kvip_manifest(&[]),
        Subject::KvipMembership => kvip_manifest(&["--env", "kvip_membership=true"]),
        Subject::KubeVip => Ok(kube_vip_manifest(&crate::kube_vip::rbac()?)),
    }
}

/// `kvip manifest all --role lb` with the benchmark's timings and interface,
/// plus `extra` flags.
fn kvip_manifest(extra: &[&str]) -> anyhow::Result<String> {
    let bin = commands::kvip_binary()?;
    let out = Command::new(&bin)
        .args([
            "manifest",
            "all",
            "--role",
            "lb",
            "--interface",
            VIP_INTERFACE,
        ])
        .args(crate::layout::LEASE_TIMING_FLAGS)
        .args(extra)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "kvip manifest: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// kube-vip's Service load balancer as its docs deploy it, on every node,
/// with the environment kvip's DaemonSet carries (ARP, `svc_enable`,
/// `svc_election`, the same timings and interface), metrics on :2114, under
/// `rbac`: kube-vip's own RBAC as `kube-vip manifest rbac` prints it
/// (ServiceAccount `kube-system/kube-vip`).
pub fn kube_vip_manifest(rbac: &str) -> String {
    let (duration, deadline, retry) = LEASE_TIMINGS;
    format!(
        r#"{rbac}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{ name: kube-vip-ds, namespace: kube-system }}
spec:
  selector: {{ matchLabels: {{ app.kubernetes.io/name: kube-vip-ds }} }}
  template:
    metadata: {{ labels: {{ app.kubernetes.io/name: kube-vip-ds }} }}
    spec:
      hostNetwork: true
      serviceAccountName: kube-vip
      tolerations: [{{ operator: Exists }}]
      containers:
      - name: kube-vip
        image: ghcr.io/kube-vip/kube-vip:{KUBE_VIP_VERSION}
        args: ["manager"]
        securityContext: {{ capabilities: {{ add: ["NET_ADMIN", "NET_RAW"] }} }}
        env:
        - {{ name: vip_arp, value: "true" }}
        - {{ name: port, value: "6443" }}
        - {{ name: vip_interface, value: "{VIP_INTERFACE}" }}
        - name: vip_nodename
          valueFrom: {{ fieldRef: {{ fieldPath: spec.nodeName }} }}
        - {{ name: cp_enable, value: "false" }}
        - {{ name: svc_enable, value: "true" }}
        - {{ name: svc_election, value: "true" }}
        - {{ name: vip_leaderelection, value: "true" }}
        - {{ name: vip_leaseduration, value: "{duration}" }}
        - {{ name: vip_renewdeadline, value: "{deadline}" }}
        - {{ name: vip_retryperiod, value: "{retry}" }}
        - {{ name: prometheus_server, value: ":2114" }}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_vip_manifest_is_what_the_lab_deploys_as_kube_vip() {
        let rbac = "---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: kube-vip\n  namespace: kube-system\n";
        let m = crate::deploy::parse(&kube_vip_manifest(rbac)).unwrap();
        assert_eq!(m.daemonsets.len(), 1);
        assert_eq!(m.objects.len(), 1, "kube-vip's RBAC as given, nothing more");
        let spec = m.daemonsets[0].spec.clone().unwrap().template.spec.unwrap();
        let c = &spec.containers[0];
        assert_eq!(
            crate::deploy::binary_for_image(c.image.as_deref().unwrap()).unwrap(),
            "kube-vip"
        );
        assert_eq!(c.args.clone().unwrap(), ["manager"]);
        let env: std::collections::BTreeMap<_, _> = c
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value))
            .collect();
        for (k, v) in [
            ("vip_arp", "true"),
            ("svc_enable", "true"),
            ("svc_election", "true"),
            ("vip_leaseduration", "5"),
            ("vip_renewdeadline", "3"),
            ("vip_retryperiod", "1"),
            ("prometheus_server", ":2114"),
        ] {
            assert_eq!(env[k].as_deref(), Some(v), "{k}");
        }
        assert!(env.contains_key("vip_nodename"));
    }

    #[test]
    fn go_errors_fit_on_one_line() {
        let text = "go: downloading x v1\ngo: x@v1: verifying module: 404 Not Found\n\tserver response: gone\n";
        assert_eq!(
            crate::toolchain::one_line(text),
            "go: x@v1: verifying module: 404 Not Found server response: gone"
        );
        assert_eq!(
            redact_hosts("reading https://proxy.example/a/b: 404"),
            "reading https://<module proxy>/a/b: 404"
        );
        let once = redact_hosts("reading https://proxy.example/a/b: 404");
        assert_eq!(redact_hosts(&once), once, "redacting twice changes nothing");
        assert_eq!(
            redact_hosts("https://p.example/sumdb/sum.example/lookup/x"),
            "https://<module proxy>/sumdb/<checksum database>/lookup/x"
        );
    }
}
