//! `kvip-lab logs`: what the DaemonSet and static Pod containers on a node wrote.

use super::load;
use crate::state::{Paths, ProcessKind};

/// `kvip-lab logs NODE`: the logs of the DaemonSet containers on NODE.
pub fn logs(node: &str) -> anyhow::Result<()> {
    let paths = Paths::new();
    let state = load(&paths)?;
    state.node(node)?;
    let mut any = false;
    for p in state
        .processes
        .iter()
        .filter(|p| p.node.as_deref() == Some(node))
    {
        if let ProcessKind::DaemonSet { daemonset: owner } | ProcessKind::StaticPod { pod: owner } =
            &p.kind
        {
            any = true;
            println!("==> {owner} on {node} ({})", p.launch.log.display());
            print!(
                "{}",
                std::fs::read_to_string(&p.launch.log).unwrap_or_default()
            );
        }
    }
    if !any {
        eprintln!("nothing deployed on {node} (see `kvip-lab deploy`)");
    }
    Ok(())
}
