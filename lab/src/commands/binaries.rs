//! Where the kvip and kube-vip binaries that `deploy` runs for their images
//! come from.

use anyhow::bail;
use std::path::PathBuf;

/// The kvip binary `deploy` runs for kvip images.
pub fn kvip_binary() -> anyhow::Result<PathBuf> {
    local_binary("KVIP_LAB_KVIP", "kvip")
}

/// The kube-vip binary `deploy` runs for kube-vip images: `KVIP_LAB_KUBE_VIP`,
/// a `kube-vip` beside kvip-lab, or the released module built from
/// `lab/kube-vip` (once; cached).
pub fn kube_vip_binary(log: &mut dyn FnMut(&str)) -> anyhow::Result<PathBuf> {
    match local_binary("KVIP_LAB_KUBE_VIP", "kube-vip") {
        Ok(path) if path.is_file() => Ok(path),
        Ok(path) => bail!("KVIP_LAB_KUBE_VIP={} is not a file", path.display()),
        Err(_) => crate::toolchain::ensure_kube_vip(log),
    }
}

fn local_binary(var: &str, name: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let sibling = exe.with_file_name(name);
    if sibling.is_file() {
        return Ok(sibling);
    }
    bail!(
        "the {name} binary is not built: run `cargo build --bins` (looked for {}; or set {var})",
        sibling.display()
    )
}
