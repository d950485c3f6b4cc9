//! The lab pod's container: answers every TCP connection with one line,
//! `NODE/POD`, so a probe shows which node's pod served it.

use anyhow::Context;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};

/// Listens on every address in `listen` (and on those in `also` that are
/// free, like a hostPort) and answers each connection with `text`.
pub fn run(listen: &[SocketAddr], also: &[SocketAddr], text: &str) -> anyhow::Result<()> {
    let line = format!("{text}\n");
    let mut listeners = Vec::new();
    for addr in listen {
        listeners.push(TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?);
    }
    listeners.extend(also.iter().filter_map(|addr| TcpListener::bind(addr).ok()));
    let mut threads = Vec::new();
    for listener in listeners {
        let line = line.clone();
        threads.push(std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let _ = conn.write_all(line.as_bytes());
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}
