//! Events on Services, in plain words: `VIPAnnounced`, `VIPMoved`,
//! `VIPPending`, `VIPWithdrawn`. Each is recorded by the one node that
//! decided it, only when something changed, and under a name derived from
//! its content, so a repeat raises the existing Event's count instead of
//! adding another: a flapping cluster cannot flood the API.

use crate::metrics;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kvip_core::ServiceKey;
use serde_json::json;
use std::collections::BTreeMap;

/// Event reasons kvip records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// This node announces the Service's VIP.
    Announced,
    /// The VIP moved to this node from another.
    Moved,
    /// Nobody can announce the Service, and why.
    Pending,
    /// The VIP was withdrawn and nobody announces it now.
    Withdrawn,
    /// The write budget cannot renew every Lease in time.
    Throttled,
    /// Another MAC keeps claiming the Service's VIP.
    AddressConflict,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Announced => "VIPAnnounced",
            Reason::Moved => "VIPMoved",
            Reason::Pending => "VIPPending",
            Reason::Withdrawn => "VIPWithdrawn",
            Reason::Throttled => "LeaseRenewalThrottled",
            Reason::AddressConflict => "VIPAddressConflict",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Reason::Pending | Reason::Throttled | Reason::AddressConflict => "Warning",
            _ => "Normal",
        }
    }
}

/// Records Events, once per change.
pub struct Recorder {
    client: Client,
    node: String,
    /// The last (reason, message) recorded per Service.
    last: BTreeMap<ServiceKey, (Reason, String)>,
    /// How often each Event (by name) was recorded by this process, so a
    /// repeat raises its count without reading Events (RBAC grants no get).
    counts: std::sync::Arc<std::sync::Mutex<BTreeMap<String, i32>>>,
    /// Services whose last Event the write budget held back: recorded again
    /// at the next chance instead of being taken as said.
    unsent: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<ServiceKey>>>,
}

/// FNV-1a, for stable Event names.
fn fnv(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

impl Recorder {
    /// A recorder writing as `node`.
    pub fn new(client: Client, node: String) -> Self {
        Self {
            client,
            node,
            last: BTreeMap::new(),
            counts: Default::default(),
            unsent: Default::default(),
        }
    }

    /// Forgets what was last recorded for `service`, so the same Event is
    /// recorded again (this node handed the VIP over and may win it back).
    pub fn forget(&mut self, service: &ServiceKey) {
        self.last.remove(service);
    }

    /// Forgets Services that are gone.
    pub fn retain(&mut self, keep: impl Fn(&ServiceKey) -> bool) {
        self.last.retain(|k, _| keep(k));
        if let Ok(mut u) = self.unsent.lock() {
            u.retain(|k| keep(k));
        }
    }

    /// Records `reason` with `message` on `service` unless it is what was
    /// recorded last for that Service.
    pub fn record(
        &mut self,
        service: &ServiceKey,
        uid: Option<String>,
        reason: Reason,
        message: String,
    ) {
        let entry = (reason, message.clone());
        let unsent = self
            .unsent
            .lock()
            .map(|mut u| u.remove(service))
            .unwrap_or(false);
        if self.last.get(service) == Some(&entry) && !unsent {
            return;
        }
        self.last.insert(service.clone(), entry);
        tracing::info!(service = %service, reason = reason.as_str(), message = %message, "event");
        let client = self.client.clone();
        let node = self.node.clone();
        let service = service.clone();
        let counts = self.counts.clone();
        let unsent = self.unsent.clone();
        tokio::spawn(async move {
            // Events are told, not owed: one held back by the budget is dropped.
            let target = format!("events/{service}");
            if crate::budget::admit(
                &target,
                "events",
                crate::budget::Urgency::Within(std::time::Duration::from_secs(1)),
            )
            .await
            .is_err()
            {
                if let Ok(mut u) = unsent.lock() {
                    u.insert(service);
                }
                return;
            }
            let api: Api<Event> = Api::namespaced(client, &service.namespace);
            let name = format!(
                "{}.kvip.{:016x}",
                service.name,
                fnv(&format!("{}\n{message}", reason.as_str()))
            );
            let now = Timestamp::now();
            let bump = |count: i32| json!({ "count": count, "lastTimestamp": Time(now), "source": { "component": "kvip", "host": node } });
            let seen = counts.lock().ok().and_then(|c| c.get(&name).copied());
            let count = if let Some(count) = seen {
                // A repeat of an Event this process recorded: count it.
                let r = api
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(&bump(count + 1)),
                    )
                    .await;
                metrics::api_request("events", "patch", r.is_ok());
                crate::budget::answered(&target, "events", "patch", crate::budget::code(&r));
                count + 1
            } else {
                let event = Event {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(service.namespace.clone()),
                        ..Default::default()
                    },
                    involved_object: ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Service".into()),
                        name: Some(service.name.clone()),
                        namespace: Some(service.namespace.clone()),
                        uid,
                        ..Default::default()
                    },
                    reason: Some(reason.as_str().into()),
                    message: Some(message),
                    type_: Some(reason.kind().into()),
                    count: Some(1),
                    first_timestamp: Some(Time(now)),
                    last_timestamp: Some(Time(now)),
                    event_time: Some(MicroTime(now)),
                    source: Some(EventSource {
                        component: Some("kvip".into()),
                        host: Some(node.clone()),
                    }),
                    reporting_component: Some("kvip".into()),
                    reporting_instance: Some(node.clone()),
                    action: Some(reason.as_str().into()),
                    ..Default::default()
                };
                let r = api.create(&PostParams::default(), &event).await;
                metrics::api_request("events", "create", r.is_ok());
                crate::budget::answered(&target, "events", "create", crate::budget::code(&r));
                match r {
                    Ok(_) => 1,
                    // Recorded before, by an earlier run or another node: count it
                    // (RBAC grants no get, so the exact earlier count is unknown).
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        let r = api
                            .patch(&name, &PatchParams::default(), &Patch::Merge(&bump(2)))
                            .await;
                        metrics::api_request("events", "patch", r.is_ok());
                        2
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "event not recorded");
                        return;
                    }
                }
            };
            if let Ok(mut c) = counts.lock() {
                c.insert(name, count);
            }
        });
    }
}
