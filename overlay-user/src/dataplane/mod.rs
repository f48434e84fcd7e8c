//! The dataplane: what forwards packets, behind one [`Dataplane`] trait.
//!
//! Owns: the trait and its error ([`DataplaneError`]); the BPF
//! implementation ([`bpf`]: loader, typed maps with domain methods) and the
//! kernel one ([`kernel`]: VXLAN device, FDB/neighbour/route entries,
//! firewall); and [`select`], the one place that knows both and picks and
//! starts one of them for the `dataplane` setting.
//!
//! Must not touch: the agent and the control sources (a dataplane is told
//! what to forward; it never asks who wants it), nor validation (the agent
//! validates before any call). This module itself does not name its
//! implementations: they depend on it, not it on them.

pub mod bpf;
pub mod kernel;
pub mod select;

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::model::endpoint::EndpointSpec;
use crate::model::peer::PeerSpec;
use crate::model::status::{Mode, Stats};

/// Errors of a dataplane implementation.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// A BPF map operation failed.
    #[error("BPF map {map}: {source}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// What aya reported.
        #[source]
        source: aya::maps::MapError,
    },
    /// Attaching or detaching a program failed.
    #[error("attaching {program} to {ifname}: {reason}")]
    Attach {
        /// The program's name.
        program: &'static str,
        /// The interface.
        ifname: String,
        /// What went wrong.
        reason: String,
    },
    /// A netlink request failed.
    #[error("netlink: {0}")]
    Netlink(String),
    /// Anything else, with context.
    #[error("{0}")]
    Other(String),
}

/// What every dataplane implementation offers the agent.
///
/// Calls are idempotent: adding what exists replaces it, deleting what does
/// not exist succeeds. Validation (overlaps, bad input) happens in the agent
/// before any call, so an implementation only fails on system errors.
#[async_trait::async_trait]
pub trait Dataplane: Send + Sync {
    /// The implementation's mode.
    fn mode(&self) -> Mode;
    /// Route `peer.subnet` to `peer.underlay_ip` through the overlay.
    async fn add_peer(&mut self, peer: &PeerSpec) -> Result<(), DataplaneError>;
    /// Stop routing `subnet` through the overlay; removes exactly what `add_peer` made.
    async fn del_peer(&mut self, subnet: Ipv4Net) -> Result<(), DataplaneError>;
    /// Deliver traffic for `ep.ip` arriving from peers to `ep`.
    async fn add_endpoint(&mut self, ep: &EndpointSpec) -> Result<(), DataplaneError>;
    /// Forget the endpoint at `ip`.
    async fn del_endpoint(&mut self, ip: Ipv4Addr) -> Result<(), DataplaneError>;
    /// Current counters.
    fn stats(&self) -> Result<Stats, DataplaneError>;
    /// Periodic housekeeping (next-hop MACs, link changes); called about once a second.
    async fn refresh(&mut self) -> Result<(), DataplaneError>;
    /// Stop. With `cleanup`, remove every program, pin, map, device and route of ours;
    /// without it, leave the dataplane forwarding for the next start.
    async fn shutdown(&mut self, cleanup: bool) -> Result<(), DataplaneError>;
}
