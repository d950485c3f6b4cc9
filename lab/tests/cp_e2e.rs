//! End to end: the control-plane VIP and the two-instance layout on a lab
//! with three control-plane nodes, deployed from `kvip manifest` output.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

const VIP: &str = "10.77.0.199";

fn manifest(role: &str) -> Result<String, String> {
    let mut args = vec!["manifest", "all", "--role", role];
    if role != "lb" {
        args.extend_from_slice(&["--address", VIP]);
    }
    args.extend_from_slice(&TIMINGS);
    kvip(&args)
}

/// `kubectl get --raw /readyz` through the VIP, from the client namespace.
fn api_through_vip() -> Option<String> {
    let env = lab_env().ok()?;
    let kubectl = format!("{}/kubectl", env.get("PATH")?.split(':').next()?);
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            "kvl-client",
            &kubectl,
            "--kubeconfig",
            env.get("KUBECONFIG")?,
        ])
        .args([
            "--server",
            &format!("https://{VIP}:6443"),
            "--request-timeout=1s",
            "get",
            "--raw",
            "/readyz",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn holder() -> Option<String> {
    lease_holder("kube-system", "plndr-cp-lock").filter(|h| !h.is_empty())
}

fn setup() -> Outcome {
    lab_ok(&["down"])?;
    let up = lab(&["up", "--nodes", "4", "--control-plane", "3"]);
    ensure!(
        up.status.success(),
        "lab up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    Ok(())
}

fn manifests_pass_server_side_validation() -> Outcome {
    for role in ["cp", "lb", "all"] {
        let yaml = manifest(role)?;
        kubectl_input(&["apply", "--dry-run=server", "-f", "-"], Some(&yaml))
            .map_err(|e| format!("role {role}: {e}"))?;
    }
    Ok(())
}

fn control_plane_vip_answers_the_api() -> Outcome {
    let path = temp_file("cp.yaml", &manifest("cp")?)?;
    let out = lab_ok(&["deploy", &path.display().to_string()])?;
    ensure!(
        out.contains("running on cp1 cp2 cp3"),
        "the cp DaemonSet landed elsewhere: {out}"
    );
    let started = Instant::now();
    let answer = wait_for(
        "the API through the VIP",
        Duration::from_secs(20),
        Duration::from_millis(100),
        api_through_vip,
    )?;
    println!(
        "    API answered through {VIP} after {} ms: {answer}",
        started.elapsed().as_millis()
    );
    ensure!(answer == "ok", "readyz through the VIP said {answer}");
    let h = holder().ok_or("nobody holds plndr-cp-lock")?;
    ensure!(
        nodes_with_address(VIP) == [h.clone()],
        "VIP on {:?}, Lease held by {h}",
        nodes_with_address(VIP)
    );
    Ok(())
}

fn seed_layout_serves_a_local_service_on_a_worker() -> Outcome {
    let path = temp_file("lb.yaml", &manifest("lb")?)?;
    let out = lab_ok(&["deploy", &path.display().to_string()])?;
    ensure!(
        out.contains("cp1 cp2 cp3 worker1"),
        "the lb DaemonSet must run on every node: {out}"
    );
    apply(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: seed
  namespace: default
  annotations: { kube-vip.io/loadbalancerIPs: "10.77.0.180" }
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: { app: seed }
  ports: [{ port: 80, targetPort: 8080 }]
"#,
    )?;
    lab_ok(&[
        "pod", "seed-1", "--node", "worker1", "--labels", "app=seed", "--port", "8080",
    ])?;
    let (answer, took) = probe_until(
        "10.77.0.180:80",
        Duration::from_secs(10),
        Duration::from_millis(20),
        |_| true,
    )?;
    println!(
        "    Local Service on the worker answered after {} ms",
        took.as_millis()
    );
    ensure!(answer == "worker1/seed-1", "answered by {answer}");
    Ok(())
}

fn killing_the_holder_moves_the_vip() -> Outcome {
    let old = holder().ok_or("nobody holds plndr-cp-lock")?;
    let killed = Instant::now();
    lab_ok(&["fault", "kill-node", &old])?;
    wait_for(
        "the API through the VIP again",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || api_through_vip().filter(|a| a == "ok"),
    )?;
    let took = killed.elapsed();
    let new = holder().unwrap_or_default();
    println!(
        "    {old} killed -> API through the VIP from {new} after {} ms (bound 6 s)",
        took.as_millis()
    );
    lab_ok(&["fault", "revive-node", &old])?;
    ensure!(
        new != old && !new.is_empty(),
        "the Lease did not move: {new}"
    );
    ensure!(
        took <= Duration::from_millis(6500),
        "took {took:?}, more than lease duration + retry period"
    );
    wait_for(
        "the revived node to drop the stale VIP",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || (nodes_with_address(VIP).len() == 1).then_some(()),
    )?;
    Ok(())
}

fn stopping_the_holders_api_server_moves_the_vip() -> Outcome {
    let old = holder().ok_or("nobody holds plndr-cp-lock")?;
    let stopped = Instant::now();
    lab_ok(&["fault", "apiserver-stop", &old])?;
    let new = wait_for(
        "the Lease to move",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || holder().filter(|h| *h != old),
    )?;
    wait_for(
        "the API through the VIP",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || api_through_vip().filter(|a| a == "ok"),
    )?;
    println!(
        "    {old}'s API server stopped -> VIP on {new} after {} ms",
        stopped.elapsed().as_millis()
    );
    ensure!(
        nodes_with_address(VIP) == [new.clone()],
        "VIP on {:?}",
        nodes_with_address(VIP)
    );
    lab_ok(&["fault", "apiserver-start", &old])?;
    Ok(())
}

fn bad_values_are_refused_by_manifest_and_manager_alike() -> Outcome {
    let cases: [(&str, &str, &str, &str); 3] = [
        ("--interface", "eth 0", "vip_interface", "eth 0"),
        // Neither an IP address nor a DNS name (a DNS name is taken).
        ("--address", "10.77.0.256", "address", "10.77.0.256"),
        ("--lease-duration", "3", "vip_leaseduration", "3"),
    ];
    for (flag, value, variable, env_value) in cases {
        let mut args = vec![
            "manifest",
            "daemonset",
            "--role",
            "cp",
            "--address",
            VIP,
            "--renew-deadline",
            "3",
            "--retry-period",
            "1",
        ];
        args.extend_from_slice(&[flag, value]);
        let refused = kvip(&args)
            .err()
            .ok_or(format!("manifest accepted {flag} {value:?}"))?;
        ensure!(
            refused.contains(flag),
            "manifest's message does not name {flag}: {refused}"
        );
        let out = Command::new(kvip_bin())
            .arg("manager")
            .env_clear()
            .env("cp_enable", "true")
            .env("address", VIP)
            .env("vip_nodename", "cp1")
            .env("vip_renewdeadline", "3")
            .env("vip_retryperiod", "1")
            .env(variable, env_value)
            .output()
            .map_err(|e| e.to_string())?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success(),
            "kvip manager accepted {variable}={env_value:?}"
        );
        ensure!(
            stderr.contains(variable),
            "kvip manager's message does not name {variable}: {stderr}"
        );
        println!("    {flag} {value:?} / {variable}={env_value:?}: refused by both");
    }
    Ok(())
}

fn main() {
    run_all(
        "control-plane",
        &[
            Scenario {
                name: "setup",
                run: setup,
            },
            Scenario {
                name: "manifests_pass_server_side_validation",
                run: manifests_pass_server_side_validation,
            },
            Scenario {
                name: "control_plane_vip_answers_the_api",
                run: control_plane_vip_answers_the_api,
            },
            Scenario {
                name: "seed_layout_serves_a_local_service_on_a_worker",
                run: seed_layout_serves_a_local_service_on_a_worker,
            },
            Scenario {
                name: "killing_the_holder_moves_the_vip",
                run: killing_the_holder_moves_the_vip,
            },
            Scenario {
                name: "stopping_the_holders_api_server_moves_the_vip",
                run: stopping_the_holders_api_server_moves_the_vip,
            },
            Scenario {
                name: "bad_values_are_refused_by_manifest_and_manager_alike",
                run: bad_values_are_refused_by_manifest_and_manager_alike,
            },
            Scenario {
                name: "teardown",
                run: lab_down,
            },
        ],
    );
}
