//! The Docker plugins, a control source: overlayd serves Docker's remote
//! network driver and IPAM protocols as plugin `ovl` on
//! `<plugin_dir>/ovl.sock`, and keeps this host's Docker in step with the
//! cluster's overlay networks.
//!
//! - `docker network create -d ovl --ipam-driver ovl [--subnet S] NAME`:
//!   IPAM's `RequestPool` takes the store's network with subnet `S`, or
//!   creates one (with `S`, or a subnet from the cluster's default pool).
//!   Docker does not tell a plugin the network's name, so a network Docker
//!   creates first is stored under a provisional name
//!   ([`PROVISIONAL_PREFIX`]`<hex>`, which the other hosts do not copy to
//!   their Docker); once `CreateNetwork` has its ID, the name is read from
//!   the Engine API and the network is stored again under its name with the
//!   same subnet, gateway and VNI. The pool's ID is the subnet, so IPAM
//!   calls map to the store's network by subnet, also after a restart.
//!   `CreateNetwork` refuses a network whose pool did not come from `ovl`'s
//!   IPAM (its address space is Docker's `LocalDefault`), telling the user
//!   to add `--ipam-driver ovl`.
//! - Every network of the store is created on this host's Docker through
//!   the Engine API (driver and IPAM driver `ovl`, its subnet and gateway)
//!   within a second, and removed from it when it is gone from the store and
//!   has no container here ([`sync`]). `docker network rm` removes the
//!   store's network (refused while endpoints exist anywhere).
//! - A container's endpoint: IPAM hands out a cluster-unique address
//!   (`RequestAddress`, a static `--ip` honoured); `CreateEndpoint` keeps
//!   Docker's MAC or derives one (02:42 + the address) and returns it;
//!   `Join` makes a veth pair, host end `ovn` + 11 hex digits of the
//!   endpoint ID, reports it to the core as a local endpoint (source
//!   `plugin`) and publishes its record (with the container's name and
//!   aliases, read from the Engine API just after) so that every host
//!   installs it; Docker moves the other end into the container as `eth0`.
//!   `DeleteEndpoint` withdraws the record, removes the endpoint and deletes
//!   the veth; `ReleaseAddress` frees the address.
//! - After a restart of overlayd the endpoints of this host's running
//!   containers are found again from Docker and the veths and reported again.
//!
//! Owns: the calls and their state ([`handler`]), the HTTP server on the plugin socket ([`http`]), the protocols'
//! JSON ([`wire`]), IPAM ([`ipam`]), the network driver ([`driver`]) and the
//! sync with Docker ([`sync`]). Must not touch: the other sources (the store
//! is reached through [`NetworkDirectory`] only) and the dataplane.

pub mod driver;
pub mod handler;
pub mod http;
pub mod ipam;
pub mod sync;
pub mod wire;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod dockerd_tests;

use std::sync::Arc;

use crate::agent::handle::Core;
use crate::sources::{ControlSource, NetworkDirectory};

pub use handler::{
    host_ifname, parse_ip, parse_subnet, temp_ifname, LocalEndpoint, Pending, Plugin, PluginError,
    Settings, State, DST_PREFIX, HOST_PREFIX, PROVISIONAL_PREFIX, TEMP_PREFIX,
};

/// The plugin source: serves the socket, keeps Docker's networks in step
/// with the store and finds this host's endpoints again at start.
pub struct PluginSource {
    dir: Arc<dyn NetworkDirectory>,
    settings: Settings,
    listener: tokio::net::UnixListener,
}

impl PluginSource {
    /// Bind the plugin socket now (so a problem stops the start).
    pub fn new(
        dir: Arc<dyn NetworkDirectory>,
        settings: Settings,
    ) -> Result<PluginSource, PluginError> {
        let listener = http::bind(&settings.socket)?;
        Ok(PluginSource {
            dir,
            settings,
            listener,
        })
    }
}

#[async_trait::async_trait]
impl ControlSource for PluginSource {
    fn name(&self) -> &'static str {
        "plugin"
    }

    async fn run(self: Box<Self>, core: Core) {
        let socket = self.settings.socket.clone();
        let plugin = Arc::new(Plugin::new(self.dir, core, self.settings));
        log::info!("Docker plugin ovl listening on {}", socket.display());
        let server = tokio::spawn(http::serve(self.listener, plugin.clone(), socket.clone()));
        sync::run(&plugin).await;
        server.abort();
        let _ = std::fs::remove_file(&socket);
    }
}
