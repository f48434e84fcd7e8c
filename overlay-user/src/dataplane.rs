//! The `Dataplane` abstraction: what the control sources (config, API,
//! Docker, etcd) drive, without knowing whether BPF or the kernel's VXLAN
//! device forwards the packets.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Which implementation forwards packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// tc/XDP programs encapsulate and decapsulate (the default).
    Ebpf,
    /// The kernel's VXLAN device, routes, neighbour and FDB entries.
    Kernel,
}

/// A remote host's container subnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSpec {
    /// The remote container subnet, e.g. 10.103.200.0/24.
    pub subnet: Ipv4Net,
    /// The remote host's underlay address, e.g. 192.168.56.5.
    pub underlay_ip: Ipv4Addr,
    /// The remote VTEP's MAC; `None` derives it with [`overlay_common::vtep_mac`].
    pub vtep_mac: Option<[u8; 6]>,
}

/// A local container interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    /// The container's IPv4 address.
    pub ip: Ipv4Addr,
    /// Host-side interface name (the veth whose peer is in the container).
    pub ifname: String,
    /// Its ifindex in the host's network namespace.
    pub ifindex: u32,
    /// The container interface's MAC, all zero when not known yet.
    pub mac: [u8; 6],
}

/// Counters read from the dataplane, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Packet and byte counters by name (`encap_packets`, ...).
    pub counters: BTreeMap<String, u64>,
    /// Drops by reason name (`unknown_vni`, ...).
    pub drops: BTreeMap<String, u64>,
}

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

/// A started dataplane and why it is the one running.
pub struct Started {
    /// The implementation now forwarding.
    pub dataplane: Box<dyn Dataplane>,
    /// Why this mode: the setting, or for `auto` what happened to BPF.
    pub reason: String,
}

/// Errors of [`start`].
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `dataplane = "ebpf"` and the BPF dataplane could not be loaded.
    #[error(transparent)]
    Ebpf(#[from] crate::bpf::LoadError),
    /// The kernel dataplane could not be set up (`kernel`, or `auto` after BPF failed).
    #[error(transparent)]
    Kernel(#[from] crate::kernel::KernelError),
}

/// Starts the dataplane `choice` asks for, with this host's underlay address
/// `underlay_ip`, and removes what the other mode left behind (pins and
/// links under `pin_dir`; our VXLAN devices with their routes, neighbour and
/// FDB entries).
///
/// `auto` tries BPF; on any failure to load or attach it (no bpffs, missing
/// capabilities, the verifier, an attach error) it logs one line saying
/// why, removes whatever the attempt left under `pin_dir` and runs the
/// kernel path. A missing interface (underlay or bridge) is an error in
/// every mode but `kernel`, which needs no bridge to start.
pub async fn start(
    cfg: &crate::config::Config,
    underlay_ip: Ipv4Addr,
    choice: crate::config::DataplaneChoice,
) -> Result<Started, StartError> {
    use crate::config::DataplaneChoice;
    let reason = match choice {
        DataplaneChoice::Ebpf | DataplaneChoice::Kernel => {
            format!("dataplane = {}", choice_name(choice))
        }
        DataplaneChoice::Auto => String::new(),
    };
    if choice != DataplaneChoice::Kernel {
        match crate::bpf::BpfDataplane::start(cfg).await {
            Ok(dp) => {
                remove_kernel_leftovers().await;
                let reason = if choice == DataplaneChoice::Auto {
                    "auto: the eBPF programs loaded and attached".to_string()
                } else {
                    reason
                };
                return Ok(Started {
                    dataplane: Box::new(dp),
                    reason,
                });
            }
            Err(e) if choice == DataplaneChoice::Ebpf => return Err(e.into()),
            // A missing or unusable interface is the host's problem, not BPF's:
            // the kernel path would not fix it, so auto reports it too.
            Err(e @ crate::bpf::LoadError::Interface { .. }) => return Err(e.into()),
            Err(e) => {
                let e = error_chain(&e);
                log::warn!(
                    "dataplane auto: eBPF unavailable ({e}); falling back to the kernel's VXLAN device"
                );
                remove_bpf_leftovers(&cfg.pin_dir).await;
                let dp = crate::kernel::KernelDataplane::start(cfg, underlay_ip).await?;
                return Ok(Started {
                    dataplane: Box::new(dp),
                    reason: format!("auto: eBPF unavailable: {e}"),
                });
            }
        }
    }
    remove_bpf_leftovers(&cfg.pin_dir).await;
    let dp = crate::kernel::KernelDataplane::start(cfg, underlay_ip).await?;
    Ok(Started {
        dataplane: Box::new(dp),
        reason,
    })
}

/// `e` and its sources, joined with ": ", leaving out a source whose text
/// the message so far already contains.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        source = s.source();
    }
    text
}

/// The lowercase name of a `dataplane` setting.
pub fn choice_name(choice: crate::config::DataplaneChoice) -> &'static str {
    use crate::config::DataplaneChoice;
    match choice {
        DataplaneChoice::Auto => "auto",
        DataplaneChoice::Ebpf => "ebpf",
        DataplaneChoice::Kernel => "kernel",
    }
}

/// Detaches and unpins every link and map of ours under `pin_dir` (a BPF
/// run's, or a failed attempt's); logged, never fatal.
async fn remove_bpf_leftovers(pin_dir: &std::path::Path) {
    if let Err(e) = crate::bpf::remove_encap_device().await {
        log::warn!("removing {}: {e}", crate::bpf::ENCAP_DEVICE);
    }
    if !pin_dir.exists() {
        return;
    }
    match crate::bpf::loader::remove_pins(pin_dir) {
        Ok(()) => log::info!("removed the eBPF pins under {}", pin_dir.display()),
        Err(e) => log::warn!("removing the eBPF pins under {}: {e}", pin_dir.display()),
    }
}

/// Deletes our VXLAN devices (and with them their routes, neighbour and FDB
/// entries) left by a kernel-mode run; logged, never fatal.
async fn remove_kernel_leftovers() {
    let handle = match crate::netlink::connect() {
        Ok(h) => h,
        Err(e) => {
            log::warn!("removing kernel-mode leftovers: {e}");
            return;
        }
    };
    if let Err(e) = crate::kernel::remove_devices(&handle, None).await {
        log::warn!("removing kernel-mode leftovers: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn error_chains_skip_repeats() {
        let e = Outer(Middle(std::io::Error::from_raw_os_error(libc::EPERM)));
        assert_eq!(
            error_chain(&e),
            "outer: middle: Operation not permitted (os error 1)"
        );
    }
}
