//! Overlay networks against a real etcd (in a lab namespace), three hosts
//! in one process (each its own lease and directory), host 1 with the
//! registry and the fake dataplane: concurrent creates get distinct VNIs
//! and subnets (and one name once), collisions are refused with their
//! reason, IPAM hands out unique addresses under concurrent requests from
//! three hosts (and its latency is measured), endpoint records reach the
//! other host's core as remote endpoints and go when withdrawn or when the
//! publishing host's lease ends, and `remove` is refused while they exist.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::agent::testing::{core, temp_dir, Call, FakeDataplane};
use crate::model::cluster::ClusterSettings;
use crate::model::config::cluster::ClusterConfig;
use crate::model::overlay_network::{EndpointRecord, NetEndpointSpec, NetLocation, NetworkRequest};
use crate::sources::cluster::client::Store;
use crate::sources::cluster::directory::Directory;
use crate::sources::cluster::lease::{acquire, Lease, Me};
use crate::sources::cluster::registry::ClusterSource;
use crate::sources::cluster::ClusterError;

fn req(name: &str, subnet: Option<&str>, vni: Option<u32>) -> NetworkRequest {
    NetworkRequest {
        name: name.into(),
        subnet: subnet.map(|s| s.parse().unwrap()),
        gateway: None,
        vni,
    }
}

async fn host(cfg: &ClusterConfig, n: u8, dir: &Path) -> Lease {
    let me = Me {
        name: format!("h{n}"),
        underlay_ip: Ipv4Addr::new(192, 168, 56, 3 + n),
        subnet: Some(format!("10.103.{n}.0/24").parse().unwrap()),
        vni: None,
        port: None,
    };
    acquire(cfg, &me, &dir.join(format!("h{n}"))).await.unwrap()
}

fn record(net: &str, ip: Ipv4Addr, container: &str) -> EndpointRecord {
    EndpointRecord {
        network: net.into(),
        ip,
        mac: [2, 0xaa, 0, 0, 0, ip.octets()[3]],
        host: String::new(),
        underlay_ip: Ipv4Addr::UNSPECIFIED,
        container: container.into(),
        name: format!("c-{container}"),
        aliases: vec![],
    }
}

/// Wait until the fake dataplane has recorded `want` (in any order among other calls).
async fn wait_calls(dp: &FakeDataplane, want: &[Call]) -> Duration {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        seen.extend(dp.take());
        if want.iter().all(|w| seen.contains(w)) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "expected {want:?}, saw {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn err<T: std::fmt::Debug>(r: Result<T, ClusterError>) -> String {
    r.unwrap_err().to_string()
}

async fn scenario(url: String) {
    let mut cfg: ClusterConfig = toml::from_str(&format!("etcd = [{url:?}]")).unwrap();
    cfg.network_pool = "10.104.0.0/22".parse().unwrap();
    cfg.validate().unwrap();
    let store = Store::connect(&cfg).await.unwrap();
    let settings = ClusterSettings {
        pool: "10.103.0.0/16".parse().unwrap(),
        subnet_len: 24,
        vni: 4097,
        port: 4789,
    };
    store.init(&settings, false).await.unwrap();
    let dir = temp_dir("cluster-networks");
    let (l1, l2, l3) = (
        host(&cfg, 1, &dir).await,
        host(&cfg, 2, &dir).await,
        host(&cfg, 3, &dir).await,
    );
    let (d1, d2, d3) = (
        Directory::new(&l1),
        Directory::new(&l2),
        Directory::new(&l3),
    );
    let (core1, dp, _) = core(dir.join("agent1")).await;
    let (source, _view) = ClusterSource::new(l1);
    let watcher = tokio::spawn(source.follow(core1.clone()));

    // Three hosts create three networks at once: distinct VNIs (4097, the
    // cluster's, skipped) and subnets.
    let (a, b, c) = tokio::join!(
        d1.create(req("n1", None, None)),
        d2.create(req("n2", None, None)),
        d3.create(req("n3", None, None))
    );
    let nets = [a.unwrap(), b.unwrap(), c.unwrap()];
    let vnis: BTreeSet<u32> = nets.iter().map(|n| n.vni).collect();
    assert_eq!(vnis, [4096, 4098, 4099].into(), "{nets:?}");
    let subnets: BTreeSet<String> = nets.iter().map(|n| n.subnet.to_string()).collect();
    assert_eq!(
        subnets,
        ["10.104.0.0/24", "10.104.1.0/24", "10.104.2.0/24"]
            .map(String::from)
            .into()
    );
    // The same name from three hosts at once: created once.
    let (a, b, c) = tokio::join!(
        d1.create(req("same", Some("10.105.0.0/24"), None)),
        d2.create(req("same", Some("10.105.1.0/24"), None)),
        d3.create(req("same", Some("10.105.2.0/24"), None))
    );
    let results = [a, b, c];
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            e.to_string()
                .starts_with("network same already exists (VNI 4100, subnet 10.105."),
            "{e}"
        );
    }
    // Collisions, refused with their reason.
    let n1 = nets.iter().find(|n| n.name == "n1").unwrap();
    assert_eq!(
        err(d2.create(req("n1", None, None)).await),
        format!("network n1 already exists (VNI {}, subnet {}); expected a new name, or `overlayctl network rm n1` first", n1.vni, n1.subnet)
    );
    assert_eq!(
        err(d2.create(req("x", None, Some(4098))).await),
        "VNI 4098 is taken by network n2; expected a free VNI, or no --vni to get one"
            .replace("n2", &nets.iter().find(|n| n.vni == 4098).unwrap().name)
    );
    assert_eq!(
        err(d2.create(req("x", Some("10.104.0.128/25"), None)).await),
        format!(
            "subnet 10.104.0.128/25 overlaps network {} (10.104.0.0/24); expected a subnet disjoint from every network's and from the hosts' pool",
            nets.iter().find(|n| n.subnet.to_string() == "10.104.0.0/24").unwrap().name
        )
    );
    // The pool (a /22) has one /24 left, then none.
    d3.create(req("n4", None, None)).await.unwrap();
    assert_eq!(
        err(d3.create(req("n5", None, None)).await),
        "the network pool 10.104.0.0/22 (cluster.network_pool) has no free /24 left; expected --subnet, or a wider cluster.network_pool"
    );
    let listed: Vec<String> = d2
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(listed, ["n1", "n2", "n3", "n4", "same"]);

    // IPAM: 3 hosts x 20 requests at once, all distinct, none reserved.
    let per_host = 20;
    let ask = |d: &Directory, h: usize| {
        let d = d.clone();
        async move {
            let mut got = Vec::new();
            let tasks: Vec<_> = (0..per_host)
                .map(|i| {
                    let d = d.clone();
                    tokio::spawn(async move { d.request("n1", None, &format!("h{h}-c{i}")).await })
                })
                .collect();
            for t in tasks {
                got.push(t.await.unwrap().unwrap());
            }
            got
        }
    };
    let started = Instant::now();
    let (x, y, z) = tokio::join!(ask(&d1, 1), ask(&d2, 2), ask(&d3, 3));
    let concurrent = started.elapsed();
    let all: Vec<Ipv4Addr> = x.into_iter().chain(y).chain(z).collect();
    let unique: BTreeSet<Ipv4Addr> = all.iter().copied().collect();
    assert_eq!(unique.len(), 3 * per_host, "{all:?}");
    let n1 = d1.inspect("n1").await.unwrap().0;
    assert!(unique.iter().all(|ip| n1.check_member(*ip).is_ok()));
    // Low addresses first: after a lost race a request picks among the first few free.
    let base = u32::from(n1.subnet.network());
    assert!(
        unique
            .iter()
            .all(|ip| u32::from(*ip) - base < 2 + 3 * per_host as u32 + 16),
        "{unique:?}"
    );
    // Sequential requests: the latency of one.
    let rounds = 100;
    let started = Instant::now();
    let mut seq = Vec::new();
    for i in 0..rounds {
        seq.push(d2.request("n2", None, &format!("seq-{i}")).await.unwrap());
    }
    let each = started.elapsed() / rounds;
    eprintln!(
        "IPAM: {} concurrent requests from 3 hosts in {concurrent:?}; sequential: {each:?} per address ({rounds} requests)",
        3 * per_host
    );
    // A wanted address: honoured when free, refused naming its holder when held.
    let held = seq[5];
    let n2 = nets.iter().find(|n| n.name == "n2").unwrap();
    assert_eq!(
        err(d3.request("n2", Some(held), "other").await),
        format!("address {held} on network n2 is held by seq-5 on host h2; expected a free address, or none to get one")
    );
    assert_eq!(d2.request("n2", Some(held), "seq-5").await.unwrap(), held);
    assert!(
        err(d3.request("n2", Some(n2.gateway), "g").await).starts_with(&format!(
            "address {} is the gateway of network n2;",
            n2.gateway
        ))
    );
    d2.release("n2", held).await.unwrap();
    d2.release("n2", held).await.unwrap();
    assert_eq!(d3.request("n2", Some(held), "other").await.unwrap(), held);
    let free = Ipv4Addr::from(u32::from(n2.subnet.network()) + 200);
    assert_eq!(d3.request("n2", Some(free), "static").await.unwrap(), free);

    // Records: host 2's endpoint reaches host 1's core as a remote endpoint.
    let spec1 = nets.iter().find(|n| n.name == "n1").unwrap().clone();
    let ip2 = all[0];
    d2.publish(&record("n1", ip2, "c2")).await.unwrap();
    let took = wait_calls(
        &dp,
        &[
            Call::AddNetwork(spec1.clone()),
            Call::AddNetEndpoint(NetEndpointSpec {
                vni: spec1.vni,
                ip: ip2,
                mac: [2, 0xaa, 0, 0, 0, ip2.octets()[3]],
                location: NetLocation::Remote {
                    host: Ipv4Addr::new(192, 168, 56, 5),
                },
            }),
        ],
    )
    .await;
    eprintln!("a record published on host 2 reached host 1's dataplane in {took:?}");
    // Host 1's own record is not installed as remote on host 1.
    d1.publish(&record("n1", all[1], "c1")).await.unwrap();
    let mut wrong = record("n1", all[2], "c9");
    wrong.host = "h3".into();
    assert_eq!(
        err(d1.publish(&wrong).await),
        format!("endpoint record {} on network n1 names host h3 (192.168.56.4); expected this host, h1 (192.168.56.4), or empty fields to fill in", all[2])
    );
    assert_eq!(
        err(d3.publish(&record("n1", ip2, "c3")).await),
        format!("address {ip2} on network n1 is held by c2 on host h2; expected a free address, or none to get one")
    );
    let inspect = d3.inspect("n1").await.unwrap().1;
    assert_eq!(
        inspect
            .iter()
            .map(|r| (r.ip, r.host.as_str()))
            .collect::<Vec<_>>(),
        {
            let mut v = vec![(ip2, "h2"), (all[1], "h1")];
            v.sort();
            v
        }
    );
    // rm is refused while endpoints exist, naming them.
    let mut names = [
        format!("{ip2} (c-c2 on h2)"),
        format!("{} (c-c1 on h1)", all[1]),
    ];
    names.sort_by_key(|n| n.split(' ').next().unwrap().parse::<Ipv4Addr>().unwrap());
    assert_eq!(
        err(d3.remove("n1").await),
        format!("network n1 still has endpoints: {}; expected none (stop or disconnect those containers first)", names.join(", "))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(dp.take(), vec![], "host 1's own record stays local");
    d1.withdraw("n1", all[1]).await.unwrap();
    // Host 2's lease ends (a dead host): its record goes, and from host 1's core.
    crate::sources::cluster::lease::revoke(&d2.store, l2.state.id()).await;
    wait_calls(&dp, &[Call::DelNetEndpoint(spec1.vni, ip2)]).await;
    let removed = d3.remove("n1").await.unwrap();
    assert_eq!(removed, spec1);
    wait_calls(&dp, &[Call::DelNetwork(spec1.vni)]).await;
    assert!(
        d3.held("n1").await.unwrap().is_empty(),
        "addresses released with the network"
    );
    assert_eq!(
        err(d3.remove("n1").await),
        "no network named n1 in the cluster store; expected a name from `overlayctl network ls`"
    );
    watcher.abort();
    drop((l3, d1, d2, d3));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn networks_ipam_and_records_with_real_etcd() {
    if !overlay_lab::need_etcd_or_skip() {
        return;
    }
    let lab = overlay_lab::Lab::new(overlay_lab::LabSpec {
        hosts: 1,
        containers_per_host: 0,
        ..Default::default()
    })
    .unwrap();
    let etcd = overlay_lab::Etcd::start(&lab, &[1], &overlay_lab::EtcdOptions::default()).unwrap();
    let url = etcd.endpoints()[0].clone();
    overlay_lab::run_in_netns(&lab.host(1).ns, move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(scenario(url))
    })
    .unwrap();
}
