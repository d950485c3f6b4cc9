//! End to end: the lab itself. Brings it up from nothing, checks the control
//! plane is the one built from source, that the real endpointslice controller
//! writes slices for lab pods, that probes reach responders, that bad input
//! ends in one clear sentence without half-built state, and that `down`
//! leaves nothing behind.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

fn lab_namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("kvl-"))
        .map(String::from)
        .collect()
}

fn lab_processes() -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("/run/kvip-lab")
            || cmdline.contains("kvip-lab labd")
            || cmdline.contains("kvip-lab responder")
        {
            found.push(cmdline);
        }
    }
    found
}

fn starts_clean() -> Outcome {
    lab_ok(&["down"])?;
    ensure!(
        lab_namespaces().is_empty(),
        "namespaces left: {:?}",
        lab_namespaces()
    );
    Ok(())
}

fn refuses_without_root() -> Outcome {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            lab_bin(),
            "up",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "up as nobody succeeded");
    ensure!(
        stderr.contains("must run as root"),
        "unclear message: {stderr}"
    );
    ensure!(
        stderr.trim().lines().count() == 1,
        "more than one sentence: {stderr}"
    );
    ensure!(lab_namespaces().is_empty(), "left namespaces behind");
    Ok(())
}

fn refuses_without_go() -> Outcome {
    let empty_cache =
        std::env::temp_dir().join(format!("kvip-lab-no-cache-{}", std::process::id()));
    // Every PATH entry that holds no `go`.
    let path = std::env::var("PATH").unwrap_or_default();
    let without_go: Vec<&str> = path
        .split(':')
        .filter(|d| !std::path::Path::new(d).join("go").exists())
        .collect();
    let out = Command::new(lab_bin())
        .arg("up")
        .env("PATH", without_go.join(":"))
        .env("KVIP_LAB_CACHE", &empty_cache)
        .output()
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&empty_cache);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "up without Go succeeded");
    ensure!(
        stderr.contains("Go toolchain is missing"),
        "unclear message: {stderr}"
    );
    ensure!(
        lab_namespaces().is_empty(),
        "a failed up left namespaces: {:?}",
        lab_namespaces()
    );
    ensure!(
        !std::path::Path::new("/run/kvip-lab/state.json").exists(),
        "a failed up left state behind"
    );
    Ok(())
}

fn up_refuses_a_concurrent_up_and_reports_its_time() -> Outcome {
    let first = Command::new(lab_bin())
        .arg("up")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(300));
    let second = lab(&["up"]);
    let first = first.wait_with_output().map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&first.stderr);
    ensure!(first.status.success(), "up failed: {stderr}");
    let second_err = String::from_utf8_lossy(&second.stderr);
    ensure!(!second.status.success(), "a second concurrent up succeeded");
    ensure!(
        second_err.contains("another kvip-lab command"),
        "unclear message: {second_err}"
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with("lab up in"))
        .ok_or(format!("no timing line: {stderr}"))?;
    println!("    {line}");
    let env = parse_env(&String::from_utf8_lossy(&first.stdout));
    for key in [
        "KUBECONFIG",
        "KVIP_LAB_NODES",
        "KVIP_LAB_CLIENT",
        "KVIP_LAB_SUBNET",
        "KVIP_LAB_VIP_RANGE",
        "PATH",
    ] {
        ensure!(env.contains_key(key), "up did not print {key}");
    }
    ensure!(
        env["KVIP_LAB_NODES"] == "cp1 worker1 worker2",
        "nodes: {}",
        env["KVIP_LAB_NODES"]
    );
    for node in env["KVIP_LAB_NODES"].split(' ') {
        ensure!(
            env.contains_key(&format!("KVIP_LAB_NETNS_{node}")),
            "no namespace variable for {node}"
        );
    }
    Ok(())
}

fn up_again_is_idempotent() -> Outcome {
    let out = lab(&["up"]);
    ensure!(
        out.status.success(),
        "second up failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("already up"),
        "second up rebuilt the lab"
    );
    Ok(())
}

fn kubectl_shows_the_built_server_version() -> Outcome {
    let go_mod = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/k8s/go.mod"))
        .map_err(|e| e.to_string())?;
    let pinned = kvip_lab::toolchain::pinned_version(&go_mod).map_err(|e| e.to_string())?;
    let version: serde_json::Value =
        serde_json::from_str(&kubectl(&["version", "-o", "json"])?).map_err(|e| e.to_string())?;
    let server = version["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default();
    let client = version["clientVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default();
    ensure!(
        server == pinned,
        "server reports {server}, the module pins {pinned}"
    );
    ensure!(
        client == pinned,
        "kubectl reports {client}, the module pins {pinned}"
    );
    let nodes = get_json(&["nodes"])?;
    let cp = nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["metadata"]["name"] == "cp1")
        .cloned()
        .unwrap_or_default();
    ensure!(
        cp["metadata"]["labels"]
            .get("node-role.kubernetes.io/control-plane")
            .is_some(),
        "cp1 lacks the control-plane label"
    );
    ensure!(
        cp["spec"]["taints"][0]["effect"] == "NoSchedule",
        "cp1 lacks the NoSchedule taint"
    );
    Ok(())
}

const SERVICE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: { name: lab-e2e }
---
apiVersion: v1
kind: Service
metadata: { name: hello, namespace: lab-e2e }
spec:
  selector: { app: hello }
  ports: [{ port: 80, targetPort: 8080 }]
"#;

fn endpointslice_controller_and_probe() -> Outcome {
    apply(SERVICE)?;
    lab_ok(&[
        "pod",
        "hello-1",
        "--node",
        "worker1",
        "--labels",
        "app=hello",
        "--port",
        "8080",
        "-n",
        "lab-e2e",
    ])?;
    let pod = get_json(&["pod", "hello-1", "-n", "lab-e2e"])?;
    let pod_ip = pod["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ensure!(!pod_ip.is_empty(), "the pod has no IP");
    wait_for(
        "the EndpointSlice of hello",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let slices = get_json(&[
                "endpointslices",
                "-n",
                "lab-e2e",
                "-l",
                "kubernetes.io/service-name=hello",
            ])
            .ok()?;
            let ep = slices["items"][0]["endpoints"][0].clone();
            (ep["addresses"][0] == pod_ip.as_str()
                && ep["nodeName"] == "worker1"
                && ep["conditions"]["ready"] == true)
                .then_some(())
        },
    )?;
    let answer = probe("10.77.0.12:8080", 1000).ok_or("probe of worker1:8080 failed")?;
    ensure!(answer == "worker1/hello-1", "unexpected answer {answer}");
    lab_ok(&["pod", "delete", "hello-1", "-n", "lab-e2e"])?;
    ensure!(
        probe("10.77.0.12:8080", 300).is_none(),
        "the responder still answers after delete"
    );
    wait_for(
        "the endpoint to go",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let slices = get_json(&[
                "endpointslices",
                "-n",
                "lab-e2e",
                "-l",
                "kubernetes.io/service-name=hello",
            ])
            .ok()?;
            slices["items"][0]["endpoints"]
                .as_array()
                .is_none_or(|e| e.is_empty())
                .then_some(())
        },
    )?;
    kubectl(&["delete", "namespace", "lab-e2e", "--wait=false"])?;
    Ok(())
}

/// The lab looks like a kubeadm cluster: kubeadm's labels and taint on the
/// control plane, API priority and fairness on, the real kube-proxy on every
/// node, and a default route on every node to a router that lets nothing out.
fn kubeadm_shaped() -> Outcome {
    let cp = get_json(&["node", "cp1"])?;
    let labels = &cp["metadata"]["labels"];
    for label in [
        "node-role.kubernetes.io/control-plane",
        "node.kubernetes.io/exclude-from-external-load-balancers",
    ] {
        ensure!(labels.get(label).is_some(), "cp1 lacks {label}: {labels}");
    }
    let taints = cp["spec"]["taints"].to_string();
    ensure!(
        taints.contains("node-role.kubernetes.io/control-plane") && taints.contains("NoSchedule"),
        "cp1 lacks kubeadm's taint: {taints}"
    );
    let worker = get_json(&["node", "worker1"])?;
    ensure!(
        worker["metadata"]["labels"]
            .get("node.kubernetes.io/exclude-from-external-load-balancers")
            .is_none(),
        "a worker carries the control plane's label"
    );
    // Priority and fairness on: its objects are served and it classifies.
    let schemas = kubectl(&["get", "flowschemas", "-o", "name"])?;
    ensure!(
        schemas.contains("flowschema.flowcontrol.apiserver.k8s.io/service-accounts"),
        "no API priority and fairness: {schemas}"
    );
    // The real kube-proxy runs on every node, in nftables mode.
    for node in ["cp1", "worker1", "worker2"] {
        let ns = format!("kvl-{node}");
        let rules = in_netns(&ns, "nft", &["list", "table", "ip", "kube-proxy"])?;
        ensure!(
            rules.contains("10.96.0.1"),
            "{node}: kube-proxy has not programmed the kubernetes ClusterIP"
        );
        let route = in_netns(&ns, "ip", &["route", "show", "default"])?;
        ensure!(
            route.contains("default via 10.77.0.1 dev eth0"),
            "{node}: no default route to the lab router: {route}"
        );
    }
    // The router has no link but its own on the bridge...
    let links = in_netns("kvl-router", "ip", &["-o", "link", "show"])?;
    let names: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or_default())
        .collect();
    ensure!(
        names == ["lo", "eth0"],
        "the router has links other than lo and eth0: {names:?}"
    );
    ensure!(
        in_netns("kvl-router", "ip", &["route", "show", "default"])?
            .trim()
            .is_empty(),
        "the router has a default route"
    );
    // ...and drops what a node sends off the lab (a documentation address:
    // it has no route anywhere), counting it.
    let dropped = || kvip_lab::network::router_dropped().map_err(|e| format!("{e:#}"));
    let before = dropped()?;
    let reached = in_netns(
        "kvl-worker1",
        "bash",
        &["-c", "timeout 2 bash -c '</dev/tcp/192.0.2.1/443'"],
    );
    ensure!(reached.is_err(), "a connection off the lab succeeded");
    let after = dropped()?;
    ensure!(
        after > before,
        "the router counted no packet headed off the lab ({before} -> {after})"
    );
    println!(
        "    router dropped {} packet(s) headed off the lab",
        after - before
    );
    Ok(())
}

fn isolate_api_cuts_only_that_node() -> Outcome {
    let api_from = |ns: &str| {
        in_netns(
            ns,
            "bash",
            &["-c", "timeout 1 bash -c '</dev/tcp/10.96.0.1/443'"],
        )
        .is_ok()
    };
    ensure!(
        api_from("kvl-worker1") && api_from("kvl-worker2"),
        "the API ClusterIP is unreachable before the fault"
    );
    lab_ok(&["fault", "isolate-api", "worker1"])?;
    ensure!(!api_from("kvl-worker1"), "worker1 still reaches the API");
    ensure!(api_from("kvl-worker2"), "worker2 lost the API too");
    lab_ok(&["fault", "heal", "worker1"])?;
    ensure!(api_from("kvl-worker1"), "heal did not restore worker1");
    Ok(())
}

fn kill_and_revive_node() -> Outcome {
    lab_ok(&["pod", "echo-1", "--node", "worker2", "--port", "9000"])?;
    ensure!(
        probe("10.77.0.13:9000", 1000).is_some(),
        "responder on worker2 does not answer"
    );
    lab_ok(&["fault", "kill-node", "worker2"])?;
    ensure!(
        probe("10.77.0.13:9000", 300).is_none(),
        "a killed node still answers"
    );
    lab_ok(&["fault", "revive-node", "worker2"])?;
    wait_for(
        "worker2 to answer again",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || probe("10.77.0.13:9000", 300),
    )?;
    lab_ok(&["pod", "delete", "echo-1"])?;
    Ok(())
}

fn down_leaves_nothing_behind() -> Outcome {
    lab_ok(&["down"])?;
    ensure!(
        lab_namespaces().is_empty(),
        "namespaces left: {:?}",
        lab_namespaces()
    );
    let procs = lab_processes();
    ensure!(procs.is_empty(), "processes left: {procs:?}");
    let links = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .map_err(|e| e.to_string())?;
    let links = String::from_utf8_lossy(&links.stdout);
    ensure!(
        !links.contains("vn0") && !links.contains("br0"),
        "links left on the host: {links}"
    );
    Ok(())
}

fn main() {
    run_all(
        "lab",
        &[
            Scenario {
                name: "starts_clean",
                run: starts_clean,
            },
            Scenario {
                name: "refuses_without_root",
                run: refuses_without_root,
            },
            Scenario {
                name: "refuses_without_go",
                run: refuses_without_go,
            },
            Scenario {
                name: "up_refuses_a_concurrent_up_and_reports_its_time",
                run: up_refuses_a_concurrent_up_and_reports_its_time,
            },
            Scenario {
                name: "up_again_is_idempotent",
                run: up_again_is_idempotent,
            },
            Scenario {
                name: "kubectl_shows_the_built_server_version",
                run: kubectl_shows_the_built_server_version,
            },
            Scenario {
                name: "endpointslice_controller_and_probe",
                run: endpointslice_controller_and_probe,
            },
            Scenario {
                name: "kubeadm_shaped",
                run: kubeadm_shaped,
            },
            Scenario {
                name: "isolate_api_cuts_only_that_node",
                run: isolate_api_cuts_only_that_node,
            },
            Scenario {
                name: "kill_and_revive_node",
                run: kill_and_revive_node,
            },
            Scenario {
                name: "down_leaves_nothing_behind",
                run: down_leaves_nothing_behind,
            },
        ],
    );
}
