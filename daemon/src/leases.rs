//! Lease writes for the election: create, or replace guarded by
//! resourceVersion, translated into the core's `WriteResult` (409 = lost).

use crate::budget::Urgency;
use crate::translate;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Error};
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

/// The labels and annotations of an instance Lease (kvip's own). A write
/// without them leaves a Lease's metadata as it is.
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
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            resource_version: resource_version.clone(),
            labels: meta.map(|m| m.labels.clone()),
            annotations: meta
                .filter(|m| !m.annotations.is_empty())
                .map(|m| m.annotations.clone()),
            ..Default::default()
        },
        spec: Some(translate::lease_spec(record)),
    };
    let pp = PostParams {
        field_manager: Some("kvip".into()),
        ..Default::default()
    };
    let patch = resource_version
        .as_deref()
        .map(|version| replacement(version, record, meta));
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
    let call = async {
        match &patch {
            None => api.create(&pp, &lease).await,
            Some(patch) => {
                let params = PatchParams {
                    field_manager: Some("kvip".into()),
                    ..Default::default()
                };
                api.patch(name, &params, &Patch::Merge(patch)).await
            }
        }
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
    let mut metadata = serde_json::json!({ "resourceVersion": version });
    if let Some(meta) = meta {
        metadata["labels"] = serde_json::json!(meta.labels);
        let mut annotations = serde_json::Map::new();
        for key in OWNED_ANNOTATIONS {
            annotations.insert(key.to_string(), serde_json::Value::Null);
        }
        for (k, v) in &meta.annotations {
            annotations.insert(k.clone(), serde_json::json!(v));
        }
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
pub async fn delete(client: &Client, namespace: &str, name: &str) {
    let target = format!("lease/{namespace}/{name}");
    if crate::budget::admit(&target, "lease", Urgency::Now)
        .await
        .is_err()
    {
        return;
    }
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let r = api.delete(name, &Default::default()).await;
    crate::budget::answered(&target, "lease", "delete", crate::budget::code(&r));
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvip_core::WallTime;

    #[test]
    fn a_replacement_names_every_record_field_and_keeps_foreign_metadata() {
        let release = LeaseRecord {
            holder: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(WallTime(1_764_000_000_000_000)),
            renew_time: Some(WallTime(1_764_000_000_000_000)),
            lease_transitions: Some(3),
        };
        let patch = replacement("42", &release, None);
        assert_eq!(
            patch["metadata"],
            serde_json::json!({ "resourceVersion": "42" })
        );
        let spec = patch["spec"].as_object().unwrap();
        assert!(spec.contains_key("holderIdentity") && spec["holderIdentity"].is_null());
        assert_eq!(spec["leaseTransitions"], 3);
        assert_eq!(spec["renewTime"], "2025-11-24T16:00:00.000000Z");

        let meta = LeaseMeta {
            labels: BTreeMap::from([("kvip.io/instance".into(), "true".into())]),
            annotations: BTreeMap::from([(MACS.into(), "02:00:00:00:00:01".into())]),
        };
        let patch = replacement("43", &release, Some(&meta));
        let annotations = &patch["metadata"]["annotations"];
        assert_eq!(annotations[MACS], "02:00:00:00:00:01");
        assert!(annotations[kvip_core::placement::PLACEMENT_ANNOTATION].is_null());
        assert_eq!(patch["metadata"]["labels"]["kvip.io/instance"], "true");
    }

    const MACS: &str = kvip_core::placement::MACS_ANNOTATION;
}
