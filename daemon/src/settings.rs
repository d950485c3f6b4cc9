//! `kvip manager`'s configuration: kube-vip's environment variables, each
//! also accepted as a long flag of the same name (`--vip_arp=true`), flags
//! winning. Validation is the core's, so every error names the variable.

use kvip_core::config::{KVIP_VARIABLES, known_variable, looks_like_kube_vip};
use std::collections::BTreeMap;

/// Where a pod's ServiceAccount namespace is mounted; kube-vip reads its
/// own namespace from here.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The namespace of this pod's ServiceAccount, if one is mounted.
pub fn service_account_namespace() -> Option<String> {
    let text = std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE).ok()?;
    let namespace = text.trim();
    (!namespace.is_empty()).then(|| namespace.to_string())
}

/// The namespace this instance runs in: `POD_NAMESPACE` (kvip's manifests
/// set it from `metadata.namespace`), else the ServiceAccount's, which is
/// where kube-vip finds its own (kube-vip's manifests set no
/// `POD_NAMESPACE`). In a pod the two agree; outside one (the lab) the
/// variable is the process's own while the file is the machine's.
pub fn pod_namespace() -> Option<String> {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|ns| !ns.is_empty())
        .or_else(service_account_namespace)
}

/// Merges the process environment with `--name=value` / `--name value` flags.
pub fn variables(
    env: impl IntoIterator<Item = (String, String)>,
    flags: &[String],
) -> Result<BTreeMap<String, String>, String> {
    let mut vars: BTreeMap<String, String> = env
        .into_iter()
        // Names like kube-vip's are kept so a typo gets a warning.
        .filter(|(k, _)| known_variable(k) || k.starts_with("kvip_") || looks_like_kube_vip(k))
        .collect();
    let mut args = flags.iter();
    while let Some(arg) = args.next() {
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(format!(
                "unexpected argument {arg:?}: settings are --name=value, with kube-vip's variable names"
            ));
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => {
                let value = args
                    .next()
                    .ok_or_else(|| format!("--{flag} needs a value"))?;
                (flag.to_string(), value.clone())
            }
        };
        if !known_variable(&name) && !name.starts_with("kvip_") {
            return Err(format!(
                "unknown flag --{name}: kvip takes kube-vip's variable names (such as --vip_arp, --svc_enable) and kvip-only ones ({})",
                KVIP_VARIABLES.join(", ")
            ));
        }
        vars.insert(name, value);
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flags_override_the_environment() {
        let env = vec![
            ("vip_arp".to_string(), "false".to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ];
        let vars = variables(env, &s(&["--vip_arp=true", "--svc_enable", "1"])).unwrap();
        assert_eq!(vars["vip_arp"], "true");
        assert_eq!(vars["svc_enable"], "1");
        assert!(
            !vars.contains_key("HOME"),
            "unrelated environment is ignored"
        );
        let env = vec![("vip_arprate".to_string(), "1000".to_string())];
        let vars = variables(env, &[]).unwrap();
        let (_, warnings) = kvip_core::Config::from_env(&vars).unwrap();
        assert!(
            warnings
                .iter()
                .any(|w| w.to_string().contains("vip_arprate")),
            "a misspelt kube-vip variable is warned about: {warnings:?}"
        );
    }

    #[test]
    fn unknown_flags_are_named() {
        let err = variables(Vec::new(), &s(&["--vip_arpp=true"])).unwrap_err();
        assert!(err.contains("--vip_arpp"), "{err}");
        assert!(
            variables(Vec::new(), &s(&["--svc_enable"]))
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(variables(Vec::new(), &s(&["manager"])).is_err());
    }

    #[test]
    fn unimplemented_kube_vip_flags_pass_through_to_warnings() {
        let vars = variables(Vec::new(), &s(&["--bgp_enable=true"])).unwrap();
        let (_, warnings) = kvip_core::Config::from_env(&vars).unwrap();
        assert!(
            warnings
                .iter()
                .any(|w| w.to_string().contains("bgp_enable"))
        );
    }
}
