//! The report: markdown for docs/benchmarks.md, JSON, and the SVG chart.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use super::measure::median;
use super::{Metric, Mode, Opts, Samples};

pub(super) struct Report {
    pub(super) opts: Opts,
    pub(super) rounds: u32,
    pub(super) secs: u32,
    pub(super) samples: Samples,
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

    pub(super) fn markdown(&self) -> String {
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
                (
                    "xdp_underlay_decap_ns",
                    "ovl_xdp_underlay",
                    "VXLAN to an endpoint, xdp = \"decap\": decapsulate",
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

    pub(super) fn json(&self) -> serde_json::Value {
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
    pub(super) fn svg(&self) -> String {
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

pub(super) fn fmt_num(m: Metric, v: f64) -> String {
    match m {
        Metric::Rr => format!("{v:.0}"),
        Metric::Udp64 => format!("{v:.0}"),
        _ => format!("{v:.2}"),
    }
}

/// Replaces the generated part of docs/benchmarks.md, keeping other sections.
pub(super) fn write_section(path: &Path, body: &str) -> Result<()> {
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
