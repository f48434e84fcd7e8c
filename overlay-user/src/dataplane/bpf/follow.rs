//! Following the underlay interface and the bridge by name while running:
//! when either is deleted and re-created (a new ifindex), its address or
//! its MAC changes, the programs are attached again, `OVL_CONFIG` is
//! rewritten and every peer's header template (which holds the outer
//! source MAC and address) is rebuilt. Runs at every refresh: every second
//! and at once on netlink link and address events.

use std::net::Ipv4Addr;

use overlay_common::{programs, PeerValue};

use crate::dataplane::bpf::{BpfDataplane, LINK_BRIDGE, LINK_UNDERLAY, LINK_XDP};
use crate::dataplane::DataplaneError;
use crate::model::config::{AttachPoint, XdpMode};
use crate::sys::error::SysError;
use crate::sys::netlink;

impl BpfDataplane {
    /// Brings the programs and `OVL_CONFIG` in line with the underlay and
    /// the bridge as they are now; fails with the problem that keeps the
    /// underlay from working (missing, no address) after doing what it can.
    pub(super) async fn follow_links(&mut self) -> Result<(), DataplaneError> {
        let before = self.maps.config()?;
        let mut cfg = before;
        let mut problem = None;
        let name = self.cfg.underlay_interface.clone();
        match netlink::link_by_name(&self.handle, &name).await {
            Ok(link) => {
                if link.index != self.underlay_index {
                    log::info!(
                        "underlay {name} re-created (ifindex {} -> {}): attaching the programs again",
                        self.underlay_index,
                        link.index
                    );
                    self.attach_underlay()?;
                    self.underlay_index = link.index;
                    self.prepare_underlay().await;
                }
                cfg.underlay_ifindex = link.index;
                cfg.underlay_mac = link.mac;
                if self.cfg.underlay_ip.is_none() {
                    match netlink::usable_ipv4(&self.handle, link.index).await {
                        Ok(Some(ip)) => {
                            cfg.local_ip = ip.octets();
                            cfg.vtep_mac = overlay_common::vtep_mac(ip.octets(), cfg.vni);
                        }
                        Ok(None) => problem = Some(no_address(&name)),
                        Err(e) => problem = Some(interface(&name, e)),
                    }
                }
            }
            Err(e) => problem = Some(interface(&name, e)),
        }
        let bridge = self.cfg.bridge.clone();
        match netlink::link_by_name(&self.handle, &bridge).await {
            Ok(link) => {
                if link.index != self.bridge_index {
                    log::info!(
                        "bridge {bridge} re-created (ifindex {} -> {})",
                        self.bridge_index,
                        link.index
                    );
                    if self.attach == AttachPoint::Bridge {
                        self.links.attach_tc(
                            &mut self.ebpf,
                            programs::FROM_CONTAINER,
                            &bridge,
                            LINK_BRIDGE,
                        )?;
                    }
                    self.bridge_index = link.index;
                }
                cfg.gateway_mac = link.mac;
            }
            // Discovery says so; the ports keep their programs meanwhile.
            Err(SysError::NotFound(_)) => {}
            Err(e) => problem = problem.or(Some(interface(&bridge, e))),
        }
        if cfg != before {
            log::info!(
                "underlay {name}: ifindex {}, mac {}, address {}; bridge {bridge}: mac {}",
                cfg.underlay_ifindex,
                crate::model::validation::format_mac(&cfg.underlay_mac),
                Ipv4Addr::from(cfg.local_ip),
                crate::model::validation::format_mac(&cfg.gateway_mac),
            );
            self.maps.set_config(&cfg)?;
        }
        problem.map_or(Ok(()), Err)
    }

    /// Attaches the underlay's programs (XDP when configured, then tc) to
    /// the interface now called `underlay_interface`.
    pub(super) fn attach_underlay(&mut self) -> Result<(), DataplaneError> {
        let name = &self.cfg.underlay_interface;
        match self.cfg.xdp {
            XdpMode::Off => {}
            mode => {
                let mode = if mode != XdpMode::Generic {
                    aya::programs::XdpMode::Driver
                } else {
                    aya::programs::XdpMode::Skb
                };
                self.links
                    .attach_xdp(&mut self.ebpf, name, mode, LINK_XDP)?;
            }
        }
        self.links
            .attach_tc(&mut self.ebpf, programs::FROM_UNDERLAY, name, LINK_UNDERLAY)
    }

    /// Prepares the underlay for the endpoint device (`big_tcp`); a
    /// failure is logged, not fatal.
    pub(super) async fn prepare_underlay(&self) {
        let name = &self.cfg.underlay_interface;
        if let Err(e) = self
            .endpoint_dev
            .prepare_underlay(&self.handle, self.underlay_index, name)
            .await
        {
            log::warn!("preparing the underlay {name}: {e}; it forwards untuned");
        }
    }

    /// Rewrites every peer entry that differs from the one `OVL_CONFIG` as
    /// it is now and the next-hop MACs of `macs` (zero where unknown) make:
    /// a new next hop, or a new outer source MAC or address in the template.
    pub(super) fn rebuild_peers(
        &mut self,
        macs: &std::collections::BTreeMap<Ipv4Addr, [u8; 6]>,
    ) -> Result<(), DataplaneError> {
        let cfg = self.maps.config()?;
        let mut changed = Vec::new();
        for (net, v) in &self.peers {
            let mac = macs
                .get(&Ipv4Addr::from(v.underlay_ip))
                .copied()
                .unwrap_or([0; 6]);
            let slot = self.observe.peer_stats.slot(Ipv4Addr::from(v.underlay_ip));
            let new = PeerValue::new(&cfg, v.underlay_ip, mac, v.vtep_mac).with_stats_slot(slot);
            if new != *v {
                changed.push((*net, new));
            }
        }
        for (net, v) in changed {
            self.maps.add_peer(net, &v)?;
            self.peers.insert(net, v);
        }
        Ok(())
    }
}

fn interface(name: &str, e: SysError) -> DataplaneError {
    DataplaneError::Interface {
        name: name.to_string(),
        reason: e.to_string(),
    }
}

fn no_address(name: &str) -> DataplaneError {
    DataplaneError::Interface {
        name: name.to_string(),
        reason: "has no IPv4 address; waiting for one (or set underlay_ip in the config)".into(),
    }
}
