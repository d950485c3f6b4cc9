//! kvip's pure core: every decision the daemon takes, as plain functions over
//! plain values. Nothing here awaits, touches a socket or talks to Kubernetes;
//! time is always an argument.
//!
//! The modules follow the daemon's path from input to wire:
//!
//! - [`access`]: what RBAC lets this process do, learnt from refusals;
//! - [`assess`](mod@assess): the whole picture in one call, for the daemon and `kvip status`;
//! - [`config`]: kube-vip's environment variables into a checked [`Config`];
//! - [`kube_vip`]: every kube-vip setting and what kvip does with it;
//! - [`budget`]: how many API writes may go, and backoff after refusals;
//! - [`service`], [`endpoints`]: Services and EndpointSlices as plain values;
//! - [`candidacy`]: which nodes may announce a Service, or why it is pending;
//! - [`sharing`]: Services that share an address are elected together;
//! - [`ipam`]: addresses from pools, as kube-vip-cloud-provider allocates them;
//! - [`election`]: client-go compatible Lease election as a state machine;
//! - [`campaign`]: the election with outage hold, yield, adoption and stale-write rules;
//! - [`elections`]: every Lease of a role stepped as one, for both roles;
//! - [`instances`]: which nodes run a live kvip instance;
//! - [`lease_names`]: which Leases are kvip's to write;
//! - [`membership`]: membership mode, one Lease per node and rendezvous owners;
//! - [`plan`](mod@plan): which addresses to add and remove, and on which interface;
//! - [`placement`]: whether this node can place an address now, and what it publishes;
//! - [`probe`]: asking the network before an address is first taken;
//! - [`guard`]: how claims by other hosts on the wire are answered;
//! - [`packet`]: gratuitous ARP and neighbour advertisement frames.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod access;
pub mod allocator;
pub mod assess;
pub mod budget;
pub mod campaign;
pub mod candidacy;
pub mod config;
pub mod election;
pub mod elections;
pub mod endpoints;
pub mod guard;
pub mod instances;
pub mod ipam;
pub mod kube_vip;
pub mod lease_names;
pub mod membership;
pub mod packet;
pub mod placement;
pub mod plan;
pub mod probe;
pub mod service;
pub mod sharing;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use assess::{Assessment, assess};
pub use campaign::{Campaign, Notice};
pub use candidacy::{NodeInput, PendingReason, candidates};
pub use config::{Config, ConfigError, ConfigWarning};
pub use election::{Decision, Elector, LeaseRecord, Mono, Observed, WallTime, WriteResult};
pub use endpoints::{EndpointIndex, EndpointSummary, SliceInput};
pub use plan::{Action, InterfaceAddress, choose_interface, plan};
pub use service::{LbClassRule, ServiceInput, ServiceKey, ServiceView};
pub use sharing::{AnnouncementGroup, LeaseKey, plan_groups};
