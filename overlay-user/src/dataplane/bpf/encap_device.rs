//! The collect-metadata VXLAN device of `encap = "device"`: created,
//! marked as overlay's and removed here; a device of that name that overlay
//! did not make is never touched.

use netlink_packet_route::link::{InfoVxlan, LinkAttribute, LinkMessage};

use crate::dataplane::kernel::device;
use crate::dataplane::DataplaneError;
use crate::model::config::Config;
use crate::sys::netlink;

/// The collect-metadata VXLAN device of `encap = "device"`.
pub const ENCAP_DEVICE: &str = "ovl.md";

/// (Re)creates the collect-metadata VXLAN device on the configured port,
/// MTU 50 under the underlay's, marked with the alias `overlay`, up;
/// returns its ifindex. A device of that name that overlay did not make is
/// refused ([`DataplaneError::ForeignDevice`]) and left.
pub(super) async fn ensure_encap_device(
    handle: &rtnetlink::Handle,
    cfg: &Config,
    underlay_mtu: u32,
) -> Result<u32, DataplaneError> {
    let fail = |reason: String| DataplaneError::Interface {
        name: ENCAP_DEVICE.into(),
        reason,
    };
    remove_encap_device()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if let Some(msg) = device::link_message(handle, ENCAP_DEVICE).await? {
        if let Some(what) = foreign_encap_device(&msg) {
            return Err(DataplaneError::ForeignDevice {
                name: ENCAP_DEVICE.into(),
                what,
            });
        }
    }
    handle
        .link()
        .add()
        .vxlan(ENCAP_DEVICE.into(), 0)
        .collect_metadata(true)
        .port(cfg.vxlan_port)
        .learning(false)
        .execute()
        .await
        .map_err(|e| fail(format!("creating it: {e}")))?;
    let link = netlink::link_by_name(handle, ENCAP_DEVICE)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut req = handle
        .link()
        .set(link.index)
        .mtu(underlay_mtu.saturating_sub(overlay_common::VXLAN_OVERHEAD))
        .up();
    req.message_mut()
        .attributes
        .push(LinkAttribute::IfAlias(device::DEVICE_ALIAS.into()));
    req.execute()
        .await
        .map_err(|e| fail(format!("setting it up: {e}")))?;
    Ok(link.index)
}

/// What the device of link message `msg` (called [`ENCAP_DEVICE`]) is, if
/// overlay did not make it: ours carry the alias `overlay`, or (made
/// before the alias) are collect-metadata VXLAN devices.
fn foreign_encap_device(msg: &LinkMessage) -> Option<String> {
    match device::owner(msg, ENCAP_DEVICE) {
        device::Owner::Foreign(what) => {
            let collect_metadata = device::vxlan_settings(msg)
                .is_some_and(|s| s.contains(&InfoVxlan::CollectMetadata(true)));
            (!collect_metadata).then_some(what)
        }
        _ => None,
    }
}

/// Deletes the collect-metadata VXLAN device if it exists and is ours; a
/// foreign device of that name stays.
pub async fn remove_encap_device() -> Result<(), DataplaneError> {
    let handle = netlink::connect().map_err(|e| DataplaneError::Netlink(e.to_string()))?;
    let Some(msg) = device::link_message(&handle, ENCAP_DEVICE).await? else {
        return Ok(());
    };
    if let Some(what) = foreign_encap_device(&msg) {
        log::info!("leaving {ENCAP_DEVICE} alone: {what}");
        return Ok(());
    }
    handle
        .link()
        .del(msg.header.index)
        .execute()
        .await
        .map_err(|e| DataplaneError::Netlink(format!("deleting {ENCAP_DEVICE}: {e}")))
}
