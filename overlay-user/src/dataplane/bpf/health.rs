//! Whether the programs are attached where they should be: each pinned
//! link is compared with the interface it belongs on (`overlayctl doctor`,
//! `overlayctl status`); and which VXLAN device and filter chain are ours.

use overlay_common::programs;

use super::loader::{versioned_dir, LINK_BRIDGE, LINK_UNDERLAY, LINK_XDP, PORT_PREFIX};
use super::{BpfDataplane, ENCAP_DEVICE};
use crate::dataplane::firewall::VXLAN_CHAIN;
use crate::model::config::{AttachPoint, TcAttach, XdpMode};
use crate::model::doctor::AttachmentState;
use crate::sys::probe;

impl BpfDataplane {
    /// The collect-metadata VXLAN device of `encap = "device"` or
    /// `tunnel_gro`, if in use.
    pub(super) fn own_device_names(&self) -> Vec<String> {
        if self.tunnel_device {
            vec![ENCAP_DEVICE.to_string()]
        } else {
            Vec::new()
        }
    }

    /// The VXLAN filter chain, kept with `encap = "device"`.
    pub(super) fn filter_chain(&self) -> Option<&'static str> {
        self.firewall.is_some().then_some(VXLAN_CHAIN)
    }

    /// Every attachment this configuration needs, each checked against
    /// its pin: the from-underlay program on the underlay, XDP there when
    /// on, the from-container program on the bridge or on every port.
    pub(super) fn attachment_states(&self) -> Vec<AttachmentState> {
        let mut wanted: Vec<(&'static str, String, String, u32)> = vec![(
            programs::FROM_UNDERLAY,
            LINK_UNDERLAY.to_string(),
            self.cfg.underlay_interface.clone(),
            self.underlay_index,
        )];
        if self.cfg.xdp != XdpMode::Off {
            wanted.push((
                programs::XDP_UNDERLAY,
                LINK_XDP.to_string(),
                self.cfg.underlay_interface.clone(),
                self.underlay_index,
            ));
        }
        match self.attach {
            AttachPoint::Bridge => wanted.push((
                programs::FROM_CONTAINER,
                LINK_BRIDGE.to_string(),
                self.cfg.bridge.clone(),
                self.bridge_index,
            )),
            AttachPoint::Veth => {
                for (index, name) in &self.ports {
                    wanted.push((
                        programs::FROM_CONTAINER,
                        format!("{PORT_PREFIX}{index}"),
                        name.clone(),
                        *index,
                    ));
                }
            }
        }
        let dir = versioned_dir(&self.pin_dir).join("links");
        wanted
            .into_iter()
            .map(|(program, link, ifname, index)| {
                let path = dir.join(&link);
                let clsact = self.cfg.tc_attach == TcAttach::Clsact && link != LINK_XDP;
                let problem = match probe::pinned_link(&path) {
                    // Not pinnable: what this run attached (and did not see fail).
                    _ if clsact => match self.links.clsact_filter(&link) {
                        Some(on) if on == ifname => None,
                        Some(on) => Some(format!("clsact filter {link} is on {on}, not {ifname}")),
                        None => Some(format!("no clsact filter {link} attached by this run")),
                    },
                    Err(_) if !path.exists() => Some(format!("no pinned link {}", path.display())),
                    Err(e) => Some(e.to_string()),
                    Ok(state) if state.ifindex == 0 => Some(format!(
                        "pinned link {} (link id {}) is detached from every interface",
                        path.display(),
                        state.id
                    )),
                    Ok(state) if state.ifindex != index => Some(format!(
                        "pinned link {} (link id {}) is on ifindex {}, not {ifname} (ifindex {index})",
                        path.display(),
                        state.id,
                        state.ifindex
                    )),
                    Ok(_) => None,
                };
                AttachmentState {
                    program: program.to_string(),
                    link,
                    ifname,
                    attached: problem.is_none(),
                    problem,
                }
            })
            .collect()
    }
}
