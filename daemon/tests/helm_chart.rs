//! The Helm chart (`deploy/helm/kvip`) renders exactly the objects `kvip
//! manifest all` prints for the same settings: `helm template` with several
//! sets of values is compared, object by object and field by field, with
//! `kvip manifest all --role ROLE …` for each role the values list. Objects
//! may come in any order; anything else that differs fails, naming the
//! object and the field. `helm lint` must pass, and values kvip would refuse
//! must stop the rendering with a message naming the value.
//!
//! helm is built from its Go module (`scripts/helm.sh`, pinned in
//! `deploy/helm/tool/go.mod`) on first use and cached; nothing here talks to
//! a cluster.

mod release_build;

use release_build::workspace_root;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn chart() -> PathBuf {
    workspace_root().join("deploy/helm/kvip")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `scripts/helm.sh args` (helm, built on first use).
fn helm(args: &[&str]) -> Output {
    let script = workspace_root().join("scripts/helm.sh");
    Command::new("bash")
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()))
}

/// Writes `values` to a file of its own for `helm -f`.
fn values_file(name: &str, values: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvip-helm-chart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, values).expect("write the values");
    path
}

/// `helm template` of the chart in `namespace` with `values`.
fn render(name: &str, namespace: &str, values: &str) -> Result<String, String> {
    let file = values_file(name, values);
    let chart = chart();
    let out = helm(&[
        "template",
        "kvip",
        &chart.display().to_string(),
        "--namespace",
        namespace,
        "-f",
        &file.display().to_string(),
    ]);
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

/// `kvip manifest all args`.
fn manifest(args: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kvip"))
        .args(["manifest", "all"])
        .args(args)
        .output()
        .expect("run kvip");
    assert!(
        out.status.success(),
        "kvip manifest all {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Every non-empty YAML document of `text`, as JSON values without nulls.
fn documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| {
            <Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("not YAML: {e}\n{text}"))
        })
        .map(without_nulls)
        .filter(|doc| !doc.is_null())
        .collect()
}

/// Drops `key: null` everywhere: absent and null mean the same to the API.
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// An object's identity: `Kind namespace/name` (cluster-scoped: `Kind name`).
fn identity(doc: &Value) -> String {
    let kind = doc["kind"].as_str().unwrap_or("(no kind)");
    let name = doc["metadata"]["name"].as_str().unwrap_or("(no name)");
    match doc["metadata"]["namespace"].as_str() {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    }
}

fn by_identity(docs: Vec<Value>, what: &str) -> BTreeMap<String, Value> {
    let mut objects = BTreeMap::new();
    for doc in docs {
        let id = identity(&doc);
        assert!(
            objects.insert(id.clone(), doc).is_none(),
            "{what} has {id} twice"
        );
    }
    objects
}

/// Where `chart` and `kvip` differ, one line per field, by path.
fn differences(path: &str, chart: &Value, kvip: &Value, out: &mut Vec<String>) {
    match (chart, kvip) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => differences(&at, x, y, out),
                    (Some(x), None) => out.push(format!("{at}: only the chart has it ({x})")),
                    (None, Some(y)) => out.push(format!("{at}: only kvip manifest has it ({y})")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                out.push(format!(
                    "{path}: the chart has {} items, kvip manifest {}: chart {chart}, kvip manifest {kvip}",
                    a.len(),
                    b.len()
                ));
                return;
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (a, b) if a != b => out.push(format!("{path}: chart {a}, kvip manifest {b}")),
        _ => {}
    }
}

/// One set of values and the `kvip manifest all` flags of each role it runs.
struct Case {
    name: &'static str,
    namespace: &'static str,
    values: &'static str,
    /// Per role: the flags after `kvip manifest all`.
    flags: Vec<Vec<&'static str>>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "defaults",
            namespace: "kube-system",
            values: "address: 192.0.2.10\n",
            flags: vec![
                vec!["--role", "cp", "--address", "192.0.2.10"],
                vec!["--role", "lb"],
            ],
        },
        Case {
            name: "one-daemonset-every-setting",
            namespace: "kvip-system",
            values: r#"
roles: [all]
image:
  repository: registry.example/kvip
  tag: "1.2.3"
address: 10.0.0.5
port: 8443
interface: eth0
servicesInterface: eth1
leaseDuration: 15
renewDeadline: 10
retryPeriod: 2
arpRate: 1000
svcElection: false
lbClassOnly: true
lbClassName: kvip.example/lb
serviceNamespace: apps
metricsPort:
  all: 9100
logLevel: 5
env:
  - name: vip_leasename
    value: cluster-vip
  - name: svc_leasename
    value: kvip-svcs
  - name: kvip_membership
    value: "true"
  - name: vip_arpRate
    value: 2000
"#,
            flags: vec![vec![
                "--role",
                "all",
                "--namespace",
                "kvip-system",
                "--image",
                "registry.example/kvip:1.2.3",
                "--address",
                "10.0.0.5",
                "--port",
                "8443",
                "--interface",
                "eth0",
                "--services-interface",
                "eth1",
                "--lease-duration",
                "15",
                "--renew-deadline",
                "10",
                "--retry-period",
                "2",
                "--arp-rate",
                "1000",
                "--svc-election",
                "false",
                "--lb-class-only",
                "true",
                "--lb-class-name",
                "kvip.example/lb",
                "--service-namespace",
                "apps",
                "--metrics-port",
                "9100",
                "--log-level",
                "5",
                "--env",
                "vip_leasename=cluster-vip",
                "--env",
                "svc_leasename=kvip-svcs",
                "--env",
                "kvip_membership=true",
                "--env",
                "vip_arpRate=2000",
            ]],
        },
        Case {
            name: "control-plane-lease-elsewhere-without-policy",
            namespace: "kube-system",
            values: r#"
roles: [cp]
address: 192.168.1.10
interface: bond0
admissionPolicy: false
env:
  - name: cp_namespace
    value: vip-leases
  - name: vip_leasename
    value: my-control-plane
"#,
            flags: vec![vec![
                "--role",
                "cp",
                "--address",
                "192.168.1.10",
                "--interface",
                "bond0",
                "--admission-policy",
                "false",
                "--env",
                "cp_namespace=vip-leases",
                "--env",
                "vip_leasename=my-control-plane",
            ]],
        },
        Case {
            name: "services-only",
            namespace: "networking",
            values: r#"
roles: [lb]
metricsPort:
  lb: 2200
lbClassName: kvip
env:
  - name: svc_leasename
    value: services-leader
"#,
            flags: vec![vec![
                "--role",
                "lb",
                "--namespace",
                "networking",
                "--metrics-port",
                "2200",
                "--lb-class-name",
                "kvip",
                "--env",
                "svc_leasename=services-leader",
            ]],
        },
    ]
}

#[test]
fn the_chart_renders_what_kvip_manifest_prints() {
    let chart_yaml = std::fs::read_to_string(chart().join("Chart.yaml")).expect("Chart.yaml");
    assert!(
        chart_yaml
            .lines()
            .any(|l| l == format!("appVersion: \"{}\"", env!("CARGO_PKG_VERSION"))),
        "Chart.yaml's appVersion must be kvip's version {}: the default image follows it",
        env!("CARGO_PKG_VERSION")
    );

    let mut failures = Vec::new();
    for case in cases() {
        let file = values_file(case.name, case.values);
        let lint = helm(&[
            "lint",
            "--strict",
            &chart().display().to_string(),
            "--namespace",
            case.namespace,
            "-f",
            &file.display().to_string(),
        ]);
        if !lint.status.success() {
            failures.push(format!(
                "{}: helm lint failed:\n{}{}",
                case.name,
                text(&lint.stdout),
                text(&lint.stderr)
            ));
        }

        let rendered = match render(case.name, case.namespace, case.values) {
            Ok(rendered) => rendered,
            Err(e) => {
                failures.push(format!("{}: helm template failed: {e}", case.name));
                continue;
            }
        };
        let chart_objects = by_identity(documents(&rendered), "the chart");
        let mut expected = Vec::new();
        for flags in &case.flags {
            let mut args: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
            if !flags.contains(&"--namespace") {
                args.extend(["--namespace".to_string(), case.namespace.to_string()]);
            }
            expected.extend(documents(&manifest(&args)));
        }
        let kvip_objects = by_identity(expected, "kvip manifest");
        assert!(
            kvip_objects.len() >= 2,
            "{}: kvip manifest printed too little",
            case.name
        );

        for (id, kvip) in &kvip_objects {
            match chart_objects.get(id) {
                None => failures.push(format!("{}: the chart lacks {id}", case.name)),
                Some(chart) => {
                    let mut diffs = Vec::new();
                    differences("", chart, kvip, &mut diffs);
                    failures.extend(
                        diffs
                            .into_iter()
                            .map(|d| format!("{}: {id}: {d}", case.name)),
                    );
                }
            }
        }
        for id in chart_objects.keys() {
            if !kvip_objects.contains_key(id) {
                failures.push(format!(
                    "{}: the chart renders {id}, which kvip manifest does not print",
                    case.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The comparison itself must see a difference, or the test above would
/// pass for anything.
#[test]
fn a_changed_field_is_named_with_its_object_and_path() {
    let a = documents("kind: DaemonSet\nmetadata:\n  name: kvip\nspec:\n  x: [1, {y: 2}]\n");
    let b = documents("kind: DaemonSet\nmetadata:\n  name: kvip\nspec:\n  x: [1, {y: 3}]\n");
    assert_eq!(identity(&a[0]), "DaemonSet kvip");
    let mut diffs = Vec::new();
    differences("", &a[0], &b[0], &mut diffs);
    assert_eq!(
        diffs,
        vec!["spec.x[1].y: chart 2, kvip manifest 3".to_string()]
    );
    let mut none = Vec::new();
    differences("", &a[0], &a[0], &mut none);
    assert!(none.is_empty());
}

#[test]
fn values_kvip_would_refuse_stop_the_rendering_naming_the_value() {
    let refused = [
        ("no-address", "roles: [cp, lb]\n", "address"),
        (
            "address-without-cp",
            "roles: [lb]\naddress: 192.0.2.1\n",
            "address",
        ),
        (
            "all-with-others",
            "roles: [all, lb]\naddress: 192.0.2.1\n",
            "roles",
        ),
        ("unknown-role", "roles: [gateway]\n", "roles"),
        (
            "timings",
            "roles: [lb]\nleaseDuration: 3\nrenewDeadline: 3\n",
            "leaseDuration",
        ),
        (
            "service-setting-on-cp",
            "roles: [cp]\naddress: 192.0.2.1\nlbClassName: x\n",
            "lbClassName",
        ),
        (
            "metrics-by-env",
            "roles: [lb]\nenv: [{name: prometheus_server, value: ':1'}]\n",
            "metricsPort",
        ),
        (
            "unknown-value",
            "roles: [lb]\nadress: 192.0.2.1\n",
            "adress",
        ),
    ];
    for (name, values, needle) in refused {
        match render(name, "kube-system", values) {
            Ok(rendered) => panic!("{name}: the chart rendered {values:?}:\n{rendered}"),
            Err(e) => assert!(
                e.contains(needle),
                "{name}: the error should name {needle}: {e}"
            ),
        }
    }
}
