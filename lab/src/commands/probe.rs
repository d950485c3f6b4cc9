//! `kvip-lab probe`: one connection from the client namespace, as a user's
//! laptop would make it.

use crate::layout::CLIENT_NETNS;
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::time::Duration;

/// `kvip-lab probe ADDR:PORT`: one connection from the client namespace.
pub fn probe(target: &str, timeout: Duration) -> anyhow::Result<String> {
    let addr: SocketAddr = target
        .parse()
        .with_context(|| format!("{target:?} is not ADDR:PORT (IPv6: [ADDR]:PORT)"))?;
    let line = crate::netns::in_netns(CLIENT_NETNS, move || -> anyhow::Result<String> {
        use std::io::BufRead;
        let stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        let mut line = String::new();
        std::io::BufReader::new(stream).read_line(&mut line)?;
        if line.is_empty() {
            bail!("the connection closed without an answer");
        }
        Ok(line.trim_end().to_string())
    })??;
    Ok(line)
}
