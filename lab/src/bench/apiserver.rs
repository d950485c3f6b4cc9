//! Counting API requests where they land: the API server's own
//! `apiserver_request_total` counter, read with `kubectl get --raw /metrics`
//! before and after a window, turned into requests per second by verb and
//! resource. Parsing is pure; only [`scrape`] runs a command.

use crate::bench::results::{ApiRates, RequestRate};
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// What a request count is kept per.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestKey {
    /// HTTP verb as the API server labels it.
    pub verb: String,
    /// `services/status` for a subresource, `(non-resource)` for paths such as `/metrics`.
    pub resource: String,
    /// HTTP status code of the answer (429: throttled, 504: timed out, 409: conflict).
    pub code: String,
}

impl RequestKey {
    /// A key from its three parts.
    pub fn new(verb: &str, resource: &str, code: &str) -> Self {
        RequestKey {
            verb: verb.into(),
            resource: resource.into(),
            code: code.into(),
        }
    }
}

/// `apiserver_request_total` summed per verb, resource and code; other
/// labels (scope, version, component…) are summed over.
pub type RequestCounts = BTreeMap<RequestKey, f64>;

const METRIC: &str = "apiserver_request_total";

/// Reads the counter from the Prometheus text the API server serves.
pub fn parse_request_totals(text: &str) -> RequestCounts {
    let mut counts = RequestCounts::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(METRIC) else {
            continue;
        };
        let Some(rest) = rest.strip_prefix('{') else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let Some(value) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        let labels = parse_labels(labels);
        let get = |k: &str| labels.get(k).map(String::as_str).unwrap_or_default();
        let resource = match (get("resource"), get("subresource")) {
            ("", _) => "(non-resource)".to_string(),
            (r, "") => r.to_string(),
            (r, s) => format!("{r}/{s}"),
        };
        let key = RequestKey::new(get("verb"), &resource, get("code"));
        *counts.entry(key).or_default() += value;
    }
    counts
}

/// `k="v",k2="v2"` with Prometheus escapes (`\"`, `\\`, `\n`) in values.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() || chars.next() != Some('"') {
            return labels;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                other => value.push(other),
            }
        }
        labels.insert(key.trim().to_string(), value);
    }
}

/// Requests per second between two readings taken `window_s` apart; a
/// counter that went backwards (API server restarted) counts from zero.
pub fn rates(before: &RequestCounts, after: &RequestCounts, window_s: f64) -> ApiRates {
    let mut by = Vec::new();
    let mut total = 0.0;
    for (key, end) in after {
        let start = before.get(key).copied().unwrap_or(0.0);
        let delta = if *end >= start { end - start } else { *end };
        if delta > 0.0 && window_s > 0.0 {
            total += delta;
            by.push(RequestRate {
                verb: key.verb.clone(),
                resource: key.resource.clone(),
                code: key.code.clone(),
                per_second: delta / window_s,
            });
        }
    }
    by.sort_by(|a, b| b.per_second.total_cmp(&a.per_second));
    ApiRates {
        window_s,
        total_per_second: if window_s > 0.0 {
            total / window_s
        } else {
            0.0
        },
        by,
    }
}

/// One reading of the counter through the lab's kubectl.
pub fn scrape(kubectl: &Path, kubeconfig: &Path) -> anyhow::Result<RequestCounts> {
    let out = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["get", "--raw", "/metrics"])
        .output()
        .with_context(|| format!("running {}", kubectl.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "kubectl get --raw /metrics: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(parse_request_totals(&String::from_utf8_lossy(&out.stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 40
apiserver_request_total{code="409",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="services",scope="resource",subresource="status",verb="PATCH",version="v1"} 5
apiserver_request_total{code="200",component="",dry_run="",group="",resource="",scope="",subresource="/metrics",verb="GET",version=""} 3
apiserver_request_total_other{verb="GET"} 99
apiserver_request_duration_seconds_bucket{verb="GET",le="0.1"} 7
"#;

    #[test]
    fn counter_is_summed_per_verb_and_resource() {
        let c = parse_request_totals(TEXT);
        assert_eq!(c[&RequestKey::new("PUT", "leases", "200")], 40.0);
        assert_eq!(c[&RequestKey::new("PUT", "leases", "409")], 2.0);
        assert_eq!(c[&RequestKey::new("PATCH", "services/status", "200")], 5.0);
        assert_eq!(c[&RequestKey::new("GET", "(non-resource)", "200")], 3.0);
        assert_eq!(c.len(), 4, "{c:?}");
    }

    #[test]
    fn escaped_label_values_are_read() {
        let l = parse_labels(r#"a="x\"y",b="1,2""#);
        assert_eq!(l["a"], "x\"y");
        assert_eq!(l["b"], "1,2");
    }

    #[test]
    fn rates_are_per_second_and_sorted() {
        let before = parse_request_totals(TEXT);
        let mut after = before.clone();
        *after
            .entry(RequestKey::new("PUT", "leases", "200"))
            .or_default() += 60.0;
        *after
            .entry(RequestKey::new("PUT", "leases", "429"))
            .or_default() += 30.0;
        let r = rates(&before, &after, 30.0);
        assert_eq!(r.total_per_second, 3.0);
        assert_eq!(r.by[0].verb, "PUT");
        assert_eq!(r.by[0].per_second, 2.0);
        assert_eq!(r.by.len(), 2);
        assert_eq!(r.resource("leases"), 3.0);
        assert_eq!(r.failed_per_second(), 1.0);
    }

    #[test]
    fn a_restarted_counter_counts_from_zero() {
        let before = RequestCounts::from([(RequestKey::new("GET", "pods", "200"), 100.0)]);
        let after = RequestCounts::from([(RequestKey::new("GET", "pods", "200"), 10.0)]);
        assert_eq!(rates(&before, &after, 10.0).total_per_second, 1.0);
    }
}
