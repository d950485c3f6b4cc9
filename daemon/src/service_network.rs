//! The cluster's Service network: the ServiceCIDR objects
//! (`networking.k8s.io/v1`) that ClusterIPs are allocated from, read once a
//! minute. A Service asking for an address inside them would shadow a
//! ClusterIP, so it is refused. Where the API does not serve ServiceCIDRs
//! (before Kubernetes 1.33) or kvip may not list them, the ranges stay
//! unknown and only the ClusterIPs of known Services are refused.

use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::api::ListParams;
use kube::{Api, Client};
use kvip_core::access::Optional;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the ServiceCIDRs are read again.
const REFRESH: Duration = Duration::from_secs(60);

/// The CIDRs of `cidrs`, as text.
pub fn ranges_of(cidrs: &[ServiceCIDR]) -> Vec<String> {
    cidrs
        .iter()
        .filter_map(|c| c.spec.as_ref()?.cidrs.clone())
        .flatten()
        .collect()
}

/// The Service network's ranges as last read.
#[derive(Clone, Default)]
pub struct ServiceNetwork {
    ranges: Arc<Mutex<Vec<String>>>,
}

impl ServiceNetwork {
    /// Starts reading the ServiceCIDRs every [`REFRESH`].
    pub fn start(client: &Client) -> Self {
        let network = ServiceNetwork::default();
        let ranges = network.ranges.clone();
        let api: Api<ServiceCIDR> = Api::all(client.clone());
        tokio::spawn(async move {
            let mut reported = false;
            loop {
                if !crate::access::may(Optional::ListServiceCidrs) {
                    tokio::time::sleep(REFRESH).await;
                    continue;
                }
                let listed = api.list(&ListParams::default()).await;
                // Refused by RBAC: said once by crate::access.
                let refused = crate::access::answered(Optional::ListServiceCidrs, &listed);
                match listed {
                    Ok(list) => {
                        let read = ranges_of(&list.items);
                        if let Ok(mut r) = ranges.lock() {
                            if *r != read {
                                tracing::info!(ranges = ?read, "Service network read: addresses inside it are refused");
                            }
                            *r = read;
                        }
                        reported = false;
                    }
                    Err(e) if !reported && !refused => {
                        reported = true;
                        tracing::warn!(error = %e, "cannot list ServiceCIDRs (networking.k8s.io/v1; Kubernetes 1.33 and later): only the ClusterIPs of existing Services are refused as VIPs");
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(REFRESH).await;
            }
        });
        network
    }

    /// The ranges, as CIDR text.
    pub fn ranges(&self) -> Vec<String> {
        self.ranges.lock().map(|r| r.clone()).unwrap_or_default()
    }
}
