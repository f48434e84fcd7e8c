//! Peer hosts, the underlay addresses behind the peer entries: how many
//! entries each has (`OVL_PEER_HOSTS`), its `OVL_PEER_STATS` slot, and the
//! VXLAN filter's list of them.

use std::net::Ipv4Addr;

use crate::dataplane::bpf::BpfDataplane;
use crate::dataplane::DataplaneError;

impl BpfDataplane {
    /// While our VXLAN device is in place (`encap = "device"`, or
    /// `tunnel_gro`), makes the VXLAN filter in front of its socket accept
    /// the peer hosts now; a failure is logged (the keeper retries).
    pub(super) async fn sync_filter(&self) {
        if let Some(fw) = &self.firewall {
            let hosts = self
                .peers
                .values()
                .map(|p| Ipv4Addr::from(p.underlay_ip))
                .collect();
            if let Err(e) = fw.set_peers(hosts).await {
                log::warn!("firewall: {e}");
            }
        }
    }

    /// One peer fewer behind `ip`.
    pub(super) fn uncount(&mut self, ip: [u8; 4]) {
        if let Some(n) = self.host_counts.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.host_counts.remove(&ip);
            }
        }
    }

    /// Writes the number of peers behind each of `touched` to
    /// `OVL_PEER_HOSTS`, gives a host its first peer brought a
    /// `OVL_PEER_STATS` slot and takes back the slot of one without peers
    /// (overlay networks' remote endpoints on it follow at once).
    pub(super) fn sync_peer_hosts(&mut self, touched: &[Ipv4Addr]) -> Result<(), DataplaneError> {
        let mut moved = Vec::new();
        for ip in touched {
            let n = self.host_counts.get(&ip.octets()).copied().unwrap_or(0);
            self.maps.set_peer_host(*ip, n)?;
            if self.observe.peer_stats.track(*ip, n > 0)? {
                moved.push(*ip);
            }
        }
        if !moved.is_empty() {
            self.net_restamp_slots(&moved)?;
        }
        Ok(())
    }
}
