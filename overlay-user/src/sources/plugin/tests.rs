//! The plugin over its socket, against an in-memory store: raw HTTP
//! requests without a Content-Type header, as Docker sends them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ipnet::Ipv4Net;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::agent::testing;
use crate::model::overlay_network::{EndpointRecord, NetworkRequest, NetworkSpec};
use crate::sources::{NetworkDirectory, SourceError};

/// The store, in memory: VNIs from 4096, subnets from 10.104.0.0/16 in /24s.
#[derive(Default)]
pub(super) struct FakeDirectory {
    pub(super) networks: Mutex<Vec<NetworkSpec>>,
    pub(super) held: Mutex<BTreeMap<(String, Ipv4Addr), String>>,
    records: Mutex<Vec<EndpointRecord>>,
}

fn refused(msg: String) -> SourceError {
    SourceError::Cluster(msg.into())
}

#[async_trait::async_trait]
impl NetworkDirectory for FakeDirectory {
    async fn create_network(&self, req: NetworkRequest) -> Result<NetworkSpec, SourceError> {
        let mut nets = self.networks.lock().unwrap();
        if nets.iter().any(|n| n.name == req.name) {
            return Err(refused(format!("network {} exists", req.name)));
        }
        let subnet = match req.subnet {
            Some(s) => s,
            None => (0..=255u8)
                .map(|i| Ipv4Net::new(Ipv4Addr::new(10, 104, i, 0), 24).unwrap())
                .find(|s| nets.iter().all(|n| n.subnet != *s))
                .unwrap(),
        };
        if let Some(n) = nets.iter().find(|n| n.subnet == subnet) {
            return Err(refused(format!("subnet {subnet} is network {}'s", n.name)));
        }
        let vni = req
            .vni
            .unwrap_or_else(|| (4096..).find(|v| nets.iter().all(|n| n.vni != *v)).unwrap());
        let gateway = req
            .gateway
            .unwrap_or_else(|| subnet.hosts().next().unwrap());
        let spec = NetworkSpec {
            name: req.name,
            vni,
            subnet,
            gateway,
        };
        nets.push(spec.clone());
        Ok(spec)
    }

    async fn remove_network(&self, name: &str) -> Result<NetworkSpec, SourceError> {
        let on: Vec<String> = self
            .records
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.network == name)
            .map(|r| r.container.clone())
            .collect();
        if !on.is_empty() {
            return Err(refused(format!("network {name} has endpoints {on:?}")));
        }
        let mut nets = self.networks.lock().unwrap();
        let i = nets
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| refused(format!("no network {name}")))?;
        self.held.lock().unwrap().retain(|(n, _), _| n != name);
        Ok(nets.remove(i))
    }

    async fn networks(&self) -> Result<Vec<NetworkSpec>, SourceError> {
        Ok(self.networks.lock().unwrap().clone())
    }

    async fn network(&self, name: &str) -> Result<(NetworkSpec, Vec<EndpointRecord>), SourceError> {
        let spec = self
            .networks
            .lock()
            .unwrap()
            .iter()
            .find(|n| n.name == name)
            .cloned()
            .ok_or_else(|| refused(format!("no network {name}")))?;
        let recs = self.records.lock().unwrap().clone();
        Ok((spec, recs))
    }

    async fn request_address(
        &self,
        network: &str,
        wanted: Option<Ipv4Addr>,
        holder: &str,
    ) -> Result<Ipv4Addr, SourceError> {
        let spec = self.network(network).await?.0;
        let mut held = self.held.lock().unwrap();
        let ip = match wanted {
            Some(ip) => {
                if let Some(h) = held.get(&(network.to_string(), ip)) {
                    return Err(refused(format!("{ip} on {network} is held by {h}")));
                }
                ip
            }
            None => spec
                .subnet
                .hosts()
                .find(|ip| *ip != spec.gateway && !held.contains_key(&(network.to_string(), *ip)))
                .unwrap(),
        };
        held.insert((network.to_string(), ip), holder.to_string());
        Ok(ip)
    }

    async fn release_address(&self, network: &str, ip: Ipv4Addr) -> Result<(), SourceError> {
        self.held.lock().unwrap().remove(&(network.to_string(), ip));
        Ok(())
    }

    async fn publish_endpoint(&self, record: &EndpointRecord) -> Result<(), SourceError> {
        let mut recs = self.records.lock().unwrap();
        recs.retain(|r| !(r.network == record.network && r.ip == record.ip));
        recs.push(record.clone());
        Ok(())
    }

    async fn withdraw_endpoint(&self, network: &str, ip: Ipv4Addr) -> Result<(), SourceError> {
        self.records
            .lock()
            .unwrap()
            .retain(|r| !(r.network == network && r.ip == ip));
        Ok(())
    }
}

struct Served {
    dir: Arc<FakeDirectory>,
    plugin: Arc<Plugin>,
    socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

async fn served() -> Served {
    let tmp = testing::temp_dir("plugin");
    let (core, _dp, _net) = testing::core(tmp.clone()).await;
    let dir = Arc::new(FakeDirectory::default());
    let settings = Settings {
        socket: tmp.join("plugins/ovl.sock"),
        docker_socket: tmp.join("no-docker.sock"),
        host: "h1".into(),
        underlay_ip: Ipv4Addr::new(192, 168, 56, 4),
        underlay_interface: "eth1".into(),
    };
    let listener = http::bind(&settings.socket).unwrap();
    let socket = settings.socket.clone();
    let plugin = Arc::new(Plugin::new(dir.clone(), core, settings));
    let task = tokio::spawn(http::serve(listener, plugin.clone(), socket.clone()));
    Served {
        dir,
        plugin,
        socket,
        task,
    }
}

/// POST `body` to `/call` as Docker does (HTTP/1.1, no Content-Type):
/// the status, the Content-Type and the JSON answer.
async fn post(socket: &Path, call: &str, body: &str) -> (u16, String, Value) {
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    let req = format!(
        "POST /{call} HTTP/1.1\r\nHost: plugin\r\nUser-Agent: Go-http-client/1.1\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    let (head, json) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_string();
    (status, ctype, serde_json::from_str(json).unwrap())
}

async fn ok(socket: &Path, call: &str, body: Value) -> Value {
    let (status, ctype, v) = post(socket, call, &body.to_string()).await;
    assert_eq!(
        (status, ctype.as_str()),
        (200, wire::CONTENT_TYPE),
        "{call}: {v}"
    );
    assert!(v.get("Err").is_none(), "{call}: {v}");
    v
}

async fn err(socket: &Path, call: &str, body: Value) -> String {
    let (_, ctype, v) = post(socket, call, &body.to_string()).await;
    assert_eq!(ctype, wire::CONTENT_TYPE);
    v["Err"]
        .as_str()
        .unwrap_or_else(|| panic!("{call}: {v}"))
        .to_string()
}

#[tokio::test]
async fn handshake() {
    let s = served().await;
    let v = ok(&s.socket, "Plugin.Activate", json!({})).await;
    assert_eq!(v, json!({"Implements": ["NetworkDriver", "IpamDriver"]}));
    let (_, _, v) = post(&s.socket, "NetworkDriver.GetCapabilities", "").await;
    assert_eq!(v, json!({"Scope": "local", "ConnectivityScope": "global"}));
    let v = ok(&s.socket, "IpamDriver.GetDefaultAddressSpaces", json!({})).await;
    assert_eq!(
        v,
        json!({"LocalDefaultAddressSpace": "ovl", "GlobalDefaultAddressSpace": "ovl"})
    );
    for noop in [
        "NetworkDriver.Leave",
        "NetworkDriver.ProgramExternalConnectivity",
        "NetworkDriver.RevokeExternalConnectivity",
        "NetworkDriver.DiscoverNew",
        "NetworkDriver.DiscoverDelete",
    ] {
        assert_eq!(
            ok(&s.socket, noop, json!({"NetworkID": "n"})).await,
            json!({})
        );
    }
    let (status, _, v) = post(&s.socket, "NetworkDriver.Frobnicate", "{}").await;
    assert_eq!(status, 404);
    assert_eq!(
        v["Err"],
        "unknown call \"NetworkDriver.Frobnicate\"; expected one of Docker's NetworkDriver or IpamDriver calls"
    );
    let (status, _, v) = post(&s.socket, "IpamDriver.RequestPool", "{not json").await;
    assert_eq!(status, 400);
    assert!(
        v["Err"]
            .as_str()
            .unwrap()
            .starts_with("cannot read the request \"{not json\": "),
        "{v}"
    );
}

#[tokio::test]
async fn default_ipam_is_refused() {
    let s = served().await;
    let e = err(
        &s.socket,
        "NetworkDriver.CreateNetwork",
        json!({"NetworkID": "0123456789abcdef", "Options": {},
               "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "172.18.0.0/16", "Gateway": "172.18.0.1/16"}]}),
    )
    .await;
    assert_eq!(
        e,
        "network 0123456789ab uses Docker's default IPAM (address space \"LocalDefault\"); the ovl network driver needs ovl's IPAM: add --ipam-driver ovl, as in `docker network create -d ovl --ipam-driver ovl --subnet 10.103.240.0/24 NAME`"
    );
    assert!(s.plugin.state().networks.is_empty());
}

#[tokio::test]
async fn pools_and_addresses_of_a_stored_network() {
    let s = served().await;
    s.dir
        .create_network(NetworkRequest {
            name: "web".into(),
            subnet: Some("10.103.240.0/24".parse().unwrap()),
            ..Default::default()
        })
        .await
        .unwrap();
    let v = ok(&s.socket, "IpamDriver.RequestPool",
        json!({"AddressSpace": "ovl", "Pool": "10.103.240.0/24", "SubPool": "", "Options": {}, "V6": false})).await;
    assert_eq!(v["PoolID"], "10.103.240.0/24");
    assert_eq!(v["Pool"], "10.103.240.0/24");
    let gw = json!({"PoolID": "10.103.240.0/24", "Address": "",
                    "Options": {"RequestAddressType": "com.docker.network.gateway"}});
    assert_eq!(
        ok(&s.socket, "IpamDriver.RequestAddress", gw).await["Address"],
        "10.103.240.1/24"
    );
    let e = err(
        &s.socket,
        "IpamDriver.RequestAddress",
        json!({"PoolID": "10.103.240.0/24", "Address": "10.103.240.9",
               "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
    )
    .await;
    assert_eq!(e, "gateway 10.103.240.9 differs from network web's gateway 10.103.240.1; leave out --gateway or give 10.103.240.1");
    let any = json!({"PoolID": "10.103.240.0/24", "Address": "", "Options": {}});
    assert_eq!(
        ok(&s.socket, "IpamDriver.RequestAddress", any.clone()).await["Address"],
        "10.103.240.2/24"
    );
    assert_eq!(
        ok(&s.socket, "IpamDriver.RequestAddress", any).await["Address"],
        "10.103.240.3/24"
    );
    let fixed = json!({"PoolID": "10.103.240.0/24", "Address": "10.103.240.2", "Options": {}});
    let e = err(&s.socket, "IpamDriver.RequestAddress", fixed.clone()).await;
    assert_eq!(e, "10.103.240.2 on web is held by docker on h1");
    ok(
        &s.socket,
        "IpamDriver.ReleaseAddress",
        json!({"PoolID": "10.103.240.0/24", "Address": "10.103.240.2"}),
    )
    .await;
    assert_eq!(
        ok(&s.socket, "IpamDriver.RequestAddress", fixed).await["Address"],
        "10.103.240.2/24"
    );
    let e = err(
        &s.socket,
        "IpamDriver.RequestAddress",
        json!({"PoolID": "10.103.240.0/24", "Address": "10.9.9.9", "Options": {}}),
    )
    .await;
    assert_eq!(e, "address 10.9.9.9 is outside network web's subnet 10.103.240.0/24; expected an address from ovl's IPAM");
    // Docker's network, then an endpoint without a MAC: one is derived and returned.
    let net = json!({"NetworkID": "d0cce7", "Options": {},
        "IPv4Data": [{"AddressSpace": "ovl", "Pool": "10.103.240.0/24", "Gateway": "10.103.240.1/24"}]});
    ok(&s.socket, "NetworkDriver.CreateNetwork", net).await;
    let v = ok(&s.socket, "NetworkDriver.CreateEndpoint", json!({"NetworkID": "d0cce7",
        "EndpointID": "e1e1e1e1e1e1e1e1", "Interface": {"Address": "10.103.240.3/24", "AddressIPv6": "", "MacAddress": ""},
        "Options": {}})).await;
    assert_eq!(v, json!({"Interface": {"MacAddress": "02:42:0a:67:f0:03"}}));
    let v = ok(&s.socket, "NetworkDriver.CreateEndpoint", json!({"NetworkID": "d0cce7",
        "EndpointID": "e2e2e2e2e2e2e2e2", "Interface": {"Address": "10.103.240.2/24", "MacAddress": "02:00:00:00:00:07"}})).await;
    assert_eq!(v, json!({}));
    {
        let state = s.plugin.state();
        let e = &state.endpoints["e1e1e1e1e1e1e1e1"];
        assert_eq!(
            (e.ip, e.mac, e.ifname.as_str()),
            (
                "10.103.240.3".parse().unwrap(),
                [2, 0x42, 10, 103, 240, 3],
                "ovne1e1e1e1e1e"
            )
        );
        assert_eq!(state.endpoints["e2e2e2e2e2e2e2e2"].mac, [2, 0, 0, 0, 0, 7]);
    }
    // Deleting an endpoint that never joined forgets it; Docker's network
    // removal removes the store's network.
    ok(
        &s.socket,
        "NetworkDriver.DeleteEndpoint",
        json!({"NetworkID": "d0cce7", "EndpointID": "e1e1e1e1e1e1e1e1"}),
    )
    .await;
    assert!(!s.plugin.state().endpoints.contains_key("e1e1e1e1e1e1e1e1"));
    ok(
        &s.socket,
        "NetworkDriver.DeleteNetwork",
        json!({"NetworkID": "d0cce7"}),
    )
    .await;
    assert!(s.dir.networks().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_new_pool_is_stored_provisionally() {
    let s = served().await;
    let v = ok(
        &s.socket,
        "IpamDriver.RequestPool",
        json!({"AddressSpace": "ovl", "Pool": "", "V6": false}),
    )
    .await;
    assert_eq!(v["PoolID"], "10.104.0.0/24");
    let nets = s.dir.networks().await.unwrap();
    assert_eq!(nets.len(), 1);
    assert!(nets[0].name.starts_with(PROVISIONAL_PREFIX), "{nets:?}");
    assert_eq!(nets[0].vni, 4096);
    let gw = json!({"PoolID": "10.104.0.0/24", "Address": "10.104.0.254",
                    "Options": {"RequestAddressType": "com.docker.network.gateway"}});
    assert_eq!(
        ok(&s.socket, "IpamDriver.RequestAddress", gw).await["Address"],
        "10.104.0.254/24"
    );
    assert_eq!(
        s.plugin.state().pending[&"10.104.0.0/24".parse().unwrap()].gateway,
        Some("10.104.0.254".parse().unwrap())
    );
    // Docker gave up (e.g. the driver refused): the pool goes, and so does the network.
    ok(
        &s.socket,
        "IpamDriver.ReleasePool",
        json!({"PoolID": "10.104.0.0/24"}),
    )
    .await;
    assert!(s.dir.networks().await.unwrap().is_empty());
    assert!(s.plugin.state().pending.is_empty());
    for (body, message) in [
        (json!({"Pool": "10.1.2.3/24"}), "subnet \"10.1.2.3/24\" is not valid; expected an IPv4 subnet like 10.103.240.0/24"),
        (json!({"Pool": "", "V6": true}), "IPv6 is not supported by ovl; leave out --ipv6"),
        (json!({"Pool": "10.1.2.0/24", "SubPool": "10.1.2.128/25"}), "--ip-range 10.1.2.128/25 is not supported by ovl; leave it out (addresses come from the whole subnet, unique across hosts)"),
    ] {
        assert_eq!(err(&s.socket, "IpamDriver.RequestPool", body).await, message);
    }
    let e = err(&s.socket, "IpamDriver.RequestAddress",
        json!({"PoolID": "10.105.0.0/24", "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}})).await;
    assert_eq!(e, "no overlay network has subnet 10.105.0.0/24; expected a pool handed out by ovl (see overlayctl network ls)");
}

#[test]
fn names() {
    let id = "3ffd421aa325939c14bfb047be9507d7615f831d281543e20548c576ce19049d";
    assert_eq!(host_ifname(id), "ovn3ffd421aa32");
    assert_eq!(temp_ifname(id), "ovq3ffd421aa32");
    assert!(host_ifname(id).len() <= 15);
}
