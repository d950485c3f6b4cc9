//! kube-vip's own manifests, as the kube-vip binary the lab builds prints
//! them (`kube-vip manifest rbac|daemonset|pod`), so the lab never keeps a
//! hand copy that could drift from what users apply. A drop-in changes one
//! thing in them: the image.

use anyhow::{Context, bail};
use std::process::Command;

/// The image kvip's manifests name; `kvip-lab deploy` runs the kvip binary
/// for it.
pub const KVIP_IMAGE: &str = "ghcr.io/kvip/kvip:latest";

/// What `kube-vip manifest ARGS` prints, from the lab's kube-vip binary
/// (built once from its Go module; see [`crate::toolchain::ensure_kube_vip`]).
pub fn manifest(args: &[&str]) -> anyhow::Result<String> {
    let bin = crate::commands::kube_vip_binary(&mut |line| eprintln!("{line}"))?;
    let out = Command::new(&bin)
        .arg("manifest")
        .args(args)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "kube-vip manifest {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).context("kube-vip printed a manifest that is not UTF-8")
}

/// kube-vip's published RBAC: its ServiceAccount, ClusterRole and binding.
pub fn rbac() -> anyhow::Result<String> {
    manifest(&["rbac"])
}

/// The rules of the ClusterRole in `rbac` (kube-vip's RBAC manifest).
pub fn cluster_role_rules(rbac: &str) -> anyhow::Result<serde_json::Value> {
    let parsed = crate::deploy::parse(rbac)?;
    let role = parsed
        .objects
        .iter()
        .find(|o| o["kind"] == "ClusterRole")
        .context("kube-vip's RBAC has no ClusterRole")?;
    let rules = role["rules"].clone();
    if rules.as_array().is_none_or(|r| r.is_empty()) {
        bail!("kube-vip's ClusterRole has no rules");
    }
    Ok(rules)
}

/// kube-vip's ClusterRole rules (from `rbac`) as ClusterRole `role`, bound
/// to ServiceAccount `namespace/account` (created too): kube-vip's
/// permissions for another account.
pub fn rules_bound_to(
    rbac: &str,
    role: &str,
    account: &str,
    namespace: &str,
) -> anyhow::Result<String> {
    let rules = cluster_role_rules(rbac)?;
    let objects = [
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": { "name": account, "namespace": namespace },
        }),
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": { "name": role },
            "rules": rules,
        }),
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": { "name": role },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
            "subjects": [{ "kind": "ServiceAccount", "name": account, "namespace": namespace }],
        }),
    ];
    let docs: Vec<String> = objects
        .iter()
        .map(serde_norway::to_string)
        .collect::<Result<_, _>>()?;
    Ok(docs.join("---\n"))
}

/// `text` with every kube-vip container image replaced by `image`, and
/// nothing else changed. Err when it names no kube-vip image.
pub fn with_image(text: &str, image: &str) -> anyhow::Result<String> {
    let mut swapped = 0;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let item = trimmed.strip_prefix("- ").unwrap_or(trimmed);
        let value = item
            .strip_prefix("image:")
            .map(|v| v.trim().trim_matches('"'));
        match value {
            Some(v) if crate::deploy::binary_for_image(v).is_ok_and(|b| b == "kube-vip") => {
                let indent = &line[..line.len() - item.len()];
                let end = if line.ends_with('\n') { "\n" } else { "" };
                out.push_str(&format!("{indent}image: {image}{end}"));
                swapped += 1;
            }
            _ => out.push_str(line),
        }
    }
    if swapped == 0 {
        bail!("the manifest names no kube-vip image");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape `kube-vip manifest rbac` prints (its rules shortened).
    const RBAC: &str = r#"---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: kube-vip
  namespace: kube-system

---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:kube-vip-role
rules:
- apiGroups:
  - ""
  resources:
  - services/status
  verbs:
  - update
"#;

    #[test]
    fn kube_vips_rules_are_bound_to_another_account_unchanged() {
        let text = rules_bound_to(RBAC, "e2e-role", "kvip-lb", "kvip-system").unwrap();
        let m = crate::deploy::parse(&text).unwrap();
        assert_eq!(m.objects.len(), 3);
        assert_eq!(m.objects[0]["metadata"]["name"], "kvip-lb");
        assert_eq!(m.objects[1]["rules"], cluster_role_rules(RBAC).unwrap());
        assert_eq!(
            m.objects[1]["rules"][0]["verbs"],
            serde_json::json!(["update"])
        );
        assert_eq!(m.objects[2]["subjects"][0]["namespace"], "kvip-system");
        assert_eq!(m.objects[2]["roleRef"]["name"], "e2e-role");
        assert!(cluster_role_rules("kind: ServiceAccount\nmetadata: {name: a}\n").is_err());
    }

    #[test]
    fn only_the_kube_vip_image_changes() {
        let pod = "spec:\n  containers:\n  - args:\n    - manager\n    image: ghcr.io/kube-vip/kube-vip:v1.0.0\n    name: kube-vip\n  - image: \"ghcr.io/kube-vip/kube-vip:v1.0.0\"\n  - image: nginx\n";
        let swapped = with_image(pod, KVIP_IMAGE).unwrap();
        assert_eq!(
            swapped,
            format!(
                "spec:\n  containers:\n  - args:\n    - manager\n    image: {KVIP_IMAGE}\n    name: kube-vip\n  - image: {KVIP_IMAGE}\n  - image: nginx\n"
            )
        );
        assert_eq!(crate::deploy::binary_for_image(KVIP_IMAGE).unwrap(), "kvip");
        assert!(with_image("image: nginx\n", KVIP_IMAGE).is_err());
    }
}
