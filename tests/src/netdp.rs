//! Driving a dataplane per overlay network on a lab host by hand: the
//! `netdp` helper (src/bin/netdp.rs) runs in the host's namespace and
//! carries out the commands [`NetDp`] appends to its command file.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use overlay_lab::{agent_config, AgentOptions, Lab, Proc};
use serde_json::{json, Value};

static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A `netdp` on one lab host.
pub struct NetDp {
    /// The process (stopped when dropped).
    pub proc: Proc,
    /// 1-based host number.
    pub host: usize,
    commands: PathBuf,
    sent: usize,
}

/// A network endpoint's MAC as the JSON the model takes ("02:00:.." -> array).
pub fn mac_json(mac: &str) -> Value {
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("a MAC"))
        .collect();
    json!(bytes)
}

impl NetDp {
    /// Starts `netdp` (at `bin`) on host `host` with the config overlayd
    /// would get from `opts` (so `dataplane`, `vni` and `port` apply), and
    /// waits until its dataplane started.
    pub fn start(lab: &Lab, host: usize, bin: &str, opts: &AgentOptions) -> Result<NetDp> {
        // Each start its own files: a log of an earlier start is not read as this one's.
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let config = lab.dir().join(format!("netdp-h{host}-{run}.toml"));
        std::fs::write(&config, agent_config(lab, host, opts))?;
        let commands = lab.dir().join(format!("netdp-h{host}-{run}.cmds"));
        std::fs::write(&commands, "")?;
        let ns = lab.host(host).ns.clone();
        let proc = lab.spawn(
            &ns,
            &[
                bin,
                &config.display().to_string(),
                &commands.display().to_string(),
            ],
            &format!("netdp-h{host}-{run}.log"),
        )?;
        let dp = NetDp {
            proc,
            host,
            commands,
            sent: 0,
        };
        dp.wait_for(|log| log.contains("started "), "its start")?;
        Ok(dp)
    }

    fn wait_for(&self, done: impl Fn(&str) -> bool, what: &str) -> Result<String> {
        let start = Instant::now();
        loop {
            let log = self.proc.log();
            if done(&log) {
                return Ok(log);
            }
            if !self.proc.is_running() {
                bail!("netdp on host {} exited before {what}:\n{log}", self.host);
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!("netdp on host {}: no {what} in 20 s:\n{log}", self.host);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `cmd` and waits for its outcome: `Ok(())` or the error's text.
    pub fn send(&mut self, cmd: Value) -> Result<std::result::Result<(), String>> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.commands)
            .with_context(|| format!("opening {}", self.commands.display()))?;
        f.write_all(format!("{cmd}\n").as_bytes())?;
        self.sent += 1;
        let n = self.sent;
        let (ok, err) = (format!("ok {n}\n"), format!("err {n}: "));
        let log = self.wait_for(
            |log| log.contains(&ok) || log.contains(&err),
            &format!("answer to {cmd}"),
        )?;
        if log.contains(&ok) {
            return Ok(Ok(()));
        }
        let at = log.find(&err).expect("found") + err.len();
        Ok(Err(log[at..].lines().next().unwrap_or("").to_string()))
    }

    /// Sends `cmd`; fails unless it succeeded.
    pub fn ok(&mut self, cmd: Value) -> Result<()> {
        let text = cmd.to_string();
        self.send(cmd)?.map_err(|e| {
            anyhow::anyhow!(
                "host {}: {text}: {e}\nnetdp's log:\n{}",
                self.host,
                self.proc.log()
            )
        })
    }

    /// Adds network `name` (VNI, subnet, gateway).
    pub fn add_network(
        &mut self,
        name: &str,
        vni: u32,
        subnet: &str,
        gateway: Ipv4Addr,
    ) -> Result<()> {
        self.ok(json!({"add_network": {"name": name, "vni": vni, "subnet": subnet, "gateway": gateway}}))
    }

    /// Adds a local endpoint behind host veth `ifname` (ifindex looked up in `ns`).
    pub fn add_local(
        &mut self,
        ns: &str,
        vni: u32,
        ip: Ipv4Addr,
        mac: &str,
        ifname: &str,
    ) -> Result<()> {
        let ifindex =
            overlay_lab::exec_ok(ns, &["cat", &format!("/sys/class/net/{ifname}/ifindex")])?
                .trim()
                .parse::<u32>()?;
        self.ok(
            json!({"add_endpoint": {"vni": vni, "ip": ip, "mac": mac_json(mac),
            "location": {"local": {"ifname": ifname, "ifindex": ifindex}}}}),
        )
    }

    /// Adds a remote endpoint on host `host`.
    pub fn add_remote(&mut self, vni: u32, ip: Ipv4Addr, mac: &str, host: Ipv4Addr) -> Result<()> {
        self.ok(
            json!({"add_endpoint": {"vni": vni, "ip": ip, "mac": mac_json(mac),
            "location": {"remote": {"host": host}}}}),
        )
    }

    /// Removes endpoint `ip` of network `vni`.
    pub fn del_endpoint(&mut self, vni: u32, ip: Ipv4Addr) -> Result<()> {
        self.ok(json!({"del_endpoint": [vni, ip]}))
    }

    /// Adds the per-host peer `subnet` behind host `host`.
    pub fn add_peer(&mut self, subnet: &str, host: Ipv4Addr) -> Result<()> {
        self.ok(json!({"add_peer": {"subnet": subnet, "underlay_ip": host, "vtep_mac": null}}))
    }

    /// Removes the per-host peer `subnet`.
    pub fn del_peer(&mut self, subnet: &str) -> Result<()> {
        self.ok(json!({ "del_peer": subnet }))
    }

    /// The dataplane's traffic per peer host: `{"192.168.56.5": {"tx_packets": ..}}`.
    pub fn peer_traffic(&mut self) -> Result<Value> {
        self.ok(json!("peer_traffic"))?;
        let tag = format!("traffic {}: ", self.sent);
        let log = self.proc.log();
        let at = log.find(&tag).context("no traffic line")? + tag.len();
        Ok(serde_json::from_str(
            log[at..].lines().next().unwrap_or(""),
        )?)
    }

    /// Removes network `vni`.
    pub fn del_network(&mut self, vni: u32) -> Result<()> {
        self.ok(json!({"del_network": vni}))
    }

    /// Shuts the dataplane down (with `cleanup`: removing all of it) and
    /// waits for the process to end.
    pub fn shutdown(mut self, cleanup: bool) -> Result<()> {
        self.ok(json!({ "shutdown": cleanup }))?;
        match self.proc.wait_timeout(Duration::from_secs(10))? {
            Some(s) if s.success() => Ok(()),
            other => bail!(
                "netdp on host {} ended with {other:?}:\n{}",
                self.host,
                self.proc.log()
            ),
        }
    }
}

/// A container of a lab test on an overlay network: a namespace with
/// `eth0` (MTU 1450, default route via the subnet's `.1`) whose peer, the
/// host veth, is named as the plugin names them (`ovn` + 11 hex digits).
pub struct NetCtr {
    /// Its namespace.
    pub ns: String,
    /// 1-based host number.
    pub host: usize,
    /// Its address (prefix 24).
    pub ip: Ipv4Addr,
    /// `eth0`'s MAC, `02:42:` and the address.
    pub mac: String,
    /// The host-side veth's name.
    pub veth: String,
}

/// Makes a [`NetCtr`] on host `host` of `lab` with address `ip`; `tag`
/// (letters and digits) names its namespace.
pub fn net_container(lab: &mut Lab, host: usize, tag: &str, ip: Ipv4Addr) -> Result<NetCtr> {
    let ns = lab.add_namespace(tag)?;
    let host_ns = lab.host(host).ns.clone();
    let o = ip.octets();
    let mac = format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]);
    let veth = format!("ovn{:011x}", u32::from(ip));
    let mtu = (lab.host(host).underlay_mtu - 50).to_string();
    let gw = Ipv4Addr::new(o[0], o[1], o[2], 1).to_string();
    for args in [
        vec![
            "ip", "link", "add", "eth0", "mtu", &mtu, "address", &mac, "type", "veth", "peer",
            "name", &veth, "mtu", &mtu, "netns", &host_ns,
        ],
        vec!["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        vec!["ip", "link", "set", "eth0", "up"],
        vec!["ip", "route", "add", "default", "via", &gw],
    ] {
        overlay_lab::exec_ok(&ns, &args).with_context(|| format!("{tag}: {}", args.join(" ")))?;
    }
    overlay_lab::exec_ok(&host_ns, &["ip", "link", "set", &veth, "up"])?;
    Ok(NetCtr {
        ns,
        host,
        ip,
        mac,
        veth,
    })
}

/// Network `web` (VNI [`WEB`], 10.104.1.0/24) across lab hosts 1 and 2:
/// container `a` (10.104.1.2) on host 1 and `b` (10.104.1.3) on host 2,
/// each host's `netdp` (in dataplane `modes[0]` and `modes[1]`, VXLAN on
/// `port`) with its own container local and the other's remote.
pub struct WebPair {
    /// Host 1's netdp.
    pub h1: NetDp,
    /// Host 2's netdp.
    pub h2: NetDp,
    /// The container on host 1.
    pub a: NetCtr,
    /// The container on host 2.
    pub b: NetCtr,
}

/// The VNI of [`WebPair`]'s network.
pub const WEB: u32 = 4096;

/// Sets up a [`WebPair`] in `lab` (two hosts); `bin` is the `netdp` binary.
pub fn web_pair(lab: &mut Lab, bin: &str, modes: [&str; 2], port: u16) -> Result<WebPair> {
    let a = net_container(lab, 1, "a", Ipv4Addr::new(10, 104, 1, 2))?;
    let b = net_container(lab, 2, "b", Ipv4Addr::new(10, 104, 1, 3))?;
    let opts = |mode: &str| AgentOptions {
        dataplane: Some(mode.into()),
        port,
        ..AgentOptions::default()
    };
    let mut h1 = NetDp::start(lab, 1, bin, &opts(modes[0]))?;
    let mut h2 = NetDp::start(lab, 2, bin, &opts(modes[1]))?;
    let gw = Ipv4Addr::new(10, 104, 1, 1);
    for dp in [&mut h1, &mut h2] {
        dp.add_network("web", WEB, "10.104.1.0/24", gw)?;
    }
    let (u1, u2) = (lab.host(1).underlay_ip, lab.host(2).underlay_ip);
    h1.add_local(&lab.host(1).ns, WEB, a.ip, &a.mac, &a.veth)?;
    h1.add_remote(WEB, b.ip, &b.mac, u2)?;
    h2.add_local(&lab.host(2).ns, WEB, b.ip, &b.mac, &b.veth)?;
    h2.add_remote(WEB, a.ip, &a.mac, u1)?;
    Ok(WebPair { h1, h2, a, b })
}
