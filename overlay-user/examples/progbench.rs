//! Per-packet cost of each BPF program with BPF_PROG_TEST_RUN, for
//! `cargo xtask bench`. Prints one JSON object.
//!
//! The tc programs change the packet they are given (encapsulation adds 50
//! bytes, decapsulation removes them), and the kernel's test runner reuses
//! one packet across `repeat` iterations, so after the first iteration a
//! repeated run would measure a different path. Those programs are
//! therefore run `--runs` times with repeat = 1 on a fresh packet each, and
//! the cost of an empty program measured the same way (the test runner's own
//! timer and context cost) is subtracted. Runs are grouped in batches of
//! 10,000 and the lowest batch mean is kept, so time the VM spends elsewhere
//! does not count. The XDP program does not change
//! the packet: it is measured both ways, which cross-checks the method.
//!
//! `xdp_underlay_decap_ns` is the XDP program with `xdp = "decap"`
//! decapsulating for an endpoint (single runs, as the tc programs).
//!
//! With `--monitor 1` the monitor is on (drops and every encap/decap
//! traced, within the default rate limit), as while `overlayctl monitor
//! --type drop --type trace` runs; by default it is off, as overlayd runs.
//!
//! Usage: progbench [--runs N] [--batch N] [--peers N] [--endpoints N] [--monitor 0|1]
//! (`--batch` = `--runs`: the plain mean of all runs)

use std::net::Ipv4Addr;
use std::time::Instant;

use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use overlay_common::net::{NetEndpointValue, NetPortValue};
use overlay_common::observe::{self, MonitorConfig, PeerStats};
use overlay_common::{
    programs, vtep_mac, EndpointValue, PeerValue, CONFIG_F_LEARN_ENDPOINTS, CONFIG_F_XDP_DECAP,
    CONFIG_F_XDP_VALIDATES,
};
use overlay_user::dataplane::bpf::{loader, maps::Maps, net_maps::NetMaps};

#[path = "../tests/common/packets.rs"]
mod packets;
use packets::*;

fn arg(name: &str, default: u32) -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

/// The lowest mean ns of batches of `--batch` (10,000) of `runs` runs of `one` (each
/// returns its duration), so time the VM spends elsewhere does not count.
fn lowest_batch_mean(runs: u32, mut one: impl FnMut() -> u128) -> f64 {
    let batch = runs.clamp(1, arg("--batch", 10_000).max(1));
    let mut best = f64::MAX;
    let mut done = 0;
    while done < runs {
        let n = batch.min(runs - done);
        let total: u128 = (0..n).map(|_| one()).sum();
        best = best.min(total as f64 / f64::from(n));
        done += n;
    }
    best
}

/// Mean ns per run over `runs` single runs of a tc program.
fn tc_single(ebpf: &mut aya::Ebpf, name: &'static str, packet: &[u8], runs: u32) -> f64 {
    let prog: &mut SchedClassifier = loader::program(ebpf, name).unwrap();
    let mut out = vec![0u8; packet.len() + 128];
    lowest_batch_mean(runs, || {
        prog.test_run(TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        })
        .unwrap()
        .duration
        .as_nanos()
    })
}

fn xdp_single(ebpf: &mut aya::Ebpf, name: &'static str, packet: &[u8], runs: u32) -> f64 {
    let prog: &mut Xdp = loader::program(ebpf, name).unwrap();
    let mut out = vec![0u8; packet.len() + 128];
    lowest_batch_mean(runs, || {
        prog.test_run(TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        })
        .unwrap()
        .duration
        .as_nanos()
    })
}

/// ns per packet of one run with `repeat` iterations (the kernel's own average).
fn xdp_repeat(ebpf: &mut aya::Ebpf, name: &'static str, packet: &[u8], repeat: u32) -> f64 {
    let prog: &mut Xdp = loader::program(ebpf, name).unwrap();
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(packet),
            repeat,
            ..Default::default()
        })
        .unwrap();
    r.duration.as_nanos() as f64
}

/// Mean ns per run of a tc program as if the packet came in on `ifindex`.
fn tc_single_from(
    ebpf: &mut aya::Ebpf,
    name: &'static str,
    packet: &[u8],
    runs: u32,
    ifindex: u32,
) -> f64 {
    let prog: &mut SchedClassifier = loader::program(ebpf, name).unwrap();
    // struct __sk_buff: ingress_ifindex is the u32 at offset 36.
    let mut ctx = [0u8; 192];
    ctx[36..40].copy_from_slice(&ifindex.to_ne_bytes());
    let mut out = vec![0u8; packet.len() + 128];
    lowest_batch_mean(runs, || {
        prog.test_run(TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat: 1,
            ..Default::default()
        })
        .unwrap()
        .duration
        .as_nanos()
    })
}

/// Overlay networks: web (VNI 4096, 10.103.240.0/24) with local A (port
/// 31) and B (port 32) and remote R on PEER; the per-packet cost of the
/// from-net-container program (encapsulate, local redirect, ARP reply)
/// and of the underlay program decapsulating for A.
fn measure_net(ebpf: &mut aya::Ebpf, runs: u32) -> serde_json::Value {
    let mut net = NetMaps::take(ebpf).unwrap();
    let (a, b, r) = ([10, 103, 240, 2], [10, 103, 240, 3], [10, 103, 240, 4]);
    let (ma, mb, mr) = (
        [2, 0x42, 10, 103, 240, 2],
        [2, 0x42, 10, 103, 240, 3],
        [2, 0x42, 10, 103, 240, 4],
    );
    let veth: [u8; 6] = [0x0e, 0, 0, 0, 0, 31];
    let gw = [10, 103, 240, 1];
    net.add_network(4096, "10.103.240.0/24".parse().unwrap(), gw.into())
        .unwrap();
    net.put_port(
        31,
        &NetPortValue {
            vni: 4096,
            ip: a,
            gateway: gw,
            mac: ma,
            veth_mac: veth,
        },
    )
    .unwrap();
    net.put_endpoint(4096, a.into(), &NetEndpointValue::local(31, ma))
        .unwrap();
    net.put_endpoint(4096, b.into(), &NetEndpointValue::local(32, mb))
        .unwrap();
    net.put_endpoint(
        4096,
        r.into(),
        &NetEndpointValue::remote(&host_config(0), 4096, PEER, PEER_MAC, mr),
    )
    .unwrap();
    let encap = eth(veth, ma, 0x0800, &ipv4(a, r, 6, &tcp_segment()));
    let local = eth(veth, ma, 0x0800, &ipv4(a, b, 6, &tcp_segment()));
    let mut arp_req = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp_req.extend_from_slice(&ma);
    arp_req.extend_from_slice(&a);
    arp_req.extend_from_slice(&[0; 6]);
    arp_req.extend_from_slice(&b);
    let arp_req = eth([0xff; 6], ma, 0x0806, &arp_req);
    let decap = vxlan_frame(
        PEER,
        4096,
        0x08,
        &eth(ma, mr, 0x0800, &ipv4(r, a, 6, &tcp_segment())),
    );
    let noop = tc_single_from(ebpf, programs::BENCH_NOOP_TC, &encap, runs, 31);
    let noop_decap = tc_single(ebpf, programs::BENCH_NOOP_TC, &decap, runs);
    let prog = programs::FROM_NET_CONTAINER;
    serde_json::json!({
        "from_net_container_encap_ns": tc_single_from(ebpf, prog, &encap, runs, 31) - noop,
        "from_net_container_local_ns": tc_single_from(ebpf, prog, &local, runs, 31) - noop,
        "from_net_container_arp_ns": tc_single_from(ebpf, prog, &arp_req, runs, 31) - noop,
        "from_underlay_net_decap_ns": tc_single(ebpf, programs::FROM_UNDERLAY, &decap, runs) - noop_decap,
    })
}

fn measure(ebpf: &mut aya::Ebpf, runs: u32) -> serde_json::Value {
    let encap = from_container(REMOTE, 6, &tcp_segment());
    let pass = from_container([10, 103, 100, 3], 6, &tcp_segment());
    let decap = vxlan_frame(PEER, VNI, 0x08, &inner_frame(C1));
    let noop_tc_encap = tc_single(ebpf, programs::BENCH_NOOP_TC, &encap, runs);
    let noop_tc_decap = tc_single(ebpf, programs::BENCH_NOOP_TC, &decap, runs);
    let noop_xdp = xdp_single(ebpf, programs::BENCH_NOOP_XDP, &decap, runs);
    let from_container = tc_single(ebpf, programs::FROM_CONTAINER, &encap, runs) - noop_tc_encap;
    let from_container_pass =
        tc_single(ebpf, programs::FROM_CONTAINER, &pass, runs) - noop_tc_encap;
    let from_underlay = tc_single(ebpf, programs::FROM_UNDERLAY, &decap, runs) - noop_tc_decap;
    let xdp = xdp_single(ebpf, programs::XDP_UNDERLAY, &decap, runs) - noop_xdp;
    let grow = tc_single(ebpf, programs::BENCH_ADJUST_GROW, &encap, runs) - noop_tc_encap;
    let shrink = tc_single(ebpf, programs::BENCH_ADJUST_SHRINK, &decap, runs) - noop_tc_decap;
    let xdp_rep = xdp_repeat(ebpf, programs::XDP_UNDERLAY, &decap, runs.max(1_000_000))
        - xdp_repeat(ebpf, programs::BENCH_NOOP_XDP, &decap, runs.max(1_000_000));
    serde_json::json!({
        "from_container_encap_ns": from_container,
        "from_container_pass_ns": from_container_pass,
        "from_underlay_decap_ns": from_underlay,
        "xdp_underlay_vxlan_ns": xdp,
        "xdp_underlay_vxlan_repeat_ns": xdp_rep,
        "adjust_room_grow_ns": grow,
        "adjust_room_shrink_ns": shrink,
        "baseline_tc_ns": noop_tc_encap,
        "baseline_xdp_ns": noop_xdp,
    })
}

/// `xdp = "decap"`: the XDP program decapsulating for an endpoint (single
/// runs: it changes the frame), the XDP baseline subtracted.
fn measure_xdp_decap(ebpf: &mut aya::Ebpf, maps: &mut Maps, runs: u32) -> f64 {
    let decap = vxlan_frame(PEER, VNI, 0x08, &inner_frame(C1));
    let flags = CONFIG_F_LEARN_ENDPOINTS;
    maps.set_config(&host_config(
        flags | CONFIG_F_XDP_VALIDATES | CONFIG_F_XDP_DECAP,
    ))
    .unwrap();
    let noop = xdp_single(ebpf, programs::BENCH_NOOP_XDP, &decap, runs);
    let ns = xdp_single(ebpf, programs::XDP_UNDERLAY, &decap, runs) - noop;
    maps.set_config(&host_config(flags)).unwrap();
    ns
}

/// `OVL_PEER_STATS` (the fixture's peer host is counted in its slot, as
/// overlayd gives one to every peer host), and the monitor switched on if `on`.
fn observe_maps(
    ebpf: &mut aya::Ebpf,
    on: bool,
) -> (
    PerCpuArray<MapData, PeerStats>,
    Array<MapData, MonitorConfig>,
) {
    let stats = peer_stats(ebpf);
    let mut monitor: Array<MapData, MonitorConfig> =
        Array::try_from(ebpf.take_map(observe::maps::MONITOR).unwrap()).unwrap();
    let flags = if on {
        observe::MONITOR_F_DROP | observe::MONITOR_F_TRACE
    } else {
        0
    };
    let mc = MonitorConfig::new(
        flags,
        1,
        observe::DEFAULT_EVENT_RATE,
        observe::DEFAULT_EVENT_BURST,
    );
    monitor.set(0, mc, 0).unwrap();
    (stats, monitor)
}

fn main() {
    let runs = arg("--runs", 1_000_000);
    let n_peers = arg("--peers", 10_000);
    let n_endpoints = arg("--endpoints", 100_000);
    overlay_lab::ensure_bpffs().expect("bpffs");
    let pin_dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/overlay-progbench-{}",
        std::process::id()
    ));
    loader::ensure_bpffs(&pin_dir).expect("pin dir");
    let mut ebpf = loader::load(Some(&pin_dir)).expect("load");
    for name in [
        programs::BENCH_NOOP_TC,
        programs::BENCH_ADJUST_GROW,
        programs::BENCH_ADJUST_SHRINK,
    ] {
        let p: &mut SchedClassifier = loader::program(&mut ebpf, name).unwrap();
        p.load().unwrap();
    }
    let p: &mut Xdp = loader::program(&mut ebpf, programs::BENCH_NOOP_XDP).unwrap();
    p.load().unwrap();
    let mut maps = Maps::take(&mut ebpf).unwrap();
    // overlayd's default flags: attach = "veth" (endpoint learning on), xdp = "off".
    install(&mut maps, CONFIG_F_LEARN_ENDPOINTS);
    let _observe = observe_maps(&mut ebpf, arg("--monitor", 0) == 1);

    let mut empty = measure(&mut ebpf, runs);
    empty["xdp_underlay_decap_ns"] = measure_xdp_decap(&mut ebpf, &mut maps, runs).into();

    // 10,000 peers: /24s in 10.0.0.0/8 outside the fixture's; 100,000 endpoints in 172.16.0.0/12.
    let t = Instant::now();
    let mut added = 0;
    'outer: for b in 0..=255u8 {
        for c in 0..=255u8 {
            if added == n_peers {
                break 'outer;
            }
            if b == 103 {
                continue;
            }
            let net = ipnet::Ipv4Net::new(Ipv4Addr::new(10, b, c, 0), 24).unwrap();
            let ip = [192, 168, (added / 250) as u8, (added % 250) as u8 + 1];
            maps.add_peer(
                net,
                &PeerValue::new(&host_config(0), ip, PEER_MAC, vtep_mac(ip, VNI)),
            )
            .unwrap();
            maps.set_peer_host(Ipv4Addr::from(ip), 1).unwrap();
            added += 1;
        }
    }
    let load_peers = t.elapsed();
    let t = Instant::now();
    for i in 0..n_endpoints {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 1)) + i);
        maps.add_endpoint(
            ip,
            &EndpointValue {
                ifindex: 100 + i,
                mac: [2, 0, 0, 0, 0, 1],
                _pad: [0; 2],
            },
        )
        .unwrap();
    }
    let load_endpoints = t.elapsed();
    let mut loaded = measure(&mut ebpf, runs);
    loaded["xdp_underlay_decap_ns"] = measure_xdp_decap(&mut ebpf, &mut maps, runs).into();
    let net = measure_net(&mut ebpf, runs);
    let _ = std::fs::remove_dir_all(&pin_dir);
    println!(
        "{}",
        serde_json::json!({
            "runs": runs,
            "monitor": arg("--monitor", 0) == 1,
            "peers": added,
            "endpoints": n_endpoints,
            "empty": empty,
            "loaded": loaded,
            "net": net,
            "load_peers_ms": load_peers.as_secs_f64() * 1e3,
            "load_endpoints_ms": load_endpoints.as_secs_f64() * 1e3,
        })
    );
}
