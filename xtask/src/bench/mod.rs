//! `cargo xtask bench`: the BPF dataplane against host to host (the limit),
//! plain routing, Docker's bridge with iptables port mapping, the kernel
//! VXLAN device and Docker's own overlay driver, on the same two-host lab;
//! modes interleaved over rounds, medians and ratios reported as markdown,
//! JSON and an SVG chart. `--nic-like` turns segmentation offloads off on
//! the underlay first.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use overlay_lab::{exec_ok, tcp_rr_stats, Binaries, Lab, LabSpec, Overlayd};

pub mod cluster;
mod docker_overlay;
mod macvlan;
mod measure;
mod mode;
mod netmode;
mod report;
mod section;
mod underlay;

use measure::{cpu_busy_seconds, iperf_tcp, iperf_udp64, peer_add_latency, progbench};
pub use mode::Mode;
use report::Report;
use section::write_section;
use underlay::FeatureState;

/// Ports the server listens on.
const IPERF_PORT: u16 = 5201;
const RR_PORT: u16 = 7001;

/// What is measured per mode and round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Metric {
    Tcp1,
    Tcp4,
    Rr,
    RrP50,
    RrP99,
    Udp64,
    CpuPerGb,
    /// Mean size of the frames host 2's underlay received during the
    /// 1-stream TCP run: shows whether the receiver sees GSO packets or
    /// MTU-sized frames (not a ratio).
    UnderlayFrame,
}

impl Metric {
    const ALL: [Metric; 8] = [
        Metric::Tcp1,
        Metric::Tcp4,
        Metric::Rr,
        Metric::RrP50,
        Metric::RrP99,
        Metric::Udp64,
        Metric::CpuPerGb,
        Metric::UnderlayFrame,
    ];

    /// The metrics compared as ratios.
    const RATIOS: [Metric; 7] = [
        Metric::Tcp1,
        Metric::Tcp4,
        Metric::Rr,
        Metric::RrP50,
        Metric::RrP99,
        Metric::Udp64,
        Metric::CpuPerGb,
    ];

    fn name(self) -> &'static str {
        match self {
            Metric::Tcp1 => "tcp_1_stream_gbps",
            Metric::Tcp4 => "tcp_4_streams_gbps",
            Metric::Rr => "tcp_rr_tps",
            Metric::RrP50 => "tcp_rr_p50_us",
            Metric::RrP99 => "tcp_rr_p99_us",
            Metric::Udp64 => "udp_64b_kpps",
            Metric::CpuPerGb => "cpu_s_per_gb",
            Metric::UnderlayFrame => "underlay_rx_bytes_per_frame",
        }
    }

    fn header(self) -> &'static str {
        match self {
            Metric::Tcp1 => "TCP 1 stream (Gbit/s)",
            Metric::Tcp4 => "TCP 4 streams (Gbit/s)",
            Metric::Rr => "TCP_RR (trans/s)",
            Metric::RrP50 => "TCP_RR p50 (µs)",
            Metric::RrP99 => "TCP_RR p99 (µs)",
            Metric::Udp64 => "UDP 64 B (kpps received)",
            Metric::CpuPerGb => "CPU s per GB (1 stream)",
            Metric::UnderlayFrame => "underlay B/frame (host 2 rx, 1 stream)",
        }
    }
}

/// Command-line settings of the benchmark.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Short run (under 10 minutes with every mode).
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
    /// Segmentation offloads off on every host's underlay (NIC-like).
    pub nic_like: bool,
    /// Where overlayd and overlayctl are.
    pub bins: PathBuf,
    /// The command line, for the report.
    pub command: String,
}

type Samples = BTreeMap<Mode, BTreeMap<Metric, Vec<f64>>>;
/// With `--nic-like`: per mode, per host, which features were turned off
/// (as read back from `ethtool -k` in the mode's first lab).
type NicStates = BTreeMap<Mode, Vec<FeatureState>>;

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
    let mut nic: NicStates = BTreeMap::new();
    for round in 1..=rounds {
        for &mode in &modes {
            eprint!("bench: round {round}/{rounds} {:<16}", mode.name());
            let t = Instant::now();
            let m = measure_mode(mode, &bins, Duration::from_secs(secs.into()), opts.nic_like)
                .with_context(|| format!("round {round}, mode {}", mode.name()))?;
            let v = &m.metrics;
            eprintln!(
                " {:>6.2} Gbit/s, {:>6.2} Gbit/s x4, {:>8.0} rr/s (p50 {:.1} µs, p99 {:.1} µs), {:>7.1} kpps, {:>5.2} CPU s/GB, {:>6.0} B/frame  ({:.0} s)",
                v[&Metric::Tcp1],
                v[&Metric::Tcp4],
                v[&Metric::Rr],
                v[&Metric::RrP50],
                v[&Metric::RrP99],
                v[&Metric::Udp64],
                v[&Metric::CpuPerGb],
                v[&Metric::UnderlayFrame],
                t.elapsed().as_secs_f64()
            );
            if let Some(st) = m.nic {
                nic.entry(mode).or_insert(st);
            }
            for (k, v) in m.metrics {
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
    eprintln!(
        "bench: total {:.0} s ({:.1} min)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() / 60.0
    );
    let report = Report {
        opts: opts.clone(),
        rounds,
        secs,
        samples,
        nic: opts.nic_like.then_some(nic),
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
        std::fs::write(docs.join(report.svg_name()), report.svg())?;
        write_section(&docs.join("benchmarks.md"), opts.nic_like, &md)?;
        eprintln!(
            "bench: docs/benchmarks.md and docs/{} updated",
            report.svg_name()
        );
    }
    Ok(())
}

/// What one lab gave.
struct Measured {
    metrics: BTreeMap<Metric, f64>,
    /// With `--nic-like`: per host, the features read back as off.
    nic: Option<Vec<FeatureState>>,
}

/// One lab, one mode, every metric.
fn measure_mode(mode: Mode, bins: &Binaries, dur: Duration, nic_like: bool) -> Result<Measured> {
    let mut lab = Lab::new(LabSpec {
        hosts: 2,
        containers_per_host: match mode {
            Mode::Host | Mode::DockerOverlay => 0,
            _ => 1,
        },
        docker: mode == Mode::DockerOverlay,
        ..Default::default()
    })?;
    // Before anything runs on the underlay, in every mode alike.
    let nic = if nic_like {
        Some(underlay::nic_like(&lab)?)
    } else {
        None
    };
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    // Dropped before the lab (declared after it): agents, dockerds.
    let mut _agents = Vec::new();
    let mut _docker = None;
    let (client_ns, server_ns, target): (String, String, Ipv4Addr) = match mode {
        Mode::Host => (h1.ns.clone(), h2.ns.clone(), h2.underlay_ip),
        Mode::DockerOverlay => {
            let pair = docker_overlay::setup(&lab)?;
            let r = (
                pair.client_ns.clone(),
                pair.server_ns.clone(),
                pair.server_ip,
            );
            _docker = Some(pair);
            r
        }
        Mode::EbpfNet | Mode::KernelNet => {
            let dp = if mode == Mode::EbpfNet {
                "ebpf"
            } else {
                "kernel"
            };
            netmode::setup(&mut lab, dp)?
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
            let (c, s) = (lab.container(1, 1), lab.container(2, 1));
            (c.ns.clone(), s.ns.clone(), s.ip)
        }
        Mode::Iptables => {
            let server = lab.container(2, 1).clone();
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
            (lab.container(1, 1).ns.clone(), server.ns, h2.underlay_ip)
        }
        _ => {
            let opts = mode.agent().expect("overlay mode");
            if mode == Mode::EbpfXdpDecap {
                // GRO is off by default on veth (on by default on NICs).
                for h in [&h1, &h2] {
                    exec_ok(&h.ns, &["ethtool", "-K", "eth1", "gro", "on"])?;
                }
            }
            if mode == Mode::EbpfDeliverVeth {
                // GRO (and with it NAPI) on the container side of each veth;
                // veth uses it only for skbs from a device without TSO.
                let (client, server) = (lab.container(1, 1).clone(), lab.container(2, 1).clone());
                for (c, h) in [(&client, &h1), (&server, &h2)] {
                    exec_ok(&c.ns, &["ethtool", "-K", &c.iface, "gro", "on"])?;
                    exec_ok(&h.ns, &["ethtool", "-K", &c.host_veth, "tso", "off"])?;
                }
            }
            for h in 1..=2 {
                _agents.push(Overlayd::start(&lab, h, bins, &opts)?);
            }
            for a in &_agents {
                a.add_lab_peers(&lab)?;
            }
            if mode == Mode::EbpfMacvlan {
                macvlan::setup(&mut lab, &_agents)?
            } else {
                let (c, s) = (lab.container(1, 1), lab.container(2, 1));
                (c.ns.clone(), s.ns.clone(), s.ip)
            }
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
    let rx0 = underlay::rx_counters(&h2.ns, &h2.underlay_if)?;
    let cpu0 = cpu_busy_seconds()?;
    let (gbps1, bytes1) = iperf_tcp(&client_ns, target, 1, dur)?;
    let cpu = cpu_busy_seconds()? - cpu0;
    let rx1 = underlay::rx_counters(&h2.ns, &h2.underlay_if)?;
    m.insert(Metric::Tcp1, gbps1);
    m.insert(Metric::CpuPerGb, cpu / (bytes1 / 1e9));
    m.insert(
        Metric::UnderlayFrame,
        (rx1.0 - rx0.0) as f64 / (rx1.1 - rx0.1).max(1) as f64,
    );
    m.insert(Metric::Tcp4, iperf_tcp(&client_ns, target, 4, dur)?.0);
    m.insert(Metric::Udp64, iperf_udp64(&client_ns, target, dur)? / 1e3);
    let rr = tcp_rr_stats(
        &client_ns,
        &server_ns,
        RR_PORT,
        SocketAddr::from((target, RR_PORT)),
        dur,
    )?;
    m.insert(Metric::Rr, rr.tps);
    m.insert(Metric::RrP50, rr.p50_us);
    m.insert(Metric::RrP99, rr.p99_us);
    Ok(Measured { metrics: m, nic })
}
