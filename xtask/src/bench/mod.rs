//! `cargo xtask bench`: the BPF dataplane against plain routing (the limit),
//! Docker's bridge with iptables port mapping, and the kernel VXLAN device,
//! on the same two-host lab; modes interleaved over rounds, medians and
//! ratios reported as markdown, JSON and an SVG chart.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use overlay_lab::{exec_ok, tcp_rr, AgentOptions, Binaries, Lab, LabSpec, Overlayd};

/// Ports the server container listens on.
pub mod cluster;
mod measure;
mod netmode;
mod report;

use measure::{cpu_busy_seconds, iperf_tcp, iperf_udp64, peer_add_latency, progbench};
use report::{write_section, Report};

const IPERF_PORT: u16 = 5201;
const RR_PORT: u16 = 7001;

/// One way of carrying the client container's traffic to the server container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// No encapsulation: each host routes the other's container subnet via its underlay address.
    Plain,
    /// Docker's default without an overlay: DNAT to a published port, MASQUERADE out.
    Iptables,
    /// Our kernel path: one VXLAN device, neighbour/FDB/route per peer.
    Kernel,
    /// Our BPF dataplane, default configuration.
    Ebpf,
    /// BPF with the XDP program in generic (skb) mode.
    EbpfXdpGeneric,
    /// BPF with XDP in native (driver) mode.
    EbpfXdpNative,
    /// BPF with the from-container program on the bridge instead of each veth.
    EbpfBridge,
    /// BPF setting a tunnel key and redirecting to a collect-metadata VXLAN device.
    EbpfEncapDevice,
    /// BPF, a container pair on one overlay network (VNI 4096) across the hosts.
    EbpfNet,
    /// The same pair on the kernel dataplane's network (bridge + VXLAN device per VNI).
    KernelNet,
    /// BPF with `tc_attach = "clsact"` (cls_bpf filters instead of TCX links).
    EbpfClsact,
    /// BPF with `veth_gro = true` (NAPI GRO on the host side of the endpoint veths).
    EbpfGro,
    /// BPF with `big_tcp = true` (IPv4 BIG TCP on the endpoint veths and the underlay).
    EbpfBigTcp,
}

impl Mode {
    const ALL: [Mode; 13] = [
        Mode::Plain,
        Mode::Iptables,
        Mode::Kernel,
        Mode::Ebpf,
        Mode::EbpfXdpGeneric,
        Mode::EbpfXdpNative,
        Mode::EbpfBridge,
        Mode::EbpfEncapDevice,
        Mode::EbpfNet,
        Mode::KernelNet,
        Mode::EbpfClsact,
        Mode::EbpfGro,
        Mode::EbpfBigTcp,
    ];

    fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Iptables => "iptables",
            Mode::Kernel => "kernel",
            Mode::Ebpf => "ebpf",
            Mode::EbpfXdpGeneric => "ebpf-xdp-generic",
            Mode::EbpfXdpNative => "ebpf-xdp-native",
            Mode::EbpfBridge => "ebpf-bridge",
            Mode::EbpfEncapDevice => "ebpf-encap-device",
            Mode::EbpfNet => "ebpf-net",
            Mode::KernelNet => "kernel-net",
            Mode::EbpfClsact => "ebpf-clsact",
            Mode::EbpfGro => "ebpf-gro",
            Mode::EbpfBigTcp => "ebpf-bigtcp",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Mode::Plain => "plain routing, no encapsulation (the limit)",
            Mode::Iptables => "Docker-style bridge + iptables DNAT/MASQUERADE, no overlay",
            Mode::Kernel => "overlay, kernel VXLAN device (dataplane = \"kernel\")",
            Mode::Ebpf => "overlay, BPF dataplane, default configuration (attach = \"veth\", xdp = \"off\", encap = \"bpf\")",
            Mode::EbpfXdpGeneric => "overlay, BPF, xdp = \"generic\"",
            Mode::EbpfXdpNative => "overlay, BPF, xdp = \"native\"",
            Mode::EbpfBridge => "overlay, BPF, attach = \"bridge\"",
            Mode::EbpfEncapDevice => {
                "overlay, BPF, encap = \"device\" (tunnel key + collect-metadata VXLAN device)"
            }
            Mode::EbpfNet => {
                "overlay network (VNI 4096, one subnet across hosts), BPF: ARP in BPF, bpf_redirect_peer, no bridge"
            }
            Mode::KernelNet => {
                "overlay network (VNI 4096), kernel: bridge ovb4096 + VXLAN device ovx4096 (Docker's layout)"
            }
            Mode::EbpfClsact => "overlay, BPF, tc_attach = \"clsact\" (cls_bpf on a clsact qdisc, not TCX)",
            Mode::EbpfGro => "overlay, BPF, veth_gro = true (NAPI GRO on the host-side veths)",
            Mode::EbpfBigTcp => {
                "overlay, BPF, big_tcp = true (gso/gro_ipv4_max_size 185000 on both veth ends and the underlay)"
            }
        }
    }

    fn parse(s: &str) -> Result<Mode> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .with_context(|| {
                format!(
                    "unknown mode {s:?}; expected one of {}",
                    Mode::ALL.map(|m| m.name()).join(", ")
                )
            })
    }

    fn agent(self) -> Option<AgentOptions> {
        let o = |dp: &str, xdp: Option<&str>, attach: Option<&str>| AgentOptions {
            dataplane: Some(dp.into()),
            xdp: xdp.map(Into::into),
            attach: attach.map(Into::into),
            ..Default::default()
        };
        match self {
            Mode::Plain | Mode::Iptables | Mode::EbpfNet | Mode::KernelNet => None,
            Mode::Kernel => Some(o("kernel", None, None)),
            Mode::Ebpf => Some(o("ebpf", None, None)),
            Mode::EbpfXdpGeneric => Some(o("ebpf", Some("generic"), None)),
            Mode::EbpfXdpNative => Some(o("ebpf", Some("native"), None)),
            Mode::EbpfBridge => Some(o("ebpf", None, Some("bridge"))),
            Mode::EbpfEncapDevice => Some(AgentOptions {
                extra: "encap = \"device\"\n".into(),
                ..o("ebpf", None, None)
            }),
            Mode::EbpfClsact => Some(AgentOptions {
                extra: "tc_attach = \"clsact\"\n".into(),
                ..o("ebpf", None, None)
            }),
            Mode::EbpfGro => Some(AgentOptions {
                extra: "veth_gro = true\n".into(),
                ..o("ebpf", None, None)
            }),
            Mode::EbpfBigTcp => Some(AgentOptions {
                extra: "big_tcp = true\n".into(),
                ..o("ebpf", None, None)
            }),
        }
    }
}

/// What is measured per mode and round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Metric {
    Tcp1,
    Tcp4,
    Rr,
    Udp64,
    CpuPerGb,
}

impl Metric {
    const ALL: [Metric; 5] = [
        Metric::Tcp1,
        Metric::Tcp4,
        Metric::Rr,
        Metric::Udp64,
        Metric::CpuPerGb,
    ];

    fn name(self) -> &'static str {
        match self {
            Metric::Tcp1 => "tcp_1_stream_gbps",
            Metric::Tcp4 => "tcp_4_streams_gbps",
            Metric::Rr => "tcp_rr_tps",
            Metric::Udp64 => "udp_64b_kpps",
            Metric::CpuPerGb => "cpu_s_per_gb",
        }
    }

    fn header(self) -> &'static str {
        match self {
            Metric::Tcp1 => "TCP 1 stream (Gbit/s)",
            Metric::Tcp4 => "TCP 4 streams (Gbit/s)",
            Metric::Rr => "TCP_RR (trans/s)",
            Metric::Udp64 => "UDP 64 B (kpps received)",
            Metric::CpuPerGb => "CPU s per GB (1 stream)",
        }
    }
}

/// Command-line settings of the benchmark.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Short run (under 3 minutes).
    pub quick: bool,
    /// Rounds (default 5, quick 1).
    pub rounds: Option<u32>,
    /// Seconds per traffic measurement (default 5, quick 1).
    pub seconds: Option<u32>,
    /// Modes to run (default all).
    pub modes: Option<String>,
    /// Write the results as JSON here too.
    pub json: Option<PathBuf>,
    /// Do not rewrite docs/benchmarks.md and the chart.
    pub no_docs: bool,
    /// Skip the BPF_PROG_TEST_RUN per-packet measurement.
    pub no_progbench: bool,
    /// Where overlayd and overlayctl are.
    pub bins: PathBuf,
    /// The command line, for the report.
    pub command: String,
}

type Samples = BTreeMap<Mode, BTreeMap<Metric, Vec<f64>>>;

pub fn run(opts: &Opts) -> Result<()> {
    overlay_lab::require_root().context("the benchmark builds network namespaces")?;
    let bins = Binaries::in_dir(&opts.bins)?;
    let rounds = opts.rounds.unwrap_or(if opts.quick { 1 } else { 5 });
    let secs = opts.seconds.unwrap_or(if opts.quick { 1 } else { 5 });
    let modes: Vec<Mode> = match &opts.modes {
        Some(list) => list
            .split(',')
            .map(|s| Mode::parse(s.trim()))
            .collect::<Result<_>>()?,
        None => Mode::ALL.to_vec(),
    };
    let started = Instant::now();
    let mut samples: Samples = BTreeMap::new();
    for round in 1..=rounds {
        for &mode in &modes {
            eprint!("bench: round {round}/{rounds} {:<16}", mode.name());
            let t = Instant::now();
            let m = measure_mode(mode, &bins, Duration::from_secs(secs.into()))
                .with_context(|| format!("round {round}, mode {}", mode.name()))?;
            eprintln!(
                " {:>6.2} Gbit/s, {:>6.2} Gbit/s x4, {:>8.0} rr/s, {:>7.1} kpps, {:>5.2} CPU s/GB  ({:.0} s)",
                m[&Metric::Tcp1],
                m[&Metric::Tcp4],
                m[&Metric::Rr],
                m[&Metric::Udp64],
                m[&Metric::CpuPerGb],
                t.elapsed().as_secs_f64()
            );
            for (k, v) in m {
                samples
                    .entry(mode)
                    .or_default()
                    .entry(k)
                    .or_default()
                    .push(v);
            }
        }
    }
    let peer_add = if modes.contains(&Mode::Ebpf) {
        eprintln!("bench: peer add -> first packet delivered");
        Some(peer_add_latency(&bins, if opts.quick { 3 } else { 7 })?)
    } else {
        None
    };
    let progbench = if opts.no_progbench {
        None
    } else {
        eprintln!("bench: per-packet cost of each program (BPF_PROG_TEST_RUN)");
        Some(progbench(if opts.quick { 200_000 } else { 1_000_000 })?)
    };
    let elapsed = started.elapsed();
    let report = Report {
        opts: opts.clone(),
        rounds,
        secs,
        samples,
        peer_add,
        progbench,
        elapsed,
    };
    let md = report.markdown();
    println!("{md}");
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())?)?;
        eprintln!("bench: JSON written to {}", path.display());
    }
    if !opts.no_docs {
        let docs = crate::root().join("docs");
        std::fs::write(docs.join("benchmarks.svg"), report.svg())?;
        write_section(&docs.join("benchmarks.md"), &md)?;
        eprintln!("bench: docs/benchmarks.md and docs/benchmarks.svg updated");
    }
    Ok(())
}

/// One lab, one mode, every metric.
fn measure_mode(mode: Mode, bins: &Binaries, dur: Duration) -> Result<BTreeMap<Metric, f64>> {
    let mut lab = Lab::new(LabSpec {
        hosts: 2,
        containers_per_host: 1,
        ..Default::default()
    })?;
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    let (client, server) = (lab.container(1, 1).clone(), lab.container(2, 1).clone());
    let (mut client_ns, mut server_ns) = (client.ns.clone(), server.ns.clone());
    let mut _agents = Vec::new();
    let target: Ipv4Addr = match mode {
        Mode::EbpfNet | Mode::KernelNet => {
            let dp = if mode == Mode::EbpfNet {
                "ebpf"
            } else {
                "kernel"
            };
            let (c, s, ip) = netmode::setup(&mut lab, dp)?;
            (client_ns, server_ns) = (c, s);
            ip
        }
        Mode::Plain => {
            exec_ok(
                &h1.ns,
                &[
                    "ip",
                    "route",
                    "add",
                    &h2.subnet,
                    "via",
                    &h2.underlay_ip.to_string(),
                ],
            )?;
            exec_ok(
                &h2.ns,
                &[
                    "ip",
                    "route",
                    "add",
                    &h1.subnet,
                    "via",
                    &h1.underlay_ip.to_string(),
                ],
            )?;
            server.ip
        }
        Mode::Iptables => {
            for (proto, port) in [("tcp", IPERF_PORT), ("udp", IPERF_PORT), ("tcp", RR_PORT)] {
                let dest = format!("{}:{port}", server.ip);
                exec_ok(
                    &h2.ns,
                    &[
                        "iptables",
                        "-t",
                        "nat",
                        "-A",
                        "PREROUTING",
                        "-i",
                        "eth1",
                        "-p",
                        proto,
                        "--dport",
                        &port.to_string(),
                        "-j",
                        "DNAT",
                        "--to-destination",
                        &dest,
                    ],
                )?;
            }
            exec_ok(
                &h1.ns,
                &[
                    "iptables",
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-s",
                    &h1.subnet,
                    "-o",
                    "eth1",
                    "-j",
                    "MASQUERADE",
                ],
            )?;
            h2.underlay_ip
        }
        _ => {
            let opts = mode.agent().expect("overlay mode");
            for h in 1..=2 {
                _agents.push(Overlayd::start(&lab, h, bins, &opts)?);
            }
            for a in &_agents {
                a.add_lab_peers(&lab)?;
            }
            server.ip
        }
    };
    // Reachability first: a mode that does not work is an error, not a slow result.
    let p = overlay_lab::ping(&client_ns, target, 3, None, false, 2)?;
    if p.received == 0 {
        bail!("{}: client cannot reach {target}", mode.name());
    }
    let _iperf = lab.spawn(
        &server_ns,
        &["iperf3", "-s", "-p", &IPERF_PORT.to_string()],
        "iperf3-server.log",
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let mut m = BTreeMap::new();
    let cpu0 = cpu_busy_seconds()?;
    let (gbps1, bytes1) = iperf_tcp(&client_ns, target, 1, dur)?;
    let cpu = cpu_busy_seconds()? - cpu0;
    m.insert(Metric::Tcp1, gbps1);
    m.insert(Metric::CpuPerGb, cpu / (bytes1 / 1e9));
    m.insert(Metric::Tcp4, iperf_tcp(&client_ns, target, 4, dur)?.0);
    m.insert(Metric::Udp64, iperf_udp64(&client_ns, target, dur)? / 1e3);
    m.insert(
        Metric::Rr,
        tcp_rr(
            &client_ns,
            &server_ns,
            RR_PORT,
            SocketAddr::from((target, RR_PORT)),
            dur,
        )?,
    );
    Ok(m)
}
