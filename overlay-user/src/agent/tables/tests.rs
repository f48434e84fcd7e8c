use super::*;
use crate::agent::testing::{agent, fake_net, temp_dir, test_config, Call};
use crate::sys::bridge::fixtures::{fdb, mac};

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[tokio::test]
async fn underlay_ip_resolution() {
    let net = fake_net();
    let mut cfg = test_config(PathBuf::from("/nonexistent"));
    assert_eq!(
        resolve_underlay_ip(&cfg, &*net).await.unwrap(),
        ip("192.168.56.4")
    );
    cfg.underlay_ip = Some(ip("192.168.56.40"));
    assert_eq!(
        resolve_underlay_ip(&cfg, &*net).await.unwrap(),
        ip("192.168.56.40")
    );
    cfg.underlay_interface = "eth9".into();
    assert_eq!(
        resolve_underlay_ip(&cfg, &*net)
            .await
            .unwrap_err()
            .to_string(),
        "no interface named eth9"
    );
    cfg.underlay_interface = "veth1".into();
    cfg.underlay_ip = None;
    assert_eq!(
        resolve_underlay_ip(&cfg, &*net).await.unwrap_err().to_string(),
        "underlay interface veth1 has no IPv4 address; add one or set underlay_ip in the config file"
    );
}

#[tokio::test]
async fn peer_validation_changes_nothing() {
    let dir = temp_dir("peer-validation");
    let (mut agent, dp, _) = agent(dir.clone()).await;
    let before = agent.peers().clone();
    let cases: &[(&str, &str, Option<[u8; 6]>, &str)] = &[
        ("10.103.100.0/25", "192.168.56.6", None,
         "peer subnet 10.103.100.0/25 overlaps this host's subnet 10.103.100.0/24; expected a subnet disjoint from it"),
        ("10.103.0.0/16", "192.168.56.6", None,
         "peer subnet 10.103.0.0/16 overlaps this host's subnet 10.103.100.0/24; expected a subnet disjoint from it"),
        ("10.103.200.128/25", "192.168.56.6", None,
         "peer subnet 10.103.200.128/25 overlaps peer subnet 10.103.200.0/24 (via 192.168.56.5); delete that peer first or choose a disjoint subnet"),
        ("10.103.201.7/24", "192.168.56.6", None,
         "10.103.201.7/24 has host bits set; expected a network address like 10.103.201.0/24"),
        ("10.103.201.0/24", "0.0.0.0", None,
         "0.0.0.0 is an unspecified address; expected a host's unicast underlay address like 192.168.56.5"),
        ("10.103.201.0/24", "127.0.0.1", None,
         "127.0.0.1 is a loopback address; expected a host's unicast underlay address like 192.168.56.5"),
        ("10.103.201.0/24", "224.0.0.1", None,
         "224.0.0.1 is a multicast address; expected a host's unicast underlay address like 192.168.56.5"),
        ("10.103.201.0/24", "255.255.255.255", None,
         "255.255.255.255 is a broadcast address; expected a host's unicast underlay address like 192.168.56.5"),
        ("10.103.201.0/24", "192.168.56.4", None,
         "192.168.56.4 is this host's own underlay address; expected the peer host's address"),
        ("10.103.201.0/24", "192.168.56.6", Some([1, 0, 0x5e, 0, 0, 1]),
         "01:00:5e:00:00:01 is not a unicast MAC address; expected one like 02:2a:c0:a8:38:05 (first byte even, not all zeros)"),
    ];
    for (subnet, underlay, mac, expected) in cases {
        let e = agent
            .add_peer(net(subnet), ip(underlay), *mac, Source::Api)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), *expected);
    }
    assert_eq!(dp.take(), vec![]);
    assert_eq!(agent.peers(), &before);
    assert_eq!(
        agent
            .del_peer(net("10.1.2.0/24"))
            .await
            .unwrap_err()
            .to_string(),
        "no peer for 10.1.2.0/24"
    );
    assert_eq!(dp.take(), vec![]);
    // Nothing was persisted either.
    assert!(!state::path_in(&dir).exists());
}

#[tokio::test]
async fn dataplane_failure_changes_nothing() {
    let dir = temp_dir("dp-fail");
    let (mut agent, dp, _) = agent(dir.clone()).await;
    *dp.fail.lock().unwrap() = true;
    let e = agent
        .add_peer(
            net("10.103.201.0/24"),
            ip("192.168.56.6"),
            None,
            Source::Api,
        )
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "adding peer 10.103.201.0/24: map full");
    assert_eq!(agent.peers().len(), 1);
    assert!(!state::path_in(&dir).exists());
}

#[tokio::test]
async fn peer_add_replace_delete() {
    let dir = temp_dir("peers");
    let (mut agent, dp, _) = agent(dir.clone()).await;
    let s = net("10.103.201.0/24");
    agent
        .add_peer(s, ip("192.168.56.6"), None, Source::Api)
        .await
        .unwrap();
    let spec = PeerSpec {
        subnet: s,
        underlay_ip: ip("192.168.56.6"),
        vtep_mac: None,
    };
    assert_eq!(dp.take(), vec![Call::AddPeer(spec.clone())]);
    // The same subnet again replaces.
    let mac = [2, 0, 0, 0, 0, 9];
    agent
        .add_peer(s, ip("192.168.56.7"), Some(mac), Source::Api)
        .await
        .unwrap();
    let spec2 = PeerSpec {
        subnet: s,
        underlay_ip: ip("192.168.56.7"),
        vtep_mac: Some(mac),
    };
    assert_eq!(dp.take(), vec![Call::AddPeer(spec2.clone())]);
    assert_eq!(agent.peers()[&s].spec, spec2);
    assert_eq!(agent.effective_vtep_mac(&spec2), mac);
    assert_eq!(agent.effective_vtep_mac(&spec), [2, 42, 192, 168, 56, 6]);
    // Persisted.
    let saved = state::load(&state::path_in(&dir)).unwrap();
    assert_eq!(saved.peers.len(), 1);
    assert_eq!(
        saved.peers[0].vtep_mac.as_deref(),
        Some("02:00:00:00:00:09")
    );
    agent.del_peer(s).await.unwrap();
    assert_eq!(dp.take(), vec![Call::DelPeer(s)]);
    assert!(state::load(&state::path_in(&dir)).unwrap().peers.is_empty());
    // A config peer can be deleted too (it comes back on restart).
    agent.del_peer(net("10.103.200.0/24")).await.unwrap();
    assert!(agent.peers().is_empty());
}

#[tokio::test]
async fn endpoint_validation_changes_nothing() {
    let (mut agent, dp, _) = agent(temp_dir("ep-validation")).await;
    let cases = [
        ("10.103.101.5", "veth1", "10.103.101.5 is not in this host's subnet 10.103.100.0/24; expected a container address in it"),
        ("10.103.100.0", "veth1", "10.103.100.0 is the network address of 10.103.100.0/24; expected a container address"),
        ("10.103.100.255", "veth1", "10.103.100.255 is the broadcast address of 10.103.100.0/24; expected a container address"),
        ("10.103.100.1", "veth1", "10.103.100.1 is the gateway address of 10.103.100.0/24; expected a container address"),
        ("10.103.100.9", "nosuch0", "no interface named nosuch0"),
    ];
    for (addr, dev, expected) in cases {
        let e = agent
            .add_endpoint(ip(addr), dev, Source::Api)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), expected);
    }
    assert_eq!(
        agent
            .del_endpoint(ip("10.103.100.9"))
            .await
            .unwrap_err()
            .to_string(),
        "no endpoint for 10.103.100.9"
    );
    assert_eq!(dp.take(), vec![]);
    assert!(agent.endpoints().is_empty());
}

#[tokio::test]
async fn endpoint_mac_lookup() {
    let dir = temp_dir("ep-mac");
    let (mut agent, dp, net_) = agent(dir.clone()).await;
    // From the neighbour table.
    agent
        .add_endpoint(ip("10.103.100.2"), "veth1", Source::Api)
        .await
        .unwrap();
    // From the only FDB entry learned on the port.
    agent
        .add_endpoint(ip("10.103.100.60"), "veth2", Source::Api)
        .await
        .unwrap();
    // Unknown: two MACs behind the port.
    net_.snap.lock().unwrap().fdb.push(fdb(77, 11));
    agent
        .add_endpoint(ip("10.103.100.61"), "veth2", Source::Attach)
        .await
        .unwrap();
    let macs: Vec<_> = dp
        .take()
        .into_iter()
        .map(|c| match c {
            Call::AddEndpoint(ep) => (ep.ip, ep.ifindex, ep.mac),
            c => panic!("{c:?}"),
        })
        .collect();
    assert_eq!(
        macs,
        vec![
            (ip("10.103.100.2"), 10, mac(2)),
            (ip("10.103.100.60"), 11, mac(3)),
            (ip("10.103.100.61"), 11, [0; 6]),
        ]
    );
    let saved = state::load(&state::path_in(&dir)).unwrap();
    assert_eq!(saved.endpoints.len(), 3);
    agent.del_endpoint(ip("10.103.100.61")).await.unwrap();
    assert_eq!(dp.take(), vec![Call::DelEndpoint(ip("10.103.100.61"))]);
    assert_eq!(
        state::load(&state::path_in(&dir)).unwrap().endpoints.len(),
        2
    );
}

#[tokio::test]
async fn status_reports_settings_and_stats() {
    let (agent, _, _) = agent(temp_dir("status")).await;
    let st = agent.status().unwrap();
    assert_eq!(st.mode, Mode::Ebpf);
    assert_eq!(st.subnet, net("10.103.100.0/24"));
    assert_eq!(st.gateway, ip("10.103.100.1"));
    assert_eq!(st.underlay_ip, ip("192.168.56.4"));
    assert_eq!(st.vtep_mac, "02:2a:c0:a8:38:04");
    assert_eq!(st.vni, 42);
    assert_eq!(st.vxlan_port, 4789);
    assert_eq!(st.peers, 1);
    assert_eq!(st.endpoints, 0);
    assert_eq!(st.stats.counters["encap_packets"], 7);
}

/// `n` peers as the API adds them, as in the state file.
fn saved_peers(n: u8) -> State {
    State {
        version: state::VERSION,
        peers: (0..n)
            .map(|i| StoredPeer {
                subnet: net(&format!("10.104.{i}.0/24")),
                underlay_ip: Ipv4Addr::new(192, 168, 57, i + 1),
                vtep_mac: None,
                source: Source::Api,
            })
            .collect(),
        endpoints: Vec::new(),
        net_endpoints: Vec::new(),
    }
}

/// The file's modification time, after setting it to a day ago.
fn age(path: &std::path::Path) -> std::time::SystemTime {
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(old).unwrap();
    f.metadata().unwrap().modified().unwrap()
}

fn modified(path: &std::path::Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[tokio::test]
async fn a_kill_during_restore_leaves_the_state_file_whole() {
    let dir = temp_dir("restore-killed");
    let path = state::path_in(&dir);
    let saved = saved_peers(50);
    state::save(&path, &saved).unwrap();
    let (mut agent, dp, _) = agent(dir.clone()).await;
    // The 4th peer never comes back; the restore is dropped, as in a kill.
    *dp.stall_after.lock().unwrap() = Some(3);
    let restore = agent.restore(saved.clone());
    let r = tokio::time::timeout(std::time::Duration::from_millis(200), restore).await;
    assert!(r.is_err(), "the restore was expected to stall");
    assert_eq!(agent.peers().len(), 1 + 3);
    assert_eq!(state::load(&path).unwrap(), saved);
}

#[tokio::test]
async fn restore_writes_the_state_file_once_and_only_if_changed() {
    let dir = temp_dir("restore-once");
    let path = state::path_in(&dir);
    let saved = saved_peers(50);
    state::save(&path, &saved).unwrap();
    let aged = age(&path);
    let (mut agent, dp, _) = agent(dir.clone()).await;
    agent.restore(saved.clone()).await;
    assert_eq!(agent.peers().len(), 51);
    assert_eq!(dp.take().len(), 50);
    assert_eq!(
        modified(&path),
        aged,
        "an unchanged table was written again"
    );

    // One saved peer is refused now: the file is written, without it.
    let mut with_bad = saved.clone();
    with_bad.peers.insert(
        7,
        StoredPeer {
            subnet: net("10.103.100.0/25"),
            underlay_ip: ip("192.168.56.9"),
            vtep_mac: None,
            source: Source::Api,
        },
    );
    state::save(&path, &with_bad).unwrap();
    let aged = age(&path);
    let (mut again, _, _) = crate::agent::testing::agent(dir.clone()).await;
    again.restore(with_bad).await;
    assert_ne!(modified(&path), aged);
    assert_eq!(state::load(&path).unwrap(), saved);
}
