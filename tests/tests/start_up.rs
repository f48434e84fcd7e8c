//! Starts that lose nothing and break nothing (issue 10): a second overlayd
//! on the same directories refuses and the first keeps forwarding; a
//! corrupt state file is moved aside; a failed start leaves the previous
//! run forwarding; what no source owns any more is removed at start.

use std::path::{Path, PathBuf};

use overlay_lab::{
    agent_config, exec_ok, need_root_or_skip, ping, AgentOptions, Binaries, Lab, LabSpec, Overlayd,
};
use overlay_tests::{cluster, Cluster};

fn two_hosts() -> Cluster {
    cluster(
        LabSpec {
            hosts: 2,
            containers_per_host: 1,
            ..LabSpec::default()
        },
        "ebpf",
        Default::default(),
    )
    .unwrap()
}

/// Container 1 of each host pings the other's, `count` times each way; the replies.
fn pings(lab: &Lab, count: u32) -> (u32, u32) {
    let (a, b) = (lab.container(1, 1), lab.container(2, 1));
    let there = ping(&a.ns, b.ip, count, None, false, 2).unwrap().received;
    let back = ping(&b.ns, a.ip, count, None, false, 2).unwrap().received;
    (there, back)
}

/// A copy of `config` with `key = "value"` replaced.
fn config_with(lab: &Lab, config: &Path, key: &str, value: &Path, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(config).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in {text}"));
    let path = lab.dir().join(name);
    let new = format!("{key} = \"{}\"", value.display());
    std::fs::write(&path, text.replace(line, &new)).unwrap();
    path
}

#[test]
fn a_second_overlayd_on_the_same_directories_refuses_and_the_first_keeps_forwarding() {
    if !need_root_or_skip() {
        return;
    }
    let c = two_hosts();
    let bins = Binaries::locate().unwrap();
    let a = c.agent(1);
    assert_eq!(pings(&c.lab, 3), (3, 3));
    // `decap_resize = "auto"` (the default) timed both ways at start.
    let log = a.proc.log();
    let line = log
        .lines()
        .find(|l| l.contains("(decap_resize = auto: measured "))
        .unwrap_or_else(|| panic!("no timing of the decap resize in the log:\n{log}"));
    assert!(
        line.contains(" ns for one step, ") && line.contains(" ns for two)"),
        "{line}"
    );
    let peers = overlay_tests::peer_table(a);
    let (state_dir, pin_dir) = (c.lab.dir().join("h1-state"), c.lab.bpffs_dir().join("h1"));

    // The same config (another API socket, so that only the lock can stop it).
    let second = c.lab.dir().join("h1-second.sock");
    let e = Overlayd::start_with(&c.lab, 1, &bins, &a.config, &second, &[])
        .err()
        .expect("a second overlayd on the same config started");
    let expected = format!(
        "error: another overlayd (pid {}) is running with state_dir {}; stop it first\n",
        a.proc.pid(),
        state_dir.display()
    );
    assert!(e.to_string().ends_with(&expected), "{e:#}");
    // Another state directory, the same pin directory.
    let other_state = c.lab.dir().join("h1-other-state");
    let config = config_with(&c.lab, &a.config, "state_dir", &other_state, "h1-b.toml");
    let e = Overlayd::start_with(&c.lab, 1, &bins, &config, &second, &[])
        .err()
        .expect("a second overlayd on the same pin_dir started");
    let expected = format!(
        "error: another overlayd (pid {}) is running with pin_dir {}; stop it first\n",
        a.proc.pid(),
        pin_dir.display()
    );
    assert!(e.to_string().ends_with(&expected), "{e:#}");
    assert!(!second.exists());
    assert!(!other_state.join("state.json").exists());

    // The first goes on as before.
    assert!(a.proc.is_running());
    assert_eq!(overlay_tests::peer_table(a), peers);
    assert_eq!(pings(&c.lab, 3), (3, 3));
}

#[test]
fn a_corrupt_state_file_is_moved_aside_and_overlayd_starts_from_the_config() {
    if !need_root_or_skip() {
        return;
    }
    let mut c = two_hosts();
    let bins = Binaries::locate().unwrap();
    let (config, socket) = (c.agent(1).config.clone(), c.agent(1).socket.clone());
    c.agents[0].proc.stop().unwrap();
    let state = c.lab.dir().join("h1-state").join("state.json");
    let garbage = b"{\"version\": 1, \"peers\": [{\"subnet\": \"10.103.2";
    std::fs::write(&state, garbage).unwrap();
    // The config file's peer is what is left.
    let peer = c.lab.host(2);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[[peers]]\nsubnet = \"{}\"\nunderlay_ip = \"{}\"\n",
        peer.subnet, peer.underlay_ip
    ));
    let config = c.lab.dir().join("h1-with-peer.toml");
    std::fs::write(&config, text).unwrap();

    let a = Overlayd::start_with(&c.lab, 1, &bins, &config, &socket, &[]).unwrap();
    let aside: Vec<PathBuf> = std::fs::read_dir(c.lab.dir().join("h1-state"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("state.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), garbage);
    let log = a.proc.log();
    let line = log
        .lines()
        .find(|l| l.contains("is corrupt"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains(" ERROR "), "{line}");
    assert!(
        line.contains(&format!("state file {} is corrupt", state.display()))
            && line.contains(&format!("moved it to {}", aside[0].display())),
        "{line}"
    );
    let list = a.ctl_ok(&["--json", "peer", "list"]).unwrap();
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["source"], "config", "{list}");
    c.agents[0] = a;
    assert_eq!(pings(&c.lab, 3), (3, 3));
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_failed_start_leaves_the_previous_run_forwarding() {
    if !need_root_or_skip() {
        return;
    }
    // Native XDP cannot attach to a veth with a 9000-byte MTU (the program
    // does not handle fragments): a start with xdp = "native" fails there.
    let mut c = cluster(
        LabSpec {
            hosts: 2,
            containers_per_host: 1,
            underlay_mtu: 9000,
            ..LabSpec::default()
        },
        "ebpf",
        Default::default(),
    )
    .unwrap();
    let bins = Binaries::locate().unwrap();
    assert_eq!(pings(&c.lab, 3), (3, 3));
    let (config, socket) = (c.agent(1).config.clone(), c.agent(1).socket.clone());
    let peers = overlay_tests::peer_table(c.agent(1));
    c.agents[0].proc.stop().unwrap();
    let links_dir = c
        .lab
        .bpffs_dir()
        .join(format!("h1/v{}/links", overlay_common::MAPS_VERSION));
    let links = entries(&links_dir);
    assert!(links.contains(&"underlay-tc".to_string()), "{links:?}");

    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("xdp = \"native\"\n");
    let native = c.lab.dir().join("h1-native.toml");
    std::fs::write(&native, text).unwrap();
    let e = Overlayd::start_with(&c.lab, 1, &bins, &native, &socket, &[])
        .err()
        .expect("xdp = native on a 9000-byte veth started");
    assert!(
        e.to_string().contains("attaching ovl_xdp_underlay to eth1"),
        "{e:#}"
    );
    // Nothing of the previous run was removed; it forwards as before.
    assert_eq!(entries(&links_dir), links);
    assert_eq!(pings(&c.lab, 3), (3, 3));

    // And the next good start takes over as usual.
    c.agents[0] = Overlayd::start_with(&c.lab, 1, &bins, &config, &socket, &[]).unwrap();
    assert_eq!(overlay_tests::peer_table(c.agent(1)), peers);
    assert_eq!(pings(&c.lab, 3), (3, 3));
}

#[test]
fn a_port_that_vanishes_during_the_start_is_skipped() {
    if !need_root_or_skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        hosts: 1,
        containers_per_host: 1,
        ..LabSpec::default()
    })
    .unwrap();
    let bins = Binaries::locate().unwrap();
    let h = lab.host(1);
    const PORTS: usize = 300;
    let batch = |verb: &str| -> PathBuf {
        let path = lab.dir().join(format!("ports-{verb}.batch"));
        let mut text = String::new();
        // Added from the last to the first, deleted from the first: the
        // deletions meet the attachments, which go by ifindex.
        let order: Vec<usize> = match verb {
            "add" => (0..PORTS).rev().collect(),
            _ => (0..PORTS).collect(),
        };
        for i in order {
            text.push_str(&match verb {
                "add" => format!(
                    "link add vp{i} type veth peer name vq{i}\nlink set vp{i} master {} up\n",
                    h.bridge
                ),
                _ => format!("link del vp{i}\n"),
            });
        }
        std::fs::write(&path, text).unwrap();
        path
    };
    let run_batch = |path: &Path| {
        let st = std::process::Command::new("ip")
            .args(["-n", &h.ns, "-force", "-batch"])
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success());
    };
    run_batch(&batch("add"));
    let del = batch("del");
    // The ports go away as soon as the first one has its program.
    let links_dir = lab
        .bpffs_dir()
        .join(format!("h1/v{}/links", overlay_common::MAPS_VERSION));
    let deleter = {
        let (links_dir, ns) = (links_dir.clone(), h.ns.clone());
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            while start.elapsed() < std::time::Duration::from_secs(30) {
                let attached = std::fs::read_dir(&links_dir)
                    .map(|rd| {
                        rd.filter_map(|e| e.ok())
                            .any(|e| e.file_name().to_string_lossy().starts_with("port-"))
                    })
                    .unwrap_or(false);
                if attached {
                    let st = std::process::Command::new("ip")
                        .args(["-n", &ns, "-force", "-batch"])
                        .arg(&del)
                        .status()
                        .unwrap();
                    return st.success();
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            false
        })
    };
    let a = Overlayd::start(&lab, 1, &bins, &overlay_lab::AgentOptions::default());
    assert!(deleter.join().unwrap(), "the ports were not deleted");
    let a = a.unwrap_or_else(|e| panic!("overlayd failed to start: {e:#}"));
    // Not a reason to fall back to the kernel's VXLAN device either.
    assert_eq!(a.status().unwrap()["mode"], "ebpf", "{}", a.proc.log());
    let log = a.proc.log();
    let skipped = log.matches("went away while attaching; skipped").count();
    eprintln!("{skipped} of {PORTS} ports went away while attaching");
    assert!(
        skipped > 0,
        "no port went away during the attachments:\n{log}"
    );
    assert!(a.proc.is_running());
    // The container's own port has its program; the vanished ones none.
    let container = lab.container(1, 1);
    let mut links = Vec::new();
    for _ in 0..40 {
        links = entries(&links_dir);
        if links.iter().filter(|l| l.starts_with("port-")).count() == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        links.iter().filter(|l| l.starts_with("port-")).count(),
        1,
        "{links:?} ({} should be the only port)",
        container.host_veth
    );
}

/// The keys of a pinned map, as bytes (`bpftool map dump`).
fn map_keys(pin: &Path) -> Vec<Vec<u8>> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(pin)
        .output()
        .unwrap();
    assert!(out.status.success(), "bpftool: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["key"]
                .as_array()
                .unwrap_or_else(|| panic!("{e}"))
                .iter()
                .map(|b| {
                    u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
                })
                .collect()
        })
        .collect()
}

#[test]
fn what_no_source_owns_any_more_is_removed_at_start() {
    if !need_root_or_skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        hosts: 2,
        containers_per_host: 2,
        ..LabSpec::default()
    })
    .unwrap();
    let bins = Binaries::locate().unwrap();
    // Host 1: its peer in its config file; containers on the bridge (no learning).
    let h1_opts = AgentOptions {
        dataplane: Some("ebpf".into()),
        attach: Some("bridge".into()),
        static_peers: true,
        ..AgentOptions::default()
    };
    let a = Overlayd::start(&lab, 1, &bins, &h1_opts).unwrap();
    let b_opts = AgentOptions {
        dataplane: Some("ebpf".into()),
        static_peers: true,
        ..AgentOptions::default()
    };
    let b = Overlayd::start(&lab, 2, &bins, &b_opts).unwrap();
    assert_eq!(pings(&lab, 3), (3, 3));
    // Container 2 registered through the API; it goes while overlayd is stopped.
    let c2 = lab.container(1, 2).clone();
    a.ctl_ok(&[
        "endpoint",
        "add",
        &c2.ip.to_string(),
        "--dev",
        &c2.host_veth,
    ])
    .unwrap();
    let maps = lab
        .bpffs_dir()
        .join(format!("h1/v{}/maps", overlay_common::MAPS_VERSION));
    let (peers, hosts, endpoints) = (
        maps.join("OVL_PEERS"),
        maps.join("OVL_PEER_HOSTS"),
        maps.join("OVL_ENDPOINTS"),
    );
    assert!(map_keys(&endpoints).contains(&c2.ip.octets().to_vec()));
    assert_eq!(map_keys(&peers).len(), 1);
    let (config, socket) = (a.config.clone(), a.socket.clone());
    a.stop().unwrap();
    exec_ok(&lab.host(1).ns, &["ip", "link", "del", &c2.host_veth]).unwrap();
    // The peer leaves the config file.
    let without = AgentOptions {
        static_peers: false,
        ..h1_opts
    };
    std::fs::write(&config, agent_config(&lab, 1, &without)).unwrap();

    let a = Overlayd::start_with(&lab, 1, &bins, &config, &socket, &[]).unwrap();
    assert_eq!(a.ctl_ok(&["--json", "peer", "list"]).unwrap().trim(), "[]");
    assert!(map_keys(&peers).is_empty(), "a peer nobody lists is left");
    assert!(
        map_keys(&hosts).is_empty(),
        "a peer host nobody lists is left"
    );
    assert!(
        !map_keys(&endpoints).contains(&c2.ip.octets().to_vec()),
        "the endpoint of a container that is gone is left"
    );
    let log = a.proc.log();
    assert!(
        log.contains(&format!(
            "removing peer {} via {} left by an earlier run",
            lab.host(2).subnet,
            lab.host(2).underlay_ip
        )),
        "{log}"
    );
    // Nothing goes through the overlay any more: host 2's packets are from
    // an unknown peer now.
    let before = a.drops("unknown_peer").unwrap();
    assert_eq!(pings(&lab, 3), (0, 0));
    assert!(a.drops("unknown_peer").unwrap() > before);
    drop(b);
}
