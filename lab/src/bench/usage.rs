//! Memory and CPU of the daemons under test, read from `/proc`: a daemon is
//! a process whose command line is the daemon's binary followed by
//! `manager`, and its node is the lab namespace it runs in.

use crate::layout::NodeLayout;
use crate::netns::netns_path;
use std::path::Path;

/// Clock ticks per second in `/proc/PID/stat`: the kernel's USER_HZ, which
/// the Linux ABI fixes at 100 on every architecture the lab runs on.
pub const TICKS_PER_SECOND: f64 = 100.0;

/// One daemon process and the node it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonProcess {
    /// Process id.
    pub pid: i32,
    /// Lab node name.
    pub node: String,
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// Resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// The largest resident set size since the process started or its peak
    /// was last reset ([`reset_peak`]): `VmHWM`, KiB.
    pub peak_rss_kib: Option<u64>,
    /// User plus system CPU time, clock ticks.
    pub cpu_ticks: u64,
}

/// Daemons started from `binary` with the `manager` argument, per node.
pub fn find_daemons(binary: &Path, nodes: &[NodeLayout]) -> Vec<DaemonProcess> {
    let want = binary.display().to_string();
    let mut found = Vec::new();
    for node in nodes {
        for pid in crate::process::pids_in_netns(&netns_path(&node.netns)) {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            if is_daemon_cmdline(&raw, &want) {
                found.push(DaemonProcess {
                    pid,
                    node: node.name.clone(),
                });
            }
        }
    }
    found
}

/// True when a NUL-separated command line runs `binary` with `manager`. The
/// wrappers the lab starts a container through (`ip netns exec`, `unshare`,
/// `sh -c`) carry the path as an argument, not as argv[0], so they do not match.
pub fn is_daemon_cmdline(raw: &[u8], binary: &str) -> bool {
    let mut args = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy);
    args.next().is_some_and(|argv0| argv0 == binary) && args.any(|a| a == "manager")
}

/// Reads RSS and CPU time of `pid`; `None` when it is gone.
pub fn sample(pid: i32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(ProcSample {
        rss_kib: parse_vmrss_kib(&status)?,
        peak_rss_kib: parse_vmhwm_kib(&status),
        cpu_ticks: parse_cpu_ticks(&stat)?,
    })
}

/// Starts `pid`'s peak RSS (`VmHWM`) again from its present RSS, so the
/// next reading's peak is the peak since now (`/proc/PID/clear_refs`, value
/// 5; needs root, as the benchmark runs).
pub fn reset_peak(pid: i32) -> std::io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

/// The KiB value of the `/proc/PID/status` line starting with `field`.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// `VmRSS:   12345 kB` from `/proc/PID/status`.
pub fn parse_vmrss_kib(status: &str) -> Option<u64> {
    status_kib(status, "VmRSS")
}

/// `VmHWM:   23456 kB` (the peak RSS) from `/proc/PID/status`.
pub fn parse_vmhwm_kib(status: &str) -> Option<u64> {
    status_kib(status, "VmHWM")
}

/// utime + stime (fields 14 and 15) from `/proc/PID/stat`; the command name
/// in parentheses may hold spaces, so fields are counted after the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmrss_is_read_in_kib() {
        let status = "Name:\tkvip\nVmPeak:\t  99 kB\nVmRSS:\t    8124 kB\nThreads:\t3\n";
        assert_eq!(parse_vmrss_kib(status), Some(8124));
        assert_eq!(parse_vmrss_kib("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn the_peak_is_vmhwm_not_vmpeak() {
        let status =
            "Name:\tkvip\nVmPeak:\t  991234 kB\nVmHWM:\t   10240 kB\nVmRSS:\t    8124 kB\n";
        assert_eq!(parse_vmhwm_kib(status), Some(10240));
        assert_eq!(parse_vmrss_kib(status), Some(8124));
        assert_eq!(parse_vmhwm_kib("VmRSS:\t 1 kB\n"), None);
    }

    #[test]
    fn cpu_ticks_survive_spaces_in_the_command_name() {
        let stat =
            "4242 (kvip (x) y) S 1 4242 4242 0 -1 4194560 300 0 0 0 17 5 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(22));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn only_the_daemon_itself_matches() {
        let bin = "/t/release/kvip";
        assert!(is_daemon_cmdline(b"/t/release/kvip\0manager\0", bin));
        assert!(!is_daemon_cmdline(
            b"sh\0-c\0exec \"$@\"\0/dir\0/t/release/kvip\0manager\0",
            bin
        ));
        assert!(!is_daemon_cmdline(b"/t/release/kvip\0manifest\0", bin));
    }
}
