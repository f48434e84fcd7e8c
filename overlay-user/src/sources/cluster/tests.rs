//! The registry against a real etcd (in a lab namespace), with the fake
//! dataplane: a full read installs the other hosts (a static peer wins a
//! conflict), a watch whose start revision was compacted is cancelled, and
//! the full resynchronisation that follows removes, adds and changes peers.

use std::net::Ipv4Addr;

use etcd_client::CompactionOptions;

use crate::agent::testing::{core, temp_dir, Call};
use crate::model::cluster::{subnet_key, ClusterSettings, HostRecord};
use crate::model::config::cluster::ClusterConfig;
use crate::model::peer::PeerSpec;
use crate::sources::cluster::client::Store;
use crate::sources::cluster::lease::{acquire, Me, Origin};
use crate::sources::cluster::registry::{ClusterSource, End};

fn record(name: &str, last: u8, subnet: &str) -> HostRecord {
    HostRecord {
        name: name.into(),
        underlay_ip: Ipv4Addr::new(192, 168, 56, last),
        subnet: subnet.parse().unwrap(),
        vtep_mac: crate::model::validation::format_mac(&overlay_common::vtep_mac(
            [192, 168, 56, last],
            42,
        )),
        mode: None,
        version: "test".into(),
    }
}

fn peer(r: &HostRecord) -> Call {
    Call::AddPeer(PeerSpec {
        subnet: r.subnet,
        underlay_ip: r.underlay_ip,
        vtep_mac: None,
    })
}

async fn put(store: &Store, r: &HostRecord) {
    let key = subnet_key(store.prefix(), r.subnet);
    let value = serde_json::to_string(r).unwrap();
    let mut c = store.client();
    c.put(key, value, None).await.unwrap();
}

async fn scenario(url: String) {
    let cfg: ClusterConfig = toml::from_str(&format!("etcd = [{url:?}]\nname = \"me\"")).unwrap();
    cfg.validate().unwrap();
    let store = Store::connect(&cfg).await.unwrap();
    let settings = ClusterSettings {
        pool: "10.103.0.0/16".parse().unwrap(),
        subnet_len: 24,
        vni: 42,
        port: 4789,
    };
    store.init(&settings, false).await.unwrap();
    let (a, b, c) = (
        record("a", 11, "10.103.1.0/24"),
        record("b", 12, "10.103.2.0/24"),
        record("c", 13, "10.103.3.0/24"),
    );
    // The test agent has a config peer 10.103.200.0/24: a record for it is skipped.
    let clash = record("clash", 14, "10.103.200.0/24");
    for r in [&a, &b, &clash] {
        put(&store, r).await;
    }
    let me = Me {
        name: "me".into(),
        underlay_ip: Ipv4Addr::new(192, 168, 56, 4),
        subnet: Some("10.103.100.0/24".parse().unwrap()),
        vni: None,
        port: None,
    };
    let state_dir = temp_dir("cluster-registry");
    let lease = acquire(&cfg, &me, &state_dir).await.unwrap();
    assert_eq!(lease.origin, Origin::Configured);
    let (core, dp, _) = core(state_dir.join("agent")).await;
    let (mut source, view) = ClusterSource::new(lease);

    source.resync(&core).await.unwrap();
    let mut calls = dp.take();
    calls.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(calls, vec![peer(&a), peer(&b)]);
    let hosts = view.list().await.unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h.record.name.as_str()).collect();
    assert_eq!(names, vec!["a", "b", "me", "clash"]);
    assert!(hosts.iter().all(|h| h.this_host == (h.record.name == "me")));

    // While nobody watches: b leaves, c joins, a moves; then etcd compacts.
    let seen = source.revision;
    let mut client = store.client();
    client
        .delete(subnet_key(store.prefix(), b.subnet), None)
        .await
        .unwrap();
    put(&store, &c).await;
    let moved = record("a", 21, "10.103.1.0/24");
    put(&store, &moved).await;
    let now = client
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    client
        .compact(now, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();

    // A watch from the revision last seen is cancelled by the compaction...
    match source.watch_from(&core, seen + 1).await {
        End::Compacted { from, compacted } => {
            assert_eq!(from, seen + 1);
            assert_eq!(compacted, now);
        }
        End::Failed(e) => panic!("expected a compacted watch, got {e}"),
    }
    assert_eq!(dp.take(), vec![]);
    // ...and the full resynchronisation that follows catches up.
    source.resync(&core).await.unwrap();
    let mut calls = dp.take();
    calls.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(calls, vec![peer(&moved), peer(&c), Call::DelPeer(b.subnet)]);
    assert!(source.revision >= now, "{} < {now}", source.revision);
    let _ = std::fs::remove_dir_all(&state_dir);
}

#[test]
fn compacted_watch_leads_to_a_full_resync() {
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
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(scenario(url))
    })
    .unwrap();
}
