//! Fakes for tests: a dataplane that records calls, a host whose tables
//! tests change, and an agent built on both.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ipnet::Ipv4Net;

use crate::agent::handle::Core;
use crate::agent::state::State;
use crate::agent::tables::{resolve_underlay_ip, Agent};
use crate::dataplane::{Dataplane, DataplaneError};
use crate::model::change::Change;
use crate::model::config::Config;
use crate::model::endpoint::EndpointSpec;
use crate::model::overlay_network::{NetEndpointSpec, NetworkSpec};
use crate::model::peer::PeerSpec;
use crate::model::source::Source;
use crate::model::status::{Mode, Stats};
use crate::sys::bridge::fixtures::snapshot;
use crate::sys::bridge::Snapshot;
use crate::sys::error::SysError;
use crate::sys::netlink::{FdbEntry, Link, Neighbour, Netlink};
use crate::sys::routes::Route;

/// A dataplane call, as recorded by [`FakeDataplane`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    AddPeer(PeerSpec),
    DelPeer(Ipv4Net),
    AddEndpoint(EndpointSpec),
    DelEndpoint(Ipv4Addr),
    AddNetwork(NetworkSpec),
    DelNetwork(u32),
    AddNetEndpoint(NetEndpointSpec),
    DelNetEndpoint(u32, Ipv4Addr),
    Refresh,
    Shutdown(bool),
}

/// Records calls; fails `add_peer` and `add_net_endpoint` when `fail` is set, and never returns
/// from the `add_peer` after `stall_after` recorded ones (a process killed
/// in the middle of it); reports `learned` as the endpoints it learned by
/// itself.
#[derive(Clone, Default)]
pub(crate) struct FakeDataplane {
    pub calls: Arc<Mutex<Vec<Call>>>,
    pub fail: Arc<Mutex<bool>>,
    pub learned: Arc<Mutex<Vec<EndpointSpec>>>,
    pub stall_after: Arc<Mutex<Option<usize>>>,
}

impl FakeDataplane {
    pub(crate) fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }
}

#[async_trait::async_trait]
impl Dataplane for FakeDataplane {
    fn mode(&self) -> Mode {
        Mode::Ebpf
    }
    async fn add_peer(&mut self, peer: &PeerSpec) -> Result<(), DataplaneError> {
        if *self.fail.lock().unwrap() {
            return Err(DataplaneError::Other("map full".into()));
        }
        let added = self.calls.lock().unwrap().len();
        if self.stall_after.lock().unwrap().is_some_and(|n| added >= n) {
            std::future::pending::<()>().await;
        }
        self.record(Call::AddPeer(peer.clone()));
        Ok(())
    }
    async fn del_peer(&mut self, subnet: Ipv4Net) -> Result<(), DataplaneError> {
        self.record(Call::DelPeer(subnet));
        Ok(())
    }
    async fn add_endpoint(&mut self, ep: &EndpointSpec) -> Result<(), DataplaneError> {
        self.record(Call::AddEndpoint(ep.clone()));
        Ok(())
    }
    async fn del_endpoint(&mut self, ip: Ipv4Addr) -> Result<(), DataplaneError> {
        self.record(Call::DelEndpoint(ip));
        Ok(())
    }
    async fn add_network(&mut self, net: &NetworkSpec) -> Result<(), DataplaneError> {
        self.record(Call::AddNetwork(net.clone()));
        Ok(())
    }
    async fn del_network(&mut self, vni: u32) -> Result<(), DataplaneError> {
        self.record(Call::DelNetwork(vni));
        Ok(())
    }
    async fn add_net_endpoint(&mut self, ep: &NetEndpointSpec) -> Result<(), DataplaneError> {
        if *self.fail.lock().unwrap() {
            return Err(DataplaneError::Other("map full".into()));
        }
        self.record(Call::AddNetEndpoint(ep.clone()));
        Ok(())
    }
    async fn del_net_endpoint(&mut self, vni: u32, ip: Ipv4Addr) -> Result<(), DataplaneError> {
        self.record(Call::DelNetEndpoint(vni, ip));
        Ok(())
    }
    fn stats(&self) -> Result<Stats, DataplaneError> {
        let mut stats = Stats::default();
        stats.counters.insert("encap_packets".into(), 7);
        stats.drops.insert("unknown_vni".into(), 1);
        Ok(stats)
    }
    fn learned_endpoints(&self) -> Result<Vec<EndpointSpec>, DataplaneError> {
        Ok(self.learned.lock().unwrap().clone())
    }
    async fn refresh(&mut self) -> Result<(), DataplaneError> {
        self.record(Call::Refresh);
        Ok(())
    }
    async fn shutdown(&mut self, cleanup: bool) -> Result<(), DataplaneError> {
        self.record(Call::Shutdown(cleanup));
        Ok(())
    }
}

/// A host whose tables tests can change.
#[derive(Default)]
pub(crate) struct FakeNet {
    pub snap: Mutex<Snapshot>,
    pub addrs: Vec<(u32, Ipv4Addr, u8)>,
    /// The main routing table.
    pub routes: Mutex<Vec<Route>>,
}

#[async_trait::async_trait]
impl Netlink for FakeNet {
    async fn link_by_name(&self, name: &str) -> Result<Link, SysError> {
        let snap = self.snap.lock().unwrap();
        snap.links
            .iter()
            .find(|l| l.name == name)
            .cloned()
            .ok_or_else(|| SysError::NotFound(name.into()))
    }
    async fn link_by_index(&self, index: u32) -> Result<Link, SysError> {
        let snap = self.snap.lock().unwrap();
        snap.links
            .iter()
            .find(|l| l.index == index)
            .cloned()
            .ok_or(SysError::IndexNotFound(index))
    }
    async fn links(&self) -> Result<Vec<Link>, SysError> {
        Ok(self.snap.lock().unwrap().links.clone())
    }
    async fn ipv4_addrs(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, SysError> {
        Ok(self
            .addrs
            .iter()
            .filter(|a| a.0 == index)
            .map(|a| (a.1, a.2))
            .collect())
    }
    async fn neighbours_v4(&self, _index: u32) -> Result<Vec<Neighbour>, SysError> {
        Ok(self.snap.lock().unwrap().neighbours.clone())
    }
    async fn bridge_fdb(&self, _bridge_index: u32) -> Result<Vec<FdbEntry>, SysError> {
        Ok(self.snap.lock().unwrap().fdb.clone())
    }
    async fn routes_v4(&self) -> Result<Vec<Route>, SysError> {
        Ok(self.routes.lock().unwrap().clone())
    }
}

pub(crate) fn test_config(state_dir: PathBuf) -> Config {
    let mut cfg = Config::parse(
        r#"
underlay_interface = "eth1"
subnet = "10.103.100.0/24"
bridge = "docker0"
vni = 42
[[peers]]
subnet = "10.103.200.0/24"
underlay_ip = "192.168.56.5"
"#,
    )
    .unwrap();
    cfg.state_dir = state_dir;
    cfg
}

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("overlay-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) fn fake_net() -> Arc<FakeNet> {
    Arc::new(FakeNet {
        snap: Mutex::new(snapshot()),
        addrs: vec![(2, Ipv4Addr::new(192, 168, 56, 4), 24)],
        routes: Mutex::default(),
    })
}

/// The config's peers, as the config source reports them.
pub(crate) async fn apply_config_peers(agent: &mut Agent) {
    for p in agent.config().peers.clone() {
        let mac = p
            .vtep_mac
            .as_deref()
            .map(crate::model::validation::parse_vtep_mac)
            .and_then(Result::ok);
        let peer = PeerSpec {
            subnet: p.subnet,
            underlay_ip: p.underlay_ip,
            vtep_mac: mac,
        };
        agent
            .apply(Source::Config, Change::AddPeer(peer))
            .await
            .unwrap();
    }
}

/// An agent with the config's peer applied and the fake's calls cleared.
pub(crate) async fn agent(state_dir: PathBuf) -> (Agent, FakeDataplane, Arc<FakeNet>) {
    let dp = FakeDataplane::default();
    let net = fake_net();
    let cfg = test_config(state_dir);
    let ip = resolve_underlay_ip(&cfg, &*net).await.unwrap();
    let mut agent = Agent::new(cfg, Box::new(dp.clone()), net.clone(), ip);
    apply_config_peers(&mut agent).await;
    agent.restore(State::default()).await;
    dp.take();
    (agent, dp, net)
}

/// [`agent`], as the handle sources use.
pub(crate) async fn core(state_dir: PathBuf) -> (Core, FakeDataplane, Arc<FakeNet>) {
    let (agent, dp, net) = agent(state_dir).await;
    (Core::new(agent), dp, net)
}
