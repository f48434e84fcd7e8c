//! Real cluster faults (issue 11, point 4): a three-member etcd cluster on
//! hosts 1 to 3. Killing the leader leaves the agents forwarding, and a new
//! host joins through the two members left; every agent resynchronises
//! against them. With a short lease TTL, a killed agent's host disappears
//! from the others once its lease expires.

use std::time::{Duration, Instant};

use overlay_lab::{need_etcd_or_skip, ping, Binaries, Etcd, EtcdOptions, Lab, LabSpec, Overlayd};
use overlay_tests::{cluster_init, cluster_opts, cluster_peers, wait_cluster_peers};

const S1: &str = "10.103.100.0/24";
const S2: &str = "10.103.200.0/24";
const S3: &str = "10.103.150.0/24";
const S4: &str = "10.103.40.0/24";
const TTL_SECS: u64 = 5;

fn ping_ok(lab: &Lab, from: usize, to: usize) {
    let r = ping(
        &lab.container(from, 1).ns,
        lab.container(to, 1).ip,
        3,
        None,
        false,
        5,
    )
    .unwrap();
    assert_eq!(r.received, 3, "ping host {from} -> host {to}: {r:?}");
}

#[test]
fn leader_loss_new_host_and_lease_expiry() {
    if !need_etcd_or_skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        hosts: 4,
        containers_per_host: 1,
        ..Default::default()
    })
    .unwrap();
    let bins = Binaries::locate().unwrap();
    let mut etcd = Etcd::start(&lab, &[1, 2, 3], &EtcdOptions::default()).unwrap();
    cluster_init(&lab, 1, &bins, &etcd, "10.103.0.0/16", 24).unwrap();
    let ttl = format!("lease_ttl = {TTL_SECS}\n");
    let opts: Vec<_> = (1..=4)
        .map(|h| cluster_opts(&etcd, h, "ebpf", false, &ttl))
        .collect();
    let start = |h: usize| Overlayd::start(&lab, h, &bins, &opts[h - 1]).unwrap();
    let (a1, a2, mut a3) = (start(1), start(2), start(3));
    for (a, want) in [(&a1, [S2, S3]), (&a2, [S1, S3]), (&a3, [S1, S2])] {
        wait_cluster_peers(a, &want, Duration::from_secs(10)).unwrap();
    }

    // Kill the leader.
    let leader = etcd.leader().unwrap();
    eprintln!("killing the leader m{}", etcd.hosts()[leader]);
    etcd.kill(leader).unwrap();
    let killed = Instant::now();
    for (from, to) in [(1, 2), (2, 3), (3, 1)] {
        ping_ok(&lab, from, to);
    }
    etcd.wait_healthy(Duration::from_secs(20)).unwrap();
    let new_leader = etcd.leader().unwrap();
    assert_ne!(new_leader, leader);
    eprintln!(
        "new leader m{} after {:?}",
        etcd.hosts()[new_leader],
        killed.elapsed()
    );

    // A new host joins through the members left (its config lists all three).
    let joined = Instant::now();
    let a4 = start(4);
    wait_cluster_peers(&a4, &[S1, S2, S3], Duration::from_secs(10)).unwrap();
    for a in [&a1, &a2, &a3] {
        let mut want = vec![S1, S2, S3, S4];
        let own = a.status().unwrap()["subnet"].as_str().unwrap().to_string();
        want.retain(|s| *s != own);
        wait_cluster_peers(a, &want, Duration::from_secs(15)).unwrap();
    }
    eprintln!(
        "host 4 joined and is known everywhere {:?} after its start",
        joined.elapsed()
    );
    for (from, to) in [(4, 1), (2, 4), (4, 3)] {
        ping_ok(&lab, from, to);
    }
    for a in [&a1, &a2, &a3, &a4] {
        a.wait_status(Duration::from_secs(15), |s| {
            s["cluster"]["connected"] == true
        })
        .unwrap();
        let st: serde_json::Value =
            serde_json::from_str(&a.ctl_ok(&["--json", "cluster", "status"]).unwrap()).unwrap();
        assert_eq!(st["connected"], true, "host {}: {st}", a.host);
        assert_ne!(st["leader"], format!("m{}", etcd.hosts()[leader]), "{st}");
    }

    // A killed agent's host disappears once its lease expires.
    a3.proc.kill().unwrap();
    let killed = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        cluster_peers(&a1).unwrap().contains(&S3.to_string()),
        "gone before its lease expired"
    );
    wait_cluster_peers(&a1, &[S2, S4], Duration::from_secs(TTL_SECS + 10)).unwrap();
    let gone = killed.elapsed();
    wait_cluster_peers(&a4, &[S1, S2], Duration::from_secs(2)).unwrap();
    eprintln!("killed host gone from the others {gone:?} after the kill (TTL {TTL_SECS} s)");
    assert!(gone >= Duration::from_secs(TTL_SECS - 2), "{gone:?}");
    ping_ok(&lab, 1, 4);
}
