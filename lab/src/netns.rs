//! Running a piece of code inside a lab network namespace. A socket belongs
//! to the namespace it was created in, so a connection made here keeps
//! working from any thread afterwards.

use anyhow::Context;
use nix::sched::{CloneFlags, setns};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

/// Path of a named network namespace (as `ip netns` mounts it).
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Runs `f` on a fresh thread whose network namespace is `netns`.
pub fn in_netns<T, F>(netns: &str, f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = netns_path(netns);
    let file =
        std::fs::File::open(&path).with_context(|| format!("no network namespace {netns}"))?;
    let handle = std::thread::spawn(move || -> anyhow::Result<T> {
        setns(&file, CloneFlags::CLONE_NEWNET).context("entering the network namespace")?;
        Ok(f())
    });
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("a thread inside {netns} panicked"))?
}

/// Opens a TCP connection to `addr` from inside `netns`.
pub fn connect_in(netns: &str, addr: SocketAddr, timeout: Duration) -> anyhow::Result<TcpStream> {
    in_netns(netns, move || TcpStream::connect_timeout(&addr, timeout))?
        .with_context(|| format!("connecting to {addr} from {netns}"))
}
