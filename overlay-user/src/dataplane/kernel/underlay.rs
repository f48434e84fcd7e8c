//! Following the underlay interface by name: the device settings it calls
//! for now (ifindex, local address, MTU, VTEP MAC).

use crate::dataplane::kernel::device::{DeviceSpec, VXLAN_OVERHEAD};
use crate::dataplane::kernel::KernelDataplane;
use crate::dataplane::DataplaneError;
use crate::sys::netlink;

impl KernelDataplane {
    /// The device's settings for the underlay as it is now; fails while the
    /// underlay is missing or has no address (the device then stays as it is).
    pub(super) async fn wanted_device(&self) -> Result<DeviceSpec, DataplaneError> {
        let fail = |reason: String| DataplaneError::Interface {
            name: self.underlay.clone(),
            reason,
        };
        let link = netlink::link_by_name(&self.handle, &self.underlay)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let local_ip = match self.pinned_ip {
            Some(ip) => ip,
            None => netlink::usable_ipv4(&self.handle, link.index)
                .await
                .map_err(|e| fail(e.to_string()))?
                .ok_or_else(|| {
                    fail(
                        "has no IPv4 address; waiting for one (or set underlay_ip in the config)"
                            .into(),
                    )
                })?,
        };
        if link.mtu <= VXLAN_OVERHEAD + 68 {
            return Err(fail(format!("MTU {} leaves no room for VXLAN", link.mtu)));
        }
        Ok(DeviceSpec {
            underlay_index: link.index,
            local_ip,
            mtu: link.mtu - VXLAN_OVERHEAD,
            mac: overlay_common::vtep_mac(local_ip.octets(), self.dev.vni),
            ..self.dev.clone()
        })
    }
}
