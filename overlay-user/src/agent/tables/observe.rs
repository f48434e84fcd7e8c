//! What the agent shows of the dataplane for observation: the monitor's
//! event stream, per-peer traffic and how full the tables are.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::Agent;
use crate::agent::error::AgentError;
use crate::dataplane::monitor::Monitor;
use crate::model::observe::PeerTraffic;

impl Agent {
    /// The dataplane's event stream, if it has one (the BPF dataplane).
    pub fn monitor(&self) -> Option<Monitor> {
        self.dataplane.monitor()
    }

    /// Traffic to and from each peer host (empty for the kernel dataplane).
    pub fn peer_traffic(&self) -> Result<BTreeMap<Ipv4Addr, PeerTraffic>, AgentError> {
        self.dataplane
            .peer_traffic()
            .map_err(|source| AgentError::Dataplane {
                action: "reading per-peer counters".into(),
                source: Box::new(source),
            })
    }

    /// (table, entries, capacity) of the dataplane's tables.
    pub fn table_fill(&self) -> Result<Vec<(&'static str, u64, u64)>, AgentError> {
        self.dataplane
            .table_fill()
            .map_err(|source| AgentError::Dataplane {
                action: "reading table sizes".into(),
                source: Box::new(source),
            })
    }
}
