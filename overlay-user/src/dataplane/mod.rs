//! The dataplane: what forwards packets, behind one [`Dataplane`] trait.
//!
//! Owns: the trait and its error ([`DataplaneError`]); the BPF
//! implementation ([`bpf`]: loader, typed maps with domain methods) and the
//! kernel one ([`kernel`]: VXLAN devices, FDB/neighbour/route entries);
//! the iptables rules both use ([`firewall`]: FORWARD, the VXLAN filter,
//! the overlay networks' NAT and isolation); and [`select`], the one place that knows both and picks and
//! starts one of them for the `dataplane` setting.
//!
//! Must not touch: the agent and the control sources (a dataplane is told
//! what to forward; it never asks who wants it), nor validation (the agent
//! validates before any call). This module itself does not name its
//! implementations: they depend on it, not it on them.

pub mod bpf;
pub mod firewall;
pub mod kernel;
pub mod select;

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::model::endpoint::EndpointSpec;
use crate::model::overlay_network::{NetEndpointSpec, NetworkSpec};
use crate::model::peer::PeerSpec;
use crate::model::status::{Mode, Stats};

/// Errors of the dataplane layer: of either implementation, of loading,
/// starting and choosing one, and of the firewall rules.
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
    /// The BPF pin directory is not on a BPF filesystem and one could not be mounted.
    #[error("bpffs at {path}: {reason}")]
    Bpffs {
        /// The directory.
        path: std::path::PathBuf,
        /// Why it is unusable.
        reason: String,
    },
    /// `pin_dir` is relative or has `..` in it.
    #[error("pin_dir {} is not an absolute path without `..`; expected one like /sys/fs/bpf/overlay", path.display())]
    PinDirPath {
        /// The configured directory.
        path: std::path::PathBuf,
    },
    /// `pin_dir` is the root of a BPF filesystem: removing our pins there
    /// could touch every other tool's.
    #[error("pin_dir {} is the root of a BPF filesystem, where every tool pins; expected a directory of overlayd's own below it, like /sys/fs/bpf/overlay", path.display())]
    PinDirIsRoot {
        /// The configured directory.
        path: std::path::PathBuf,
    },
    /// `pin_dir` holds pins of another map layout (an older or newer overlayd's).
    #[error(
        "pin_dir {} holds pins of another map layout ({}), not this overlayd's v{}; its programs may still be forwarding. \
         Stop that overlayd and run it once more with --cleanup, or remove {} (which detaches its programs), then start again",
        pin_dir.display(),
        found.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        overlay_common::MAPS_VERSION,
        found.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and ")
    )]
    PinLayout {
        /// The configured directory.
        pin_dir: std::path::PathBuf,
        /// The entries of another layout in it.
        found: Vec<std::path::PathBuf>,
    },
    /// The eBPF object could not be loaded (maps created, relocations).
    #[error("loading the eBPF object: {0}")]
    Object(#[from] aya::EbpfError),
    /// The kernel refused a BPF program (verifier, missing capability).
    #[error("loading program {program}: {source}")]
    Program {
        /// The program.
        program: &'static str,
        /// What the kernel said.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// An interface the configuration names does not exist, has no usable
    /// address or is unusable for the dataplane.
    #[error("interface {name}: {reason}")]
    Interface {
        /// Its name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    /// The kernel refused a netlink request (kernel dataplane).
    #[error("{what}: {source}")]
    Request {
        /// What was asked, e.g. "adding the route to 10.103.200.0/24".
        what: String,
        /// What rtnetlink reported (boxed: it embeds a whole netlink message).
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// The iptables command is missing or failed (the firewall rules).
    #[error("iptables: {what}: {reason}")]
    Iptables {
        /// What was being done.
        what: String,
        /// What went wrong.
        reason: String,
    },
    /// A route to a peer subnet exists in the main table that overlay did
    /// not make (kernel dataplane): it is left as it is.
    #[error("route {route} in the main table was not made by overlay; refusing to replace it (delete that route, or the peer)")]
    ForeignRoute {
        /// The route, as `ip route` shows it.
        route: String,
    },
    /// A device with the name of one of ours exists that overlay did not
    /// make (kernel dataplane): it is neither changed nor deleted.
    #[error("{name} exists and was not made by overlay ({what}); refusing to change or delete it: delete or rename it, or choose another vni")]
    ForeignDevice {
        /// The device's name, e.g. `ovl.42`.
        name: String,
        /// What it is, e.g. "a dummy device without the alias \"overlay\"".
        what: String,
    },
    /// The firewall's blocking helper task failed.
    #[error("firewall task: {0}")]
    Task(String),
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
    /// Endpoints the dataplane learned by itself from containers' packets
    /// (never given to [`Dataplane::add_endpoint`]); none unless it learns.
    fn learned_endpoints(&self) -> Result<Vec<EndpointSpec>, DataplaneError> {
        Ok(Vec::new())
    }

    /// Carry overlay network `net` (its VNI, subnet and gateway) on this
    /// host: the gateway answered to its containers, traffic leaving the
    /// network routed out through the host with NAT, its VNI accepted from
    /// peer hosts. The same VNI again replaces it.
    async fn add_network(&mut self, net: &NetworkSpec) -> Result<(), DataplaneError> {
        Err(DataplaneError::Other(format!(
            "the {} dataplane does not carry overlay networks (network {})",
            crate::model::status::mode_name(self.mode()),
            net.name
        )))
    }
    /// Stop carrying the network with VNI `vni`; removes exactly what
    /// [`Dataplane::add_network`] and its endpoints made.
    async fn del_network(&mut self, vni: u32) -> Result<(), DataplaneError> {
        let _ = vni;
        Ok(())
    }
    /// Deliver traffic for `ep.ip` on network `ep.vni` to `ep`: a local
    /// container behind its host-side veth, or a remote one through VXLAN
    /// to its host. The network was added before.
    async fn add_net_endpoint(&mut self, ep: &NetEndpointSpec) -> Result<(), DataplaneError> {
        Err(DataplaneError::Other(format!(
            "the {} dataplane does not carry overlay networks (endpoint {} on VNI {})",
            crate::model::status::mode_name(self.mode()),
            ep.ip,
            ep.vni
        )))
    }
    /// Forget the endpoint at `ip` on network `vni`.
    async fn del_net_endpoint(&mut self, vni: u32, ip: Ipv4Addr) -> Result<(), DataplaneError> {
        let _ = (vni, ip);
        Ok(())
    }

    /// Once at start, after the sources that report at start (the config
    /// file's peers, the state file) have: remove what an earlier run left
    /// that nobody added again since this start (peers removed from the
    /// config while overlayd was stopped; endpoints, unless learned on a
    /// port that is still there), so nothing forwards that the agent does
    /// not list. By default there is nothing to do (the kernel dataplane's
    /// refresh removes entries that belong to no peer).
    async fn forget_unowned(&mut self) -> Result<(), DataplaneError> {
        Ok(())
    }
    /// Periodic housekeeping (next-hop MACs, link changes); called about once a second.
    async fn refresh(&mut self) -> Result<(), DataplaneError>;
    /// Stop. With `cleanup`, remove every program, pin, map, device and route of ours;
    /// without it, leave the dataplane forwarding for the next start.
    async fn shutdown(&mut self, cleanup: bool) -> Result<(), DataplaneError>;
}
