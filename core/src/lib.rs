//! kvip's pure core: every decision the daemon takes, as plain functions over
//! plain values. Nothing here awaits, touches a socket or talks to Kubernetes;
//! time is always an argument.

pub mod candidacy;
pub mod config;
pub mod election;
pub mod endpoints;
pub mod packet;
pub mod plan;
pub mod service;
pub mod sharing;
