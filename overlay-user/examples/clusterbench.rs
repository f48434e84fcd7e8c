//! The cluster store's scale, for `cargo xtask bench --cluster`: writes N
//! host records straight into etcd (transactions of 100 puts) while an
//! overlayd with `[cluster]` runs, and measures, from this host's network
//! namespace, the time until that overlayd's BPF peer map (pinned under
//! `--pin-dir`) holds all of them, then the time for a change to one record
//! (a new underlay address) to reach the map, from sending the put (so etcd's
//! commit is included), `--changes` times. Prints one JSON object.
//!
//! Usage: clusterbench --etcd URL --pin-dir DIR --hosts N [--changes 20] [--prefix /overlay]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Map, MapData};
use etcd_client::{Client, Txn, TxnOp};
use ipnet::Ipv4Net;
use overlay_common::PeerValue;
use overlay_user::model::cluster::{subnet_key, HostRecord};
use overlay_user::model::validation::format_mac;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// The `i`th bench host: subnet 10.(1 + i/256).(i%256).0/24, underlay 172.16.(i/250).(1 + i%250).
fn record(i: u32, underlay: Ipv4Addr) -> HostRecord {
    HostRecord {
        name: format!("bench-{i}"),
        underlay_ip: underlay,
        subnet: Ipv4Net::new(
            Ipv4Addr::new(10, 1 + (i / 256) as u8, (i % 256) as u8, 0),
            24,
        )
        .unwrap(),
        vtep_mac: format_mac(&overlay_common::vtep_mac(underlay.octets(), 42)),
        mode: None,
        version: "bench".into(),
    }
}

fn underlay(i: u32, base: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, base, (i / 250) as u8, 1 + (i % 250) as u8)
}

fn open_peers(pin_dir: &Path) -> LpmTrie<MapData, [u8; 4], PeerValue> {
    let maps = overlay_user::dataplane::bpf::loader::versioned_dir(pin_dir).join("maps");
    let data =
        MapData::from_pin(maps.join(overlay_common::maps::PEERS)).expect("the pinned peer map");
    LpmTrie::try_from(Map::LpmTrie(data)).expect("an LPM trie")
}

fn lookup(peers: &LpmTrie<MapData, [u8; 4], PeerValue>, subnet: Ipv4Net) -> Option<[u8; 4]> {
    let key = Key::new(u32::from(subnet.prefix_len()), subnet.network().octets());
    peers.get(&key, 0).ok().map(|v| v.underlay_ip)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let url = arg("--etcd").expect("--etcd URL");
    let pin_dir = PathBuf::from(arg("--pin-dir").expect("--pin-dir DIR"));
    let hosts: u32 = arg("--hosts").expect("--hosts N").parse().unwrap();
    let changes: u32 = arg("--changes").map(|c| c.parse().unwrap()).unwrap_or(20);
    let prefix = arg("--prefix").unwrap_or_else(|| "/overlay".into());
    let mut client = Client::connect([url], None).await.expect("etcd");
    let peers = open_peers(&pin_dir);
    let before = peers.keys().count();

    let started = Instant::now();
    let ids: Vec<u32> = (0..hosts).collect();
    for chunk in ids.chunks(100) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|&i| {
                let r = record(i, underlay(i, 16));
                TxnOp::put(
                    subnet_key(&prefix, r.subnet),
                    serde_json::to_string(&r).unwrap(),
                    None,
                )
            })
            .collect();
        client
            .txn(Txn::new().and_then(ops))
            .await
            .expect("writing records");
    }
    let last_write = Instant::now();
    let write_s = (last_write - started).as_secs_f64();
    let want = before + hosts as usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = 0;
    while seen < want {
        seen = peers.keys().filter(Result::is_ok).count();
        assert!(
            Instant::now() < deadline,
            "only {seen} of {want} peers after 120 s"
        );
        if seen < want {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let full = Instant::now();

    let mut change_ms = Vec::new();
    for n in 0..changes {
        let i = (n * 37 + 11) % hosts;
        let r = record(i, underlay(i, 31 - (n % 2) as u8));
        let want_ip = r.underlay_ip.octets();
        let written = Instant::now();
        client
            .put(
                subnet_key(&prefix, r.subnet),
                serde_json::to_string(&r).unwrap(),
                None,
            )
            .await
            .expect("changing a record");
        while lookup(&peers, r.subnet) != Some(want_ip) {
            assert!(
                written.elapsed() < Duration::from_secs(30),
                "change {n} never reached the map"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        change_ms.push(written.elapsed().as_secs_f64() * 1e3);
    }
    let json = serde_json::json!({
        "hosts": hosts,
        "peers_before": before,
        "write_s": write_s,
        "last_write_to_map_s": (full - last_write).as_secs_f64(),
        "first_write_to_map_s": (full - started).as_secs_f64(),
        "change_ms": change_ms,
    });
    println!("{json}");
}
