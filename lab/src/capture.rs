//! Packet capture with tcpdump and decoding with tshark.

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::netns::check_output;
use crate::process::Proc;
use crate::Lab;

/// How long [`Lab::capture`] waits for tcpdump to report "listening on".
pub const CAPTURE_START_TIMEOUT: Duration = Duration::from_secs(10);
/// The IANA VXLAN port.
pub const VXLAN_PORT: u16 = 4789;

/// A running tcpdump. Stop it with [`Capture::finish`]; dropping it just
/// stops tcpdump (the pcap file stays in [`Lab::dir`] until the lab drops).
#[derive(Debug)]
pub struct Capture {
    proc: Proc,
    pcap: PathBuf,
    stderr_reader: Option<JoinHandle<()>>,
}

impl Lab {
    /// Start `tcpdump -i IFACE -n -U --immediate-mode -w FILE [-c max_packets] FILTER` in
    /// namespace `ns` (via `ip netns exec`), writing to a fresh pcap file in
    /// [`Lab::dir`]. Returns once tcpdump reports "listening on", i.e. when
    /// the capture is really running. `filter` is a pcap filter expression
    /// (may be empty). tcpdump's stderr goes to a `.log` file next to the pcap.
    pub fn capture(
        &self,
        ns: &str,
        iface: &str,
        filter: &str,
        max_packets: Option<u32>,
    ) -> Result<Capture> {
        let pcap = self.unique_path(&format!("{ns}-{iface}"), "pcap");
        let log_path = pcap.with_extension("log");
        let mut log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;

        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "tcpdump", "-i", iface, "-n", "-U"])
            // Without immediate mode TPACKET_V3 holds packets in a ring block
            // for up to a second, and a stop right after traffic loses them.
            .arg("--immediate-mode")
            // Keep root: Debian's tcpdump may otherwise drop to user tcpdump,
            // which could not write into the lab dir.
            .args(["-Z", "root", "-w"])
            .arg(&pcap);
        if let Some(n) = max_packets {
            cmd.arg("-c").arg(n.to_string());
        }
        if !filter.trim().is_empty() {
            cmd.arg(filter);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting tcpdump on {ns}/{iface}"))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let pid = child.id();
        let slot = Arc::new(Mutex::new(child));
        self.track(slot.clone());
        let proc = Proc {
            slot,
            pid,
            log_path,
            ns: ns.to_string(),
        };

        let (tx, rx) = mpsc::channel::<()>();
        let stderr_reader = std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                let _ = log.flush();
                if line.contains("listening on") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        let mut capture = Capture {
            proc,
            pcap,
            stderr_reader: Some(stderr_reader),
        };
        match rx.recv_timeout(CAPTURE_START_TIMEOUT) {
            Ok(()) => Ok(capture),
            Err(_) => {
                let _ = capture.proc.kill();
                if let Some(t) = capture.stderr_reader.take() {
                    let _ = t.join();
                }
                bail!(
                    "tcpdump on {ns}/{iface} (filter {filter:?}) did not start; log:\n{}",
                    capture.proc.log()
                )
            }
        }
    }
}

impl Capture {
    /// Path of the pcap file being written.
    pub fn pcap_path(&self) -> &Path {
        &self.pcap
    }

    /// tcpdump's stderr log.
    pub fn log_path(&self) -> &Path {
        self.proc.log_path()
    }

    /// tcpdump's process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Give tcpdump 200 ms to write what it has seen, stop it (SIGINT, which
    /// flushes) and return the pcap path.
    pub fn finish(mut self) -> Result<PathBuf> {
        if self.proc.is_running() {
            std::thread::sleep(Duration::from_millis(200));
        }
        self.stop()
    }

    /// Wait up to `timeout` for tcpdump to exit by itself (after
    /// `max_packets`), then stop it anyway and return the pcap path.
    pub fn finish_after(mut self, timeout: Duration) -> Result<PathBuf> {
        self.proc.wait_timeout(timeout)?;
        self.stop()
    }

    fn stop(&mut self) -> Result<PathBuf> {
        self.proc.stop_with(libc::SIGINT)?;
        if let Some(t) = self.stderr_reader.take() {
            let _ = t.join();
        }
        ensure!(
            self.pcap.exists(),
            "tcpdump wrote no {}; log:\n{}",
            self.pcap.display(),
            self.proc.log()
        );
        Ok(self.pcap.clone())
    }
}

/// Run `tshark -n -r PCAP [-d DECODE_AS]... [-Y DISPLAY_FILTER] -T fields
/// -e FIELD...` and return one row per packet, one string per field. A field
/// that occurs several times in a packet (e.g. `ip.src` in a VXLAN packet:
/// outer, then inner) has its occurrences joined with commas.
pub fn tshark_fields(
    pcap: &Path,
    decode_as: &[&str],
    display_filter: Option<&str>,
    fields: &[&str],
) -> Result<Vec<Vec<String>>> {
    ensure!(!fields.is_empty(), "no fields requested");
    let mut cmd = Command::new("tshark");
    cmd.arg("-n").arg("-r").arg(pcap);
    for d in decode_as {
        cmd.args(["-d", d]);
    }
    if let Some(f) = display_filter {
        cmd.args(["-Y", f]);
    }
    cmd.args([
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    ]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    cmd.stdin(Stdio::null());
    let out = cmd
        .output()
        .with_context(|| format!("running tshark on {}", pcap.display()))?;
    let text = check_output(&format!("tshark -r {}", pcap.display()), out)?;
    Ok(text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut row: Vec<String> = l.split('\t').map(str::to_string).collect();
            row.resize(fields.len(), String::new());
            row
        })
        .collect())
}

/// One IPv4 packet from a capture, decoded with VXLAN on a given UDP port.
/// The `inner_*` fields and `vni` are set only for VXLAN packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedPacket {
    /// Frame length on the wire.
    pub frame_len: u32,
    /// Outer IPv4 source.
    pub outer_src: Ipv4Addr,
    /// Outer IPv4 destination.
    pub outer_dst: Ipv4Addr,
    /// Outer IP protocol number (17 = UDP).
    pub outer_proto: u8,
    /// Whether the outer IP header has DF set.
    pub outer_df: bool,
    /// Outer UDP source port, if UDP.
    pub udp_src_port: Option<u16>,
    /// Outer UDP destination port, if UDP.
    pub udp_dst_port: Option<u16>,
    /// VXLAN network identifier.
    pub vni: Option<u32>,
    /// Inner Ethernet source MAC (lower-case, colon-separated).
    pub inner_eth_src: Option<String>,
    /// Inner Ethernet destination MAC.
    pub inner_eth_dst: Option<String>,
    /// Inner IPv4 source (None for e.g. inner ARP).
    pub inner_src: Option<Ipv4Addr>,
    /// Inner IPv4 destination.
    pub inner_dst: Option<Ipv4Addr>,
    /// Inner IP protocol number (1 = ICMP, 6 = TCP, 17 = UDP).
    pub inner_proto: Option<u8>,
}

impl std::fmt::Display for DecodedPacket {
    /// `outer_src outer_dst udp_dst_port vni inner_src inner_dst`, with `-`
    /// for absent values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn o<T: ToString>(v: &Option<T>) -> String {
            v.as_ref().map_or("-".into(), T::to_string)
        }
        write!(
            f,
            "{} {} {} {} {} {}",
            self.outer_src,
            self.outer_dst,
            o(&self.udp_dst_port),
            o(&self.vni),
            o(&self.inner_src),
            o(&self.inner_dst)
        )
    }
}

const DECODE_FIELDS: [&str; 10] = [
    "frame.len",
    "ip.src",
    "ip.dst",
    "ip.proto",
    "ip.flags.df",
    "udp.srcport",
    "udp.dstport",
    "vxlan.vni",
    "eth.src",
    "eth.dst",
];

/// Decode every IPv4 packet of `pcap`, treating UDP port `vxlan_port` as
/// VXLAN (`tshark -d udp.port==PORT,vxlan`). Non-IPv4 frames are skipped.
pub fn decode_vxlan(pcap: &Path, vxlan_port: u16) -> Result<Vec<DecodedPacket>> {
    let decode = format!("udp.port=={vxlan_port},vxlan");
    let rows = tshark_fields(pcap, &[&decode], Some("ip"), &DECODE_FIELDS)?;
    rows.iter()
        .map(|r| parse_row(r).with_context(|| format!("parsing tshark row {r:?}")))
        .collect()
}

fn nth(field: &str, i: usize) -> Option<&str> {
    field.split(',').nth(i).filter(|s| !s.is_empty())
}

fn parse_row(r: &[String]) -> Result<DecodedPacket> {
    let p = |i: usize, n: usize| nth(&r[i], n);
    let ip = |i: usize, n: usize| -> Result<Option<Ipv4Addr>> {
        p(i, n).map(|s| s.parse().context("bad IPv4")).transpose()
    };
    let vni: Option<u32> = p(7, 0).map(str::parse).transpose()?;
    let is_vx = vni.is_some();
    fn inner(is_vx: bool, v: Option<&str>) -> Option<&str> {
        v.filter(|_| is_vx)
    }
    Ok(DecodedPacket {
        frame_len: p(0, 0).context("no frame.len")?.parse()?,
        outer_src: ip(1, 0)?.context("no ip.src")?,
        outer_dst: ip(2, 0)?.context("no ip.dst")?,
        outer_proto: p(3, 0).context("no ip.proto")?.parse()?,
        outer_df: matches!(p(4, 0), Some("1" | "True" | "true")),
        udp_src_port: p(5, 0).map(str::parse).transpose()?,
        udp_dst_port: p(6, 0).map(str::parse).transpose()?,
        vni,
        inner_eth_src: inner(is_vx, p(8, 1)).map(str::to_string),
        inner_eth_dst: inner(is_vx, p(9, 1)).map(str::to_string),
        inner_src: if is_vx { ip(1, 1)? } else { None },
        inner_dst: if is_vx { ip(2, 1)? } else { None },
        inner_proto: inner(is_vx, p(3, 1)).map(str::parse).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vxlan_row() {
        let row: Vec<String> = [
            "148",
            "192.168.56.4,10.103.100.2",
            "192.168.56.5,10.103.200.2",
            "17,1",
            "0,1",
            "40000",
            "4789",
            "42",
            "aa:aa:aa:aa:aa:aa,02:42:0a:67:64:02",
            "bb:bb:bb:bb:bb:bb,02:42:0a:67:c8:02",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = parse_row(&row).unwrap();
        assert_eq!(p.vni, Some(42));
        assert_eq!(p.inner_src, Some(Ipv4Addr::new(10, 103, 100, 2)));
        assert_eq!(p.inner_proto, Some(1));
        assert!(!p.outer_df);
        assert_eq!(p.inner_eth_dst.as_deref(), Some("02:42:0a:67:c8:02"));
        assert_eq!(
            p.to_string(),
            "192.168.56.4 192.168.56.5 4789 42 10.103.100.2 10.103.200.2"
        );
    }
}
