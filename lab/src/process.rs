//! Starting and stopping the lab's processes. Each one runs detached in its
//! own process group (so it outlives the `kvip-lab` call that started it),
//! inside a node's network namespace, with its output in a log file.

use crate::state::Launch;
use anyhow::{Context, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where in-cluster clients look for their service-account credentials.
pub const SERVICE_ACCOUNT_PATH: &str = "/run/secrets/kubernetes.io/serviceaccount";

/// Starts `launch` detached and returns its pid (also its process group).
pub fn spawn(launch: &Launch) -> anyhow::Result<i32> {
    if let Some(dir) = launch.log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)
        .with_context(|| format!("opening log {}", launch.log.display()))?;
    let mut argv: Vec<String> = Vec::new();
    if let Some(ns) = &launch.netns {
        argv.extend(["ip", "netns", "exec", ns].map(String::from));
    }
    if launch.service_account_dir.is_some() || !launch.files.is_empty() {
        // A private mount namespace shows this process its own credentials
        // at the paths its pod mounts them, as a kubelet would: the
        // service-account folder at the in-cluster path, files (a static
        // Pod's kubeconfig) on a tmpfs over their folder. The host keeps
        // only the empty mount points.
        std::fs::create_dir_all(SERVICE_ACCOUNT_PATH)?;
        for dir in file_folders(&launch.files) {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {dir}"))?;
        }
        argv.extend(mount_prefix(
            launch.service_account_dir.as_deref(),
            &launch.files,
        ));
    }
    argv.extend(launch.argv.iter().cloned());
    let Some((program, args)) = argv.split_first() else {
        bail!("nothing to run");
    };
    let child = Command::new(program)
        .args(args)
        .env_clear()
        .envs(&launch.env)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", launch.argv.join(" ")))?;
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    // The child is reparented to init when this short-lived command exits;
    // dropping the handle without waiting is deliberate.
    drop(child);
    Ok(pid)
}

/// The folders of `files`' paths in the pod, each once.
fn file_folders(files: &BTreeMap<String, PathBuf>) -> BTreeSet<String> {
    files
        .keys()
        .filter_map(|p| Path::new(p).parent())
        .map(|d| d.display().to_string())
        .collect()
}

/// `unshare … sh -c SCRIPT sh ARGS…`, to which the command is appended:
/// in a private mount namespace, binds `service_account` on the in-cluster
/// path, mounts a tmpfs over each folder of `files` and copies each file
/// (pod path → lab file) there, then runs the command. Paths go as
/// arguments, never into the script.
fn mount_prefix(service_account: Option<&Path>, files: &BTreeMap<String, PathBuf>) -> Vec<String> {
    let mut script = vec!["set -e".to_string()];
    let mut args = vec!["sh".to_string()];
    let arg = |value: String, args: &mut Vec<String>| {
        args.push(value);
        format!("\"${{{}}}\"", args.len() - 1)
    };
    if let Some(dir) = service_account {
        let dir = arg(dir.display().to_string(), &mut args);
        script.push(format!("mount --bind {dir} {SERVICE_ACCOUNT_PATH}"));
    }
    for folder in file_folders(files) {
        let folder = arg(folder, &mut args);
        script.push(format!("mount -t tmpfs tmpfs {folder}"));
    }
    for (in_pod, from) in files {
        let from = arg(from.display().to_string(), &mut args);
        let to = arg(in_pod.clone(), &mut args);
        script.push(format!("cp {from} {to}"));
    }
    script.push(format!("shift {}", args.len() - 1));
    script.push("exec \"$@\"".to_string());
    let mut prefix: Vec<String> = ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
        .map(String::from)
        .to_vec();
    prefix.push(script.join("; "));
    prefix.extend(args);
    prefix
}

/// True while `pid` runs (a zombie counts as gone).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Stops the process group `pid`: SIGTERM, then SIGKILL after `grace`.
pub fn stop(pid: i32, grace: Duration) {
    let group = Pid::from_raw(pid);
    if killpg(group, Signal::SIGTERM).is_err() {
        return;
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !alive(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = killpg(group, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills the process group `pid` at once (a crash, not a shutdown).
pub fn kill(pid: i32) {
    stop(pid, Duration::ZERO);
}

/// Every process whose network namespace is the one mounted at `netns_path`.
pub fn pids_in_netns(netns_path: &Path) -> Vec<i32> {
    let Ok(target) = std::fs::metadata(netns_path) else {
        return Vec::new();
    };
    use std::os::unix::fs::MetadataExt;
    let (dev, ino) = (target.dev(), target.ino());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
        })
        .collect()
}

/// Runs a short command to completion; an error carries its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command with `input` on its standard input.
pub fn run_with_input(program: &str, args: &[&str], input: &str) -> anyhow::Result<String> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `program args` inside the network namespace `netns`.
pub fn run_in(netns: &str, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut full = vec!["netns", "exec", netns, program];
    full.extend_from_slice(args);
    run("ip", &full)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the prefix's script with `sh` in place of the mounts (echoing
    /// what it would mount), to check the arguments land where they should.
    fn dry_run(prefix: &[String], command: &[&str]) -> String {
        let script = prefix[6]
            .replace("mount --bind", "echo bind")
            .replace("mount -t tmpfs tmpfs", "echo tmpfs")
            .replace("cp ", "echo cp ");
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .args(&prefix[7..])
            .args(command)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn a_static_pods_kubeconfig_is_copied_onto_a_tmpfs_at_its_mount_path() {
        let files = BTreeMap::from([(
            "/etc/kubernetes/admin.conf".to_string(),
            PathBuf::from("/var/lib/lab/static/cp1 kube-vip/admin.conf"),
        )]);
        let prefix = mount_prefix(None, &files);
        assert_eq!(
            &prefix[..6],
            ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
        );
        let out = dry_run(&prefix, &["echo", "run", "manager"]);
        assert_eq!(
            out,
            "tmpfs /etc/kubernetes\ncp /var/lib/lab/static/cp1 kube-vip/admin.conf /etc/kubernetes/admin.conf\nrun manager\n"
        );
    }

    #[test]
    fn a_daemonset_pod_gets_its_service_account_only() {
        let prefix = mount_prefix(Some(Path::new("/lab/sa/kvip-lb-cp1")), &BTreeMap::new());
        let out = dry_run(&prefix, &["echo", "kvip"]);
        assert_eq!(
            out,
            format!("bind /lab/sa/kvip-lb-cp1 {SERVICE_ACCOUNT_PATH}\nkvip\n")
        );
    }
}
