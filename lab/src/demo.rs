//! `kvip-lab demo`: the lab's embedded default run. It tells kvip's story on
//! a real control plane, printing what happens as it happens: the layout
//! that leaves a Local Service `<pending>` (and kvip saying why), the fix,
//! and the VIP following its pod from node to node.

use crate::commands::{self, PodArgs};
use crate::layout::LabShape;
use crate::state::{LabState, Paths};
use anyhow::{Context, bail};
use std::process::Command;
use std::time::{Duration, Instant};

const VIP: &str = "10.77.0.100";

fn say(text: &str) {
    println!("\n==> {text}");
}

fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    let paths = Paths::new();
    let state = LabState::load(&paths)?.context("no lab")?;
    kubectl_with(&state, &paths, args, None)
}

fn kubectl_with(
    state: &LabState,
    paths: &Paths,
    args: &[&str],
    input: Option<&str>,
) -> anyhow::Result<String> {
    let kubectl = state.k8s_bin.join("kubectl").display().to_string();
    let mut full = vec![
        "--kubeconfig".to_string(),
        paths.kubeconfig().display().to_string(),
    ];
    full.extend(args.iter().map(|a| a.to_string()));
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    match input {
        Some(text) => crate::process::run_with_input(&kubectl, &full, text),
        None => crate::process::run(&kubectl, &full),
    }
}

fn show(args: &[&str]) -> anyhow::Result<()> {
    println!("$ kubectl {}", args.join(" "));
    print!("{}", kubectl(args)?);
    Ok(())
}

fn apply(yaml: &str) -> anyhow::Result<()> {
    let paths = Paths::new();
    let state = LabState::load(&paths)?.context("no lab")?;
    kubectl_with(&state, &paths, &["apply", "-f", "-"], Some(yaml)).map(|_| ())
}

fn kvip(args: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = Command::new(commands::kvip_binary()?)
        .args(args)
        .env("KUBECONFIG", Paths::new().kubeconfig())
        .output()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

fn deploy(name: &str, yaml: &str) -> anyhow::Result<()> {
    let path = Paths::new().root.join(format!("demo-{name}.yaml"));
    std::fs::write(&path, yaml)?;
    commands::deploy(&path, &[], false)
}

/// Probes until `accept` holds; prints the answer and how long it took.
fn probe_until(
    accept: impl Fn(&str) -> bool,
    timeout: Duration,
) -> anyhow::Result<(String, Duration)> {
    let started = Instant::now();
    let target = format!("{VIP}:80");
    loop {
        if let Ok(answer) = commands::probe(&target, Duration::from_millis(300))
            && accept(&answer)
        {
            let took = started.elapsed();
            println!(
                "$ kvip-lab probe {target}\n{answer}    (after {} ms)",
                took.as_millis()
            );
            return Ok((answer, took));
        }
        if started.elapsed() > timeout {
            bail!("{target} did not answer as expected within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status() -> anyhow::Result<()> {
    let (ok, text) = kvip(&["status"])?;
    if text.contains("unrecognized subcommand") {
        return Ok(());
    }
    println!(
        "$ kvip status{}",
        if ok {
            ""
        } else {
            "    (exit code 1: something is pending)"
        }
    );
    print!("{text}");
    Ok(())
}

fn pod(name: &str, node: &str) -> anyhow::Result<()> {
    commands::pod_create(PodArgs {
        name: name.into(),
        node: node.into(),
        labels: vec![("app".into(), "web".into())],
        port: 8080,
        namespace: "default".into(),
    })
}

/// The demo.
pub fn run() -> anyhow::Result<()> {
    say(
        "bringing the lab up: a real kube-apiserver, etcd and controller manager; nodes are network namespaces",
    );
    commands::down()?;
    commands::up(LabShape {
        nodes: 3,
        control_plane: 1,
        ipv6: false,
        ipvs_dummy: false,
    })?;
    show(&["get", "nodes", "-o", "wide"])?;

    say(
        "the layout that breaks kube-vip users: the load-balancer instance only on the control-plane node",
    );
    let mut args = vec!["manifest", "all", "--role", "lb"];
    args.extend_from_slice(&crate::layout::LEASE_TIMING_FLAGS);
    let (_, all) = kvip(&args)?;
    let cp_only = all.replacen("      hostNetwork: true", "      hostNetwork: true\n      nodeSelector:\n        node-role.kubernetes.io/control-plane: ''", 1);
    deploy("cp-only", &cp_only)?;
    say("a Service with externalTrafficPolicy: Local whose pod runs on worker1");
    pod("web-1", "worker1")?;
    apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\n  annotations: {{ kube-vip.io/loadbalancerIPs: \"{VIP}\" }}\nspec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n  selector: {{ app: web }}\n  ports: [{{ port: 80, targetPort: 8080 }}]\n"
    ))?;
    std::thread::sleep(Duration::from_secs(2));
    show(&["get", "service", "web"])?;
    println!(
        "(pending: only worker1 may announce a Local Service whose pod is there, and no kvip runs on it)"
    );
    status()?;
    show(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
        "-o",
        "custom-columns=REASON:.reason,FROM:.source.host,MESSAGE:.message",
    ])?;

    say("the fix: the load-balancer instance on every node");
    deploy("every-node", &all)?;
    let (answer, took) = probe_until(|_| true, Duration::from_secs(15))?;
    println!("served by {answer}, {} ms after the fix", took.as_millis());
    show(&["get", "service", "web", "-o", "wide"])?;
    status()?;

    say("the pod moves to worker2: a new pod becomes Ready there, then the old one is deleted");
    pod("web-2", "worker2")?;
    let moved = Instant::now();
    commands::pod_delete("web-1", "default")?;
    let (_, _) = probe_until(|a| a.starts_with("worker2/"), Duration::from_secs(15))?;
    println!(
        "the VIP followed the pod {} ms after the old pod's deletion began",
        moved.elapsed().as_millis()
    );
    show(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
        "-o",
        "custom-columns=REASON:.reason,FROM:.source.host,MESSAGE:.message",
    ])?;

    say(
        "done. Explore: eval \"$(kvip-lab env)\"; kubectl get svc,lease -A; kvip-lab logs worker2. Tear down: kvip-lab down",
    );
    Ok(())
}
