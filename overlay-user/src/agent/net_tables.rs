//! The tables of overlay networks and their endpoints, with who added
//! each (the data; the rules and dataplane calls are in
//! [`crate::agent::networks`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::agent::state::StoredNetEndpoint;
use crate::model::overlay_network::{NetEndpointSpec, NetLocation, NetworkSpec};
use crate::model::source::Source;
use crate::model::validation::format_mac;

/// A network and who added it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkEntry {
    /// What the dataplane was given.
    pub spec: NetworkSpec,
    /// Who added it.
    pub source: Source,
}

/// A network endpoint and who added it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetEndpointEntry {
    /// What the dataplane was given.
    pub spec: NetEndpointSpec,
    /// Who added it.
    pub source: Source,
}

/// The networks and their endpoints.
#[derive(Debug, Default)]
pub struct Networks {
    /// By VNI.
    pub(super) nets: BTreeMap<u32, NetworkEntry>,
    /// By (VNI, address).
    pub(super) eps: BTreeMap<(u32, Ipv4Addr), NetEndpointEntry>,
    /// Stored local endpoints waiting for their network to be carried.
    pub(super) pending: Vec<StoredNetEndpoint>,
}

impl Networks {
    /// The stored form of the persisted local endpoints, pending ones included.
    pub(super) fn stored(&self) -> Vec<StoredNetEndpoint> {
        let mut out: Vec<StoredNetEndpoint> = self
            .eps
            .values()
            .filter(|e| e.source.persisted())
            .filter_map(|e| match &e.spec.location {
                NetLocation::Local { ifname, .. } => Some(StoredNetEndpoint {
                    vni: e.spec.vni,
                    ip: e.spec.ip,
                    mac: format_mac(&e.spec.mac),
                    dev: ifname.clone(),
                    source: e.source,
                }),
                NetLocation::Remote { .. } => None,
            })
            .collect();
        out.extend(self.pending.iter().cloned());
        out
    }
}
