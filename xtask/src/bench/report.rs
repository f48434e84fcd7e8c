//! The report: markdown for docs/benchmarks.md, JSON, and the SVG chart.

use std::fmt::Write as _;
use std::time::Duration;

use super::measure::median;
use super::underlay::NIC_LIKE_FEATURES;
use super::{Metric, Mode, NicStates, Opts, Samples};

/// The modes other modes are compared with, each in a ratio table of its own.
const BASES: [Mode; 4] = [Mode::Host, Mode::Plain, Mode::Kernel, Mode::DockerOverlay];

pub(super) struct Report {
    pub(super) opts: Opts,
    pub(super) rounds: u32,
    pub(super) secs: u32,
    pub(super) samples: Samples,
    /// With `--nic-like`: what `ethtool -K` turned off, per mode and host.
    pub(super) nic: Option<NicStates>,
    pub(super) peer_add: Option<Vec<f64>>,
    pub(super) progbench: Option<serde_json::Value>,
    pub(super) elapsed: Duration,
}

impl Report {
    fn med(&self, mode: Mode, metric: Metric) -> Option<f64> {
        self.samples.get(&mode)?.get(&metric).map(|v| median(v))
    }

    fn ratio(&self, mode: Mode, base: Mode, metric: Metric) -> Option<f64> {
        let (a, b) = (self.med(mode, metric)?, self.med(base, metric)?);
        (b > 0.0).then(|| a / b)
    }

    /// The chart's file name in docs/.
    pub(super) fn svg_name(&self) -> &'static str {
        if self.nic.is_some() {
            "benchmarks-nic-like.svg"
        } else {
            "benchmarks.svg"
        }
    }

    /// The first of host to host and plain routing that was measured: the chart's 1.0.
    fn chart_base(&self) -> Mode {
        if self.samples.contains_key(&Mode::Host) {
            Mode::Host
        } else {
            Mode::Plain
        }
    }

    /// One sentence on the NIC-like underlay: what was set, and where not.
    fn nic_summary(&self) -> Option<String> {
        let nic = self.nic.as_ref()?;
        let cmd = format!(
            "ethtool -K eth1 {}",
            NIC_LIKE_FEATURES.map(|(f, _)| format!("{f} off")).join(" ")
        );
        let mut off_everywhere = Vec::new();
        let mut not_off = Vec::new();
        for (i, (feature, _)) in NIC_LIKE_FEATURES.iter().enumerate() {
            let missing: Vec<String> = nic
                .iter()
                .flat_map(|(mode, hosts)| {
                    hosts
                        .iter()
                        .enumerate()
                        .filter(move |(_, st)| !st.get(i).is_some_and(|(_, off)| *off))
                        .map(move |(h, _)| format!("{} host {}", mode.name(), h + 1))
                })
                .collect();
            if missing.is_empty() {
                off_everywhere.push(format!("`{feature}`"));
            } else {
                not_off.push(format!("`{feature}` still on in {}", missing.join(", ")));
            }
        }
        let mut s = format!(
            "Underlay: NIC-like: `{cmd}` in both hosts of every mode's lab, before anything else runs, so that receivers see MTU-sized frames instead of 64 KB GSO packets; and GRO on as on a NIC: `ethtool -K eth1 gro on`, with `tso off` on the bridge's port facing it (veth runs its NAPI, where GRO happens, only for frames from a peer without TSO). Read back with `ethtool -k`: off on every host in every mode: {}.",
            if off_everywhere.is_empty() {
                "none".to_string()
            } else {
                off_everywhere.join(", ")
            }
        );
        if !not_off.is_empty() {
            let _ = write!(s, " Could not be turned off: {}.", not_off.join("; "));
        }
        Some(s)
    }

    pub(super) fn markdown(&self) -> String {
        let mut s = String::new();
        if self.nic.is_some() {
            let _ = writeln!(
                s,
                "## Dataplane comparison, NIC-like underlay (segmentation offloads off)\n"
            );
        } else {
            let _ = writeln!(s, "## Dataplane comparison\n");
        }
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
        let _ = writeln!(s, "Topology: two lab hosts (network namespaces on one machine, veth underlay through a bridge, MTU 1500), one client container on host 1, one server container on host 2 (MTU 1450); in mode `host` the two hosts' namespaces themselves, over the underlay. iperf3 for TCP and UDP; TCP_RR is a 1-byte TCP request/response loop, one transaction in flight, each transaction timed (p50 and p99 of its round trip); /proc/stat for CPU (both hosts share the machine); the frame size is host 2's `eth1` received bytes over frames during the 1-stream TCP run.\n");
        if let Some(nic) = self.nic_summary() {
            let _ = writeln!(s, "{nic}\n");
        }
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
        for base in BASES {
            if !self.samples.contains_key(&base) {
                continue;
            }
            let _ = writeln!(
                s,
                "\nRatio to {} (higher is better; for latency and CPU, lower):\n",
                base.describe()
            );
            let _ = writeln!(
                s,
                "| mode | {} |",
                Metric::RATIOS.map(|m| m.header()).join(" | ")
            );
            let _ = writeln!(s, "|---|{}", "---:|".repeat(Metric::RATIOS.len()));
            for &m in &modes {
                let cells: Vec<String> = Metric::RATIOS
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
        if let Some(net) = self
            .progbench
            .as_ref()
            .map(|pb| &pb["net"])
            .filter(|n| n.is_object())
        {
            let _ = writeln!(s, "\nOverlay networks, per packet in BPF_PROG_TEST_RUN (same method, with the peers and endpoints above loaded):\n");
            let _ = writeln!(s, "| program | packet | ns |");
            let _ = writeln!(s, "|---|---|---:|");
            for (key, prog, pkt) in [
                (
                    "from_net_container_encap_ns",
                    "ovl_from_net_container",
                    "TCP to a remote endpoint: encapsulate (network VNI)",
                ),
                (
                    "from_net_container_local_ns",
                    "ovl_from_net_container",
                    "TCP to a local endpoint: bpf_redirect_peer",
                ),
                (
                    "from_net_container_arp_ns",
                    "ovl_from_net_container",
                    "ARP request for an endpoint: reply in place",
                ),
                (
                    "from_underlay_net_decap_ns",
                    "ovl_from_underlay",
                    "VXLAN of a network to a local endpoint: decapsulate",
                ),
            ] {
                let _ = writeln!(
                    s,
                    "| {prog} | {pkt} | {:.1} |",
                    net[key].as_f64().unwrap_or(f64::NAN)
                );
            }
        }
        if let Some(pb) = &self.progbench {
            let _ = writeln!(s, "\nPer-packet cost in BPF_PROG_TEST_RUN ({} single runs per program and state, in batches of 500 paired with as many runs of the empty program, whose time (the test runner's own) is subtracted; the median over the pairs that ran while the machine was in its fast state, see overlay-user/examples/progbench.rs):\n", pb["runs"]);
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
                    "TCP to a peer: encapsulate (`bpf_skb_adjust_room`: TCP's skbs are clones)",
                ),
                (
                    "from_container_encap_udp_ns",
                    "ovl_from_container",
                    "UDP to a peer: encapsulate (`bpf_skb_change_head`, `encap_resize = \"head\"`)",
                ),
                (
                    "from_container_pass_ns",
                    "ovl_from_container",
                    "TCP to the same host: pass",
                ),
                (
                    "from_underlay_decap_ns",
                    "ovl_from_underlay",
                    if pb["decap_two_step"].as_bool() == Some(true) {
                        "VXLAN to an endpoint: decapsulate (two-step resize, as `decap_resize = \"auto\"` timed it on this CPU)"
                    } else {
                        "VXLAN to an endpoint: decapsulate (one-step resize, as `decap_resize = \"auto\"` timed it on this CPU)"
                    },
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
                (
                    "xdp_underlay_decap_ns",
                    "ovl_xdp_underlay",
                    "VXLAN to an endpoint, xdp = \"decap\": decapsulate",
                ),
                (
                    "adjust_room_grow_ns",
                    "ovl_bench_adjust_grow",
                    "`bpf_skb_adjust_room(+50)` alone (encapsulation's)",
                ),
                (
                    "push_head_ns",
                    "ovl_bench_push_head",
                    "`bpf_skb_change_head(50)` alone (encapsulation's, `encap_resize = \"head\"`, unsegmented packets other than TCP)",
                ),
                (
                    "adjust_room_shrink_ns",
                    "ovl_bench_adjust_shrink",
                    "`bpf_skb_adjust_room(-50)` alone (one-step decapsulation's)",
                ),
                (
                    "adjust_room_two_step_ns",
                    "ovl_bench_adjust_two_step",
                    "`bpf_skb_adjust_room(+14)`, `(-64)` alone (two-step decapsulation's)",
                ),
            ] {
                let _ = writeln!(
                    s,
                    "| {prog} | {pkt} | {:.1} | {:.1} |",
                    pb["empty"][key].as_f64().unwrap_or(f64::NAN),
                    pb["loaded"][key].as_f64().unwrap_or(f64::NAN)
                );
            }
            if let Some(slow) = pb["slow"].as_array().filter(|v| !v.is_empty()) {
                let _ = writeln!(
                    s,
                    "\nThe machine was slow all the while these ran (their figures come from their own fastest pairs): {}.",
                    slow.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
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
        let _ = writeln!(
            s,
            "\n![ratios to {}]({})",
            self.chart_base().name(),
            self.svg_name()
        );
        s
    }

    pub(super) fn json(&self) -> serde_json::Value {
        let mut modes = serde_json::Map::new();
        for (mode, metrics) in &self.samples {
            let mut o = serde_json::Map::new();
            for (k, v) in metrics {
                let mut e = serde_json::json!({ "median": median(v), "samples": v });
                if Metric::RATIOS.contains(k) {
                    for base in BASES {
                        e[format!("ratio_to_{}", base.name().replace('-', "_"))] =
                            serde_json::json!(self.ratio(*mode, base, *k));
                    }
                }
                o.insert(k.name().into(), e);
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
            "elapsed_s": self.elapsed.as_secs_f64(),
            "nic_like": self.nic.as_ref().map(|nic| {
                nic.iter()
                    .map(|(mode, hosts)| {
                        let hosts: Vec<serde_json::Value> = hosts
                            .iter()
                            .map(|st| {
                                st.iter()
                                    .map(|(f, off)| (f.clone(), serde_json::Value::Bool(*off)))
                                    .collect::<serde_json::Map<_, _>>()
                                    .into()
                            })
                            .collect();
                        (mode.name().to_string(), serde_json::Value::from(hosts))
                    })
                    .collect::<serde_json::Map<_, _>>()
            }),
            "modes": modes,
            "peer_add_to_first_packet_ms": self.peer_add,
            "progbench": self.progbench,
        })
    }

    /// Grouped horizontal bars: per metric, each mode's ratio to host to
    /// host (or to plain routing when `host` was not measured).
    pub(super) fn svg(&self) -> String {
        let base = self.chart_base();
        let modes: Vec<Mode> = self
            .samples
            .keys()
            .copied()
            .filter(|m| *m != base)
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
<text x="10" y="22" font-size="15" font-weight="bold">Throughput and rate relative to {} (1.0; higher is better){}</text>
"#,
            base.name(),
            if self.nic.is_some() {
                ", NIC-like underlay"
            } else {
                ""
            }
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
                let r = self.ratio(m, base, metric).unwrap_or(0.0);
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
            r#"<line x1="{x1}" y1="{top}" x2="{x1}" y2="{}" stroke="black" stroke-dasharray="4 3"/><text x="{x1}" y="{}" text-anchor="middle">1.0 = {}</text>"#,
            y,
            y + 16.0,
            base.name()
        );
        s.push_str("</svg>\n");
        s
    }
}

pub(super) fn fmt_num(m: Metric, v: f64) -> String {
    match m {
        Metric::Rr => format!("{v:.0}"),
        Metric::Udp64 | Metric::UnderlayFrame => format!("{v:.0}"),
        Metric::RrP50 | Metric::RrP99 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

pub(super) fn uname_r() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

pub(super) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_string()
}

pub(super) fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

pub(super) fn now_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
