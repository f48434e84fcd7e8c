//! Subnet leases in a real etcd (issue 11, point 1): nine agents race for a
//! pool of exactly eight subnets (eight distinct leases, the ninth is told
//! the pool is exhausted), a restarted agent gets its subnet back (also
//! after its lease expired), a clean leave releases the lease and the host
//! disappears from the others at once, and the freed subnet can be leased.
//! The agents lease subnets the lab's bridges do not have: no traffic here.

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use overlay_lab::{need_etcd_or_skip, Binaries, Etcd, EtcdOptions, Lab, LabSpec, Overlayd};
use overlay_tests::{
    cluster_init, cluster_opts, cluster_peers, ctl_on, subnet_of, wait_cluster_peers,
};

const POOL: &str = "10.103.0.0/21";
/// Short leases, so that expiry can be seen.
const TTL: &str = "lease_ttl = 5\n";

#[test]
fn nine_agents_race_for_eight_subnets() {
    if !need_etcd_or_skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        hosts: 9,
        containers_per_host: 0,
        ..Default::default()
    })
    .unwrap();
    let bins = Binaries::locate().unwrap();
    let etcd = Etcd::start(&lab, &[1], &EtcdOptions::default()).unwrap();
    let out = cluster_init(&lab, 1, &bins, &etcd, POOL, 24).unwrap();
    assert!(out.contains("8 subnets of /24"), "{out}");

    // All nine at once.
    let opts = |h: usize| cluster_opts(&etcd, h, "kernel", true, TTL);
    let results: Vec<(usize, anyhow::Result<Overlayd>)> = thread::scope(|s| {
        let handles: Vec<_> = (1..=9)
            .map(|h| {
                let (lab, bins, o) = (&lab, &bins, opts(h));
                (h, s.spawn(move || Overlayd::start(lab, h, bins, &o)))
            })
            .collect();
        handles
            .into_iter()
            .map(|(h, t)| (h, t.join().unwrap()))
            .collect()
    });
    let mut agents: Vec<Option<Overlayd>> = Vec::new();
    let mut refused = Vec::new();
    for (h, r) in results {
        match r {
            Ok(a) => agents.push(Some(a)),
            Err(e) => {
                refused.push((h, format!("{e:#}")));
                agents.push(None);
            }
        }
    }
    assert_eq!(
        refused.len(),
        1,
        "exactly one agent is refused: {refused:?}"
    );
    let (loser, why) = &refused[0];
    assert!(
        why.contains("pool 10.103.0.0/21 has no free /24 subnet: all 8 are leased"),
        "host {loser}: {why}"
    );
    let subnets: BTreeSet<String> = agents
        .iter()
        .flatten()
        .map(|a| subnet_of(a).unwrap())
        .collect();
    assert_eq!(subnets.len(), 8, "eight distinct leases: {subnets:?}");
    let expected: BTreeSet<String> = (0..8).map(|i| format!("10.103.{i}.0/24")).collect();
    assert_eq!(subnets, expected);
    // etcd holds exactly those eight keys.
    let keys = etcd
        .etcdctl_ok(&["get", "--prefix", "--keys-only", "/overlay/subnets/"])
        .unwrap();
    assert_eq!(keys.split_whitespace().count(), 8, "{keys}");
    // Every agent sees the seven others.
    for a in agents.iter().flatten() {
        let own = subnet_of(a).unwrap();
        let others: Vec<&str> = subnets
            .iter()
            .filter(|s| **s != own)
            .map(String::as_str)
            .collect();
        wait_cluster_peers(a, &others, Duration::from_secs(10)).unwrap();
    }
    let survivors: Vec<usize> = (1..=9).filter(|h| h != loser).collect();
    let (a, b, c) = (survivors[0], survivors[1], survivors[2]);
    let agent = |agents: &Vec<Option<Overlayd>>, h: usize| -> String {
        subnet_of(agents[h - 1].as_ref().unwrap()).unwrap()
    };

    // A restart gets the same subnet back.
    let subnet_a = agent(&agents, a);
    agents[a - 1].take().unwrap().stop().unwrap();
    agents[a - 1] = Some(Overlayd::start(&lab, a, &bins, &opts(a)).unwrap());
    assert_eq!(agent(&agents, a), subnet_a, "host {a} after a restart");

    // Also after its lease expired, if nobody took it.
    agents[a - 1].take().unwrap().proc.kill().unwrap();
    let key = format!("/overlay/subnets/{}", subnet_a.replace('/', "-"));
    let start = Instant::now();
    while !etcd.etcdctl_ok(&["get", &key]).unwrap().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{key} did not expire"
        );
        thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "lease of {subnet_a} expired {:?} after the kill",
        start.elapsed()
    );
    let other = agents[b - 1].as_ref().unwrap();
    let others_now: Vec<String> = cluster_peers(other).unwrap();
    assert!(
        !others_now.contains(&subnet_a),
        "expired host still a peer of host {b}: {others_now:?}"
    );
    agents[a - 1] = Some(Overlayd::start(&lab, a, &bins, &opts(a)).unwrap());
    assert_eq!(
        agent(&agents, a),
        subnet_a,
        "host {a} after its lease expired"
    );
    assert!(agents[a - 1]
        .as_ref()
        .unwrap()
        .proc
        .log()
        .contains("(the saved lease, renewed)"));

    // A clean leave releases the lease; the others drop the host at once.
    let subnet_b = agent(&agents, b);
    let cleanup = overlay_lab::AgentOptions {
        args: vec!["--cleanup".into()],
        ..opts(b)
    };
    agents[b - 1].take().unwrap().stop().unwrap();
    let leaving = Overlayd::start(&lab, b, &bins, &cleanup).unwrap();
    assert_eq!(subnet_of(&leaving).unwrap(), subnet_b);
    let watcher = agents[c - 1].as_ref().unwrap();
    assert!(cluster_peers(watcher).unwrap().contains(&subnet_b));
    let left = Instant::now();
    leaving.stop().unwrap();
    let stop_took = left.elapsed();
    let mut gone_after = None;
    while left.elapsed() < Duration::from_secs(5) {
        if !cluster_peers(watcher).unwrap().contains(&subnet_b) {
            gone_after = Some(left.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let gone_after = gone_after.expect("the host that left is gone from the others within 5 s");
    eprintln!(
        "clean leave: overlayd stopped in {stop_took:?}; gone from host {c} after {gone_after:?}"
    );
    assert!(
        gone_after < stop_took + Duration::from_secs(1),
        "{gone_after:?}"
    );
    assert!(etcd
        .etcdctl_ok(&[
            "get",
            &format!("/overlay/subnets/{}", subnet_b.replace('/', "-"))
        ])
        .unwrap()
        .is_empty());

    // The freed subnet goes to the host that was refused.
    let late = Overlayd::start(&lab, *loser, &bins, &opts(*loser)).unwrap();
    assert_eq!(subnet_of(&late).unwrap(), subnet_b);
    let hosts = late.ctl_ok(&["--json", "hosts"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&hosts).unwrap();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 8, "{hosts}");
    assert_eq!(list.iter().filter(|h| h["this_host"] == true).count(), 1);
}

#[test]
fn registered_subnets_and_contradictions_are_refused_by_name() {
    if !need_etcd_or_skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        hosts: 2,
        containers_per_host: 0,
        ..Default::default()
    })
    .unwrap();
    let bins = Binaries::locate().unwrap();
    let etcd = Etcd::start(&lab, &[1], &EtcdOptions::default()).unwrap();
    cluster_init(&lab, 1, &bins, &etcd, "10.103.0.0/16", 24).unwrap();

    // cluster init refuses different settings unless --force, naming what differs.
    let eps = etcd.endpoints().join(",");
    let init = |vni: &str, force: bool| {
        let mut args = vec![
            "cluster",
            "init",
            "--etcd",
            &eps,
            "--pool",
            "10.103.0.0/16",
            "--subnet-len",
            "24",
            "--vni",
            vni,
        ];
        if force {
            args.push("--force");
        }
        ctl_on(&lab, 1, &bins, &args).unwrap()
    };
    let same = init("42", false);
    assert!(String::from_utf8_lossy(&same.stdout).contains("already holds these settings"));
    let other = init("7", false);
    assert_eq!(other.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&other.stderr).trim(),
        "error: etcd already holds other cluster settings at /overlay/config: vni 42 (given 7); use --force to overwrite them"
    );
    let forced = init("7", true);
    assert!(
        String::from_utf8_lossy(&forced.stdout).contains("replaced (vni 42 (given 7))"),
        "{forced:?}"
    );
    assert!(init("42", true).status.success());

    // Host 1 registers the lab's subnet.
    let a = Overlayd::start(&lab, 1, &bins, &cluster_opts(&etcd, 1, "kernel", false, "")).unwrap();
    assert_eq!(subnet_of(&a).unwrap(), "10.103.100.0/24");

    // Host 2 asks for the same subnet: refused, naming the holder; exit status 2.
    let cfg = lab.dir().join("h2-taken.toml");
    let mut text = overlay_lab::agent_config(&lab, 2, &cluster_opts(&etcd, 2, "kernel", true, ""));
    text = format!("subnet = \"10.103.100.0/24\"\n{text}");
    std::fs::write(&cfg, &text).unwrap();
    let run = |cfg: &std::path::Path| {
        let mut cmd =
            overlay_lab::nsenter_command(&lab.host(2).ns, &bins.overlayd.display().to_string());
        cmd.arg("--config")
            .arg(cfg)
            .arg("--socket")
            .arg(lab.dir().join("h2-refused.sock"));
        cmd.output().unwrap()
    };
    let out = run(&cfg);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("subnet 10.103.100.0/24 is held by host h1 (192.168.56.4); expected a free subnet of the pool, or no subnet to lease one"),
        "{err}"
    );

    // A VNI that contradicts the cluster's: refused, naming both values.
    std::fs::write(
        &cfg,
        format!(
            "vni = 7\n{}",
            text.replace("subnet = \"10.103.100.0/24\"\n", "")
        ),
    )
    .unwrap();
    let out = run(&cfg);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("this host's config sets vni = 7, but the cluster's settings at /overlay/config say vni = 42; expected the same value, or leave vni out"),
        "{err}"
    );
    // A subnet outside the pool.
    std::fs::write(
        &cfg,
        format!(
            "subnet = \"10.104.1.0/24\"\n{}",
            text.replace("subnet = \"10.103.100.0/24\"\n", "")
        ),
    )
    .unwrap();
    let err = String::from_utf8_lossy(&run(&cfg).stderr).into_owned();
    assert!(err.contains("subnet 10.104.1.0/24 is not one of the cluster's subnets; expected a /24 inside the pool 10.103.0.0/16"), "{err}");
    // Nothing was registered by the refused starts.
    let keys = etcd
        .etcdctl_ok(&["get", "--prefix", "--keys-only", "/overlay/subnets/"])
        .unwrap();
    assert_eq!(
        keys.split_whitespace().collect::<Vec<_>>(),
        vec!["/overlay/subnets/10.103.100.0-24"]
    );
    drop(a);
}
