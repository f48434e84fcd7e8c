//! Shared set-up of the end-to-end tests: a lab of simulated hosts with
//! overlayd on each, in a given dataplane mode.

use std::time::Duration;

use anyhow::Result;
use overlay_lab::{AgentOptions, Binaries, Lab, LabSpec, Overlayd};

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
