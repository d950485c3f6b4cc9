//! Builds the control plane the lab runs: kube-apiserver,
//! kube-controller-manager and kubectl from the `k8s.io/kubernetes` Go module
//! pinned in `lab/k8s/go.mod`, cached per version so a warm `up` builds nothing.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Go helper module, as laid out in the source tree.
pub fn go_module_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s")
}

/// Binaries the lab needs from the Go module.
pub const BINARIES: [&str; 4] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-proxy",
    "kubectl",
];

/// Where built binaries are kept between runs (the machine keeps this folder).
pub fn cache_root() -> PathBuf {
    std::env::var_os("KVIP_LAB_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/kvip-lab"), PathBuf::from)
}

/// The Kubernetes version the Go module pins (`require k8s.io/kubernetes vX.Y.Z`).
pub fn pinned_version(go_mod: &str) -> anyhow::Result<String> {
    go_mod
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let first = words.next()?;
            let (module, version) = if first == "require" {
                (words.next()?, words.next()?)
            } else {
                (first, words.next()?)
            };
            (module == "k8s.io/kubernetes").then(|| version.to_string())
        })
        .next()
        .context("lab/k8s/go.mod does not require k8s.io/kubernetes")
}

/// A fingerprint of a Go module's inputs (`files`, relative to `dir`); a
/// change rebuilds.
fn fingerprint(dir: &Path, files: &[PathBuf]) -> anyhow::Result<String> {
    let mut text = String::new();
    for file in files {
        let path = dir.join(file);
        text.push_str(
            &std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?,
        );
    }
    // FNV-1a: stable across runs and Rust versions, enough to notice a change.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    Ok(format!("{hash:016x}"))
}

/// Fails with a clear sentence when `go` is not on PATH.
fn require_go(what: &str) -> anyhow::Result<()> {
    if Command::new("go").arg("version").output().is_err() {
        bail!(
            "the Go toolchain is missing: `go` is not on PATH, and {what} (install Go 1.26 or newer)"
        );
    }
    Ok(())
}

/// Runs `go build` in `dir` into a staging folder, then moves it to `out`,
/// so an interrupted build never leaves a half-filled cache entry.
fn go_build(
    dir: &Path,
    out: &Path,
    goflags: &str,
    flags: &[&str],
    package: &str,
) -> anyhow::Result<()> {
    let staging = out.with_extension("partial");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    let output = Command::new("go")
        .current_dir(dir)
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", goflags)
        .args(["build", "-trimpath"])
        .args(flags)
        .arg("-o")
        .arg(&staging)
        .arg(package)
        .output()
        .context("running go build")?;
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        bail!(
            "`go build` in {} failed: {}",
            dir.display(),
            one_line(&String::from_utf8_lossy(&output.stderr))
        );
    }
    let _ = std::fs::remove_dir_all(out);
    std::fs::rename(&staging, out)?;
    Ok(())
}

/// Returns the folder holding the built binaries, building them if needed.
pub fn ensure_control_plane(log: &mut dyn FnMut(&str)) -> anyhow::Result<(PathBuf, String)> {
    let dir = go_module_dir();
    let go_mod = std::fs::read_to_string(dir.join("go.mod"))
        .with_context(|| format!("the Go helper module is missing at {}", dir.display()))?;
    let version = pinned_version(&go_mod)?;
    let mut inputs = vec![PathBuf::from("go.mod"), PathBuf::from("go.sum")];
    inputs.extend(
        BINARIES
            .iter()
            .map(|b| Path::new("cmd").join(b).join("main.go")),
    );
    let out = cache_root().join(format!("k8s-{version}-{}", fingerprint(&dir, &inputs)?));
    if BINARIES.iter().all(|b| out.join(b).is_file()) {
        return Ok((out, version));
    }
    require_go(&format!(
        "the lab builds Kubernetes {version} from source with it"
    ))?;
    log(&format!(
        "building kube-apiserver, kube-controller-manager, kube-proxy and kubectl {version} (first time only; several minutes on 2 cores)"
    ));
    let (major, minor) = major_minor(&version);
    let mut ldflags = String::from("-s -w");
    for pkg in [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ] {
        ldflags.push_str(&format!(
            " -X {pkg}.gitVersion={version} -X {pkg}.gitMajor={major} -X {pkg}.gitMinor={minor} -X {pkg}.gitTreeState=clean -X {pkg}.buildDate=1970-01-01T00:00:00Z"
        ));
    }
    go_build(&dir, &out, "-mod=mod", &["-ldflags", &ldflags], "./cmd/...")?;
    Ok((out, version))
}

/// The Go module `kvip-lab bench` builds kube-vip from.
pub fn kube_vip_module_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kube-vip")
}

/// The kube-vip binary for the benchmark, built from `lab/kube-vip` (the
/// released module at the version its go.mod requires) on first use and
/// cached like the control plane. `-mod=readonly`: every hash comes from the
/// committed go.sum, so nothing is looked up in the checksum database.
pub fn ensure_kube_vip(log: &mut dyn FnMut(&str)) -> anyhow::Result<PathBuf> {
    let dir = kube_vip_module_dir();
    let inputs = ["go.mod", "go.sum", "main.go"].map(PathBuf::from);
    let out = cache_root().join(format!("kube-vip-{}", fingerprint(&dir, &inputs)?));
    let bin = out.join("kube-vip");
    if bin.is_file() {
        return Ok(bin);
    }
    require_go("the benchmark builds kube-vip from its Go module with it")?;
    log("building kube-vip from its Go module (first time only; about 4 minutes on 2 cores)");
    go_build(&dir, &out, "-mod=readonly", &["-ldflags", "-s -w"], ".")?;
    if !bin.is_file() {
        bail!("`go build` in {} left no kube-vip binary", dir.display());
    }
    Ok(bin)
}

/// The Go module the lab builds kube-vip-cloud-provider from.
pub fn cloud_provider_module_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kube-vip-cloud-provider")
}

/// The kube-vip-cloud-provider binary, the oracle of the IPAM tests: built
/// from `lab/kube-vip-cloud-provider` (the released module at the version
/// its go.mod requires, run by a main of ours) on first use and cached like
/// kube-vip, `-mod=readonly` from the committed go.sum.
pub fn ensure_cloud_provider(log: &mut dyn FnMut(&str)) -> anyhow::Result<PathBuf> {
    let dir = cloud_provider_module_dir();
    let inputs = ["go.mod", "go.sum", "main.go"].map(PathBuf::from);
    let out = cache_root().join(format!(
        "kube-vip-cloud-provider-{}",
        fingerprint(&dir, &inputs)?
    ));
    let bin = out.join("kube-vip-cloud-provider");
    if bin.is_file() {
        return Ok(bin);
    }
    require_go("the lab builds kube-vip-cloud-provider from its Go module with it")?;
    log(
        "building kube-vip-cloud-provider from its Go module (first time only; a few minutes on 2 cores)",
    );
    go_build(&dir, &out, "-mod=readonly", &["-ldflags", "-s -w"], ".")?;
    if !bin.is_file() {
        bail!(
            "`go build` in {} left no kube-vip-cloud-provider binary",
            dir.display()
        );
    }
    Ok(bin)
}

/// An error output on one line, without `go: downloading` progress lines.
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("go: downloading"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn major_minor(version: &str) -> (String, String) {
    let mut parts = version.trim_start_matches('v').split('.');
    let major = parts.next().unwrap_or("1").to_string();
    let minor = parts.next().unwrap_or("0").to_string();
    (major, minor)
}

/// The etcd binary shipped by the `etcd-bin-vendored` crate.
pub fn etcd_binary() -> anyhow::Result<PathBuf> {
    etcd_bin_vendored::etcd_bin_path()
        .map(PathBuf::from)
        .map_err(|e| anyhow::anyhow!("the vendored etcd binary is unavailable: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pinned_version() {
        let go_mod = "module x\n\ngo 1.26\n\nrequire k8s.io/kubernetes v1.34.4\n";
        assert_eq!(pinned_version(go_mod).unwrap(), "v1.34.4");
        let block = "require (\n\tk8s.io/kubernetes v1.35.4\n\tfoo v1\n)\n";
        assert_eq!(pinned_version(block).unwrap(), "v1.35.4");
        assert!(pinned_version("module x\n").is_err());
    }

    #[test]
    fn the_repository_pins_matching_staging_modules() {
        let go_mod = std::fs::read_to_string(go_module_dir().join("go.mod")).unwrap();
        let version = pinned_version(&go_mod).unwrap();
        let staging = version.replacen("v1.", "v0.", 1);
        let replaces: Vec<_> = go_mod
            .lines()
            .filter(|l| l.contains("=> k8s.io/"))
            .collect();
        assert!(replaces.len() >= 31, "every staging module must be pinned");
        for line in replaces {
            assert!(
                line.trim_end().ends_with(&staging),
                "{line} is not pinned to {staging}"
            );
        }
    }

    #[test]
    fn the_oracle_is_the_release_kvips_pools_follow() {
        let go_mod = std::fs::read_to_string(cloud_provider_module_dir().join("go.mod")).unwrap();
        assert!(
            go_mod
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == ["github.com/kube-vip/kube-vip-cloud-provider", "v0.0.12"]),
            "docs/ipam-differences.md and core/src/ipam.rs describe v0.0.12"
        );
    }

    #[test]
    fn splits_major_and_minor() {
        assert_eq!(major_minor("v1.34.4"), ("1".to_string(), "34".to_string()));
    }
}
