//! Shared set-up of the end-to-end tests: a lab of simulated hosts with
//! overlayd on each, in a given dataplane mode.

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
