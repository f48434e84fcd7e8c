//! `cargo xtask bench`: the BPF dataplane against plain routing (the limit),
//! Docker's bridge with iptables port mapping, and the kernel VXLAN device,
//! on the same two-host lab; modes interleaved over rounds, medians and
//! ratios reported as markdown, JSON and an SVG chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use overlay_lab::{exec_ok, tcp_rr, AgentOptions, Binaries, Lab, LabSpec, Overlayd};

/// Ports the server container listens on.
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
}

impl Mode {
    const ALL: [Mode; 8] = [
        Mode::Plain,
        Mode::Iptables,
        Mode::Kernel,
        Mode::Ebpf,
        Mode::EbpfXdpGeneric,
        Mode::EbpfXdpNative,
        Mode::EbpfBridge,
        Mode::EbpfEncapDevice,
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
            Mode::Plain | Mode::Iptables => None,
            Mode::Kernel => Some(o("kernel", None, None)),
            Mode::Ebpf => Some(o("ebpf", None, None)),
            Mode::EbpfXdpGeneric => Some(o("ebpf", Some("generic"), None)),
            Mode::EbpfXdpNative => Some(o("ebpf", Some("native"), None)),
            Mode::EbpfBridge => Some(o("ebpf", None, Some("bridge"))),
            Mode::EbpfEncapDevice => Some(AgentOptions {
                extra: "encap = \"device\"\n".into(),
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
    let lab = Lab::new(LabSpec {
        hosts: 2,
        containers_per_host: 1,
        ..Default::default()
    })?;
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    let (client, server) = (lab.container(1, 1).clone(), lab.container(2, 1).clone());
    let mut _agents = Vec::new();
    let target: Ipv4Addr = match mode {
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
    let p = overlay_lab::ping(&client.ns, target, 3, None, false, 2)?;
    if p.received == 0 {
        bail!("{}: client cannot reach {target}", mode.name());
    }
    let _iperf = lab.spawn(
        &server.ns,
        &["iperf3", "-s", "-p", &IPERF_PORT.to_string()],
        "iperf3-server.log",
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let mut m = BTreeMap::new();
    let cpu0 = cpu_busy_seconds()?;
    let (gbps1, bytes1) = iperf_tcp(&client.ns, target, 1, dur)?;
    let cpu = cpu_busy_seconds()? - cpu0;
    m.insert(Metric::Tcp1, gbps1);
    m.insert(Metric::CpuPerGb, cpu / (bytes1 / 1e9));
    m.insert(Metric::Tcp4, iperf_tcp(&client.ns, target, 4, dur)?.0);
    m.insert(Metric::Udp64, iperf_udp64(&client.ns, target, dur)? / 1e3);
    m.insert(
        Metric::Rr,
        tcp_rr(
            &client.ns,
            &server.ns,
            RR_PORT,
            SocketAddr::from((target, RR_PORT)),
            dur,
        )?,
    );
    Ok(m)
}

fn iperf_json(ns: &str, args: &[&str]) -> Result<serde_json::Value> {
    let out = exec_ok(ns, args)?;
    serde_json::from_str(&out).with_context(|| format!("iperf3 output: {out}"))
}

/// (Gbit/s received, bytes received) of a TCP run with `streams` streams.
fn iperf_tcp(ns: &str, target: Ipv4Addr, streams: u32, dur: Duration) -> Result<(f64, f64)> {
    let v = iperf_json(
        ns,
        &[
            "iperf3",
            "-c",
            &target.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
            "-J",
            "-t",
            &dur.as_secs().to_string(),
            "-P",
            &streams.to_string(),
        ],
    )?;
    let r = &v["end"]["sum_received"];
    Ok((
        r["bits_per_second"].as_f64().context("no sum_received")? / 1e9,
        r["bytes"].as_f64().context("no bytes")?,
    ))
}

/// Received packets per second of 64-byte UDP datagrams sent as fast as possible.
fn iperf_udp64(ns: &str, target: Ipv4Addr, dur: Duration) -> Result<f64> {
    let v = iperf_json(
        ns,
        &[
            "iperf3",
            "-c",
            &target.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
            "-J",
            "-u",
            "-b",
            "0",
            "-l",
            "64",
            "-t",
            &dur.as_secs().to_string(),
        ],
    )?;
    let s = &v["end"]["sum"];
    let packets = s["packets"].as_f64().context("no packets")?;
    let lost = s["lost_packets"].as_f64().unwrap_or(0.0);
    let secs = s["seconds"].as_f64().context("no seconds")?;
    Ok((packets - lost) / secs)
}

/// Busy CPU time of the whole machine (all hosts of the lab share its kernel).
fn cpu_busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
    let busy: f64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .take(8)
        .sum();
    let hz = 100.0; // USER_HZ
    Ok(busy / hz)
}

/// Milliseconds from running `overlayctl peer add` to the first packet of a
/// running stream arriving at the peer's container; median of `trials`.
fn peer_add_latency(bins: &Binaries, trials: u32) -> Result<Vec<f64>> {
    use std::net::UdpSocket;
    use std::sync::atomic::{AtomicBool, Ordering};
    let lab = Lab::new(LabSpec {
        hosts: 2,
        containers_per_host: 1,
        ..Default::default()
    })?;
    let agents: Vec<Overlayd> = (1..=2)
        .map(|h| Overlayd::start(&lab, h, bins, &AgentOptions::default()))
        .collect::<Result<_>>()?;
    let (client, server) = (lab.container(1, 1).clone(), lab.container(2, 1).clone());
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    agents[1].ctl_ok(&["peer", "add", &h1.subnet, &h1.underlay_ip.to_string()])?;
    let mut results = Vec::new();
    for _ in 0..trials {
        let rx = overlay_lab::run_in_netns(&server.ns, || UdpSocket::bind("0.0.0.0:9999"))??;
        rx.set_read_timeout(Some(Duration::from_secs(3)))?;
        let tx = overlay_lab::run_in_netns(&client.ns, || UdpSocket::bind("0.0.0.0:0"))??;
        let stop = AtomicBool::new(false);
        let got = std::thread::scope(|s| -> Result<Duration> {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let _ = tx.send_to(b"x", (server.ip, 9999));
                    std::thread::sleep(Duration::from_micros(100));
                }
            });
            std::thread::sleep(Duration::from_millis(100));
            let t0 = Instant::now();
            let add = agents[0].ctl_ok(&["peer", "add", &h2.subnet, &h2.underlay_ip.to_string()]);
            let mut b = [0u8; 16];
            let r = rx.recv_from(&mut b).map(|_| t0.elapsed());
            stop.store(true, Ordering::Relaxed);
            add?;
            r.context("no packet within 3 s of peer add")
        })?;
        results.push(got.as_secs_f64() * 1e3);
        agents[0].ctl_ok(&["peer", "del", &h2.subnet])?;
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(results)
}

fn progbench(runs: u32) -> Result<serde_json::Value> {
    let root = crate::root();
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .args([
                "build",
                "--release",
                "-q",
                "-p",
                "overlay-user",
                "--example",
                "progbench",
            ])
            .status()?;
    if !status.success() {
        bail!("building progbench failed");
    }
    let out = std::process::Command::new(root.join("target/release/examples/progbench"))
        .args(["--runs", &runs.to_string()])
        .output()?;
    if !out.status.success() {
        bail!("progbench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

struct Report {
    opts: Opts,
    rounds: u32,
    secs: u32,
    samples: Samples,
    peer_add: Option<Vec<f64>>,
    progbench: Option<serde_json::Value>,
    elapsed: Duration,
}

impl Report {
    fn med(&self, mode: Mode, metric: Metric) -> Option<f64> {
        self.samples.get(&mode)?.get(&metric).map(|v| median(v))
    }

    fn ratio(&self, mode: Mode, base: Mode, metric: Metric) -> Option<f64> {
        let (a, b) = (self.med(mode, metric)?, self.med(base, metric)?);
        (b > 0.0).then(|| a / b)
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "Command: `{}`  ", self.opts.command);
        let _ = writeln!(s, "Date: {}  ", now_utc());
        let _ = writeln!(s, "Kernel: {}  ", uname_r());
        let _ = writeln!(s, "CPU: {} ({} cores)  ", cpu_model(), num_cpus());
        let _ = writeln!(
            s,
            "Rounds: {} (modes interleaved: A B C D, A B C D, ...), {} s per measurement, medians; run took {:.0} s.\n",
            self.rounds,
            self.secs,
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(s, "Topology: two lab hosts (network namespaces on one machine, veth underlay through a bridge, MTU 1500), one client container on host 1, one server container on host 2 (MTU 1450). iperf3 for TCP and UDP, a 1-byte TCP request/response loop for TCP_RR, /proc/stat for CPU (both hosts share the machine).\n");
        let modes: Vec<Mode> = self.samples.keys().copied().collect();
        let _ = writeln!(
            s,
            "| mode | {} |",
            Metric::ALL.map(|m| m.header()).join(" | ")
        );
        let _ = writeln!(s, "|---|{}", "---:|".repeat(Metric::ALL.len()));
        for &m in &modes {
            let cells: Vec<String> = Metric::ALL
                .iter()
                .map(|&k| self.med(m, k).map_or("-".into(), |v| fmt_num(k, v)))
                .collect();
            let _ = writeln!(s, "| {} | {} |", m.name(), cells.join(" | "));
        }
        for base in [Mode::Plain, Mode::Kernel] {
            if !self.samples.contains_key(&base) {
                continue;
            }
            let _ = writeln!(
                s,
                "\nRatio to {} (higher is better; for CPU, lower):\n",
                base.describe()
            );
            let _ = writeln!(
                s,
                "| mode | {} |",
                Metric::ALL.map(|m| m.header()).join(" | ")
            );
            let _ = writeln!(s, "|---|{}", "---:|".repeat(Metric::ALL.len()));
            for &m in &modes {
                let cells: Vec<String> = Metric::ALL
                    .iter()
                    .map(|&k| {
                        self.ratio(m, base, k)
                            .map_or("-".into(), |r| format!("{r:.2}"))
                    })
                    .collect();
                let _ = writeln!(s, "| {} | {} |", m.name(), cells.join(" | "));
            }
        }
        let _ = writeln!(s, "\nModes:\n");
        for &m in &modes {
            let _ = writeln!(s, "- `{}`: {}", m.name(), m.describe());
        }
        if let Some(p) = &self.peer_add {
            let _ = writeln!(
                s,
                "\nPeer add to first packet delivered (a UDP stream every 100 µs already running; `overlayctl peer add` process start included): median {:.2} ms, all {:?} ms.",
                median(p),
                p.iter().map(|x| (x * 100.0).round() / 100.0).collect::<Vec<_>>()
            );
        }
        if let Some(pb) = &self.progbench {
            let _ = writeln!(s, "\nPer-packet cost in BPF_PROG_TEST_RUN ({} runs per program and state; the test runner's own cost, measured with empty programs, subtracted; lowest mean of batches of 10,000):\n", pb["runs"]);
            let _ = writeln!(
                s,
                "| program | packet | empty maps (ns) | {} peers, {} endpoints (ns) |",
                pb["peers"], pb["endpoints"]
            );
            let _ = writeln!(s, "|---|---|---:|---:|");
            for (key, prog, pkt) in [
                (
                    "from_container_encap_ns",
                    "ovl_from_container",
                    "TCP to a peer: encapsulate",
                ),
                (
                    "from_container_pass_ns",
                    "ovl_from_container",
                    "TCP to the same host: pass",
                ),
                (
                    "from_underlay_decap_ns",
                    "ovl_from_underlay",
                    "VXLAN to an endpoint: decapsulate",
                ),
                (
                    "xdp_underlay_vxlan_ns",
                    "ovl_xdp_underlay",
                    "VXLAN from a peer: pass",
                ),
                (
                    "xdp_underlay_vxlan_repeat_ns",
                    "ovl_xdp_underlay",
                    "same, one run with repeat = runs",
                ),
            ] {
                let _ = writeln!(
                    s,
                    "| {prog} | {pkt} | {:.1} | {:.1} |",
                    pb["empty"][key].as_f64().unwrap_or(f64::NAN),
                    pb["loaded"][key].as_f64().unwrap_or(f64::NAN)
                );
            }
            let _ = writeln!(
                s,
                "\nLoading {} peers took {:.1} ms, {} endpoints {:.1} ms.",
                pb["peers"],
                pb["load_peers_ms"].as_f64().unwrap_or(f64::NAN),
                pb["endpoints"],
                pb["load_endpoints_ms"].as_f64().unwrap_or(f64::NAN)
            );
        }
        let _ = writeln!(s, "\n![ratios to plain routing](benchmarks.svg)");
        s
    }

    fn json(&self) -> serde_json::Value {
        let mut modes = serde_json::Map::new();
        for (mode, metrics) in &self.samples {
            let mut o = serde_json::Map::new();
            for (k, v) in metrics {
                o.insert(
                    k.name().into(),
                    serde_json::json!({ "median": median(v), "samples": v,
                        "ratio_to_plain": self.ratio(*mode, Mode::Plain, *k),
                        "ratio_to_kernel": self.ratio(*mode, Mode::Kernel, *k) }),
                );
            }
            modes.insert(mode.name().into(), o.into());
        }
        serde_json::json!({
            "command": self.opts.command,
            "date": now_utc(),
            "kernel": uname_r(),
            "cpu": cpu_model(),
            "rounds": self.rounds,
            "seconds": self.secs,
            "modes": modes,
            "peer_add_to_first_packet_ms": self.peer_add,
            "progbench": self.progbench,
        })
    }

    /// Grouped horizontal bars: per metric, each mode's ratio to plain routing.
    fn svg(&self) -> String {
        let modes: Vec<Mode> = self
            .samples
            .keys()
            .copied()
            .filter(|m| *m != Mode::Plain)
            .collect();
        let metrics = [Metric::Tcp1, Metric::Tcp4, Metric::Rr, Metric::Udp64];
        let colors = [
            "#888888", "#d98c00", "#1f77b4", "#2ca02c", "#17becf", "#9467bd", "#8c564b",
        ];
        let bar = 16.0;
        let gap = 14.0;
        let left = 190.0;
        let scale = 320.0; // pixels per 1.0
        let group_h = modes.len() as f64 * bar + gap;
        let top = 50.0;
        let height = top + metrics.len() as f64 * (group_h + 22.0) + 40.0;
        let width = left + scale * 1.5 + 80.0;
        let mut s = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="22" font-size="15" font-weight="bold">Throughput and rate relative to plain routing (1.0 = the limit; higher is better)</text>
"#
        );
        let mut y = top;
        for metric in metrics {
            let _ = writeln!(
                s,
                r#"<text x="10" y="{}" font-weight="bold">{}</text>"#,
                y + 12.0,
                metric.header()
            );
            y += 18.0;
            for &m in &modes {
                let r = self.ratio(m, Mode::Plain, metric).unwrap_or(0.0);
                let w = (r.min(1.5) * scale).max(1.0);
                let color =
                    colors[(Mode::ALL.iter().position(|x| *x == m).unwrap_or(0)) % colors.len()];
                let _ = writeln!(
                    s,
                    r#"<text x="{}" y="{}" text-anchor="end">{}</text><rect x="{left}" y="{}" width="{w:.1}" height="{}" fill="{color}"/><text x="{}" y="{}">{r:.2}</text>"#,
                    left - 6.0,
                    y + bar - 4.0,
                    m.name(),
                    y + 1.0,
                    bar - 2.0,
                    left + w + 4.0,
                    y + bar - 4.0
                );
                y += bar;
            }
            y += gap;
        }
        let x1 = left + scale;
        let _ = writeln!(
            s,
            r#"<line x1="{x1}" y1="{top}" x2="{x1}" y2="{}" stroke="black" stroke-dasharray="4 3"/><text x="{x1}" y="{}" text-anchor="middle">1.0 = plain routing</text>"#,
            y,
            y + 16.0
        );
        s.push_str("</svg>\n");
        s
    }
}

fn fmt_num(m: Metric, v: f64) -> String {
    match m {
        Metric::Rr => format!("{v:.0}"),
        Metric::Udp64 => format!("{v:.0}"),
        _ => format!("{v:.2}"),
    }
}

/// Replaces the generated part of docs/benchmarks.md, keeping other sections.
fn write_section(path: &Path, body: &str) -> Result<()> {
    const START: &str = "<!-- cargo xtask bench: start (generated, do not edit) -->";
    const END: &str = "<!-- cargo xtask bench: end -->";
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let section = format!("{START}\n## Dataplane comparison\n\n{body}\n{END}");
    let new = match (old.find(START), old.find(END)) {
        (Some(a), Some(b)) if b > a => format!("{}{}{}", &old[..a], section, &old[b + END.len()..]),
        _ => {
            let mut lines = old.splitn(2, '\n');
            let head = lines.next().unwrap_or("# Benchmarks");
            let rest = lines.next().unwrap_or("");
            format!("{head}\n\n{section}\n{rest}")
        }
    };
    std::fs::write(path, new)?;
    Ok(())
}

fn uname_r() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_string()
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn now_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
