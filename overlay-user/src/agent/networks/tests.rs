//! The core's overlay networks against the fake dataplane: what is called,
//! what is refused (with the exact message, nothing called), removal of a
//! network with its endpoints, and local endpoints kept across a restart.

use super::*;
use crate::agent::state::{State, StoredNetEndpoint};
use crate::agent::testing::{agent, temp_dir, Call};
use crate::model::change::Change;

fn web() -> NetworkSpec {
    NetworkSpec {
        name: "web".into(),
        vni: 4096,
        subnet: "10.104.0.0/24".parse().unwrap(),
        gateway: Ipv4Addr::new(10, 104, 0, 1),
    }
}

fn remote(last: u8, host: u8) -> NetEndpointSpec {
    NetEndpointSpec {
        vni: 4096,
        ip: Ipv4Addr::new(10, 104, 0, last),
        mac: [2, 0, 0, 0, 0, last],
        location: NetLocation::Remote {
            host: Ipv4Addr::new(192, 168, 56, host),
        },
    }
}

fn local(last: u8, ifname: &str, ifindex: u32) -> NetEndpointSpec {
    NetEndpointSpec {
        location: NetLocation::Local {
            ifname: ifname.into(),
            ifindex,
        },
        ..remote(last, 5)
    }
}

#[tokio::test]
async fn networks_and_endpoints_reach_the_dataplane() {
    let (mut agent, dp, _) = agent(temp_dir("nets-basic")).await;
    agent
        .apply(Source::Cluster, Change::AddNetwork(web()))
        .await
        .unwrap();
    // The same network again: nothing to do.
    agent
        .apply(Source::Cluster, Change::AddNetwork(web()))
        .await
        .unwrap();
    let ep = remote(3, 5);
    agent
        .apply(Source::Cluster, Change::PutNetEndpoint(ep.clone()))
        .await
        .unwrap();
    let mine = local(2, "veth1", 10);
    agent
        .apply(Source::Plugin, Change::PutNetEndpoint(mine.clone()))
        .await
        .unwrap();
    assert_eq!(
        dp.take(),
        vec![
            Call::AddNetwork(web()),
            Call::AddNetEndpoint(ep.clone()),
            Call::AddNetEndpoint(mine.clone())
        ]
    );
    assert_eq!(agent.networks()[&4096].source, Source::Cluster);
    assert_eq!(agent.net_endpoints().len(), 2);
    let status = agent.status().unwrap();
    assert_eq!((status.networks, status.net_endpoints), (1, 2));

    agent
        .apply(
            Source::Cluster,
            Change::DelNetEndpoint {
                vni: 4096,
                ip: ep.ip,
            },
        )
        .await
        .unwrap();
    assert_eq!(dp.take(), vec![Call::DelNetEndpoint(4096, ep.ip)]);
    // Removing the network removes its endpoints, with one dataplane call.
    agent
        .apply(Source::Cluster, Change::DelNetwork(4096))
        .await
        .unwrap();
    assert_eq!(dp.take(), vec![Call::DelNetwork(4096)]);
    assert!(agent.networks().is_empty() && agent.net_endpoints().is_empty());
    let e = agent
        .apply(Source::Cluster, Change::DelNetwork(4096))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no overlay network with VNI 4096 on this host; expected a network from `overlayctl network ls` (carried once the cluster store reports it)"
    );
}

#[tokio::test]
async fn bad_networks_and_endpoints_are_refused_and_change_nothing() {
    let (mut agent, dp, _) = agent(temp_dir("nets-refused")).await;
    let refused = |spec: NetworkSpec| Change::AddNetwork(spec);
    let mut cases: Vec<(Change, &str)> = Vec::new();
    let mut s = web();
    s.vni = 42;
    cases.push((
        refused(s),
        "network web (VNI 42, 10.104.0.0/24) has this host's per-host VNI 42; expected another VNI",
    ));
    let mut s = web();
    s.subnet = "10.103.0.0/16".parse().unwrap();
    s.gateway = Ipv4Addr::new(10, 103, 0, 1);
    cases.push((refused(s), "network web (VNI 4096, 10.103.0.0/16) overlaps this host's subnet 10.103.100.0/24; expected a subnet disjoint from the hosts' subnets"));
    let mut s = web();
    s.subnet = "10.103.200.128/25".parse().unwrap();
    s.gateway = Ipv4Addr::new(10, 103, 200, 129);
    cases.push((refused(s), "network web (VNI 4096, 10.103.200.128/25) overlaps peer subnet 10.103.200.0/24 (via 192.168.56.5); expected a subnet disjoint from the hosts' subnets"));
    let mut s = web();
    s.gateway = Ipv4Addr::new(10, 104, 1, 1);
    cases.push((refused(s), "gateway 10.104.1.1 is not in the subnet 10.104.0.0/24; expected an address of 10.104.0.0/24 other than its network and broadcast addresses, like 10.104.0.1"));
    cases.push((
        Change::PutNetEndpoint(remote(3, 5)),
        "no overlay network with VNI 4096 on this host; expected a network from `overlayctl network ls` (carried once the cluster store reports it)",
    ));
    for (change, want) in cases {
        let e = agent.apply(Source::Cluster, change).await.unwrap_err();
        assert_eq!(e.to_string(), want);
    }
    assert_eq!(dp.take(), vec![]);

    agent
        .apply(Source::Cluster, Change::AddNetwork(web()))
        .await
        .unwrap();
    let mut db = web();
    db.name = "db".into();
    db.vni = 4097;
    db.subnet = "10.104.0.0/16".parse().unwrap();
    let e = agent
        .apply(Source::Cluster, Change::AddNetwork(db))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "network db (VNI 4097, 10.104.0.0/16) collides with network web (VNI 4096, 10.104.0.0/24); expected a name and subnet no other network has");
    dp.take();

    let mut eps: Vec<(NetEndpointSpec, &str)> = Vec::new();
    eps.push((remote(1, 5), "address 10.104.0.1 is the gateway of network web; expected an address of 10.104.0.0/24 other than its network, broadcast and gateway (10.104.0.1) addresses"));
    eps.push((remote(255, 5), "address 10.104.0.255 is the broadcast address of network web; expected an address of 10.104.0.0/24 other than its network, broadcast and gateway (10.104.0.1) addresses"));
    let mut outside = remote(3, 5);
    outside.ip = Ipv4Addr::new(10, 105, 0, 3);
    eps.push((outside, "address 10.105.0.3 is not in network web's subnet 10.104.0.0/24; expected an address of 10.104.0.0/24 other than its network, broadcast and gateway (10.104.0.1) addresses"));
    eps.push((remote(3, 4), "endpoint 10.104.0.3 on network web: its host 192.168.56.4 is this host; expected another host's underlay address, or a local endpoint"));
    let mut multicast = remote(3, 5);
    multicast.mac = [1, 0, 0x5e, 0, 0, 1];
    eps.push((multicast, "01:00:5e:00:00:01 is not a unicast MAC address; expected one like 02:2a:c0:a8:38:05 (first byte even, not all zeros)"));
    eps.push((local(3, "", 0), "endpoint 10.104.0.3 on network web: local interface \"\" with ifindex 0; expected the host-side interface's name and ifindex"));
    for (ep, want) in eps {
        let e = agent
            .apply(Source::Cluster, Change::PutNetEndpoint(ep))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), want);
    }
    // A remote record never replaces a local endpoint.
    agent
        .apply(
            Source::Plugin,
            Change::PutNetEndpoint(local(3, "veth1", 10)),
        )
        .await
        .unwrap();
    let e = agent
        .apply(Source::Cluster, Change::PutNetEndpoint(remote(3, 6)))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "endpoint 10.104.0.3 on network web: is a local endpoint of this host (from plugin); keeping it; expected the local endpoint removed first");
    // A changed network with endpoints is refused; without, it replaces.
    let mut moved = web();
    moved.gateway = Ipv4Addr::new(10, 104, 0, 254);
    let e = agent
        .apply(Source::Cluster, Change::AddNetwork(moved.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "network web (VNI 4096, 10.104.0.0/24) would replace network web (10.104.0.0/24, gateway 10.104.0.1) which has endpoints; expected the network removed first");
    assert_eq!(dp.take(), vec![Call::AddNetEndpoint(local(3, "veth1", 10))]);
    agent
        .apply(
            Source::Plugin,
            Change::DelNetEndpoint {
                vni: 4096,
                ip: Ipv4Addr::new(10, 104, 0, 3),
            },
        )
        .await
        .unwrap();
    agent
        .apply(Source::Cluster, Change::AddNetwork(moved.clone()))
        .await
        .unwrap();
    assert_eq!(
        dp.take(),
        vec![
            Call::DelNetEndpoint(4096, Ipv4Addr::new(10, 104, 0, 3)),
            Call::AddNetwork(moved)
        ]
    );
    // A failing dataplane leaves the table as it was.
    *dp.fail.lock().unwrap() = true;
    assert!(agent
        .apply(Source::Cluster, Change::PutNetEndpoint(remote(9, 5)))
        .await
        .unwrap_err()
        .to_string()
        .starts_with("adding endpoint 10.104.0.9 on network web: "));
    assert!(agent.net_endpoints().is_empty());
}

#[tokio::test]
async fn attached_endpoints_come_back_once_their_network_does() {
    let dir = temp_dir("nets-restart");
    let (mut agent, dp, _) = agent(dir.clone()).await;
    agent
        .apply(Source::Cluster, Change::AddNetwork(web()))
        .await
        .unwrap();
    agent
        .apply(
            Source::Attach,
            Change::PutNetEndpoint(local(2, "veth2", 11)),
        )
        .await
        .unwrap();
    // Remote and plugin endpoints are not kept: their sources report them again.
    agent
        .apply(Source::Cluster, Change::PutNetEndpoint(remote(3, 5)))
        .await
        .unwrap();
    let saved = crate::agent::state::load(&crate::agent::state::path_in(&dir)).unwrap();
    assert_eq!(
        saved.net_endpoints,
        vec![StoredNetEndpoint {
            vni: 4096,
            ip: Ipv4Addr::new(10, 104, 0, 2),
            mac: "02:00:00:00:00:02".into(),
            dev: "veth2".into(),
            source: Source::Attach,
        }]
    );
    drop(agent);
    dp.take();

    // A new agent restores it when (and only when) the network comes.
    let (mut agent, dp, _) = crate::agent::testing::agent(temp_dir("nets-restart-2")).await;
    agent.restore(State { ..saved.clone() }).await;
    assert_eq!(dp.take(), vec![]);
    assert_eq!(agent.saved_state().net_endpoints, saved.net_endpoints);
    agent
        .apply(Source::Cluster, Change::AddNetwork(web()))
        .await
        .unwrap();
    assert_eq!(
        dp.take(),
        vec![
            Call::AddNetwork(web()),
            Call::AddNetEndpoint(local(2, "veth2", 11))
        ]
    );
    assert_eq!(
        agent.net_endpoints()[&(4096, Ipv4Addr::new(10, 104, 0, 2))].source,
        Source::Attach
    );
    let _ = std::fs::remove_dir_all(&dir);
}
