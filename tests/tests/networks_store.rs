//! Overlay networks in the cluster store (issue 12, the control plane):
//! three hosts with overlayd and real etcd, no Docker. A network created on
//! host 1 is listed on hosts 2 and 3 at once; creates from three hosts at
//! the same moment get distinct VNIs; a taken name, subnet or VNI is
//! refused with its reason; `network rm` is refused while an endpoint
//! record is on the network, naming it; `network inspect` shows the
//! endpoints of every host; every host's core is given the network and the
//! remote endpoint (installed when the dataplane carries networks, else
//! the dataplane's refusal is logged); removal reaches every host.

use std::time::{Duration, Instant};

use overlay_lab::{need_etcd_or_skip, Binaries, Etcd, EtcdOptions, Lab, LabSpec, Overlayd};
use overlay_tests::{cluster_init, cluster_opts, ctl_on};
use serde_json::Value;

fn json(agent: &Overlayd, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&agent.ctl_ok(&all).unwrap()).unwrap()
}

/// overlayctl's stderr, with its exit status required to be `code`.
fn refused(agent: &Overlayd, args: &[&str], code: i32) -> String {
    let out = agent.ctl(args).unwrap();
    assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

fn names(agent: &Overlayd) -> Vec<String> {
    json(agent, &["network", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until `check` holds, at most `limit`; returns how long it took.
fn within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

#[test]
fn networks_are_cluster_objects() {
    if !need_etcd_or_skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        hosts: 3,
        containers_per_host: 1,
        ..Default::default()
    })
    .unwrap();
    let bins = Binaries::locate().unwrap();
    let etcd = Etcd::start(&lab, &[1], &EtcdOptions::default()).unwrap();
    cluster_init(&lab, 1, &bins, &etcd, "10.103.0.0/16", 24).unwrap();
    let modes = ["ebpf", "kernel", "ebpf"];
    let agents: Vec<Overlayd> = (1..=3)
        .map(|h| {
            Overlayd::start(
                &lab,
                h,
                &bins,
                &cluster_opts(&etcd, h, modes[h - 1], false, ""),
            )
            .unwrap()
        })
        .collect();
    let (a1, a2, a3) = (&agents[0], &agents[1], &agents[2]);

    // Created on host 1, listed on hosts 2 and 3.
    assert_eq!(
        refused(a1, &["network", "create", "web", "--subnet", "10.103.240.0/24"], 1),
        "error: subnet 10.103.240.0/24 overlaps the hosts' pool 10.103.0.0/16 (cluster settings); expected a subnet disjoint from every network's and from the hosts' pool"
    );
    let out = a1
        .ctl_ok(&["network", "create", "web", "--subnet", "10.104.240.0/24"])
        .unwrap();
    let created = Instant::now();
    assert_eq!(
        out.trim(),
        "network web created: VNI 4096, subnet 10.104.240.0/24, gateway 10.104.240.1"
    );
    for a in [a2, a3] {
        within(Duration::from_secs(2), "web listed", || names(a) == ["web"]);
    }
    eprintln!(
        "web listed on hosts 2 and 3 {:?} after its creation",
        created.elapsed()
    );
    let listed = json(a2, &["network", "ls"]);
    assert_eq!(listed[0]["vni"], 4096);
    assert_eq!(listed[0]["subnet"], "10.104.240.0/24");
    assert_eq!(listed[0]["gateway"], "10.104.240.1");

    // Three hosts create at the same moment: three distinct VNIs.
    let spawned: Vec<_> = (1..=3)
        .map(|h| {
            let mut cmd = overlay_lab::nsenter_command(
                &lab.host(h).ns,
                &bins.overlayctl.display().to_string(),
            );
            cmd.arg("--socket").arg(&agents[h - 1].socket).args([
                "--json",
                "network",
                "create",
                &format!("c{h}"),
            ]);
            cmd.stdout(std::process::Stdio::piped()).spawn().unwrap()
        })
        .collect();
    let mut vnis: Vec<u64> = spawned
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{out:?}");
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            v["vni"].as_u64().unwrap()
        })
        .collect();
    vnis.sort();
    assert_eq!(vnis, [4097, 4098, 4099]);
    assert_eq!(names(a3), ["c1", "c2", "c3", "web"]);
    let c1 = json(a1, &["network", "inspect", "c1"]);
    assert!(
        c1["subnet"].as_str().unwrap().starts_with("10.104."),
        "{c1}"
    );

    // Taken name, subnet and VNI; bad values stop in overlayctl (status 2).
    assert_eq!(
        refused(a2, &["network", "create", "web"], 1),
        "error: network web already exists (VNI 4096, subnet 10.104.240.0/24); expected a new name, or `overlayctl network rm web` first"
    );
    assert_eq!(
        refused(a3, &["network", "create", "x", "--subnet", "10.104.240.128/25"], 1),
        "error: subnet 10.104.240.128/25 overlaps network web (10.104.240.0/24); expected a subnet disjoint from every network's and from the hosts' pool"
    );
    assert_eq!(
        refused(a3, &["network", "create", "x", "--vni", "4096"], 1),
        "error: VNI 4096 is taken by network web; expected a free VNI, or no --vni to get one"
    );
    assert_eq!(
        refused(a3, &["network", "create", "x", "--vni", "42"], 1),
        "error: VNI 42 is taken by the cluster's per-host overlay (cluster settings); expected a free VNI, or no --vni to get one"
    );
    let bad = refused(a3, &["network", "create", "a/b"], 2);
    assert!(bad.contains("network name \"a/b\" is not valid"), "{bad}");
    let bad = refused(a3, &["network", "create", "x", "--vni", "16777216"], 2);
    assert!(
        bad.contains("vni 16777216 is out of range; expected 1..=16777215"),
        "{bad}"
    );
    assert_eq!(
        refused(a3, &["network", "inspect", "nope"], 1),
        "error: no network named nope in the cluster store; expected a name from `overlayctl network ls`"
    );

    // An endpoint record of host 2 (as its plugin would publish it).
    let record = r#"{"network":"web","ip":"10.104.240.5","mac":[2,66,10,104,240,5],"host":"h2","underlay_ip":"192.168.56.5","container":"0123456789abcdef0123","name":"web-a","aliases":[]}"#;
    etcd.etcdctl_ok(&["put", "/overlay/endpoints/web/10.104.240.5", record])
        .unwrap();
    assert_eq!(
        refused(a3, &["network", "rm", "web"], 1),
        "error: network web still has endpoints: 10.104.240.5 (web-a on h2); expected none (stop or disconnect those containers first)"
    );
    let inspect = json(a1, &["network", "inspect", "web"]);
    assert_eq!(inspect["endpoints"][0]["ip"], "10.104.240.5", "{inspect}");
    assert_eq!(inspect["endpoints"][0]["mac"], "02:42:0a:68:f0:05");
    assert_eq!(inspect["endpoints"][0]["host"], "h2");
    assert_eq!(inspect["endpoints"][0]["name"], "web-a");
    let text = a1.ctl_ok(&["network", "inspect", "web"]).unwrap();
    assert!(
        text.contains("10.104.240.5  02:42:0a:68:f0:05  h2 (192.168.56.5)  web-a"),
        "{text}"
    );
    // Hosts 1 and 3 give the network and the remote endpoint to their core:
    // installed where the dataplane carries networks, refused by it otherwise.
    for a in [a1, a3] {
        let took = within(Duration::from_secs(2), "network reaches the core", || {
            let carried = json(a, &["network", "inspect", "web"]);
            let log = a.proc.log();
            carried["endpoints"][0]["installed"] == "cluster"
                || (log
                    .contains("cluster: network web (VNI 4096): adding network web (VNI 4096): ")
                    && log.contains("does not carry overlay networks"))
        });
        eprintln!(
            "host {}: the core had network web {took:?} after the record",
            a.host
        );
    }

    // Gone: rm succeeds and every host lists what is left.
    etcd.etcdctl_ok(&["del", "/overlay/endpoints/web/10.104.240.5"])
        .unwrap();
    assert_eq!(
        a3.ctl_ok(&["network", "rm", "web"]).unwrap().trim(),
        "network web removed (VNI 4096, subnet 10.104.240.0/24)"
    );
    for a in [a1, a2] {
        within(Duration::from_secs(2), "web gone", || {
            names(a) == ["c1", "c2", "c3"]
        });
    }
    let keys = etcd
        .etcdctl_ok(&["get", "--prefix", "--keys-only", "/overlay/"])
        .unwrap();
    assert!(!keys.contains("web") && !keys.contains("4096"), "{keys}");
    // Its VNI is free again.
    let again: Value =
        serde_json::from_str(&a2.ctl_ok(&["--json", "network", "create", "web2"]).unwrap())
            .unwrap();
    assert_eq!(again["vni"], 4096);
    let out = ctl_on(
        &lab,
        1,
        &bins,
        &["network", "ls", "--socket", "/nonexistent.sock"],
    )
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
