//! Overlay networks (Docker's overlay model): map keys and values of the
//! per-network dataplane, shared by the programs and user space.
//!
//! A network has a VNI, a subnet and a gateway; its endpoints are keyed by
//! (VNI, IP) and are either local (behind a host-side veth, delivered with
//! `bpf_redirect_peer`) or remote (VXLAN with the network's VNI to the
//! host that has them). Every key and value is `#[repr(C)]` with explicit
//! padding; the tests at the bottom pin the sizes.

use crate::PeerValue;

/// Maximum number of overlay networks a host carries.
pub const MAX_NETWORKS: u32 = 4096;
/// Maximum number of network endpoints (local and remote) a host holds.
pub const MAX_NET_ENDPOINTS: u32 = 65536;
/// Maximum number of local network ports (host-side veths) on a host.
pub const MAX_NET_PORTS: u32 = 16384;
/// Entries of `OVL_NET_PORT_SLOTS` (4,096 of 28 bytes: 112 KiB; a power of
/// two): see [`NetPortSlot`].
pub const NET_PORT_SLOTS: u32 = 4096;
/// Entries of `OVL_NET_EP_SLOTS` (16,384 of 120 bytes: 1.9 MiB; a power of
/// two): see [`NetEndpointSlot`].
pub const NET_ENDPOINT_SLOTS: u32 = 16384;

/// [`NetEndpointValue::kind`]: a container on this host.
pub const NET_EP_LOCAL: u32 = 1;
/// [`NetEndpointValue::kind`]: a container on another host.
pub const NET_EP_REMOTE: u32 = 2;

/// Map names, as they appear in the object file and under the pin directory.
pub mod maps {
    /// `HashMap<u32, NetValue>`: VNI (host order) -> the network's subnet and gateway.
    pub const NETWORKS: &str = "OVL_NET_NETWORKS";
    /// `LpmTrie<[u8; 4], u32>`: every network's subnet -> its VNI (isolation).
    pub const SUBNETS: &str = "OVL_NET_SUBNETS";
    /// `HashMap<NetKey, NetEndpointValue>`: (VNI, container IP) -> where it is.
    pub const ENDPOINTS: &str = "OVL_NET_ENDPOINTS";
    /// `Array<NetEndpointSlot>` of [`super::NET_ENDPOINT_SLOTS`]: the
    /// endpoints of `OVL_NET_ENDPOINTS` again, at a slot the programs
    /// compute, so that most lookups are an array load, not a hash lookup.
    pub const ENDPOINT_SLOTS: &str = "OVL_NET_EP_SLOTS";
    /// `HashMap<u32, NetPortValue>`: host-side veth ifindex -> the endpoint behind it.
    pub const PORTS: &str = "OVL_NET_PORTS";
    /// `Array<NetPortSlot>` of [`super::NET_PORT_SLOTS`]: the ports of
    /// `OVL_NET_PORTS` again, at a slot the program computes from the
    /// ifindex, so that a network container's packets cost an array load,
    /// not a hash lookup.
    pub const PORT_SLOTS: &str = "OVL_NET_PORT_SLOTS";
}

/// Key of `OVL_NET_ENDPOINTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct NetKey {
    /// The network's VNI, host order.
    pub vni: u32,
    /// The container's address (network order bytes).
    pub ip: [u8; 4],
}

/// An entry of `OVL_NET_EP_SLOTS`: endpoint `key` at slot
/// [`net_endpoint_slot`]`(key.ip)`, with its `OVL_NET_ENDPOINTS` value.
/// Same rules as [`crate::EndpointSlot`]: overlayd writes the hash first,
/// clears the slot first, gives a slot only to an endpoint when it is
/// empty (or already its own), and never changes the key and the value in
/// one write. On an empty slot or another key in it, the
/// programs look in `OVL_NET_ENDPOINTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetEndpointSlot {
    /// The endpoint's (VNI, address); with `value.kind` 0: empty.
    pub key: NetKey,
    /// Its entry, as in `OVL_NET_ENDPOINTS`.
    pub value: NetEndpointValue,
}

/// The `OVL_NET_EP_SLOTS` index of network endpoint address `ip`: its low
/// bits, so the addresses of one network up to a /18 never share a slot
/// (networks with the same low bits do, and the later one is looked up in
/// the hash).
#[inline(always)]
pub const fn net_endpoint_slot(ip: [u8; 4]) -> u32 {
    u32::from_be_bytes(ip) & (NET_ENDPOINT_SLOTS - 1)
}

/// Value of `OVL_NET_NETWORKS`: one network this host carries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetValue {
    /// The network's subnet (network order bytes).
    pub subnet: [u8; 4],
    /// Its netmask (network order bytes).
    pub mask: [u8; 4],
    /// Its gateway address (network order bytes).
    pub gateway: [u8; 4],
}

/// Value of `OVL_NET_ENDPOINTS`: where a network's container is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetEndpointValue {
    /// [`NET_EP_LOCAL`] or [`NET_EP_REMOTE`].
    pub kind: u32,
    /// Local: ifindex of the container's host-side veth. Remote: 0.
    pub ifindex: u32,
    /// The container interface's MAC (what ARP answers, the inner
    /// destination MAC of what is sent to it).
    pub mac: [u8; 6],
    /// Explicit padding to the 8-byte alignment of `remote`.
    pub _pad: [u8; 2],
    /// Remote: the outer headers to its host, built with the network's VNI
    /// and the container's MAC as inner destination
    /// ([`NetEndpointValue::remote`]); the program writes the sender's MAC
    /// as inner source. Local: all zero.
    pub remote: PeerValue,
}

impl NetEndpointValue {
    /// A local endpoint behind the host-side veth `ifindex`.
    pub fn local(ifindex: u32, mac: [u8; 6]) -> Self {
        NetEndpointValue {
            kind: NET_EP_LOCAL,
            ifindex,
            mac,
            _pad: [0; 2],
            remote: PeerValue::default(),
        }
    }

    /// A remote endpoint on network `vni` on the host `host`, reached
    /// through `nexthop_mac` (all zero: the kernel's neighbour subsystem).
    /// `cfg` is this host's settings (underlay address, MAC, VXLAN port).
    pub fn remote(
        cfg: &crate::Config,
        vni: u32,
        host: [u8; 4],
        nexthop_mac: [u8; 6],
        mac: [u8; 6],
    ) -> Self {
        let net_cfg = crate::Config { vni, ..*cfg };
        NetEndpointValue {
            kind: NET_EP_REMOTE,
            ifindex: 0,
            mac,
            _pad: [0; 2],
            remote: PeerValue::new(&net_cfg, host, nexthop_mac, mac),
        }
    }

    /// The same endpoint, counted in its host's `OVL_PEER_STATS` slot
    /// `slot` ([`PeerValue::with_stats_slot`]).
    pub fn with_stats_slot(self, slot: u32) -> Self {
        NetEndpointValue {
            remote: self.remote.with_stats_slot(slot),
            ..self
        }
    }

    /// True for a container on this host.
    #[inline(always)]
    pub fn is_local(&self) -> bool {
        self.kind == NET_EP_LOCAL
    }

    /// True for a container on another host.
    #[inline(always)]
    pub fn is_remote(&self) -> bool {
        self.kind == NET_EP_REMOTE
    }
}

/// Value of `OVL_NET_PORTS`: the network endpoint behind a host-side veth,
/// what its tc program needs without further lookups.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetPortValue {
    /// The network's VNI, host order.
    pub vni: u32,
    /// The container's address: the only source it may send from.
    pub ip: [u8; 4],
    /// The network's gateway (answered by ARP with `veth_mac`).
    pub gateway: [u8; 4],
    /// The container interface's MAC.
    pub mac: [u8; 6],
    /// The host-side veth's MAC (the gateway's MAC for the container).
    pub veth_mac: [u8; 6],
}

/// An entry of `OVL_NET_PORT_SLOTS`: port `ifindex` at slot
/// [`net_port_slot`]`(ifindex)`, with its `OVL_NET_PORTS` value. Same
/// rules as [`NetEndpointSlot`]: overlayd writes the hash first, clears
/// the slot first, gives a slot only to a port when it is empty (or
/// already its own), and never changes the ifindex and the value in one
/// write. On an empty slot (ifindex 0, which no device has) or another
/// ifindex in it, the program looks in `OVL_NET_PORTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetPortSlot {
    /// The host-side veth's ifindex; 0: empty.
    pub ifindex: u32,
    /// Its value in `OVL_NET_PORTS`.
    pub value: NetPortValue,
}

/// The `OVL_NET_PORT_SLOTS` index of port `ifindex`: its low bits (live
/// ports share a slot only when their ifindexes lie a multiple of
/// [`NET_PORT_SLOTS`] apart).
#[inline(always)]
pub const fn net_port_slot(ifindex: u32) -> u32 {
    ifindex & (NET_PORT_SLOTS - 1)
}

/// ARP (RFC 826) over Ethernet for IPv4: the 28 bytes after the Ethernet header.
pub mod arp {
    /// Length of an Ethernet/IPv4 ARP packet.
    pub const LEN: usize = 28;
    /// Operation: request.
    pub const OP_REQUEST: u16 = 1;
    /// Operation: reply.
    pub const OP_REPLY: u16 = 2;
    /// Offset of the sender hardware address.
    pub const SHA: usize = 8;
    /// Offset of the sender protocol address.
    pub const SPA: usize = 14;
    /// Offset of the target hardware address.
    pub const THA: usize = 18;
    /// Offset of the target protocol address.
    pub const TPA: usize = 24;

    /// True when `a` is an Ethernet/IPv4 ARP header (htype 1, ptype
    /// 0x0800, hlen 6, plen 4).
    #[inline(always)]
    pub fn is_ethernet_ipv4(a: &[u8; LEN]) -> bool {
        a[0] == 0 && a[1] == 1 && a[2] == 0x08 && a[3] == 0 && a[4] == 6 && a[5] == 4
    }

    /// The operation.
    #[inline(always)]
    pub fn op(a: &[u8; LEN]) -> u16 {
        u16::from_be_bytes([a[6], a[7]])
    }

    /// Turns the request in `frame` (Ethernet header + ARP) into the reply
    /// "`target` is at `mac`", in place: Ethernet back to the requester
    /// from `mac`, sender and target swapped.
    #[inline(always)]
    pub fn make_reply(frame: &mut [u8; 14 + LEN], mac: [u8; 6]) {
        let mut requester_mac = [0u8; 6];
        requester_mac.copy_from_slice(&frame[14 + SHA..14 + SHA + 6]);
        let mut requester_ip = [0u8; 4];
        requester_ip.copy_from_slice(&frame[14 + SPA..14 + SPA + 4]);
        let mut target_ip = [0u8; 4];
        target_ip.copy_from_slice(&frame[14 + TPA..14 + TPA + 4]);
        frame[0..6].copy_from_slice(&requester_mac);
        frame[6..12].copy_from_slice(&mac);
        frame[14 + 7] = OP_REPLY as u8;
        frame[14 + 6] = 0;
        frame[14 + SHA..14 + SHA + 6].copy_from_slice(&mac);
        frame[14 + SPA..14 + SPA + 4].copy_from_slice(&target_ip);
        frame[14 + THA..14 + THA + 6].copy_from_slice(&requester_mac);
        frame[14 + TPA..14 + TPA + 4].copy_from_slice(&requester_ip);
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are #[repr(C)], Copy, made only of integers and byte
    // arrays (and PeerValue, itself Pod), with no implicit padding (the
    // size tests below pin that).
    unsafe impl aya::Pod for super::NetKey {}
    unsafe impl aya::Pod for super::NetValue {}
    unsafe impl aya::Pod for super::NetEndpointValue {}
    unsafe impl aya::Pod for super::NetEndpointSlot {}
    unsafe impl aya::Pod for super::NetPortValue {}
    unsafe impl aya::Pod for super::NetPortSlot {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn net_map_types_have_pinned_sizes() {
        assert_eq!(size_of::<NetKey>(), 8);
        assert_eq!(size_of::<NetValue>(), 12);
        assert_eq!(size_of::<NetEndpointValue>(), 112);
        assert_eq!(align_of::<NetEndpointValue>(), 8);
        assert_eq!(core::mem::offset_of!(NetEndpointValue, remote), 16);
        assert_eq!(size_of::<NetPortValue>(), 24);
        assert_eq!(size_of::<NetEndpointSlot>(), 120);
        assert_eq!(core::mem::offset_of!(NetEndpointSlot, value), 8);
        assert!(NET_ENDPOINT_SLOTS.is_power_of_two());
        assert_eq!(size_of::<NetPortSlot>(), 28);
        assert_eq!(core::mem::offset_of!(NetPortSlot, value), 4);
        assert!(NET_PORT_SLOTS.is_power_of_two());
    }

    #[test]
    fn net_port_slot_is_the_low_bits() {
        assert_eq!(net_port_slot(31), 31);
        assert_eq!(net_port_slot(NET_PORT_SLOTS + 31), 31);
        assert_eq!(net_port_slot(NET_PORT_SLOTS - 1), NET_PORT_SLOTS - 1);
        assert_eq!(net_port_slot(!31), NET_PORT_SLOTS - 1 - 31);
    }

    #[test]
    fn net_endpoint_slot_is_the_low_bits() {
        assert_eq!(net_endpoint_slot([10, 110, 240, 3]), (240 % 64) * 256 + 3);
        assert_eq!(net_endpoint_slot([10, 110, 241, 3]), (241 % 64) * 256 + 3);
        assert_eq!(
            net_endpoint_slot([10, 111, 255, 255]),
            NET_ENDPOINT_SLOTS - 1
        );
        assert_eq!(net_endpoint_slot([10, 111, 192, 0]), 0);
    }

    #[test]
    fn remote_endpoint_template_carries_the_network_vni_and_container_mac() {
        let cfg = crate::Config {
            local_ip: [192, 168, 56, 4],
            vni: 42,
            vxlan_port_be: 4789u16.to_be(),
            underlay_mac: [2, 0, 0, 0, 0, 4],
            vtep_mac: [2, 42, 192, 168, 56, 4],
            ..Default::default()
        };
        let mac = [2, 0x42, 10, 103, 240, 3];
        let v = NetEndpointValue::remote(&cfg, 0x1001, [192, 168, 56, 5], [2, 0, 0, 0, 0, 5], mac);
        assert!(v.is_remote() && !v.is_local());
        let h = crate::vxlan::finish_template(&v.remote.template, 84, 50000, 0);
        assert_eq!(
            &h[30..34],
            &[192, 168, 56, 5],
            "outer destination: the host"
        );
        assert_eq!(&h[46..49], &[0, 0x10, 0x01], "VNI 0x1001");
        assert_eq!(&h[50..56], &mac, "inner destination: the container");
    }

    #[test]
    fn arp_reply_in_place() {
        let req_mac = [2, 0, 0, 0, 0, 2];
        let mut f = [0u8; 42];
        f[0..6].fill(0xff);
        f[6..12].copy_from_slice(&req_mac);
        f[12..14].copy_from_slice(&[8, 6]);
        f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f[22..28].copy_from_slice(&req_mac);
        f[28..32].copy_from_slice(&[10, 0, 0, 2]);
        f[38..42].copy_from_slice(&[10, 0, 0, 3]);
        let mut a = [0u8; arp::LEN];
        a.copy_from_slice(&f[14..]);
        assert!(arp::is_ethernet_ipv4(&a));
        assert_eq!(arp::op(&a), arp::OP_REQUEST);
        let answer = [2, 0, 0, 0, 0, 3];
        arp::make_reply(&mut f, answer);
        assert_eq!(&f[0..6], &req_mac);
        assert_eq!(&f[6..12], &answer);
        assert_eq!(&f[20..22], &[0, 2]);
        assert_eq!(&f[22..28], &answer);
        assert_eq!(&f[28..32], &[10, 0, 0, 3]);
        assert_eq!(&f[32..38], &req_mac);
        assert_eq!(&f[38..42], &[10, 0, 0, 2]);
    }
}
