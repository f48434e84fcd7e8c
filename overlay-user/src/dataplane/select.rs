//! Picks and starts the dataplane the `dataplane` setting asks for: the
//! only module that knows both implementations.

use std::net::Ipv4Addr;

use crate::dataplane::bpf::{self, BpfDataplane};
use crate::dataplane::kernel::{self, KernelDataplane};
use crate::dataplane::{Dataplane, DataplaneError};
use crate::model::config::{Config, DataplaneChoice};
use crate::sys::netlink;

/// A started dataplane and why it is the one running.
pub struct Started {
    /// The implementation now forwarding.
    pub dataplane: Box<dyn Dataplane>,
    /// Why this mode: the setting, or for `auto` what happened to BPF.
    pub reason: String,
}

/// Starts the dataplane `choice` asks for, with this host's underlay address
/// `underlay_ip`, and removes what the other mode left behind (pins and
/// links under `pin_dir`; our VXLAN devices with their routes, neighbour and
/// FDB entries, and the overlay networks' bridges and VXLAN devices).
///
/// `auto` tries BPF; on any failure to load or attach it (no bpffs, missing
/// capabilities, the verifier, an attach error) it logs one line saying
/// why, removes whatever the attempt left under `pin_dir` and runs the
/// kernel path. A missing interface (underlay or bridge) is an error in
/// every mode but `kernel`, which needs no bridge to start.
pub async fn start(
    cfg: &Config,
    underlay_ip: Ipv4Addr,
    choice: DataplaneChoice,
) -> Result<Started, DataplaneError> {
    let reason = match choice {
        DataplaneChoice::Ebpf | DataplaneChoice::Kernel => {
            format!("dataplane = {}", choice_name(choice))
        }
        DataplaneChoice::Auto => String::new(),
    };
    if choice != DataplaneChoice::Kernel {
        match BpfDataplane::start(cfg).await {
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
            Err(e) if choice == DataplaneChoice::Ebpf => return Err(e),
            // A missing or unusable interface is the host's problem, not BPF's:
            // the kernel path would not fix it, so auto reports it too. So is
            // a bad pin_dir, and pins of another layout (their programs would
            // still run beside the kernel path).
            Err(
                e @ (DataplaneError::Interface { .. }
                | DataplaneError::PinDirPath { .. }
                | DataplaneError::PinDirIsRoot { .. }
                | DataplaneError::PinLayout { .. }),
            ) => return Err(e),
            Err(e) => {
                let e = error_chain(&e);
                log::warn!(
                    "dataplane auto: eBPF unavailable ({e}); falling back to the kernel's VXLAN device"
                );
                remove_bpf_leftovers(&cfg.pin_dir).await;
                let dp = KernelDataplane::start(cfg, underlay_ip).await?;
                return Ok(Started {
                    dataplane: Box::new(dp),
                    reason: format!("auto: eBPF unavailable: {e}"),
                });
            }
        }
    }
    // Never beside the programs of another layout, nor removing pins where
    // other tools pin.
    bpf::loader::check_pin_dir(&cfg.pin_dir)?;
    bpf::loader::check_layout(&cfg.pin_dir)?;
    remove_bpf_leftovers(&cfg.pin_dir).await;
    let dp = KernelDataplane::start(cfg, underlay_ip).await?;
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
pub fn choice_name(choice: DataplaneChoice) -> &'static str {
    match choice {
        DataplaneChoice::Auto => "auto",
        DataplaneChoice::Ebpf => "ebpf",
        DataplaneChoice::Kernel => "kernel",
    }
}

/// Detaches and unpins every link and map of ours under `pin_dir` (a BPF
/// run's, or a failed attempt's), and nothing else; logged, never fatal.
async fn remove_bpf_leftovers(pin_dir: &std::path::Path) {
    if let Err(e) = bpf::remove_encap_device().await {
        log::warn!("removing {}: {e}", bpf::ENCAP_DEVICE);
    }
    if !pin_dir.exists() {
        return;
    }
    match bpf::loader::remove_pins(pin_dir) {
        Ok(()) => log::info!("removed the eBPF pins under {}", pin_dir.display()),
        Err(e) => log::warn!("removing the eBPF pins under {}: {e}", pin_dir.display()),
    }
}

/// Deletes our VXLAN devices (and with them their routes, neighbour and FDB
/// entries) and the overlay networks' bridges and VXLAN devices left by a
/// kernel-mode run; logged, never fatal.
async fn remove_kernel_leftovers() {
    let handle = match netlink::connect() {
        Ok(h) => h,
        Err(e) => {
            log::warn!("removing kernel-mode leftovers: {e}");
            return;
        }
    };
    if let Err(e) = kernel::device::remove_devices(&handle, None).await {
        log::warn!("removing kernel-mode leftovers: {e}");
    }
    let none = std::collections::BTreeSet::new();
    if let Err(e) = kernel::netdev::remove_network_devices(&handle, &none).await {
        log::warn!("removing kernel-mode network devices: {e}");
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
