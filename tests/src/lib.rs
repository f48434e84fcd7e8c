//! Shared set-up of the end-to-end tests: a lab of simulated hosts with
//! overlayd on each, in a given dataplane mode.

pub mod netdp;

use std::time::Duration;

use anyhow::Result;
use overlay_lab::{AgentOptions, Binaries, DockerOptions, Dockerd, Lab, LabSpec, Overlayd};

/// A lab with overlayd running on every host.
pub struct Cluster {
    /// The agents, host 1 first. Declared before `lab` so they stop first.
    pub agents: Vec<Overlayd>,
    /// The simulated hosts.
    pub lab: Lab,
}

/// Builds a lab per `spec`, starts overlayd in `mode` on every host and
/// adds every other host as a peer with overlayctl.
pub fn cluster(spec: LabSpec, mode: &str, opts: AgentOptions) -> Result<Cluster> {
    let lab = Lab::new(spec)?;
    let bins = Binaries::locate()?;
    let opts = AgentOptions {
        dataplane: Some(mode.to_string()),
        ..opts
    };
    let mut agents = Vec::new();
    for h in 1..=lab.hosts().len() {
        agents.push(Overlayd::start(&lab, h, &bins, &opts)?);
    }
    for a in &agents {
        a.add_lab_peers(&lab)?;
    }
    Ok(Cluster { agents, lab })
}

impl Cluster {
    /// The agent of host `h` (1-based).
    pub fn agent(&self, h: usize) -> &Overlayd {
        &self.agents[h - 1]
    }
}

/// How long to wait for something that should be immediate.
pub const SHORT: Duration = Duration::from_secs(5);

/// Two simulated hosts, each with a real dockerd (docker0 = 10.103.100.1/24
/// and 10.103.200.1/24, default iptables settings, the busybox image) and
/// overlayd following it.
pub struct DockerCluster {
    /// The agents, host 1 first. Declared first so they stop first.
    pub agents: Vec<Overlayd>,
    /// The dockerds, host 1 first; each removes its containers and dirs on drop.
    pub dockers: Vec<Dockerd>,
    /// The simulated hosts.
    pub lab: Lab,
    /// Where overlayd and overlayctl are.
    pub bins: Binaries,
    /// The options the agents were started with.
    pub opts: AgentOptions,
}

/// The `[docker]` section for an overlayd following `docker`.
pub fn docker_section(docker: &Dockerd) -> String {
    format!(
        "\n[docker]\nenabled = true\nsocket = \"{}\"\nnetworks = [\"bridge\"]\n",
        docker.socket().display()
    )
}

/// Builds the lab, starts dockerd on both hosts (and imports the image),
/// then overlayd in `mode` with `[docker]` enabled, and adds the peers.
pub fn docker_cluster(mode: &str, docker: &DockerOptions) -> Result<DockerCluster> {
    let lab = Lab::new(LabSpec {
        hosts: 2,
        containers_per_host: 0,
        docker: true,
        ..Default::default()
    })?;
    let bins = Binaries::locate()?;
    let mut dockers = Vec::new();
    for h in 1..=2 {
        let d = Dockerd::start(&lab, h, docker)?;
        d.import_busybox()?;
        dockers.push(d);
    }
    let opts = AgentOptions {
        dataplane: Some(mode.to_string()),
        ..Default::default()
    };
    let mut c = DockerCluster {
        agents: Vec::new(),
        dockers,
        lab,
        bins,
        opts,
    };
    for h in 1..=2 {
        let a = c.start_agent(h)?;
        c.agents.push(a);
    }
    for a in &c.agents {
        a.add_lab_peers(&c.lab)?;
    }
    Ok(c)
}

impl DockerCluster {
    /// The agent of host `h` (1-based).
    pub fn agent(&self, h: usize) -> &Overlayd {
        &self.agents[h - 1]
    }

    /// The dockerd of host `h` (1-based).
    pub fn docker(&self, h: usize) -> &Dockerd {
        &self.dockers[h - 1]
    }

    /// Starts overlayd on host `h` with the cluster's options and `[docker]`.
    pub fn start_agent(&self, h: usize) -> Result<Overlayd> {
        let opts = AgentOptions {
            extra: format!("{}{}", self.opts.extra, docker_section(self.docker(h))),
            ..self.opts.clone()
        };
        Overlayd::start(&self.lab, h, &self.bins, &opts)
    }
}

/// Runs `overlayctl ARGS` in host `host`'s namespace without an overlayd
/// (for `cluster init` and `docker-opts`).
pub fn ctl_on(
    lab: &Lab,
    host: usize,
    bins: &Binaries,
    args: &[&str],
) -> Result<std::process::Output> {
    let mut cmd =
        overlay_lab::nsenter_command(&lab.host(host).ns, &bins.overlayctl.display().to_string());
    Ok(cmd.args(args).output()?)
}

/// `overlayctl cluster init` against `etcd`, from host `host`: the pool,
/// the subnet length, VNI 42 and port 4789.
pub fn cluster_init(
    lab: &Lab,
    host: usize,
    bins: &Binaries,
    etcd: &overlay_lab::Etcd,
    pool: &str,
    len: u8,
) -> Result<String> {
    let eps = etcd.endpoints().join(",");
    let len = len.to_string();
    let mut args = vec![
        "cluster",
        "init",
        "--etcd",
        &eps,
        "--pool",
        pool,
        "--subnet-len",
        &len,
        "--vni",
        "42",
        "--port",
        "4789",
    ];
    let tls;
    if let Some(t) = etcd.tls() {
        tls = [
            t.ca.display().to_string(),
            t.client_cert.display().to_string(),
            t.client_key.display().to_string(),
        ];
        args.extend([
            "--ca-file",
            &tls[0],
            "--cert-file",
            &tls[1],
            "--key-file",
            &tls[2],
        ]);
    }
    let out = ctl_on(lab, host, bins, &args)?;
    anyhow::ensure!(
        out.status.success(),
        "cluster init failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Options for an overlayd in cluster mode on host `host`, named `h{host}`,
/// with `extra` lines in its `[cluster]` section.
pub fn cluster_opts(
    etcd: &overlay_lab::Etcd,
    host: usize,
    mode: &str,
    lease_subnet: bool,
    extra: &str,
) -> AgentOptions {
    AgentOptions {
        dataplane: Some(mode.to_string()),
        cluster: Some(etcd.cluster_section(&format!("h{host}"), extra)),
        lease_subnet,
        ..Default::default()
    }
}

/// The peers of `agent` as (subnet, source) pairs.
pub fn peers_of(agent: &Overlayd) -> Result<Vec<(String, String)>> {
    let out = agent.ctl_ok(&["--json", "peer", "list"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["subnet"].as_str().unwrap_or_default().to_string(),
                p["source"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

/// The subnets of `agent`'s peers with source `cluster`, sorted.
pub fn cluster_peers(agent: &Overlayd) -> Result<Vec<String>> {
    let mut v: Vec<String> = peers_of(agent)?
        .into_iter()
        .filter(|(_, s)| s == "cluster")
        .map(|(n, _)| n)
        .collect();
    v.sort();
    Ok(v)
}

/// Waits until `agent`'s cluster peers are exactly `want` (any order); returns how long it took.
pub fn wait_cluster_peers(agent: &Overlayd, want: &[&str], timeout: Duration) -> Result<Duration> {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    let start = std::time::Instant::now();
    loop {
        let now = cluster_peers(agent)?;
        if now == want {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            anyhow::bail!(
                "host {}: cluster peers {now:?}, expected {want:?} within {timeout:?}; log:\n{}",
                agent.host,
                agent.proc.log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// This host's subnet as `agent`'s status reports it.
pub fn subnet_of(agent: &Overlayd) -> Result<String> {
    Ok(agent.status()?["subnet"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// The `traffic` of `a`'s peer host `ip` in `overlayctl --json peer list`
/// (packets and bytes to and from it, counted by the programs).
pub fn peer_traffic(a: &Overlayd, ip: std::net::Ipv4Addr) -> serde_json::Value {
    let list: serde_json::Value =
        serde_json::from_str(&a.ctl_ok(&["--json", "peer", "list"]).unwrap()).unwrap();
    let ip = ip.to_string();
    list.as_array()
        .unwrap()
        .iter()
        .find(|p| p["underlay_ip"] == ip)
        .unwrap_or_else(|| panic!("no peer host {ip} in {list}"))["traffic"]
        .clone()
}

/// `overlayctl --json peer list` of `a` without each peer's `traffic`
/// (counters and times that move with every packet): the peer table itself.
pub fn peer_table(a: &Overlayd) -> serde_json::Value {
    let mut list: serde_json::Value =
        serde_json::from_str(&a.ctl_ok(&["--json", "peer", "list"]).unwrap()).unwrap();
    for p in list.as_array_mut().unwrap() {
        p.as_object_mut().unwrap().remove("traffic");
    }
    list
}
