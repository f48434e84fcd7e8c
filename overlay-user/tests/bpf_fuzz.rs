//! Fuzzing every program with BPF_PROG_TEST_RUN against the host-side
//! reference model (`common/model.rs`): valid VXLAN with one field changed,
//! truncations at every offset, real IPv4 options, fragments, VLAN tags,
//! IPv6, random bytes; container packets with every kind of source. Each
//! verdict and drop reason must equal the model's: 0 mismatches.
//!
//! Seeded and reproducible: `OVERLAY_FUZZ_SEED` (default 1) and
//! `OVERLAY_FUZZ_PACKETS` per side (default 4,000 here; `cargo xtask fuzz`
//! runs 100,000). A mismatch prints the seed, the case number and the bytes.

use std::collections::HashMap;

use overlay_common::{
    programs, CONFIG_F_LEARN_ENDPOINTS, CONFIG_F_PER_PORT, CONFIG_F_XDP_VALIDATES,
};
use overlay_user::dataplane::bpf::maps::Maps;

#[path = "common/packets.rs"]
mod packets;
use packets::*;
#[path = "common/fixture.rs"]
mod fixture;
use fixture::*;
#[path = "common/model.rs"]
mod model;
use model::{Expect, Model};

const PEER2: [u8; 4] = [192, 168, 56, 6];
const REMOTE2: [u8; 4] = [10, 103, 150, 7];

/// splitmix64: small, seeded, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn ip(&mut self) -> [u8; 4] {
        (self.next() as u32).to_be_bytes()
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The fixture host plus a second peer, in the maps and in the model.
fn setup(flags: u32) -> Option<(Fixture, Model)> {
    let mut f = fixture(flags)?;
    f.maps
        .add_peer(
            "10.103.150.0/24".parse().unwrap(),
            &overlay_common::PeerValue::new(
                &host_config(flags),
                PEER2,
                PEER_MAC,
                overlay_common::vtep_mac(PEER2, VNI),
            ),
        )
        .unwrap();
    f.maps
        .set_peer_host(std::net::Ipv4Addr::from(PEER2), 1)
        .unwrap();
    let m = Model {
        cfg: host_config(flags),
        peers: vec![
            ([10, 103, 200, 0], 24, PEER),
            ([10, 103, 150, 0], 24, PEER2),
        ],
        peer_hosts: vec![PEER, PEER2],
        endpoints: HashMap::from([(C1, (77, C1_MAC))]),
        learned: HashMap::new(),
    };
    Some((f, m))
}

/// Inserts `n` bytes of IPv4 options (NOPs) into the IPv4 header at `at`.
fn with_options(p: &[u8], at: usize, words: usize) -> Vec<u8> {
    if p.len() < at + 20 {
        return p.to_vec();
    }
    let mut v = p[..at + 20].to_vec();
    v[at] = 0x40 | (5 + words as u8);
    v.extend(std::iter::repeat_n(1u8, words * 4));
    v.extend_from_slice(&p[at + 20..]);
    let len = (u16::from_be_bytes([v[at + 2], v[at + 3]]) as usize + words * 4) as u16;
    v[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
    v
}

/// Inserts an 802.1Q tag after the MAC addresses.
fn with_vlan(p: &[u8], tci: u16) -> Vec<u8> {
    if p.len() < 12 {
        return p.to_vec();
    }
    let mut v = p[..12].to_vec();
    v.extend_from_slice(&[0x81, 0x00]);
    v.extend_from_slice(&tci.to_be_bytes());
    v.extend_from_slice(&p[12..]);
    v
}

/// One mutation of a valid frame: a header field changed, a cut, options,
/// fragment bits, a VLAN tag, IPv6, or random bytes.
fn mutate(r: &mut Rng, mut p: Vec<u8>, inner_at: Option<usize>) -> Vec<u8> {
    match r.below(9) {
        0 => {
            let at = r.below(p.len().min(100));
            p[at] = r.next() as u8;
        }
        1 => {
            let n = r.below(p.len() + 1);
            p.truncate(n);
        }
        2 => p = with_options(&p, 14, 1 + r.below(10)),
        3 => {
            if let Some(i) = inner_at {
                p = with_options(&p, i + 14, 1 + r.below(10));
            }
        }
        4 => {
            let flags = r.pick(&[0x2000u16, 0x0001, 0x2010, 0x4000]);
            let at = r.pick(&[14usize, inner_at.map_or(14, |i| i + 14)]);
            if p.len() >= at + 8 {
                p[at + 6..at + 8].copy_from_slice(&flags.to_be_bytes());
            }
        }
        5 => p = with_vlan(&p, r.next() as u16 & 0x0fff),
        6 => {
            let at = r.pick(&[12usize, inner_at.map_or(12, |i| i + 12)]);
            if p.len() >= at + 2 {
                p[at..at + 2].copy_from_slice(&[0x86, 0xdd]);
            }
        }
        7 => {
            let n = r.below(120);
            p = r.bytes(n);
        }
        _ => {
            let at = r.below(p.len().min(100));
            let n = 1 + r.below(4);
            for b in p.iter_mut().skip(at).take(n) {
                *b = r.pick(&[0, 0xff, 0x45, 0x08, 0x11]);
            }
        }
    }
    p
}

fn underlay_case(r: &mut Rng) -> Vec<u8> {
    let (x1, x2, x3) = (r.ip(), r.ip(), r.ip());
    let (x4, x5) = (r.next() as u32 & 0xff_ffff, r.next() as u8);
    let outer = r.pick(&[PEER, PEER, PEER2, STRANGER, LOCAL, x1]);
    let isrc = r.pick(&[REMOTE, REMOTE2, C1, GW, [8, 8, 8, 8], x2]);
    let idst = r.pick(&[
        C1,
        C1,
        C_UNKNOWN,
        GW,
        [10, 103, 100, 0],
        [10, 103, 100, 255],
        REMOTE,
        x3,
    ]);
    let mut vni = r.pick(&[VNI, VNI, VNI, 43, x4]);
    let mut flags = r.pick(&[0x08u8, 0x08, 0x08, 0, 0x88, x5]);
    let (mut outer, mut isrc) = (outer, isrc);
    if r.below(5) < 2 {
        // A genuine frame of one of the peers (mutated or not below).
        (outer, isrc) = r.pick(&[(PEER, REMOTE), (PEER2, REMOTE2)]);
        (vni, flags) = (VNI, 0x08);
    }
    let l4 = match r.below(3) {
        0 => ipv4(isrc, idst, 6, &tcp_segment()),
        1 => ipv4(isrc, idst, 17, &udp_datagram(1000, 2000, b"fuzz")),
        _ => ipv4(isrc, idst, 1, &icmp_echo()),
    };
    let inner = eth(
        overlay_common::vtep_mac(LOCAL, VNI),
        overlay_common::vtep_mac(PEER, VNI),
        0x0800,
        &l4,
    );
    let p = vxlan_frame(outer, vni, flags, &inner);
    if r.below(3) == 0 {
        p
    } else {
        mutate(r, p, Some(50))
    }
}

fn container_case(r: &mut Rng) -> (Vec<u8>, u32) {
    let (x1, x2, x3) = (r.ip(), r.ip(), 100 + r.below(20) as u8);
    let (x4, x5) = (r.next() as u16, 10 + r.below(6) as u32);
    let src = r.pick(&[
        C1,
        C1,
        C_UNKNOWN,
        GW,
        [10, 103, 100, 0],
        [10, 103, 100, 255],
        [10, 103, 100, x3],
        [10, 9, 9, 9],
        x1,
    ]);
    let dst = r.pick(&[REMOTE, REMOTE, REMOTE2, [10, 103, 100, 3], PEER, x2]);
    let mac = r.pick(&[C1_MAC, C1_MAC, [2, 0x42, 1, 2, 3, 4]]);
    let dport = r.pick(&[PORT, PORT, 53, 8472, x4]);
    let l4 = match r.below(3) {
        0 => ipv4(src, dst, 6, &tcp_segment()),
        1 => ipv4(src, dst, 17, &udp_datagram(40000, dport, b"fuzz")),
        _ => ipv4(src, dst, 1, &icmp_echo()),
    };
    let p = eth(GW_MAC, mac, 0x0800, &l4);
    let port = r.pick(&[77u32, 77, 5, 9, x5]);
    let p = if r.below(3) == 0 {
        p
    } else {
        mutate(r, p, None)
    };
    (p, port)
}

/// The reason counted by the last run: the one drop counter that moved.
fn moved(maps: &Maps, before: &std::collections::BTreeMap<String, u64>) -> Vec<String> {
    let now = maps.stats().unwrap().drops;
    now.iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect()
}

fn observed_tc(f: &mut Fixture, prog: &'static str, p: &[u8], port: u32) -> Expect {
    let before = f.maps.stats().unwrap().drops;
    let ret = match f.try_run_tc_from(prog, p, port) {
        None => return Expect::Refused,
        Some(ret) => ret,
    };
    match ret {
        TC_ACT_NEXT => Expect::Next,
        TC_ACT_OK => Expect::Kernel,
        TC_ACT_REDIRECT => Expect::Redirect,
        TC_ACT_SHOT => match moved(&f.maps, &before).as_slice() {
            [one] => Expect::Drop(leak(one)),
            other => panic!("a drop counted under {other:?}"),
        },
        other => panic!("unexpected tc verdict {other}"),
    }
}

fn observed_xdp(f: &mut Fixture, p: &[u8]) -> Expect {
    let before = f.maps.stats().unwrap().drops;
    let Some(ret) = f.try_run_xdp(p) else {
        return Expect::Refused;
    };
    match ret {
        XDP_PASS => Expect::XdpPass,
        XDP_DROP => match moved(&f.maps, &before).as_slice() {
            [one] => Expect::Drop(leak(one)),
            other => panic!("a drop counted under {other:?}"),
        },
        other => panic!("unexpected XDP verdict {other}"),
    }
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

#[test]
fn every_program_agrees_with_the_reference_model() {
    let seed = env_u64("OVERLAY_FUZZ_SEED", 1);
    let n = env_u64("OVERLAY_FUZZ_PACKETS", 4000);
    let mut mismatches = Vec::new();
    let mut verdicts: HashMap<String, u64> = HashMap::new();
    // Bridge mode, veth mode with learning, and XDP in front.
    for (k, flags) in [
        0,
        CONFIG_F_LEARN_ENDPOINTS | CONFIG_F_PER_PORT,
        CONFIG_F_XDP_VALIDATES | CONFIG_F_LEARN_ENDPOINTS | CONFIG_F_PER_PORT,
    ]
    .into_iter()
    .enumerate()
    {
        let Some((mut f, mut m)) = setup(flags) else {
            return;
        };
        let mut r = Rng(seed.wrapping_mul(31).wrapping_add(k as u64));
        let share = n / 3 + u64::from(k == 0) * (n % 3);
        for i in 0..share {
            let p = underlay_case(&mut r);
            for (prog, want, got) in [
                (
                    "from_underlay",
                    m.from_underlay(&p),
                    observed_tc(&mut f, programs::FROM_UNDERLAY, &p, 0),
                ),
                ("xdp", m.xdp(&p), observed_xdp(&mut f, &p)),
            ] {
                *verdicts.entry(format!("{prog} {want:?}")).or_default() += 1;
                if want != got {
                    mismatches.push(format!(
                        "flags {flags} case {i} {prog}: model {want:?}, program {got:?}, bytes {}",
                        hex(&p)
                    ));
                }
            }
            let (p, port) = container_case(&mut r);
            let want = m.from_container(&p, port);
            let got = observed_tc(&mut f, programs::FROM_CONTAINER, &p, port);
            *verdicts
                .entry(format!("from_container {want:?}"))
                .or_default() += 1;
            if want != got {
                mismatches.push(format!(
                    "flags {flags} case {i} from_container port {port}: model {want:?}, program {got:?}, bytes {}",
                    hex(&p)
                ));
            }
        }
    }
    let mut shown: Vec<_> = verdicts.into_iter().collect();
    shown.sort();
    eprintln!("fuzz: seed {seed}, {n} packets per side; verdicts:");
    for (v, c) in &shown {
        eprintln!("  {c:>7}  {v}");
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches (seed {seed}), first ones:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(10)].join("\n")
    );
    eprintln!("fuzz: 0 mismatches");
}

fn hex(p: &[u8]) -> String {
    p.iter().map(|b| format!("{b:02x}")).collect()
}
