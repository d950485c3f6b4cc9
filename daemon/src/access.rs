//! The process's [`Access`]: every write that may go by `patch` or by
//! `update` goes through [`write`], and every use of a permission kvip can
//! do without is asked about with [`may`] and reported with [`answered`].
//! A refusal by RBAC is said once, in one log line naming the permission,
//! and shown by `kvip_permission_missing`; it is never retried per object.

use kube::Error;
use kvip_core::access::{self, Access, Optional, Verb, Write};
use std::future::Future;
use std::sync::{LazyLock, Mutex, MutexGuard};

static ACCESS: LazyLock<Mutex<Access>> = LazyLock::new(Mutex::default);

fn lock() -> MutexGuard<'static, Access> {
    // Nothing in it can be left half-changed by a panic elsewhere.
    ACCESS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `result` is RBAC refusing its verb.
fn refused<T>(result: &kube::Result<T>) -> bool {
    matches!(result, Err(Error::Api(status)) if access::refused_by_rbac(status.code, &status.message))
}

/// Sends `write` with the verb that last went through (`patch` first); when
/// RBAC refuses it, sends it again at once with the other verb and, if that
/// goes through, keeps to it (said once). Only the last answer is returned.
/// (An API server that has just started refuses every verb for a moment:
/// then neither goes through and nothing changes.)
pub async fn write<T, F, Fut>(write: Write, call: F) -> kube::Result<T>
where
    F: Fn(Verb) -> Fut,
    Fut: Future<Output = kube::Result<T>>,
{
    let verb = lock().verb(write);
    let first = call(verb).await;
    if !refused(&first) {
        return first;
    }
    let other = verb.other();
    let second = call(other).await;
    if second.is_ok() && lock().went_through_with(write, other) {
        let resource = write.resource();
        let permission = format!("patch {resource}");
        match other {
            Verb::Update => {
                crate::metrics::permission_missing(&permission, true);
                tracing::warn!(
                    permission,
                    "RBAC does not grant patch on {resource}, only update: kvip falls back to update: {}; grant patch on {resource}, as `kvip manifest rbac` does, to write with patch",
                    write.update_means()
                );
            }
            Verb::Patch => {
                crate::metrics::permission_missing(&permission, false);
                tracing::info!(
                    permission,
                    "RBAC grants patch on {resource} again: kvip writes it with a merge patch"
                );
            }
        }
    }
    second
}

/// Whether `permission` may be used now (it was not refused lately).
pub fn may(permission: Optional) -> bool {
    lock().may(permission, crate::clock::now())
}

/// Records how a use of `permission` ended. True when RBAC refused it: the
/// first refusal is logged once, here, and the caller says nothing more.
pub fn answered<T>(permission: Optional, result: &kube::Result<T>) -> bool {
    if refused(result) {
        if lock().refused(permission, crate::clock::now()) {
            crate::metrics::permission_missing(permission.permission(), true);
            tracing::warn!(
                permission = permission.permission(),
                "RBAC does not grant {permission}: {}; kvip asks again only every {} minutes; grant it as `kvip manifest rbac` does",
                permission.without(),
                access::RETRY_MISSING.as_secs() / 60
            );
        }
        return true;
    }
    if result.is_ok() && lock().granted(permission) {
        crate::metrics::permission_missing(permission.permission(), false);
        tracing::info!(
            permission = permission.permission(),
            "RBAC grants {permission} again"
        );
    }
    false
}

/// A 409 made here: the object changed since the decision was taken on it,
/// found by reading it before an `update`.
pub fn conflict(what: &str) -> Error {
    Error::Api(
        kube::core::Status::failure(&format!("{what} changed since it was read"), "Conflict")
            .with_code(409)
            .boxed(),
    )
}
