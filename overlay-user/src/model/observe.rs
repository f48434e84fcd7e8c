//! What the dataplane reports for observation: monitor events and their
//! filter, what the monitor lost, and the traffic to and from each peer host.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// What a monitor event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// A dropped packet, with its reason.
    Drop,
    /// A container's packet encapsulated to a peer (sampled trace).
    Encap,
    /// A peer's packet decapsulated (sampled trace).
    Decap,
}

/// One dataplane event, decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorEvent {
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Why, for a drop (`unknown_vni`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Which program saw it: `from-container`, `from-underlay`, `xdp`.
    pub hook: String,
    /// The interface it arrived on.
    pub ifindex: u32,
    /// Its name, when it still exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// Packet length in bytes, as the program saw it.
    pub len: u32,
    /// VNI of the VXLAN frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// Outer (underlay) source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outer_src: Option<Ipv4Addr>,
    /// Outer destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outer_dst: Option<Ipv4Addr>,
    /// Inner (container) source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<Ipv4Addr>,
    /// Inner destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<Ipv4Addr>,
    /// Inner IP protocol number (6 TCP, 17 UDP, 1 ICMP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<u8>,
    /// Inner source port (TCP, UDP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    /// Inner destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// The peer host the packet went to or came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Ipv4Addr>,
}

/// Which events a monitor client wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MonitorFilter {
    /// Drops.
    pub drops: bool,
    /// Sampled encap/decap events.
    pub trace: bool,
    /// Only drops with one of these reasons (empty: all).
    pub reasons: Vec<String>,
    /// Only events with this address as outer or inner source or destination.
    pub ip: Option<Ipv4Addr>,
    /// Only events to or from this peer host (outer address or the peer).
    pub peer: Option<Ipv4Addr>,
}

impl MonitorFilter {
    /// Whether `ev` passes the filter.
    pub fn matches(&self, ev: &MonitorEvent) -> bool {
        let kind = match ev.kind {
            EventType::Drop => self.drops,
            EventType::Encap | EventType::Decap => self.trace,
        };
        if !kind {
            return false;
        }
        if !self.reasons.is_empty()
            && !ev
                .reason
                .as_ref()
                .is_some_and(|r| self.reasons.iter().any(|x| x == r))
        {
            return false;
        }
        let has = |ip: Ipv4Addr, addrs: &[Option<Ipv4Addr>]| addrs.contains(&Some(ip));
        if let Some(ip) = self.ip {
            if !has(ip, &[ev.src, ev.dst, ev.outer_src, ev.outer_dst]) {
                return false;
            }
        }
        if let Some(peer) = self.peer {
            if !has(peer, &[ev.peer, ev.outer_src, ev.outer_dst]) {
                return false;
            }
        }
        true
    }
}

/// Events a monitor did not see, since it subscribed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorLoss {
    /// Not emitted by the programs: over the per-CPU rate limit.
    pub suppressed: u64,
    /// Not emitted by the programs: the ring buffer was full.
    pub ring_full: u64,
    /// Emitted but dropped by overlayd: this client read too slowly.
    pub lagged: u64,
}

/// Traffic to and from one peer host, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerTraffic {
    /// Packets encapsulated to it.
    pub tx_packets: u64,
    /// Their bytes (inner frames).
    pub tx_bytes: u64,
    /// Packets from it decapsulated.
    pub rx_packets: u64,
    /// Their bytes (inner frames).
    pub rx_bytes: u64,
    /// When the last packet came from it, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rx_unix_ms: Option<u64>,
}

/// The name of an IP protocol number, for the monitor's lines.
pub fn proto_name(proto: u8) -> String {
    match proto {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        n => format!("proto {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drop_ev() -> MonitorEvent {
        MonitorEvent {
            time_ns: 1,
            kind: EventType::Drop,
            reason: Some("unknown_vni".into()),
            hook: "from-underlay".into(),
            ifindex: 2,
            ifname: None,
            len: 100,
            vni: Some(7),
            outer_src: Some(Ipv4Addr::new(192, 168, 56, 5)),
            outer_dst: Some(Ipv4Addr::new(192, 168, 56, 4)),
            src: Some(Ipv4Addr::new(10, 1, 2, 3)),
            dst: Some(Ipv4Addr::new(10, 1, 1, 2)),
            proto: Some(17),
            sport: Some(1000),
            dport: Some(2000),
            peer: None,
        }
    }

    #[test]
    fn filter_by_type_reason_ip_and_peer() {
        let ev = drop_ev();
        let all = MonitorFilter {
            drops: true,
            ..Default::default()
        };
        assert!(all.matches(&ev));
        let trace = MonitorFilter {
            trace: true,
            ..Default::default()
        };
        assert!(!trace.matches(&ev));
        let reason = |r: &str| MonitorFilter {
            reasons: vec![r.into()],
            ..all.clone()
        };
        assert!(reason("unknown_vni").matches(&ev));
        assert!(!reason("unknown_peer").matches(&ev));
        let ip = |ip: [u8; 4]| MonitorFilter {
            ip: Some(Ipv4Addr::from(ip)),
            ..all.clone()
        };
        assert!(ip([10, 1, 1, 2]).matches(&ev));
        assert!(ip([192, 168, 56, 5]).matches(&ev));
        assert!(!ip([10, 9, 9, 9]).matches(&ev));
        let peer = |ip: [u8; 4]| MonitorFilter {
            peer: Some(Ipv4Addr::from(ip)),
            ..all.clone()
        };
        assert!(peer([192, 168, 56, 5]).matches(&ev));
        assert!(!peer([10, 1, 2, 3]).matches(&ev));
    }

    #[test]
    fn event_json_names_fields() {
        let json = serde_json::to_string(&drop_ev()).unwrap();
        assert!(
            json.starts_with(r#"{"time_ns":1,"type":"drop","reason":"unknown_vni","hook":"from-underlay","ifindex":2,"len":100,"vni":7,"outer_src":"192.168.56.5""#),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<MonitorEvent>(&json).unwrap(),
            drop_ev()
        );
    }
}
