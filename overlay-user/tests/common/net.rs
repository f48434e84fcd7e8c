//! The overlay networks' fixture of the BPF program tests: the fixture
//! host carrying networks web and db with local and remote endpoints, and
//! the frames their tests send.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use overlay_common::{net::NetEndpointValue, net::NetPortValue, programs};
use overlay_user::dataplane::bpf::net_maps::NetMaps;

use super::fixture::*;
use super::packets::*;

pub const WEB: u32 = 4096;
pub const DB: u32 = 4097;
pub const WEB_GW: [u8; 4] = [10, 103, 240, 1];
pub const A: [u8; 4] = [10, 103, 240, 2];
pub const B: [u8; 4] = [10, 103, 240, 3];
pub const R: [u8; 4] = [10, 103, 240, 4];
/// A web endpoint on STRANGER's host.
pub const S: [u8; 4] = [10, 103, 240, 5];
pub const NOBODY: [u8; 4] = [10, 103, 240, 9];
pub const D: [u8; 4] = [10, 103, 241, 2];
pub const DR: [u8; 4] = [10, 103, 241, 4];
pub const OUTSIDE: [u8; 4] = [198, 51, 100, 7];
pub const MA: [u8; 6] = [0x02, 0x42, 10, 103, 240, 2];
pub const MB: [u8; 6] = [0x02, 0x42, 10, 103, 240, 3];
pub const MR: [u8; 6] = [0x02, 0x42, 10, 103, 240, 4];
pub const MS: [u8; 6] = [0x02, 0x42, 10, 103, 240, 5];
pub const MD: [u8; 6] = [0x02, 0x42, 10, 103, 241, 2];
pub const MDR: [u8; 6] = [0x02, 0x42, 10, 103, 241, 4];
pub const VETH_A: [u8; 6] = [0x0e, 0, 0, 0, 0, 31];
pub const PORT_A: u32 = 31;
pub const PORT_B: u32 = 32;
pub const PORT_D: u32 = 41;

pub struct Net {
    pub f: Fixture,
    pub net: NetMaps,
}

/// The fixture host (per-host VNI 42) carrying networks web (VNI 4096,
/// 10.103.240.0/24) and db (4097, 10.103.241.0/24): local web A and B,
/// remote web R on PEER and S on STRANGER, local db D, remote db DR on PEER.
pub fn net_fixture() -> Option<Net> {
    net_fixture_with(0)
}

/// [`net_fixture`] with `flags` in the host's settings.
pub fn net_fixture_with(flags: u32) -> Option<Net> {
    let mut f = fixture(flags)?;
    let mut net = NetMaps::take(&mut f.ebpf).expect("network maps");
    let cfg = host_config(0);
    let ip = Ipv4Addr::from;
    net.add_network(WEB, "10.103.240.0/24".parse().unwrap(), ip(WEB_GW))
        .unwrap();
    net.add_network(
        DB,
        "10.103.241.0/24".parse().unwrap(),
        ip([10, 103, 241, 1]),
    )
    .unwrap();
    let port = |vni, addr, gateway, mac, veth_mac| NetPortValue {
        vni,
        ip: addr,
        gateway,
        mac,
        veth_mac,
    };
    net.put_port(PORT_A, &port(WEB, A, WEB_GW, MA, VETH_A))
        .unwrap();
    net.put_port(PORT_B, &port(WEB, B, WEB_GW, MB, [0x0e, 0, 0, 0, 0, 32]))
        .unwrap();
    net.put_port(
        PORT_D,
        &port(DB, D, [10, 103, 241, 1], MD, [0x0e, 0, 0, 0, 0, 41]),
    )
    .unwrap();
    for (vni, addr, v) in [
        (WEB, A, NetEndpointValue::local(PORT_A, MA)),
        (WEB, B, NetEndpointValue::local(PORT_B, MB)),
        (
            WEB,
            R,
            NetEndpointValue::remote(&cfg, WEB, PEER, PEER_MAC, MR).with_stats_slot(PEER_SLOT),
        ),
        (
            WEB,
            S,
            NetEndpointValue::remote(&cfg, WEB, STRANGER, PEER_MAC, MS),
        ),
        (DB, D, NetEndpointValue::local(PORT_D, MD)),
        (
            DB,
            DR,
            NetEndpointValue::remote(&cfg, DB, PEER, PEER_MAC, MDR).with_stats_slot(PEER_SLOT),
        ),
    ] {
        net.put_endpoint(vni, ip(addr), &v).unwrap();
    }
    Some(Net { f, net })
}

impl Net {
    /// Runs the from-net-container program as from port `ifindex`.
    pub fn run_port(&mut self, ifindex: u32, input: &[u8]) -> (u32, Vec<u8>) {
        self.f.run_tc_ctx(
            programs::FROM_NET_CONTAINER,
            input,
            Some(&skb_ctx(ifindex, 0)),
        )
    }

    pub fn drops(&self, name: &str) -> u64 {
        self.f.drops(name)
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.f.counter(name)
    }

    pub fn total_drops(&self) -> u64 {
        self.f.maps.stats().unwrap().drops.values().sum()
    }
}

pub fn net_inner(src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    eth(
        [0x02, 0, 0, 0, 0, 0x77],
        src_mac,
        0x0800,
        &ipv4(src, dst, 6, &tcp_segment()),
    )
}
