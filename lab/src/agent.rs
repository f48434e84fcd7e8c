//! Running overlayd and overlayctl on a simulated host: shared by the
//! end-to-end tests, the demo and the benchmark.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::{nsenter_command, Lab, Proc};

/// Where the overlayd and overlayctl binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// Path of overlayd.
    pub overlayd: PathBuf,
    /// Path of overlayctl.
    pub overlayctl: PathBuf,
}

impl Binaries {
    /// The binaries in `dir`.
    pub fn in_dir(dir: &Path) -> Result<Self> {
        let b = Self {
            overlayd: dir.join("overlayd"),
            overlayctl: dir.join("overlayctl"),
        };
        for p in [&b.overlayd, &b.overlayctl] {
            ensure!(
                p.is_file(),
                "{} not found: build it first (`cargo xtask test` does, or `cargo build -p overlay-user --bins`)",
                p.display()
            );
        }
        Ok(b)
    }

    /// `$OVERLAY_BIN_DIR`, or the profile directory of the running test
    /// executable (`target/debug` for `target/debug/deps/test-…`).
    pub fn locate() -> Result<Self> {
        if let Some(dir) = std::env::var_os("OVERLAY_BIN_DIR") {
            return Self::in_dir(Path::new(&dir));
        }
        let exe = std::env::current_exe()?;
        let mut dir = exe.parent().context("executable has no directory")?;
        if dir.ends_with("deps") {
            dir = dir.parent().context("deps has no parent")?;
        }
        Self::in_dir(dir)
    }
}

/// Settings for one overlayd in the lab; [`AgentOptions::default`] is the
/// product's default configuration (BPF, VNI 42, port 4789, no static peers).
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `dataplane = ...` (None: leave the product's default).
    pub dataplane: Option<String>,
    /// `xdp = ...`.
    pub xdp: Option<String>,
    /// `attach = ...`.
    pub attach: Option<String>,
    /// VXLAN network identifier.
    pub vni: u32,
    /// VXLAN UDP port.
    pub port: u16,
    /// Put every other host of the lab in `[[peers]]`.
    pub static_peers: bool,
    /// A `[cluster]` section (e.g. from [`crate::Etcd::cluster_section`]):
    /// `vni` and `vxlan_port` are then left to the cluster, and the subnet
    /// file goes to the lab's dir unless the section names one.
    pub cluster: Option<String>,
    /// With `cluster`: leave `subnet` out too, to lease one from the pool
    /// (the lab's bridge keeps its own address: no traffic then).
    pub lease_subnet: bool,
    /// Extra TOML appended to the config.
    pub extra: String,
    /// Extra overlayd arguments.
    pub args: Vec<String>,
    /// A command overlayd is started through, e.g.
    /// `["capsh", "--drop=cap_bpf", "--shell=OVERLAYD", "--"]`: the word
    /// `OVERLAYD` in it is replaced by overlayd's path, and overlayd's own
    /// path is then left out of the command line. Empty: overlayd directly.
    pub wrapper: Vec<String>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            dataplane: None,
            xdp: None,
            attach: None,
            vni: 42,
            port: 4789,
            static_peers: false,
            cluster: None,
            lease_subnet: false,
            extra: String::new(),
            args: Vec::new(),
            wrapper: Vec::new(),
        }
    }
}

/// A running overlayd on one lab host, with its API socket.
pub struct Overlayd {
    /// The daemon (stopped when dropped).
    pub proc: Proc,
    /// Its API socket.
    pub socket: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    /// The host's namespace.
    pub ns: String,
    /// 1-based host number.
    pub host: usize,
    ctl: PathBuf,
}

/// The config file overlayd gets on host `host` of `lab`.
pub fn agent_config(lab: &Lab, host: usize, opts: &AgentOptions) -> String {
    let h = lab.host(host);
    let mut s = format!(
        "underlay_interface = \"{}\"\nbridge = \"{}\"\npin_dir = \"{}\"\nstate_dir = \"{}\"\n",
        h.underlay_if,
        h.bridge,
        lab.bpffs_dir().join(format!("h{host}")).display(),
        lab.dir().join(format!("h{host}-state")).display(),
    );
    if opts.cluster.is_none() || !opts.lease_subnet {
        s.push_str(&format!("subnet = \"{}\"\n", h.subnet));
    }
    if opts.cluster.is_none() {
        s.push_str(&format!("vni = {}\nvxlan_port = {}\n", opts.vni, opts.port));
    }
    for (key, value) in [
        ("dataplane", &opts.dataplane),
        ("xdp", &opts.xdp),
        ("attach", &opts.attach),
    ] {
        if let Some(v) = value {
            s.push_str(&format!("{key} = \"{v}\"\n"));
        }
    }
    s.push_str(&opts.extra);
    s.push('\n');
    if opts.static_peers {
        for other in lab.hosts().iter().filter(|o| o.index != host) {
            s.push_str(&format!(
                "[[peers]]\nsubnet = \"{}\"\nunderlay_ip = \"{}\"\n",
                other.subnet, other.underlay_ip
            ));
        }
    }
    if let Some(cluster) = &opts.cluster {
        s.push_str(cluster);
        if !cluster.contains("subnet_file") {
            s.push_str(&format!(
                "\nsubnet_file = \"{}\"\n",
                subnet_file(lab, host).display()
            ));
        }
    }
    s
}

/// Where overlayd on host `host` writes its subnet file (with `[cluster]`).
pub fn subnet_file(lab: &Lab, host: usize) -> PathBuf {
    lab.dir().join(format!("h{host}-subnet.env"))
}

impl Overlayd {
    /// Writes the host's config and starts overlayd in the host's network
    /// namespace; returns once its API answers (or fails with its log).
    pub fn start(lab: &Lab, host: usize, bins: &Binaries, opts: &AgentOptions) -> Result<Self> {
        let config = lab.dir().join(format!("h{host}.toml"));
        std::fs::write(&config, agent_config(lab, host, opts))?;
        let socket = lab.dir().join(format!("h{host}.sock"));
        Self::spawn_ready(lab, host, bins, &config, &socket, &opts.args, &opts.wrapper)
    }

    /// Starts overlayd with an existing config file.
    pub fn start_with(
        lab: &Lab,
        host: usize,
        bins: &Binaries,
        config: &Path,
        socket: &Path,
        args: &[String],
    ) -> Result<Self> {
        Self::spawn_ready(lab, host, bins, config, socket, args, &[])
    }

    fn spawn_ready(
        lab: &Lab,
        host: usize,
        bins: &Binaries,
        config: &Path,
        socket: &Path,
        args: &[String],
        wrapper: &[String],
    ) -> Result<Self> {
        let ns = lab.host(host).ns.clone();
        let overlayd = bins.overlayd.display().to_string();
        let mut argv: Vec<String> = if wrapper.is_empty() {
            vec![overlayd]
        } else {
            wrapper
                .iter()
                .map(|w| w.replace("OVERLAYD", &overlayd))
                .collect()
        };
        argv.extend([
            "--config".into(),
            config.display().to_string(),
            "--socket".into(),
            socket.display().to_string(),
        ]);
        argv.extend(args.iter().cloned());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let log = format!("overlayd-h{host}-{}.log", lab_unique());
        let proc = lab.spawn(&ns, &argv, &log)?;
        let d = Self {
            proc,
            socket: socket.to_path_buf(),
            config: config.to_path_buf(),
            ns,
            host,
            ctl: bins.overlayctl.clone(),
        };
        d.wait_ready(Duration::from_secs(30))?;
        Ok(d)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if !self.proc.is_running() {
                bail!(
                    "overlayd on host {} exited during start-up:\n{}",
                    self.host,
                    self.proc.log()
                );
            }
            if self.socket.exists()
                && self
                    .ctl(&["status"])
                    .map(|o| o.status.success())
                    .unwrap_or(false)
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "overlayd on host {} not ready after {timeout:?}:\n{}",
                    self.host,
                    self.proc.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `overlayctl --socket S ARGS` in the host's network namespace.
    pub fn ctl(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = nsenter_command(&self.ns, &self.ctl.display().to_string());
        cmd.arg("--socket").arg(&self.socket).args(args);
        cmd.output()
            .with_context(|| format!("running overlayctl {}", args.join(" ")))
    }

    /// Like [`Overlayd::ctl`], failing with overlayctl's output unless it exits 0.
    pub fn ctl_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.ctl(args)?;
        if !out.status.success() {
            bail!(
                "overlayctl {} failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `overlayctl status --json`, parsed.
    pub fn status(&self) -> Result<serde_json::Value> {
        let out = self.ctl_ok(&["--json", "status"])?;
        serde_json::from_str(&out).with_context(|| format!("parsing status JSON: {out}"))
    }

    /// A dataplane counter (`encap_packets`, ...) from `status`.
    pub fn counter(&self, name: &str) -> Result<u64> {
        let s = self.status()?;
        find_u64(&s, &["counters", name])
            .or_else(|| find_u64(&s, &["stats", "counters", name]))
            .with_context(|| format!("no counter {name} in status: {s}"))
    }

    /// A drop counter (`unknown_vni`, ...) from `status`.
    pub fn drops(&self, name: &str) -> Result<u64> {
        let s = self.status()?;
        find_u64(&s, &["drops", name])
            .or_else(|| find_u64(&s, &["stats", "drops", name]))
            .with_context(|| format!("no drop reason {name} in status: {s}"))
    }

    /// Adds every other host of `lab` as a peer through overlayctl.
    pub fn add_lab_peers(&self, lab: &Lab) -> Result<()> {
        for other in lab.hosts().iter().filter(|o| o.index != self.host) {
            self.ctl_ok(&["peer", "add", &other.subnet, &other.underlay_ip.to_string()])?;
        }
        Ok(())
    }

    /// Waits until `pred` holds for the status, polling every 50 ms.
    pub fn wait_status(
        &self,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Ok(s) = self.status() {
                if pred(&s) {
                    return Ok(());
                }
            }
            if start.elapsed() > timeout {
                bail!(
                    "condition not met within {timeout:?}; status: {:?}",
                    self.status().ok()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops overlayd with SIGTERM and waits.
    pub fn stop(mut self) -> Result<std::process::ExitStatus> {
        self.proc.stop()
    }
}

fn find_u64(v: &serde_json::Value, path: &[&str]) -> Option<u64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_u64()
}

fn lab_unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Underlay address of a lab host, for configs of the `ip`-configured kind.
pub fn underlay_of(lab: &Lab, host: usize) -> Ipv4Addr {
    lab.host(host).underlay_ip
}
