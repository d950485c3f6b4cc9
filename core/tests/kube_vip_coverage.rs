//! Every setting kube-vip v1.0.0 reads is accounted for, read from its own
//! source in the Go module cache: each environment variable (the constants
//! of pkg/kubevip/config_envvar.go, and the lower-case names its commands
//! look up directly) is implemented or warned about by name, each
//! `kube-vip.io/…` name in its source is classified, no name in kvip's
//! table is one kube-vip does not have, and the compatibility table in
//! docs/migrate-from-kube-vip.md is the one the table generates.
//!
//! `KVIP_BLESS=1` rewrites the documentation's table instead of comparing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use kvip_core::config::{Config, ConfigWarning};
use kvip_core::kube_vip::{
    ANNOTATIONS, ANNOTATIONS_PENDING, OLDER_VARIABLES, Support, Use, VARIABLES, markdown_table,
};

const MODULE: &str = "github.com/kube-vip/kube-vip";
const VERSION: &str = "v1.0.0";
const TABLE_START: &str = "<!-- compatibility table: generated from core/src/kube_vip.rs by core/tests/kube_vip_coverage.rs -->";
const TABLE_END: &str = "<!-- end of compatibility table -->";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("core lives in the workspace")
        .to_path_buf()
}

/// The Go module cache: `go env GOMODCACHE`, else Go's default place.
fn module_cache() -> Option<PathBuf> {
    let from_go = Command::new("go")
        .args(["env", "GOMODCACHE"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty());
    from_go
        .or_else(|| std::env::var("GOMODCACHE").ok())
        .or_else(|| {
            std::env::var("HOME")
                .ok()
                .map(|h| format!("{h}/go/pkg/mod"))
        })
        .map(PathBuf::from)
}

/// kube-vip v1.0.0's source, downloaded through the lab's Go module (which
/// pins it) when the cache lacks it.
fn kube_vip_source() -> PathBuf {
    let cache = module_cache().expect("cannot find the Go module cache: is Go installed?");
    let dir = cache.join(format!("{MODULE}@{VERSION}"));
    if !dir.join("pkg/kubevip/config_envvar.go").exists() {
        let status = Command::new("go")
            .args(["mod", "download", &format!("{MODULE}@{VERSION}")])
            .current_dir(workspace().join("lab/kube-vip"))
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "kube-vip {VERSION} is not in {} and `go mod download {MODULE}@{VERSION}` failed",
            cache.display()
        );
    }
    assert!(
        dir.join("pkg/kubevip/config_envvar.go").exists(),
        "no kube-vip source at {}",
        dir.display()
    );
    dir
}

/// The non-test Go files under `dir`.
fn go_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            go_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "go")
            && !path.to_string_lossy().ends_with("_test.go")
        {
            out.push(path);
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The quoted values of `name = "value"` lines (comments left out).
fn constants(go: &str) -> BTreeSet<String> {
    go.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//"))
        .filter_map(|l| {
            let (name, rest) = l.split_once('=')?;
            let name = name.trim();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return None;
            }
            let value = rest.trim().strip_prefix('"')?;
            Some(value.split('"').next()?.to_string())
        })
        .collect()
}

/// The lower-case names looked up with `os.Getenv("…")` / `os.LookupEnv("…")`.
fn looked_up(go: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for call in ["os.Getenv(\"", "os.LookupEnv(\""] {
        for (at, _) in go.match_indices(call) {
            let rest = &go[at + call.len()..];
            let Some(name) = rest.split('"').next() else {
                continue;
            };
            if !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// Every string literal starting `"kube-vip.io/`, cut at its name.
fn kube_vip_names(go: &str) -> BTreeSet<String> {
    go.match_indices("\"kube-vip.io/")
        .filter_map(|(at, m)| {
            let rest = &go[at + m.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .collect();
            let name = name.trim_end_matches('.');
            (!name.is_empty()).then(|| format!("kube-vip.io/{name}"))
        })
        .collect()
}

struct KubeVip {
    variables: BTreeSet<String>,
    annotations: BTreeSet<String>,
}

fn kube_vip() -> KubeVip {
    let root = kube_vip_source();
    let mut variables = constants(&read(&root.join("pkg/kubevip/config_envvar.go")));
    let mut files = vec![root.join("main.go")];
    go_files(&root.join("cmd"), &mut files);
    go_files(&root.join("pkg"), &mut files);
    let mut annotations = BTreeSet::new();
    for file in files.iter().filter(|f| f.exists()) {
        let text = read(file);
        variables.extend(looked_up(&text));
        annotations.extend(kube_vip_names(&text));
    }
    assert!(
        variables.len() > 50 && variables.contains("vip_arp") && variables.contains("vip_arpRate"),
        "the variables read from kube-vip's source look wrong: {variables:?}"
    );
    assert!(
        annotations.contains("kube-vip.io/loadbalancerIPs"),
        "the annotations read from kube-vip's source look wrong: {annotations:?}"
    );
    KubeVip {
        variables,
        annotations,
    }
}

#[test]
fn every_kube_vip_variable_is_implemented_or_warned_by_name() {
    let kube_vip = kube_vip();
    let ours: BTreeMap<&str, Support> = VARIABLES.iter().map(|s| (s.name, s.support)).collect();
    let missing: Vec<&String> = kube_vip
        .variables
        .iter()
        .filter(|v| !ours.contains_key(v.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "kube-vip {VERSION} reads these variables, which kvip neither implements nor warns about \
         (add them to core/src/kube_vip.rs VARIABLES): {missing:?}"
    );
    let stale: Vec<&str> = ours
        .keys()
        .copied()
        .filter(|v| !kube_vip.variables.contains(*v))
        .collect();
    assert!(
        stale.is_empty(),
        "kvip's table names variables kube-vip {VERSION} does not have: {stale:?}"
    );
    let current: Vec<&str> = OLDER_VARIABLES
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| kube_vip.variables.contains(*n))
        .collect();
    assert!(
        current.is_empty(),
        "these are kube-vip {VERSION} variables, not older names: {current:?}"
    );
}

#[test]
fn every_warned_variable_is_warned_at_start_up_by_its_name() {
    for setting in VARIABLES {
        let Support::Warned { when, .. } = setting.support else {
            continue;
        };
        let value = match when {
            Use::Flag => "true",
            Use::Value(_) => "something",
        };
        let vars = BTreeMap::from([(setting.name.to_string(), value.to_string())]);
        let (_, warnings) = Config::from_env(&vars)
            .unwrap_or_else(|e| panic!("{}={value} stops start-up: {e}", setting.name));
        assert!(
            warnings.iter().any(|w| matches!(
                w,
                ConfigWarning::Unsupported { variable, .. } if variable == setting.name
            )),
            "{}={value} is not warned about: {warnings:?}",
            setting.name
        );
    }
}

#[test]
fn every_kube_vip_annotation_is_classified() {
    let kube_vip = kube_vip();
    let ours: BTreeSet<&str> = ANNOTATIONS
        .iter()
        .map(|s| s.name)
        .chain(ANNOTATIONS_PENDING.iter().copied())
        .collect();
    let missing: Vec<&String> = kube_vip
        .annotations
        .iter()
        .filter(|a| !ours.contains(a.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "kube-vip {VERSION} uses these kube-vip.io/ names, which kvip's table does not classify \
         (add them to core/src/kube_vip.rs ANNOTATIONS): {missing:?}"
    );
    let stale: Vec<&str> = ours
        .iter()
        .copied()
        .filter(|a| !kube_vip.annotations.contains(*a))
        .collect();
    assert!(
        stale.is_empty(),
        "kvip's table names kube-vip.io/ names kube-vip {VERSION} does not use: {stale:?}"
    );
}

#[test]
fn the_migration_guide_carries_the_generated_table() {
    let path = workspace().join("docs/migrate-from-kube-vip.md");
    let text = read(&path);
    let (Some(start), Some(end)) = (text.find(TABLE_START), text.find(TABLE_END)) else {
        panic!(
            "{} lacks the markers {TABLE_START} … {TABLE_END}",
            path.display()
        );
    };
    let body = start + TABLE_START.len();
    let generated = format!("\n\n{}\n", markdown_table());
    if std::env::var("KVIP_BLESS").is_ok_and(|v| v == "1") {
        let updated = format!("{}{generated}{}", &text[..body], &text[end..]);
        std::fs::write(&path, updated).expect("rewrite the migration guide");
        return;
    }
    assert!(
        text[body..end] == generated,
        "docs/migrate-from-kube-vip.md's compatibility table differs from core/src/kube_vip.rs; \
         run `KVIP_BLESS=1 cargo test -p kvip-core --test kube_vip_coverage` to regenerate it"
    );
}
