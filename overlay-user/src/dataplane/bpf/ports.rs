//! The bridge's ports in veth mode: the from-container program attached
//! to each, pins of ports that went away removed.

use std::collections::BTreeMap;

use overlay_common::programs;

use super::loader::PORT_PREFIX;
use super::BpfDataplane;
use crate::dataplane::DataplaneError;
use crate::model::config::AttachPoint;
use crate::sys::error::SysError;
use crate::sys::netlink;

impl BpfDataplane {
    /// Attaches the from-container program to every bridge port that lacks
    /// it and forgets ports that went away.
    pub(super) async fn sync_ports(&mut self) -> Result<(), DataplaneError> {
        if self.attach != AttachPoint::Veth {
            return Ok(());
        }
        // While the bridge is away (being re-created), the ports keep their programs.
        let bridge = match netlink::link_by_name(&self.handle, &self.cfg.bridge).await {
            Ok(bridge) => bridge,
            Err(SysError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(DataplaneError::Netlink(e.to_string())),
        };
        let ports = netlink::bridge_ports(&self.handle, bridge.index)
            .await
            .map_err(|e| DataplaneError::Netlink(e.to_string()))?;
        let now: BTreeMap<u32, String> = ports.into_iter().map(|l| (l.index, l.name)).collect();
        for (index, name) in &now {
            if self.ports.get(index) != Some(name) {
                if let Err(e) = self.serve_port(*index, name).await {
                    // A container that stopped in the meantime: not a failure.
                    match netlink::link_by_index(&self.handle, *index).await {
                        Ok(link) if link.name == *name => return Err(e),
                        _ => log::info!(
                            "port {name} (ifindex {index}) went away while attaching; skipped"
                        ),
                    }
                }
            }
        }
        // Pins of ports that are gone (also those of an earlier run).
        for pin in self.links.pinned() {
            if let Some(idx) = pin
                .strip_prefix(PORT_PREFIX)
                .and_then(|s| s.parse::<u32>().ok())
            {
                if !now.contains_key(&idx) {
                    self.links.detach(&pin);
                    self.ports.remove(&idx);
                }
            }
        }
        Ok(())
    }

    /// Attaches the from-container program to the port and prepares its
    /// device ([`EndpointDevice`](super::endpoint::EndpointDevice)).
    pub(super) async fn serve_port(
        &mut self,
        index: u32,
        name: &str,
    ) -> Result<(), DataplaneError> {
        self.attach_port(index, name)?;
        self.prepare_device(index, name).await;
        Ok(())
    }

    /// Prepares an endpoint's device; a failure is logged, not fatal:
    /// the port forwards without the tuning.
    pub(super) async fn prepare_device(&self, index: u32, name: &str) {
        if let Err(e) = self.endpoint_dev.prepare(&self.handle, index, name).await {
            log::warn!(
                "preparing {} endpoint {name} (ifindex {index}): {e}; it forwards untuned",
                self.endpoint_dev.kind()
            );
        }
    }

    fn attach_port(&mut self, index: u32, name: &str) -> Result<(), DataplaneError> {
        self.links
            .attach_tc(
                &mut self.ebpf,
                programs::FROM_CONTAINER,
                name,
                &format!("{PORT_PREFIX}{index}"),
            )
            .map_err(|e| DataplaneError::Other(e.to_string()))?;
        self.ports.insert(index, name.to_string());
        log::info!("from-container program attached to {name} (ifindex {index})");
        Ok(())
    }
}
