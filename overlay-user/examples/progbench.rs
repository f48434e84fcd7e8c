//! Per-packet cost of each BPF program with BPF_PROG_TEST_RUN, for
//! `cargo xtask bench`. Prints one JSON object.
//!
//! The tc programs change the packet they are given (encapsulation adds 50
//! bytes, decapsulation removes them), and the kernel's test runner reuses
//! one packet across `repeat` iterations, so after the first iteration a
//! repeated run would measure a different path. Every program is therefore
//! run `--runs` times with repeat = 1 on a fresh packet each, and the cost
//! of the empty program of its kind on the same packet (the test runner's
//! own timer and context cost) is subtracted pair by pair; see [`timed`]
//! for how the machine's slow phases are kept out. The XDP program does
//! not change the packet: it is also measured with `repeat`, a cross-check.
//!
//! With `--monitor 1` the monitor is on (drops and every encap/decap
//! traced, within the default rate limit), as while `overlayctl monitor
//! --type drop --type trace` runs; by default it is off, as overlayd runs.
//!
//! Usage: progbench [--runs N] [--batch N] [--peers N] [--endpoints N] [--monitor 0|1]
//! (`PROGBENCH_ONLY=<part of a key>` times only those programs, to profile one)

use std::net::Ipv4Addr;
use std::time::Instant;

use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::{Program, SchedClassifier, TestRun, TestRunOptions, Xdp};
use overlay_common::net::{NetEndpointValue, NetPortValue};
use overlay_common::observe::{self, MonitorConfig, PeerStats};
use overlay_common::{
    programs, vtep_mac, EndpointValue, PeerValue, CONFIG_F_DECAP_TWO_STEP,
    CONFIG_F_ENCAP_PUSH_HEAD, CONFIG_F_LEARN_ENDPOINTS, CONFIG_F_PER_PORT, CONFIG_F_XDP_DECAP,
    CONFIG_F_XDP_VALIDATES,
};
use overlay_user::dataplane::bpf::calibrate::{self, ResizeTiming};
use overlay_user::dataplane::bpf::{loader, maps::Maps, net_maps::NetMaps};
use overlay_user::model::config::DecapResize;

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

/// One single run (repeat = 1) of a program on `packet`, its duration in ns.
fn run_once(prog: &mut Program, packet: &[u8], out: &mut [u8], ctx: Option<&[u8]>) -> u128 {
    let opts = TestRunOptions {
        data_in: Some(packet),
        data_out: Some(out),
        ctx_in: ctx,
        repeat: 1,
        ..Default::default()
    };
    let r = match prog {
        Program::SchedClassifier(p) => p.test_run(opts),
        Program::Xdp(p) => p.test_run(opts),
        _ => panic!("progbench runs tc and XDP programs only"),
    };
    r.unwrap().duration.as_nanos()
}

/// The two programs `a` and `b` of the object, borrowed at once.
fn two_programs<'a>(
    ebpf: &'a mut aya::Ebpf,
    a: &str,
    b: &str,
) -> (&'a mut Program, &'a mut Program) {
    let mut found: std::collections::HashMap<&str, &mut Program> = ebpf
        .programs_mut()
        .filter(|(n, _)| *n == a || *n == b)
        .collect();
    let pa = found.remove(a).unwrap_or_else(|| panic!("no program {a}"));
    let pb = found.remove(b).unwrap_or_else(|| panic!("no program {b}"));
    (pa, pb)
}

/// One program to time: on `packet` (with `ctx`, or none), against the
/// empty program `base` of its kind, with `OVL_CONFIG`'s flags `flags`.
struct Job {
    key: &'static str,
    prog: &'static str,
    base: &'static str,
    packet: Vec<u8>,
    ctx: Option<[u8; 192]>,
    flags: u32,
}

impl Job {
    fn tc(key: &'static str, prog: &'static str, packet: Vec<u8>) -> Self {
        Self {
            key,
            prog,
            base: programs::BENCH_NOOP_TC,
            packet,
            ctx: None,
            flags: flags(),
        }
    }

    fn xdp(key: &'static str, prog: &'static str, packet: Vec<u8>) -> Self {
        Self {
            base: programs::BENCH_NOOP_XDP,
            ..Self::tc(key, prog, packet)
        }
    }

    /// As if the packet came in on `ifindex`.
    fn from(mut self, ifindex: u32) -> Self {
        // struct __sk_buff: ingress_ifindex is the u32 at offset 36.
        let mut ctx = [0u8; 192];
        ctx[36..40].copy_from_slice(&ifindex.to_ne_bytes());
        self.ctx = Some(ctx);
        self
    }

    fn flags(mut self, flags: u32) -> Self {
        self.flags = flags;
        self
    }
}

static FLAGS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
static RESIZE_TIMING: std::sync::OnceLock<ResizeTiming> = std::sync::OnceLock::new();

/// overlayd's default flags: attach = "veth" (endpoint learning on, each
/// source bound to its port: the from-container jobs come in on C1's),
/// xdp = "off", and `decap_resize` as overlayd's `auto` finds it on this
/// CPU (timed, as overlayd does at start), or as `PROGBENCH_DECAP_RESIZE`
/// (`one-step`, `two-step`) says, and `encap_resize = "head"` unless
/// `PROGBENCH_ENCAP_RESIZE=adjust-room`. Set once by [`init_flags`].
fn flags() -> u32 {
    *FLAGS.get().expect("init_flags first")
}

fn init_flags(ebpf: &mut aya::Ebpf) {
    let resize = match std::env::var("PROGBENCH_DECAP_RESIZE").as_deref() {
        Ok("one-step") => DecapResize::OneStep,
        Ok("two-step") => DecapResize::TwoStep,
        Ok("auto") | Err(_) => DecapResize::Auto,
        Ok(other) => {
            panic!("PROGBENCH_DECAP_RESIZE={other}: expected one-step, two-step or auto")
        }
    };
    let timing = calibrate::time_decap_resize(ebpf).expect("timing the decap resizes");
    let two = resize.fixed().unwrap_or_else(|| timing.two_step());
    let _ = RESIZE_TIMING.set(timing);
    let push_head = match std::env::var("PROGBENCH_ENCAP_RESIZE").as_deref() {
        Ok("head") | Err(_) => CONFIG_F_ENCAP_PUSH_HEAD,
        Ok("adjust-room") => 0,
        Ok(other) => panic!("PROGBENCH_ENCAP_RESIZE={other}: expected head or adjust-room"),
    };
    let two = if two { CONFIG_F_DECAP_TWO_STEP } else { 0 };
    let _ = FLAGS.set(CONFIG_F_LEARN_ENDPOINTS | CONFIG_F_PER_PORT | push_head | two);
}

/// The paired batches of one job: per pair, the empty program's mean and
/// the program's mean minus it (ns).
struct Timed {
    key: &'static str,
    base: &'static str,
    pairs: Vec<(f64, f64)>,
}

/// Runs the jobs in paired batches: a batch of `--batch` (500) single runs
/// of the program, then as many of the empty program of its kind on the
/// same packet (the test runner's own timer and context cost). The jobs
/// take turns, batch by batch, until each has had `runs` runs; see
/// [`figures`] for what is made of the pairs.
fn timed(ebpf: &mut aya::Ebpf, maps: &mut Maps, jobs: &[Job], runs: u32) -> Vec<Timed> {
    let only = std::env::var("PROGBENCH_ONLY").unwrap_or_default();
    let jobs: Vec<&Job> = jobs.iter().filter(|j| j.key.contains(&only)).collect();
    let batch = arg("--batch", 500).clamp(1, runs.max(1));
    let mut timed: Vec<Timed> = jobs
        .iter()
        .map(|j| Timed {
            key: j.key,
            base: j.base,
            pairs: Vec::new(),
        })
        .collect();
    let mut flags = self::flags();
    let mut done = 0;
    while done < runs {
        let n = batch.min(runs - done);
        for (job, t) in jobs.iter().zip(&mut timed) {
            if job.flags != flags {
                flags = job.flags;
                maps.set_config(&host_config(flags)).unwrap();
            }
            let (prog, noop) = two_programs(ebpf, job.prog, job.base);
            let ctx = job.ctx.as_ref().map(|c| &c[..]);
            let p = batch_mean(prog, &job.packet, ctx, n);
            let b = batch_mean(noop, &job.packet, ctx, n);
            t.pairs.push((b, p - b));
        }
        done += n;
    }
    if flags != self::flags() {
        maps.set_config(&host_config(self::flags())).unwrap();
    }
    timed
}

/// Each job's figure: ns per packet above the empty program.
///
/// This machine switches between a fast and a slow state, for seconds to
/// minutes, in which every program takes up to twice as long. A pair runs
/// within a millisecond or so, in one state. A pair whose empty half ran
/// within 10 % of the fastest empty batches of the whole run (the 2nd
/// percentile, per empty program) ran in the fast state, and a job's
/// figure is the median, over its fast pairs, of the program's mean minus
/// the empty program's. A job with fewer than 10 fast pairs (the machine
/// was slow all the while it ran) is listed under `"slow"` as `group/key`,
/// and its figure is taken from its own fastest pairs the same way.
fn figures(
    groups: &[(&str, &[Timed])],
) -> (Vec<serde_json::Map<String, serde_json::Value>>, Vec<String>) {
    let fast_below = |pairs: &mut dyn Iterator<Item = f64>| {
        let mut v: Vec<f64> = pairs.collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 50).copied().unwrap_or(f64::MAX) * 1.1
    };
    let all = || groups.iter().flat_map(|(_, g)| g.iter());
    let mut limits: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
    for t in all() {
        limits.entry(t.base).or_insert_with(|| {
            let same_base = all().filter(|o| o.base == t.base);
            fast_below(&mut same_base.flat_map(|o| o.pairs.iter().map(|p| p.0)))
        });
    }
    let mut slow = Vec::new();
    let out = groups
        .iter()
        .map(|(group, g)| {
            g.iter()
                .map(|t| {
                    let mut limit = limits[t.base];
                    if t.pairs.iter().filter(|p| p.0 <= limit).count() < 10 {
                        slow.push(format!("{group}/{}", t.key));
                        limit = fast_below(&mut t.pairs.iter().map(|p| p.0));
                    }
                    let fast = t.pairs.iter().filter(|p| p.0 <= limit).map(|p| p.1);
                    (t.key.to_string(), median_of(fast.collect()).into())
                })
                .collect()
        })
        .collect();
    (out, slow)
}

fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The empty program `name`'s own time per single run (the tc or the XDP
/// one): the median of its batch means.
fn baseline(ebpf: &mut aya::Ebpf, name: &'static str, packet: &[u8], runs: u32) -> f64 {
    let prog: &mut Program = ebpf.program_mut(name).unwrap();
    let batch = arg("--batch", 500).clamp(1, runs.max(1));
    let means = (0..runs.div_ceil(batch))
        .map(|_| batch_mean(prog, packet, None, batch))
        .collect();
    median_of(means)
}

/// The mean time (ns) of `n` single runs of `prog` on `packet`.
fn batch_mean(prog: &mut Program, packet: &[u8], ctx: Option<&[u8]>, n: u32) -> f64 {
    let mut out = vec![0u8; packet.len() + 128];
    let t: u128 = (0..n).map(|_| run_once(prog, packet, &mut out, ctx)).sum();
    t as f64 / f64::from(n)
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

/// Overlay networks: web (VNI 4096, 10.103.240.0/24) with local A (port
/// 31) and B (port 32) and remote R on PEER; the per-packet cost of the
/// from-net-container program (encapsulate, local redirect, ARP reply)
/// and of the underlay program decapsulating for A.
fn measure_net(ebpf: &mut aya::Ebpf, maps: &mut Maps, runs: u32) -> Vec<Timed> {
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
    let prog = programs::FROM_NET_CONTAINER;
    let jobs = [
        Job::tc("from_net_container_encap_ns", prog, encap).from(31),
        Job::tc("from_net_container_local_ns", prog, local).from(31),
        Job::tc("from_net_container_arp_ns", prog, arp_req).from(31),
        Job::tc("from_underlay_net_decap_ns", programs::FROM_UNDERLAY, decap),
    ];
    timed(ebpf, maps, &jobs, runs)
}

/// The per-host programs; `xdp_underlay_decap_ns` is the XDP program with
/// `xdp = "decap"` decapsulating for an endpoint.
fn measure(ebpf: &mut aya::Ebpf, maps: &mut Maps, runs: u32) -> (Vec<Timed>, serde_json::Value) {
    let encap = from_container(REMOTE, 6, &tcp_segment());
    let encap_udp = from_container(REMOTE, 17, &udp_datagram(5000, 53, b"query"));
    let pass = from_container([10, 103, 100, 3], 6, &tcp_segment());
    let decap = vxlan_frame(PEER, VNI, 0x08, &inner_frame(C1));
    let xdp_decap = flags() | CONFIG_F_XDP_VALIDATES | CONFIG_F_XDP_DECAP;
    let jobs = [
        Job::tc(
            "from_container_encap_ns",
            programs::FROM_CONTAINER,
            encap.clone(),
        )
        .from(C1_PORT),
        Job::tc(
            "from_container_encap_udp_ns",
            programs::FROM_CONTAINER,
            encap_udp,
        )
        .from(C1_PORT),
        Job::tc("from_container_pass_ns", programs::FROM_CONTAINER, pass).from(C1_PORT),
        Job::tc(
            "from_underlay_decap_ns",
            programs::FROM_UNDERLAY,
            decap.clone(),
        ),
        Job::xdp(
            "xdp_underlay_vxlan_ns",
            programs::XDP_UNDERLAY,
            decap.clone(),
        ),
        Job::xdp(
            "xdp_underlay_decap_ns",
            programs::XDP_UNDERLAY,
            decap.clone(),
        )
        .flags(xdp_decap),
        Job::tc(
            "adjust_room_grow_ns",
            programs::BENCH_ADJUST_GROW,
            encap.clone(),
        ),
        Job::tc("push_head_ns", programs::BENCH_PUSH_HEAD, encap.clone()),
        Job::tc(
            "adjust_room_shrink_ns",
            programs::BENCH_ADJUST_SHRINK,
            decap.clone(),
        ),
        Job::tc(
            "adjust_room_two_step_ns",
            programs::BENCH_ADJUST_TWO_STEP,
            decap.clone(),
        ),
    ];
    let timings = timed(ebpf, maps, &jobs, runs);
    let mut out = serde_json::json!({});
    let rep = runs.max(1_000_000);
    out["xdp_underlay_vxlan_repeat_ns"] = (xdp_repeat(ebpf, programs::XDP_UNDERLAY, &decap, rep)
        - xdp_repeat(ebpf, programs::BENCH_NOOP_XDP, &decap, rep))
    .into();
    out["baseline_tc_ns"] = baseline(ebpf, programs::BENCH_NOOP_TC, &encap, runs).into();
    out["baseline_xdp_ns"] = baseline(ebpf, programs::BENCH_NOOP_XDP, &decap, runs).into();
    (timings, out)
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
        programs::BENCH_ADJUST_TWO_STEP,
        programs::BENCH_PUSH_HEAD,
    ] {
        let p: &mut SchedClassifier = loader::program(&mut ebpf, name).unwrap();
        p.load().unwrap();
    }
    let p: &mut Xdp = loader::program(&mut ebpf, programs::BENCH_NOOP_XDP).unwrap();
    p.load().unwrap();
    init_flags(&mut ebpf);
    let mut maps = Maps::take(&mut ebpf).unwrap();
    install(&mut maps, flags());
    let _observe = observe_maps(&mut ebpf, arg("--monitor", 0) == 1);

    let (empty, mut empty_extra) = measure(&mut ebpf, &mut maps, runs);

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
    // The fixture's endpoint and peer were added first, so they keep their
    // slots (a slot stays with its first key) although one of the 100,000
    // endpoints and two of the 10,000 peers share them, as no address of a
    // host's own subnet (up to a /15) and no block of a /12 would. Installed
    // again: the fixture as in the empty state, with the maps full.
    install(&mut maps, flags());
    let (loaded, mut loaded_extra) = measure(&mut ebpf, &mut maps, runs);
    let net = measure_net(&mut ebpf, &mut maps, runs);
    let (figures, slow) = figures(&[("empty", &empty), ("loaded", &loaded), ("net", &net)]);
    let [e, l, net]: [_; 3] = figures.try_into().unwrap();
    for (extra, f) in [(&mut empty_extra, e), (&mut loaded_extra, l)] {
        extra.as_object_mut().unwrap().extend(f);
    }
    let (empty, loaded) = (empty_extra, loaded_extra);
    let _ = std::fs::remove_dir_all(&pin_dir);
    println!(
        "{}",
        serde_json::json!({
            "runs": runs,
            "monitor": arg("--monitor", 0) == 1,
            "peers": added,
            "endpoints": n_endpoints,
            "decap_two_step": flags() & CONFIG_F_DECAP_TWO_STEP != 0,
            "encap_push_head": flags() & CONFIG_F_ENCAP_PUSH_HEAD != 0,
            "decap_resize_timing": RESIZE_TIMING.get().map(|t| serde_json::json!({
                "one_step_ns": t.one_step_ns,
                "two_step_ns": t.two_step_ns,
                "two_step": t.two_step(),
            })),
            "empty": empty,
            "loaded": loaded,
            "net": net,
            "slow": slow,
            "load_peers_ms": load_peers.as_secs_f64() * 1e3,
            "load_endpoints_ms": load_endpoints.as_secs_f64() * 1e3,
        })
    );
}
