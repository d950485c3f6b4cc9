//! `kvip-lab demo`: the lab's embedded default run. Brings the lab up and
//! tells the story step by step, printing what happens as it happens.

use crate::commands;
use crate::layout::LabShape;
use crate::state::{LabState, Paths};
use anyhow::{Context, bail};
use std::process::Command;
use std::time::{Duration, Instant};

fn say(text: &str) {
    println!("\n==> {text}");
}

/// Runs the lab's kubectl and prints its output.
fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    let paths = Paths::new();
    let state = LabState::load(&paths)?.context("no lab")?;
    let out = Command::new(state.k8s_bin.join("kubectl"))
        .env("KUBECONFIG", paths.kubeconfig())
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn show(args: &[&str]) -> anyhow::Result<()> {
    println!("$ kubectl {}", args.join(" "));
    print!("{}", kubectl(args)?);
    Ok(())
}

/// Probes until it answers or `timeout` passes; prints the answer and how long it took.
fn probe_until(target: &str, timeout: Duration) -> anyhow::Result<String> {
    let started = Instant::now();
    loop {
        if let Ok(answer) = commands::probe(target, Duration::from_millis(300)) {
            println!(
                "$ kvip-lab probe {target}\n{answer}    (after {:.2} s)",
                started.elapsed().as_secs_f64()
            );
            return Ok(answer);
        }
        if started.elapsed() > timeout {
            bail!("{target} did not answer within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The demo.
pub fn run() -> anyhow::Result<()> {
    say(
        "bringing the lab up: a real kube-apiserver, etcd and controller manager, nodes as network namespaces",
    );
    commands::up(LabShape {
        nodes: 3,
        control_plane: 1,
        ipv6: false,
    })?;
    show(&["version"])?;
    show(&["get", "nodes", "-o", "wide"])?;
    say("a pod on worker1 (the lab plays its kubelet) and a Service selecting it");
    let _ = commands::pod_delete("hello-1", "default");
    commands::pod_create(commands::PodArgs {
        name: "hello-1".into(),
        node: "worker1".into(),
        labels: vec![("app".into(), "hello".into())],
        port: 8080,
        namespace: "default".into(),
    })?;
    let _ = kubectl(&["create", "service", "clusterip", "hello", "--tcp=80:8080"]);
    let _ = kubectl(&["set", "selector", "service", "hello", "app=hello"]);
    let started = Instant::now();
    while !kubectl(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=hello",
        "-o",
        "jsonpath={.items[*].endpoints[*].addresses}",
    ])?
    .contains("10.78.")
    {
        if started.elapsed() > Duration::from_secs(20) {
            bail!("the endpointslice controller wrote no endpoint for hello");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    show(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=hello",
        "-o",
        "wide",
    ])?;
    say("the client namespace reaches the pod's responder on worker1's address");
    probe_until("10.77.0.12:8080", Duration::from_secs(5))?;
    say(
        "done; explore with: eval \"$(kvip-lab env)\"; kubectl get pods -A; tear down with: kvip-lab down",
    );
    Ok(())
}
