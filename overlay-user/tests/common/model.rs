//! A host-side reference model of the dataplane's rules, written from the
//! rules in docs/security.md rather than from the programs, over plain byte
//! slices: what each program must answer for a packet, given the maps.
//! The fuzz test runs both and compares.
#![allow(dead_code, clippy::wrong_self_convention)]

use std::collections::HashMap;

use overlay_common::{Config, CONFIG_F_LEARN_ENDPOINTS, CONFIG_F_PER_PORT};

/// What a program must do with a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The kernel's test runner refuses the skb (EINVAL) before any program.
    Refused,
    /// tc: on to the next program, untouched.
    Next,
    /// tc: decapsulated and handed to the kernel.
    Kernel,
    /// tc: redirected (encapsulated to a peer, or delivered into a container).
    Redirect,
    /// tc or XDP: dropped, counted under this reason.
    Drop(&'static str),
    /// XDP: passed on, untouched.
    XdpPass,
}

/// The maps as the model sees them.
#[derive(Clone, Debug)]
pub struct Model {
    pub cfg: Config,
    /// (network, prefix length, underlay IP)
    pub peers: Vec<([u8; 4], u8, [u8; 4])>,
    pub peer_hosts: Vec<[u8; 4]>,
    /// ip -> (ifindex, mac)
    pub endpoints: HashMap<[u8; 4], (u32, [u8; 6])>,
    /// port -> endpoints learned on it
    pub learned: HashMap<u32, u64>,
}

fn be(ip: [u8; 4]) -> u32 {
    u32::from_be_bytes(ip)
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

// The methods are named after the programs they model (`ovl_from_underlay`, ...).
#[allow(clippy::wrong_self_convention)]
impl Model {
    /// The peer (longest prefix) whose subnet holds `ip`: its underlay IP.
    pub fn peer_of(&self, ip: [u8; 4]) -> Option<[u8; 4]> {
        self.peers
            .iter()
            .filter(|(net, len, _)| be(ip) & mask(*len) == be(*net))
            .max_by_key(|(_, len, _)| *len)
            .map(|(_, _, u)| *u)
    }

    fn in_subnet(&self, ip: [u8; 4]) -> bool {
        let m = be(self.cfg.subnet_mask);
        m != 0 && be(ip) & m == be(self.cfg.subnet)
    }

    fn is_host_address(&self, ip: [u8; 4]) -> bool {
        let m = be(self.cfg.subnet_mask);
        let net = be(self.cfg.subnet);
        ip == self.cfg.gateway_ip
            || (m != 0 && m < 0xffff_fffe && (be(ip) == net || be(ip) == net | !m))
    }

    /// What the kernel's test runner does with an skb of these bytes.
    pub fn refused_as_skb(pkt: &[u8]) -> bool {
        if pkt.len() < 14 {
            return true;
        }
        match u16::from_be_bytes([pkt[12], pkt[13]]) {
            0x0800 => pkt.len() < 14 + 20,
            0x86dd => pkt.len() < 14 + 40,
            _ => false,
        }
    }

    /// The checks of a frame arriving on the underlay, shared by tc and XDP.
    /// `Ok(None)`: not VXLAN for us; `Ok(Some(inner_dst))`: accepted.
    fn underlay(&self, p: &[u8]) -> Result<Option<[u8; 4]>, &'static str> {
        if p.len() < 34 || p[12..14] != [0x08, 0x00] {
            return Ok(None);
        }
        let ip = &p[14..34];
        if ip[9] != 17 || ip[16..20] != self.cfg.local_ip {
            return Ok(None);
        }
        // UDP is read where it sits without IPv4 options; a frame with
        // options that looks like ours there is refused below.
        if p.len() < 42 {
            return Err("truncated_udp");
        }
        if u16::from_be_bytes([p[36], p[37]]) != u16::from_be(self.cfg.vxlan_port_be) {
            return Ok(None);
        }
        let frag = u16::from_be_bytes([ip[6], ip[7]]);
        if ip[0] != 0x45 || frag & 0x2000 != 0 || frag & 0x1fff != 0 {
            return Err("bad_outer_ip");
        }
        if p.len() < 50 {
            return Err("truncated_vxlan");
        }
        if p[42] & 0x08 == 0 {
            return Err("bad_vxlan_flags");
        }
        if u32::from_be_bytes([0, p[46], p[47], p[48]]) != self.cfg.vni {
            return Err("unknown_vni");
        }
        let outer_src = [ip[12], ip[13], ip[14], ip[15]];
        if !self.peer_hosts.contains(&outer_src) {
            return Err("unknown_peer");
        }
        if p.len() < 50 + 34 {
            return Err("truncated_inner");
        }
        let inner = &p[50..84];
        if inner[12..14] != [0x08, 0x00] {
            return Err("inner_not_ipv4");
        }
        let src = [inner[26], inner[27], inner[28], inner[29]];
        if self.peer_of(src) != Some(outer_src) {
            return Err("inner_source_spoofed");
        }
        let dst = [inner[30], inner[31], inner[32], inner[33]];
        if self.is_host_address(dst) {
            return Err("to_host_address");
        }
        Ok(Some(dst))
    }

    /// `ovl_xdp_underlay`.
    pub fn xdp(&self, p: &[u8]) -> Expect {
        if p.len() < 14 {
            return Expect::Refused;
        }
        match self.underlay(p) {
            Ok(_) => Expect::XdpPass,
            Err(r) => Expect::Drop(r),
        }
    }

    /// `ovl_from_underlay`.
    pub fn from_underlay(&self, p: &[u8]) -> Expect {
        if Self::refused_as_skb(p) {
            return Expect::Refused;
        }
        match self.underlay(p) {
            Err(r) => Expect::Drop(r),
            Ok(None) => Expect::Next,
            Ok(Some(dst)) => {
                if self.endpoints.contains_key(&dst) {
                    Expect::Redirect
                } else if self.in_subnet(dst) {
                    Expect::Kernel
                } else {
                    Expect::Drop("not_local")
                }
            }
        }
    }

    /// `ovl_from_container` for a packet that came in on `port`; learning
    /// changes the model as it changes the maps.
    pub fn from_container(&mut self, p: &[u8], port: u32) -> Expect {
        if Self::refused_as_skb(p) {
            return Expect::Refused;
        }
        if p.len() < 34 || p[12..14] != [0x08, 0x00] {
            return Expect::Next;
        }
        let ihl = usize::from(p[14] & 0x0f) * 4;
        let later_fragment = u16::from_be_bytes([p[20], p[21]]) & 0x1fff != 0;
        if p[23] == 17 && !later_fragment && ihl >= 20 && p.len() >= 14 + ihl + 4 {
            let dport = u16::from_be_bytes([p[14 + ihl + 2], p[14 + ihl + 3]]);
            if dport == u16::from_be(self.cfg.vxlan_port_be) {
                return Expect::Drop("container_vxlan");
            }
        }
        let dst = [p[30], p[31], p[32], p[33]];
        if self.peer_of(dst).is_none() {
            return Expect::Next;
        }
        let src = [p[26], p[27], p[28], p[29]];
        if !self.in_subnet(src) {
            return Expect::Drop("source_not_local");
        }
        if self.is_host_address(src) {
            return Expect::Drop("source_spoofed");
        }
        let mac: [u8; 6] = p[6..12].try_into().unwrap();
        let known = self.endpoints.get(&src).copied();
        if self.cfg.flags & CONFIG_F_PER_PORT == 0 {
            return match known {
                Some((_, m)) if m != [0; 6] && m != mac => Expect::Drop("source_spoofed"),
                _ => Expect::Redirect,
            };
        }
        match known {
            Some((ifindex, _)) if ifindex == port => Expect::Redirect,
            Some(_) => Expect::Drop("source_spoofed"),
            None if self.cfg.flags & CONFIG_F_LEARN_ENDPOINTS == 0 => {
                Expect::Drop("source_spoofed")
            }
            None => {
                let n = self.learned.entry(port).or_insert(0);
                if *n >= u64::from(self.cfg.learn_limit) {
                    return Expect::Drop("learn_limit");
                }
                *n += 1;
                self.endpoints.insert(src, (port, mac));
                Expect::Redirect
            }
        }
    }
}
