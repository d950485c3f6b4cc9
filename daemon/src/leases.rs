//! Lease writes for the election: create, or replace guarded by
//! resourceVersion, translated into the core's `WriteResult` (409 = lost).
//!
//! A replace is a merge patch, so a Lease's other labels and annotations
//! stay. Where RBAC grants `update` on Leases but not `patch` (kube-vip's
//! published ClusterRole), the first patch is refused with 403: from then on
//! the process replaces Leases whole (PUT), as kube-vip does
//! ([`crate::access::write`]).

use crate::budget::Urgency;
use crate::translate;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Error};
use kvip_core::access::{Optional, Verb, Write};
use kvip_core::election::KVIP_RENEWED_ANNOTATION;
use kvip_core::lease_names::{MANAGED_BY, MANAGED_BY_LABEL};
use kvip_core::{LeaseRecord, Mono, WriteResult};
use std::collections::BTreeMap;
use std::time::Duration;

/// What a write asks for.
#[derive(Debug, Clone)]
pub enum LeaseWrite {
    /// Create the Lease.
    Create(LeaseRecord),
    /// Replace it, guarded by the version.
    Replace {
        /// New spec.
        record: LeaseRecord,
        /// Version it must still have.
        resource_version: String,
    },
}

/// The labels and annotations of an instance Lease (kvip's own). Every
/// write carries kvip's managed-by label besides; a write without `meta`
/// leaves a Lease's other labels and annotations as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseMeta {
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Writes `write` to Lease `namespace/name` within `timeout`; says how it
/// ended and when it left (after waiting for the write budget).
pub async fn write(
    client: &Client,
    namespace: &str,
    name: &str,
    write: LeaseWrite,
    meta: Option<&LeaseMeta>,
    timeout: Duration,
) -> (WriteResult, Mono) {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let (record, resource_version) = match &write {
        LeaseWrite::Create(r) => (r, None),
        LeaseWrite::Replace {
            record,
            resource_version,
        } => (record, Some(resource_version.clone())),
    };
    let patch = resource_version
        .as_deref()
        .map(|version| replacement(version, record, meta));
    // What a create sends, and a replace sent whole (with the version).
    let lease = lease_object(namespace, name, record, resource_version, meta);
    let pp = PostParams {
        field_manager: Some("kvip".into()),
        ..Default::default()
    };
    let target = format!("lease/{namespace}/{name}");
    // A release follows a withdraw: it goes at once, so the address is not
    // left unserved until the Lease expires.
    let urgency = if record.holder().is_none() {
        Urgency::Now
    } else {
        Urgency::Within(timeout / 2)
    };
    if crate::budget::admit(&target, "lease", urgency)
        .await
        .is_err()
    {
        return (WriteResult::NotSent, crate::clock::now());
    }
    let sent = crate::clock::now();
    // Only the last answer counts, for the budget as for the result: a
    // write RBAC refuses with one verb is sent again at once with the other
    // (crate::access).
    let call = async {
        let Some(patch) = &patch else {
            return api.create(&pp, &lease).await;
        };
        crate::access::write(Write::Leases, |verb| {
            let (api, pp, lease) = (api.clone(), pp.clone(), lease.clone());
            let patch = patch.clone();
            async move {
                match verb {
                    Verb::Patch => {
                        let params = PatchParams {
                            field_manager: Some("kvip".into()),
                            ..Default::default()
                        };
                        api.patch(name, &params, &Patch::Merge(&patch)).await
                    }
                    Verb::Update => api.replace(name, &pp, &lease).await,
                }
            }
        })
        .await
    };
    let result = match tokio::time::timeout(timeout, call).await {
        Ok(r) => r,
        Err(_) => {
            crate::metrics::api_request("lease", "write", false);
            crate::budget::answered(&target, "lease", "write", None);
            tracing::warn!(lease = %format!("{namespace}/{name}"), "lease write timed out");
            return (WriteResult::Error, sent);
        }
    };
    crate::budget::answered(&target, "lease", "write", crate::budget::code(&result));
    let result = match result {
        Ok(stored) => {
            crate::metrics::api_request("lease", "write", true);
            let seen = translate::observed(Some(&stored));
            match (seen.record, seen.resource_version) {
                (Some(record), Some(resource_version)) => WriteResult::Ok {
                    record,
                    resource_version,
                },
                _ => WriteResult::Error,
            }
        }
        // 409: another write came first; 404: the Lease was deleted under
        // us. Either way the write lost, and the cache shows what is there now.
        Err(Error::Api(status)) if status.code == 409 || status.code == 404 => {
            crate::metrics::api_request("lease", "write", true);
            WriteResult::Conflict
        }
        Err(e) => {
            crate::metrics::api_request("lease", "write", false);
            tracing::warn!(lease = %format!("{namespace}/{name}"), error = %e, "lease write failed");
            WriteResult::Error
        }
    };
    (result, sent)
}

/// The Lease a create sends, and a replace when patching is forbidden. Every write carries kvip's managed-by label
/// beside `meta`'s labels, a create as well as a replace ([`replacement`]):
/// the admission policy lets kvip write a Lease outside its names only
/// while the stored Lease carries the label.
fn lease_object(
    namespace: &str,
    name: &str,
    record: &LeaseRecord,
    resource_version: Option<String>,
    meta: Option<&LeaseMeta>,
) -> Lease {
    let mut labels = meta.map(|m| m.labels.clone()).unwrap_or_default();
    labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string());
    let mut annotations = meta.map(|m| m.annotations.clone()).unwrap_or_default();
    if let Some(stamp) = record.kvip_renewed {
        annotations.insert(KVIP_RENEWED_ANNOTATION.to_string(), stamp.0.to_string());
    }
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            resource_version,
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        },
        spec: Some(translate::lease_spec(record)),
    }
}

/// The annotations kvip writes on its instance Lease: a write that no
/// longer carries one removes it.
const OWNED_ANNOTATIONS: [&str; 2] = [
    kvip_core::placement::PLACEMENT_ANNOTATION,
    kvip_core::placement::MACS_ANNOTATION,
];

/// A merge patch that replaces the election record of a Lease still at
/// `version` (the API server refuses it with 409 otherwise, as for a
/// replace), naming every record field so an absent one is cleared. Other
/// fields, labels and annotations stay as they are: a Lease an
/// administrator labelled keeps its labels, whoever takes it.
fn replacement(version: &str, record: &LeaseRecord, meta: Option<&LeaseMeta>) -> serde_json::Value {
    let spec = translate::lease_spec(record);
    let mut labels = meta.map(|m| m.labels.clone()).unwrap_or_default();
    labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string());
    let mut metadata = serde_json::json!({ "resourceVersion": version, "labels": labels });
    let mut annotations = serde_json::Map::new();
    if let Some(meta) = meta {
        for key in OWNED_ANNOTATIONS {
            annotations.insert(key.to_string(), serde_json::Value::Null);
        }
        for (k, v) in &meta.annotations {
            annotations.insert(k.clone(), serde_json::json!(v));
        }
    }
    // Every write of an election record says that kvip wrote it last.
    if let Some(stamp) = record.kvip_renewed {
        annotations.insert(
            KVIP_RENEWED_ANNOTATION.to_string(),
            serde_json::json!(stamp.0.to_string()),
        );
    }
    if !annotations.is_empty() {
        metadata["annotations"] = serde_json::Value::Object(annotations);
    }
    serde_json::json!({
        "metadata": metadata,
        "spec": {
            "holderIdentity": spec.holder_identity,
            "leaseDurationSeconds": spec.lease_duration_seconds,
            "acquireTime": spec.acquire_time,
            "renewTime": spec.renew_time,
            "leaseTransitions": spec.lease_transitions,
        }
    })
}

/// Deletes a Lease (our own instance Lease on shutdown); absent is fine.
/// Where RBAC grants no delete (kube-vip's ClusterRole), it is said once and
/// the Lease is left to expire.
pub async fn delete(client: &Client, namespace: &str, name: &str) {
    if !crate::access::may(Optional::DeleteInstanceLease) {
        return;
    }
    let target = format!("lease/{namespace}/{name}");
    if crate::budget::admit(&target, "lease", Urgency::Now)
        .await
        .is_err()
    {
        return;
    }
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let r = api.delete(name, &Default::default()).await;
    if crate::access::answered(Optional::DeleteInstanceLease, &r) {
        return;
    }
    crate::budget::answered(&target, "lease", "delete", crate::budget::code(&r));
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvip_core::instances;

    fn record() -> LeaseRecord {
        LeaseRecord {
            holder: Some("worker1".to_string()),
            lease_duration_seconds: Some(5),
            ..Default::default()
        }
    }

    #[test]
    fn a_replacement_names_every_record_field_and_keeps_foreign_metadata() {
        use kvip_core::WallTime;
        let macs = kvip_core::placement::MACS_ANNOTATION;
        let release = LeaseRecord {
            holder: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(WallTime(1_764_000_000_000_000)),
            renew_time: Some(WallTime(1_764_000_000_000_000)),
            lease_transitions: Some(3),
            kvip_renewed: Some(WallTime(1_764_000_000_000_000)),
        };
        let patch = replacement("42", &release, None);
        assert_eq!(
            patch["metadata"],
            serde_json::json!({
                "resourceVersion": "42",
                "labels": { MANAGED_BY_LABEL: MANAGED_BY },
                "annotations": { KVIP_RENEWED_ANNOTATION: "1764000000000000" },
            }),
            "only our label and stamp: the Lease's other labels and annotations stay"
        );
        let whole = lease_object("ns", "l", &release, Some("42".into()), None);
        assert_eq!(
            whole.metadata.annotations,
            Some(BTreeMap::from([(
                KVIP_RENEWED_ANNOTATION.to_string(),
                "1764000000000000".to_string()
            )])),
            "a replace sent whole is stamped too"
        );
        let read = crate::translate::observed(Some(&whole)).record;
        assert_eq!(read.and_then(|r| r.written_by_kvip()), Some(true));
        let spec = patch["spec"].as_object().unwrap();
        assert!(spec.contains_key("holderIdentity") && spec["holderIdentity"].is_null());
        assert_eq!(spec["leaseTransitions"], 3);
        assert_eq!(spec["renewTime"], "2025-11-24T16:00:00.000000Z");

        let meta = LeaseMeta {
            labels: BTreeMap::from([("kvip.io/instance".into(), "true".into())]),
            annotations: BTreeMap::from([(macs.into(), "02:00:00:00:00:01".into())]),
        };
        let patch = replacement("43", &release, Some(&meta));
        let annotations = &patch["metadata"]["annotations"];
        assert_eq!(annotations[macs], "02:00:00:00:00:01");
        assert!(annotations[kvip_core::placement::PLACEMENT_ANNOTATION].is_null());
        assert_eq!(patch["metadata"]["labels"]["kvip.io/instance"], "true");
    }

    #[test]
    fn a_replace_sent_whole_carries_the_version_and_our_metadata() {
        let meta = LeaseMeta {
            labels: instances::instance_labels("worker1", &[instances::LB_ROLE]),
            annotations: BTreeMap::from([(
                kvip_core::placement::MACS_ANNOTATION.to_string(),
                "[]".to_string(),
            )]),
        };
        let lease = lease_object(
            "kube-system",
            "kvip-lb-worker1",
            &record(),
            Some("42".to_string()),
            Some(&meta),
        );
        assert_eq!(lease.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(labels(&lease)[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(lease.metadata.annotations.as_ref(), Some(&meta.annotations));
        let spec = lease.spec.as_ref().map(|s| s.holder_identity.clone());
        assert_eq!(spec, Some(Some("worker1".to_string())));
    }

    fn labels(lease: &Lease) -> BTreeMap<String, String> {
        lease.metadata.labels.clone().unwrap_or_default()
    }

    #[test]
    fn an_election_lease_carries_only_the_managed_by_label() {
        for version in [None, Some("7".to_string())] {
            let lease = lease_object("shop", "kubevip-web", &record(), version.clone(), None);
            assert_eq!(
                labels(&lease),
                BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string())])
            );
            assert_eq!(lease.metadata.annotations, None);
            assert_eq!(lease.metadata.resource_version, version);
            assert_eq!(lease.metadata.namespace.as_deref(), Some("shop"));
            assert_eq!(lease.metadata.name.as_deref(), Some("kubevip-web"));
            assert!(kvip_core::lease_names::labelled_kvips(
                lease.metadata.labels.as_ref()
            ));
        }
    }

    #[test]
    fn an_instance_lease_keeps_its_labels_and_annotations_beside_it() {
        let meta = LeaseMeta {
            labels: instances::instance_labels("worker1", &[instances::LB_ROLE]),
            annotations: BTreeMap::from([("kvip.io/macs".to_string(), "[]".to_string())]),
        };
        for version in [None, Some("7".to_string())] {
            let lease = lease_object(
                "kube-system",
                "kvip-lb-worker1",
                &record(),
                version,
                Some(&meta),
            );
            let mut expected = meta.labels.clone();
            expected.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string());
            assert_eq!(labels(&lease), expected);
            assert_eq!(lease.metadata.annotations.as_ref(), Some(&meta.annotations));
            let instance = instances::instance_of(&labels(&lease));
            assert_eq!(instance.map(|i| i.node), Some("worker1".to_string()));
        }
    }
}
