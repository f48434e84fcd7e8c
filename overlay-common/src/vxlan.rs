//! VXLAN (RFC 7348) header construction and checks, shared by the eBPF
//! programs and the host tests.

use crate::{
    csum, Config, EncapTemplate, PeerValue, ENCAP_HLEN, ETH_HLEN, IPV4_HLEN, SRC_PORT_MAX,
    SRC_PORT_MIN,
};

/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// The VXLAN "I" flag: the VNI is valid.
pub const VXLAN_FLAG_I: u8 = 0x08;
/// Outer TTL, as the kernel's VXLAN device uses by default for unicast.
pub const OUTER_TTL: u8 = 64;

/// Outer UDP source port for a flow hash, mapped into 49152..=65535 the way
/// the kernel's `udp_flow_src_port` maps it into the local port range.
#[inline(always)]
pub fn flow_src_port(hash: u32) -> u16 {
    let span = u64::from(SRC_PORT_MAX - SRC_PORT_MIN) + 1;
    (((u64::from(hash) * span) >> 32) as u16).wrapping_add(SRC_PORT_MIN)
}

/// A cheap flow hash of an inner IPv4 packet (addresses, protocol and the
/// first four bytes of the transport header, i.e. the ports of TCP/UDP), used
/// when the skb carries no hash from its socket. Well mixed (murmur3
/// finaliser), so outer source ports spread over the range.
#[inline(always)]
pub fn flow_hash(src: [u8; 4], dst: [u8; 4], proto: u8, l4: [u8; 4]) -> u32 {
    let mut h = u32::from_ne_bytes(src)
        ^ u32::from_ne_bytes(dst).rotate_left(16)
        ^ u32::from_ne_bytes(l4).wrapping_mul(0x9e37_79b1)
        ^ u32::from(proto);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// VNI of a VXLAN header, or `None` when the I flag is not set.
#[inline(always)]
pub fn vni(header: &[u8; 8]) -> Option<u32> {
    if header[0] & VXLAN_FLAG_I == 0 {
        return None;
    }
    Some(u32::from_be_bytes([0, header[4], header[5], header[6]]))
}

/// Builds the 64 bytes that go in front of an inner IPv4 packet: outer
/// Ethernet, outer IPv4 (DF, no options, checksum filled), outer UDP
/// (checksum 0, allowed for IPv4 by RFC 7348), VXLAN, inner Ethernet.
///
/// `inner_ip_len` is the inner IPv4 packet's length (what follows the 64
/// bytes); `tos` is copied from the inner header, as the kernel does with
/// `tos inherit`.
#[inline(always)]
pub fn encap_header(
    cfg: &Config,
    peer: &PeerValue,
    inner_ip_len: u32,
    src_port: u16,
    tos: u8,
) -> [u8; ENCAP_HLEN] {
    let mut h = [0u8; ENCAP_HLEN];
    // Outer Ethernet.
    h[0..6].copy_from_slice(&peer.nexthop_mac);
    h[6..12].copy_from_slice(&cfg.underlay_mac);
    h[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
    // Outer IPv4.
    let udp_len = inner_ip_len + (ETH_HLEN + 8 + 8) as u32;
    let ip_len = udp_len + IPV4_HLEN as u32;
    let ip = 14;
    h[ip] = 0x45;
    h[ip + 1] = tos;
    h[ip + 2..ip + 4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    // Identification 0 with DF set (RFC 6864 allows it for atomic datagrams).
    h[ip + 6] = 0x40;
    h[ip + 8] = OUTER_TTL;
    h[ip + 9] = IPPROTO_UDP;
    h[ip + 12..ip + 16].copy_from_slice(&cfg.local_ip);
    h[ip + 16..ip + 20].copy_from_slice(&peer.underlay_ip);
    let mut iph = [0u8; 20];
    iph.copy_from_slice(&h[ip..ip + 20]);
    h[ip + 10..ip + 12].copy_from_slice(&csum::ipv4_header(&iph).to_be_bytes());
    // Outer UDP.
    let udp = ip + 20;
    h[udp..udp + 2].copy_from_slice(&src_port.to_be_bytes());
    h[udp + 2..udp + 4].copy_from_slice(&cfg.vxlan_port_be.to_ne_bytes());
    h[udp + 4..udp + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    // VXLAN: flags, reserved, VNI in the top 24 bits of the second word.
    let vx = udp + 8;
    h[vx] = VXLAN_FLAG_I;
    let vni = cfg.vni.to_be_bytes();
    h[vx + 4] = vni[1];
    h[vx + 5] = vni[2];
    h[vx + 6] = vni[3];
    // Inner Ethernet: to the remote VTEP, from ours.
    let ie = vx + 8;
    h[ie..ie + 6].copy_from_slice(&peer.vtep_mac);
    h[ie + 6..ie + 12].copy_from_slice(&cfg.vtep_mac);
    h[ie + 12..ie + 14].copy_from_slice(&ETH_P_IP.to_be_bytes());
    h
}

/// Offsets of the fields the program patches in a copied template.
pub mod off {
    /// Outer IPv4 TOS (1 byte).
    pub const IP_TOS: usize = 15;
    /// Outer IPv4 total length (2 bytes, big endian).
    pub const IP_LEN: usize = 16;
    /// Outer IPv4 header checksum (2 bytes).
    pub const IP_CSUM: usize = 24;
    /// Outer UDP source port (2 bytes, big endian).
    pub const UDP_SPORT: usize = 34;
    /// Outer UDP length (2 bytes, big endian).
    pub const UDP_LEN: usize = 38;
}

/// The template of `peer` for this host: [`encap_header`] with the length,
/// TOS, source port and checksum fields zero, plus the checksum base.
pub fn encap_template(cfg: &Config, peer: &PeerValue) -> EncapTemplate {
    let mut h = encap_header(cfg, peer, 0, 0, 0);
    for (o, n) in [
        (off::IP_LEN, 2),
        (off::IP_CSUM, 2),
        (off::UDP_LEN, 2),
        (off::IP_TOS, 1),
    ] {
        h[o..o + n].fill(0);
    }
    let csum_base = csum::sum16(&h[ETH_HLEN..ETH_HLEN + IPV4_HLEN], 0);
    let mut words = [0u64; 8];
    for (i, w) in words.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[i * 8..i * 8 + 8]);
        *w = u64::from_ne_bytes(b);
    }
    EncapTemplate {
        words,
        csum_base,
        _pad: 0,
    }
}

/// The values the program writes into a copied template, in network byte
/// order, for an inner IPv4 packet of `inner_ip_len` bytes:
/// (IP total length, IP checksum, UDP length), all big-endian u16 values
/// as stored (`to_be`).
#[inline(always)]
pub fn template_fields(t: &EncapTemplate, inner_ip_len: u32, tos: u8) -> (u16, u16, u16) {
    let udp_len = inner_ip_len + (ETH_HLEN + 8 + 8) as u32;
    let ip_len = (udp_len + IPV4_HLEN as u32) as u16;
    let sum = t.csum_base + u32::from(ip_len) + u32::from(tos);
    (
        ip_len.to_be(),
        csum::fold(sum).to_be(),
        (udp_len as u16).to_be(),
    )
}

/// Applies [`template_fields`] and the source port to a byte copy of the
/// template (what the program does in the packet), for host tests.
pub fn finish_template(
    t: &EncapTemplate,
    inner_ip_len: u32,
    src_port: u16,
    tos: u8,
) -> [u8; ENCAP_HLEN] {
    let mut h = [0u8; ENCAP_HLEN];
    for (i, w) in t.words.iter().enumerate() {
        h[i * 8..i * 8 + 8].copy_from_slice(&w.to_ne_bytes());
    }
    let (ip_len, ip_csum, udp_len) = template_fields(t, inner_ip_len, tos);
    h[off::IP_TOS] = tos;
    h[off::IP_LEN..off::IP_LEN + 2].copy_from_slice(&ip_len.to_ne_bytes());
    h[off::IP_CSUM..off::IP_CSUM + 2].copy_from_slice(&ip_csum.to_ne_bytes());
    h[off::UDP_SPORT..off::UDP_SPORT + 2].copy_from_slice(&src_port.to_be_bytes());
    h[off::UDP_LEN..off::UDP_LEN + 2].copy_from_slice(&udp_len.to_ne_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            local_ip: [192, 168, 56, 4],
            vni: 42,
            underlay_ifindex: 2,
            vxlan_port_be: 4789u16.to_be(),
            underlay_mac: [2, 0, 0, 0, 0, 4],
            vtep_mac: crate::vtep_mac([192, 168, 56, 4], 42),
            gateway_mac: [2, 0, 0, 0, 1, 1],
            subnet: [10, 103, 100, 0],
            subnet_mask: [255, 255, 255, 0],
            flags: 0,
            encap_ifindex: 0,
            gateway_ip: [10, 103, 100, 1],
            learn_limit: crate::DEFAULT_LEARN_LIMIT,
        }
    }

    #[test]
    fn header_fields() {
        let peer = PeerValue::new(
            &cfg(),
            [192, 168, 56, 5],
            [2, 0, 0, 0, 0, 5],
            crate::vtep_mac([192, 168, 56, 5], 42),
        );
        let h = encap_header(&cfg(), &peer, 84, 50000, 0x10);
        assert_eq!(&h[0..6], &[2, 0, 0, 0, 0, 5]);
        assert_eq!(&h[12..14], &[8, 0]);
        let ip = &h[14..34];
        assert_eq!(ip[0], 0x45);
        assert_eq!(ip[1], 0x10);
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 84 + 50);
        assert_eq!(ip[9], 17);
        assert!(csum::verifies(ip));
        assert_eq!(&ip[12..16], &[192, 168, 56, 4]);
        assert_eq!(&ip[16..20], &[192, 168, 56, 5]);
        assert_eq!(u16::from_be_bytes([h[34], h[35]]), 50000);
        assert_eq!(u16::from_be_bytes([h[36], h[37]]), 4789);
        assert_eq!(u16::from_be_bytes([h[38], h[39]]), 84 + 30);
        assert_eq!(&h[40..42], &[0, 0], "UDP checksum 0");
        let mut vx = [0u8; 8];
        vx.copy_from_slice(&h[42..50]);
        assert_eq!(vni(&vx), Some(42));
        assert_eq!(&h[50..56], &peer.vtep_mac);
        assert_eq!(&h[56..62], &cfg().vtep_mac);
    }

    #[test]
    fn template_plus_patch_equals_full_header() {
        let cfg = cfg();
        let peer = PeerValue::new(
            &cfg,
            [192, 168, 56, 5],
            [2, 0, 0, 0, 0, 5],
            crate::vtep_mac([192, 168, 56, 5], 42),
        );
        for (len, port, tos) in [
            (20, 49152, 0),
            (84, 50000, 0x10),
            (1450, 65535, 0xff),
            (65000, 51234, 3),
        ] {
            assert_eq!(
                finish_template(&peer.template, len, port, tos),
                encap_header(&cfg, &peer, len, port, tos),
                "len {len} port {port} tos {tos}"
            );
        }
    }

    #[test]
    fn src_port_range() {
        assert_eq!(flow_src_port(0), SRC_PORT_MIN);
        assert_eq!(flow_src_port(u32::MAX), SRC_PORT_MAX);
        assert!(flow_src_port(0x8000_0000) > 56000);
    }

    #[test]
    fn flow_hash_spreads_flows() {
        let a = flow_hash([10, 0, 0, 1], [10, 0, 0, 2], 6, [0x9c, 0x40, 0x14, 0x51]);
        let b = flow_hash([10, 0, 0, 1], [10, 0, 0, 2], 6, [0x9c, 0x41, 0x14, 0x51]);
        assert_eq!(
            a,
            flow_hash([10, 0, 0, 1], [10, 0, 0, 2], 6, [0x9c, 0x40, 0x14, 0x51])
        );
        assert_ne!(flow_port_bucket(a), flow_port_bucket(b));
        // 1000 flows over 16 buckets of the port range: none empty.
        let mut buckets = [0u32; 16];
        for p in 0..1000u16 {
            let h = flow_hash(
                [10, 0, 0, 1],
                [10, 0, 0, 2],
                6,
                [(p >> 8) as u8, p as u8, 0, 80],
            );
            buckets[flow_port_bucket(h)] += 1;
        }
        assert!(buckets.iter().all(|&n| n > 20), "{buckets:?}");
    }

    fn flow_port_bucket(h: u32) -> usize {
        usize::from((flow_src_port(h) - SRC_PORT_MIN) / 1024)
    }

    #[test]
    fn vni_needs_i_flag() {
        assert_eq!(vni(&[0, 0, 0, 0, 0, 0, 42, 0]), None);
        assert_eq!(vni(&[8, 0, 0, 0, 0xab, 0xcd, 0xef, 0]), Some(0xabcdef));
    }
}
