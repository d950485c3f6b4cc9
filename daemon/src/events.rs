//! Events on Services, in plain words: `VIPAnnounced`, `VIPMoved`,
//! `VIPPending`, `VIPWithdrawn`. Each is recorded by the one node that
//! decided it, only when something changed, and under a name derived from
//! its content, so a repeat raises the existing Event's count instead of
//! adding another: a flapping cluster cannot flood the API. Where RBAC
//! grants no Events (kube-vip's ClusterRole), that is said once and no
//! Event is sent ([`crate::access`]).

use crate::metrics;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kvip_core::ServiceKey;
use kvip_core::access::Optional;
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
    /// The Service was given an address from a pool.
    Allocated,
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
            Reason::Allocated => "AddressAllocated",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Reason::Pending | Reason::Throttled | Reason::AddressConflict => "Warning",
            _ => "Normal",
        }
    }
}

/// Event names recorded per Service at most; beyond, the least recently
/// recorded is forgotten (a repeat of it later counts from 2, as after a
/// restart).
const NAMES_PER_SERVICE: usize = 16;

/// How often this process recorded each Event, by Service and Event name,
/// so a repeat raises its count without reading Events (RBAC grants no
/// get). Forgotten with the Service, and bounded per Service.
#[derive(Debug, Default)]
struct EventCounts {
    /// By Service, by Event name: the count and when it was last set.
    by_service: BTreeMap<ServiceKey, BTreeMap<String, (i32, u64)>>,
    /// Orders the sets, to forget the least recent.
    sets: u64,
}

impl EventCounts {
    /// The count of Event `name` on `service`, if this process recorded it.
    fn get(&self, service: &ServiceKey, name: &str) -> Option<i32> {
        self.by_service
            .get(service)?
            .get(name)
            .map(|(count, _)| *count)
    }

    /// Sets the count of Event `name` on `service`.
    fn set(&mut self, service: &ServiceKey, name: String, count: i32) {
        self.sets += 1;
        let names = self.by_service.entry(service.clone()).or_default();
        names.insert(name, (count, self.sets));
        if names.len() > NAMES_PER_SERVICE
            && let Some(oldest) = names
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(n, _)| n.clone())
        {
            names.remove(&oldest);
        }
    }

    /// Forgets Services `keep` rejects.
    fn retain(&mut self, keep: impl Fn(&ServiceKey) -> bool) {
        self.by_service.retain(|k, _| keep(k));
    }

    /// Event names remembered, over every Service.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_service.values().map(BTreeMap::len).sum()
    }
}

type Shared<T> = std::sync::Arc<std::sync::Mutex<T>>;

/// Records Events, once per change.
pub struct Recorder {
    client: Client,
    node: String,
    /// The last (reason, message) recorded per Service.
    last: BTreeMap<ServiceKey, (Reason, String)>,
    /// How often each Event was recorded by this process.
    counts: Shared<EventCounts>,
    /// Services whose last Event the write budget held back: recorded again
    /// at the next chance instead of being taken as said.
    unsent: Shared<std::collections::BTreeSet<ServiceKey>>,
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

/// The name of the Event saying `message` for `reason` on `service`: the
/// same content always gets the same name, so a repeat raises its count.
fn event_name(service: &ServiceKey, reason: Reason, message: &str) -> String {
    format!(
        "{}.kvip.{:016x}",
        service.name,
        fnv(&format!("{}\n{message}", reason.as_str()))
    )
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

    /// Forgets Services that are gone: what was recorded last, what waits
    /// to be recorded again, and the counts of their Events.
    pub fn retain(&mut self, keep: impl Fn(&ServiceKey) -> bool) {
        self.last.retain(|k, _| keep(k));
        if let Ok(mut u) = self.unsent.lock() {
            u.retain(|k| keep(k));
        }
        if let Ok(mut c) = self.counts.lock() {
            c.retain(&keep);
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
        let event = Told {
            client: self.client.clone(),
            node: self.node.clone(),
            service: service.clone(),
            uid,
            reason,
            message,
        };
        let counts = self.counts.clone();
        let unsent = self.unsent.clone();
        tokio::spawn(async move {
            // Events are told, not owed: one held back by the budget is dropped.
            if event.send(&counts).await.is_err()
                && let Ok(mut u) = unsent.lock()
            {
                u.insert(event.service);
            }
        });
    }
}

/// One Event to write.
struct Told {
    client: Client,
    node: String,
    service: ServiceKey,
    uid: Option<String>,
    reason: Reason,
    message: String,
}

impl Told {
    /// Writes the Event: raises its count when this process recorded it
    /// before, creates it otherwise (and when it has expired meanwhile:
    /// Events live an hour). Err when the write budget held it back.
    async fn send(&self, counts: &Shared<EventCounts>) -> Result<(), crate::budget::Throttled> {
        let service = &self.service;
        let target = format!("events/{service}");
        let admit = || {
            crate::budget::admit(
                &target,
                "events",
                crate::budget::Urgency::Within(std::time::Duration::from_secs(1)),
            )
        };
        // RBAC refused Events lately (kube-vip's ClusterRole grants none):
        // said once, not asked for again per Service.
        if !crate::access::may(Optional::Events) {
            return Ok(());
        }
        admit().await?;
        let api: Api<Event> = Api::namespaced(self.client.clone(), &service.namespace);
        let name = event_name(service, self.reason, &self.message);
        let now = Timestamp::now();
        let node = &self.node;
        let bump = |count: i32| json!({ "count": count, "lastTimestamp": Time(now), "source": { "component": "kvip", "host": node } });
        let seen = counts.lock().ok().and_then(|c| c.get(service, &name));
        if let Some(count) = seen {
            // A repeat of an Event this process recorded: count it.
            let r = api
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&bump(count + 1)),
                )
                .await;
            metrics::api_request("events", "patch", r.is_ok());
            if crate::access::answered(Optional::Events, &r) {
                return Ok(());
            }
            crate::budget::answered(&target, "events", "patch", crate::budget::code(&r));
            let expired = matches!(&r, Err(kube::Error::Api(status)) if status.code == 404);
            if !expired {
                Self::counted(counts, service, name, count + 1);
                return Ok(());
            }
            admit().await?;
        }
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
                uid: self.uid.clone(),
                ..Default::default()
            },
            reason: Some(self.reason.as_str().into()),
            message: Some(self.message.clone()),
            type_: Some(self.reason.kind().into()),
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
            action: Some(self.reason.as_str().into()),
            ..Default::default()
        };
        let r = api.create(&PostParams::default(), &event).await;
        metrics::api_request("events", "create", r.is_ok());
        if crate::access::answered(Optional::Events, &r) {
            return Ok(());
        }
        crate::budget::answered(&target, "events", "create", crate::budget::code(&r));
        let count = match r {
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
                return Ok(());
            }
        };
        Self::counted(counts, service, name, count);
        Ok(())
    }

    fn counted(counts: &Shared<EventCounts>, service: &ServiceKey, name: String, count: i32) {
        if let Ok(mut c) = counts.lock() {
            c.set(service, name, count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(namespace: &str, name: &str) -> ServiceKey {
        ServiceKey::new(namespace.to_string(), name.to_string())
    }

    #[test]
    fn counts_are_forgotten_with_their_service() {
        let mut c = EventCounts::default();
        let (web, api) = (key("shop", "web"), key("shop", "api"));
        c.set(&web, event_name(&web, Reason::Announced, "a"), 1);
        c.set(&web, event_name(&web, Reason::Pending, "b"), 3);
        c.set(&api, event_name(&api, Reason::Announced, "a"), 2);
        assert_eq!(c.len(), 3);
        c.retain(|k| *k != web);
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(&web, &event_name(&web, Reason::Pending, "b")), None);
        assert_eq!(
            c.get(&api, &event_name(&api, Reason::Announced, "a")),
            Some(2)
        );
    }

    #[test]
    fn services_of_one_name_in_two_namespaces_count_apart() {
        let mut c = EventCounts::default();
        let (a, b) = (key("a", "web"), key("b", "web"));
        let name = event_name(&a, Reason::Pending, "no ready endpoints");
        assert_eq!(name, event_name(&b, Reason::Pending, "no ready endpoints"));
        c.set(&a, name.clone(), 4);
        // b's Event was never created: it must not be taken as recorded.
        assert_eq!(c.get(&b, &name), None);
        assert_eq!(c.get(&a, &name), Some(4));
    }

    #[test]
    fn a_flapping_service_keeps_a_bounded_number_of_counts() {
        let mut c = EventCounts::default();
        let web = key("shop", "web");
        for i in 0..100 {
            let message = format!("VIP moved from node n{i} to node n{}", i + 1);
            c.set(&web, event_name(&web, Reason::Moved, &message), 1);
        }
        assert_eq!(c.len(), NAMES_PER_SERVICE);
        // The most recent stay, the oldest went.
        let last = event_name(&web, Reason::Moved, "VIP moved from node n99 to node n100");
        let first = event_name(&web, Reason::Moved, "VIP moved from node n0 to node n1");
        assert_eq!(c.get(&web, &last), Some(1));
        assert_eq!(c.get(&web, &first), None);
    }
}
