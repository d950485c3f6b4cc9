//! Building kvip as the image carries it: release, for
//! `x86_64-unknown-linux-musl`, in a target directory of its own, shared by
//! the tests that need that binary (`static_binary`, `image`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target the image's binary is compiled for.
pub const MUSL: &str = "x86_64-unknown-linux-musl";

/// The repository root (the Cargo workspace).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the daemon crate lives in the workspace")
        .to_path_buf()
}

/// A target directory of its own under the workspace's, so the release
/// build neither waits for nor invalidates the build running this test.
pub fn image_target_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    base.join("static-image")
}

/// The cargo running this test, else the one on PATH.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// Whether rustup reports the musl target installed; `None` without rustup.
pub fn musl_installed() -> Option<bool> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == MUSL)
    })
}

/// Makes the musl target available, or says why it cannot be.
pub fn ensure_musl() -> Result<(), String> {
    match musl_installed() {
        Some(true) => return Ok(()),
        Some(false) => {}
        None => return Err("rustup is not available".to_string()),
    }
    let out = Command::new("rustup")
        .args(["target", "add", MUSL])
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if out.status.success() && musl_installed() == Some(true) {
        Ok(())
    } else {
        Err(format!(
            "`rustup target add {MUSL}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `cargo build --release [--target TARGET] -p kvip`; returns the binary.
pub fn build_release(target: Option<&str>) -> PathBuf {
    let dir = image_target_dir();
    let mut cmd = Command::new(cargo());
    cmd.current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", &dir)
        .args(["build", "--release", "-p", "kvip"]);
    if let Some(target) = target {
        cmd.args(["--target", target]);
    }
    let out = cmd.output().expect("cargo runs");
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let hint = if stderr.contains("musl-gcc") {
            "\nthe C parts of ring and psm need a musl C compiler: apt-get install \
             musl-tools (scripts/install-deps.sh installs it)"
        } else {
            ""
        };
        panic!(
            "the release build failed ({}):\n{}{hint}",
            out.status,
            tail.join("\n")
        );
    }
    let mut binary = dir;
    if let Some(target) = target {
        binary.push(target);
    }
    binary.push("release");
    binary.push("kvip");
    assert!(binary.is_file(), "{} was not built", binary.display());
    binary
}
