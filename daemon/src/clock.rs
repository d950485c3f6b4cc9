//! The daemon's monotonic clock as the core counts time: one epoch for the
//! whole process, so an instant recorded by a watch and one taken by the
//! reconcile loop compare directly.

use kvip_core::Mono;
use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Fixes the epoch; called once at start-up, before any watch runs.
pub fn start() {
    let _ = epoch();
}

/// Now.
pub fn now() -> Mono {
    mono(Instant::now())
}

/// `at` on the core's clock (an instant before the epoch counts as the epoch).
pub fn mono(at: Instant) -> Mono {
    Mono(at.saturating_duration_since(epoch()))
}
