//! Starts that lose nothing and break nothing (issue 10): a second overlayd
//! on the same directories refuses and the first keeps forwarding; a
//! corrupt state file is moved aside; a failed start leaves the previous
//! run forwarding; what no source owns any more is removed at start.

use std::path::{Path, PathBuf};

use overlay_lab::{need_root_or_skip, ping, Binaries, Lab, LabSpec, Overlayd};
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
    let peers = a.ctl_ok(&["peer", "list"]).unwrap();
    let (state_dir, pin_dir) = (
        c.lab.dir().join("h1-state"),
        c.lab.bpffs_dir().join("h1"),
    );

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
    assert_eq!(a.ctl_ok(&["peer", "list"]).unwrap(), peers);
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
