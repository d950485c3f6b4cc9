//! The container image, for real: `scripts/build-image.sh` puts the static
//! kvip (release, `x86_64-unknown-linux-musl`, the build `static_binary`
//! checks) alone into a `FROM scratch` image with podman, and podman runs it
//! with no network: `version`, `manifest` (the same bytes the host's kvip
//! prints), and the default command, `manager`, refusing to start without
//! its node name. Nothing is pulled and no registry is involved.
//!
//! podman keeps this test's images in a storage of its own (vfs, under the
//! target directory), removed afterwards, so it touches no image of the
//! machine's. It runs the container with runc and with modest resource
//! limits (1024 files and processes, or this process's own if lower): the
//! OCI runtime may not raise them.

mod release_build;

use release_build::{MUSL, build_release, ensure_musl, image_target_dir, workspace_root};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A podman with its own image storage, removed on drop.
struct Podman {
    root: PathBuf,
    /// podman's run state: a short path of its own, since podman refuses a
    /// runroot longer than 50 characters and the target directory may be
    /// deep in a checkout.
    runroot: PathBuf,
}

impl Podman {
    fn new() -> Self {
        let root = image_target_dir().join(format!("podman-{}", std::process::id()));
        let runroot = PathBuf::from(format!("/run/kvip-podman-{}", std::process::id()));
        for dir in [&root, &runroot] {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("create podman's folder {}: {e}", dir.display()));
        }
        Podman { root, runroot }
    }

    /// podman's global options: this test's storage, the vfs driver (no
    /// overlay mounts on top of whatever the target directory lives on).
    fn global_options(&self) -> Vec<String> {
        vec![
            "--root".to_string(),
            self.root.join("storage").display().to_string(),
            "--runroot".to_string(),
            self.runroot.display().to_string(),
            "--storage-driver".to_string(),
            "vfs".to_string(),
        ]
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.args(self.global_options()).stdin(Stdio::null());
        cmd
    }

    fn output(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run podman: {e}"))
    }

    /// `podman run --rm --network=none IMAGE args`, as the image would run.
    fn run(&self, image: &str, args: &[&str]) -> Output {
        let (nofile, nproc) = (soft_limit("Max open files"), soft_limit("Max processes"));
        let mut all = vec![
            "run".to_string(),
            "--rm".to_string(),
            "--network=none".to_string(),
            // crun refuses a host with both cgroup hierarchies mounted; runc does not.
            "--runtime".to_string(),
            "runc".to_string(),
            "--ulimit".to_string(),
            format!("nofile={nofile}:{nofile}"),
            "--ulimit".to_string(),
            format!("nproc={nproc}:{nproc}"),
            image.to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        self.output(&all)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.output(&["rmi", "--all", "--force"]);
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = std::fs::remove_dir_all(&self.runroot);
    }
}

/// This process's soft limit named `name` in /proc/self/limits, at most
/// 1024: plenty for kvip, and within what a sandboxed host lets the OCI
/// runtime set (this machine refuses 65536 processes though its own limit
/// is higher).
fn soft_limit(name: &str) -> u64 {
    const CAP: u64 = 1024;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next().map(str::to_string))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(1024, |v| v.min(CAP))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn require_podman() {
    let found = Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "podman is missing: the image is built and run with it (scripts/install-deps.sh installs it)"
    );
}

/// Builds the image from `binary` with the project's own script.
fn build_image(podman: &Podman, binary: &Path, tag: &str) {
    let script = workspace_root().join("scripts/build-image.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(tag)
        .env("KVIP_IMAGE_BINARY", binary)
        .env(
            "PODMAN",
            format!("podman {}", podman.global_options().join(" ")),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}\n{}",
        script.display(),
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// `kvip manifest args` from the kvip the test suite built for the host.
fn host_manifest(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kvip"))
        .args(args)
        .output()
        .expect("run the host's kvip");
    assert!(out.status.success(), "kvip {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn the_image_is_built_from_scratch_and_runs_with_podman() {
    require_podman();
    if let Err(why) = ensure_musl() {
        panic!("{MUSL} is needed for the FROM scratch image: {why}");
    }
    let binary = build_release(Some(MUSL));
    let podman = Podman::new();
    let tag = format!("localhost/kvip-image-test:{}", std::process::id());
    build_image(&podman, &binary, &tag);

    // One layer holding one file: the binary, nothing else.
    let inspect = podman.output(&["image", "inspect", &tag]);
    assert!(inspect.status.success(), "{}", text(&inspect.stderr));
    let images: serde_json::Value =
        serde_json::from_slice(&inspect.stdout).expect("podman image inspect prints JSON");
    let image = &images[0];
    assert_eq!(
        image["Config"]["Entrypoint"],
        serde_json::json!(["/kvip"]),
        "{image}"
    );
    assert_eq!(
        image["Config"]["Cmd"],
        serde_json::json!(["manager"]),
        "{image}"
    );
    let layers = image["RootFS"]["Layers"].as_array().map(Vec::len);
    assert_eq!(
        layers,
        Some(1),
        "a FROM scratch image has one layer: {image}"
    );
    let binary_size = std::fs::metadata(&binary).expect("the binary").len();
    let size = image["Size"].as_u64().expect("the image's size");
    assert!(
        size >= binary_size && size < binary_size + 64 * 1024,
        "the image ({size} bytes) should hold the {binary_size}-byte binary and nothing else"
    );

    let version = podman.run(&tag, &["version"]);
    assert!(
        version.status.success(),
        "kvip version in the image: {}",
        text(&version.stderr)
    );
    assert!(
        text(&version.stdout).starts_with(&format!("kvip {}", env!("CARGO_PKG_VERSION"))),
        "kvip version in the image printed {:?}",
        text(&version.stdout)
    );

    for args in [
        &[
            "manifest",
            "all",
            "--role",
            "lb",
            "--image",
            "registry.example/kvip:1",
        ][..],
        &[
            "manifest",
            "daemonset",
            "--role",
            "cp",
            "--address",
            "192.0.2.10",
            "--interface",
            "eth0",
        ][..],
        &["manifest", "rbac"][..],
    ] {
        let run = podman.run(&tag, args);
        assert!(
            run.status.success(),
            "kvip {args:?} in the image: {}",
            text(&run.stderr)
        );
        let printed = text(&run.stdout);
        assert!(
            printed.contains("kind: "),
            "kvip {args:?} printed {printed:?}"
        );
        assert_eq!(
            printed,
            host_manifest(args),
            "kvip {args:?} prints other objects in the image than on the host"
        );
    }

    // The default command is `manager`: without the DaemonSet's environment
    // it refuses to start, naming the missing variable, and never panics.
    let manager = podman.run(&tag, &[]);
    let stderr = text(&manager.stderr);
    assert_eq!(manager.status.code(), Some(1), "kvip manager: {stderr}");
    assert!(
        stderr.contains("vip_nodename") && !stderr.contains("panicked"),
        "kvip manager without its environment: {stderr}"
    );
}
