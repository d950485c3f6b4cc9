//! Fixtures for tests of the core and of the crates that use it: a
//! simulated API server holding one Lease, with guarded writes as the real
//! one does them. Built for this crate's tests and behind the `testing`
//! feature for others.

use crate::election::{Decision, LeaseRecord, Observed, WriteResult};

/// One Lease on a simulated API server: its record and resourceVersion.
#[derive(Debug, Clone, Default)]
pub struct SimLease {
    /// The stored record and version; `None` while the Lease does not exist.
    pub stored: Option<(LeaseRecord, u64)>,
    /// The last version handed out: versions only grow, across deletes too
    /// (they are etcd revisions).
    pub last_version: u64,
}

impl SimLease {
    /// What a watch or a list would show now.
    pub fn snapshot(&self) -> Observed {
        match &self.stored {
            None => Observed::default(),
            Some((record, rv)) => Observed {
                record: Some(record.clone()),
                resource_version: Some(rv.to_string()),
            },
        }
    }

    /// Deletes the Lease; returns what a watch shows of the delete (no
    /// record, the version of the delete).
    pub fn delete(&mut self) -> Observed {
        let rv = self.stored.take().map_or(0, |(_, rv)| rv);
        self.last_version = self.last_version.max(rv) + 1;
        Observed {
            record: None,
            resource_version: Some(self.last_version.to_string()),
        }
    }

    /// Applies a write decided by an elector, guarded by resourceVersion as
    /// the API server does: the stored answer, [`WriteResult::Conflict`]
    /// when the version moved on, `None` for a decision that writes nothing.
    /// A replace of a Lease that is gone creates it, as the API server does
    /// for Leases (create on update).
    pub fn store(&mut self, decision: &Decision) -> Option<WriteResult> {
        let (record, expected) = match decision {
            Decision::Create(record) => (record, None),
            Decision::Update {
                record,
                resource_version,
            }
            | Decision::Release {
                record,
                resource_version,
            } => (record, Some(resource_version.clone())),
            Decision::Wait(_) => return None,
        };
        let current = self.stored.as_ref().map(|(_, rv)| rv.to_string());
        let conflict = match (&current, &expected) {
            (None, None) => false,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(c), Some(e)) => c != e,
        };
        if conflict {
            return Some(WriteResult::Conflict);
        }
        let rv = self
            .last_version
            .max(self.stored.as_ref().map_or(0, |(_, rv)| *rv))
            + 1;
        self.last_version = rv;
        self.stored = Some((record.clone(), rv));
        Some(WriteResult::Ok {
            record: record.clone(),
            resource_version: rv.to_string(),
        })
    }
}

/// The pools of a `kubevip` ConfigMap whose data is `pairs`.
pub fn pools(pairs: &[(&str, &str)]) -> crate::ipam::PoolConfig {
    let data = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    crate::ipam::PoolConfig::from_data(&data)
}
