//! Issue 3: `--cleanup` in kernel mode leaves no device, route, neighbour or
//! FDB entry of ours, and switching mode between restarts leaves nothing of
//! the other mode behind. The host's state is read over netlink (`ip -j`,
//! `bridge -j`) and bpffs.

use overlay_lab::{
    exec_ok, need_root_or_skip, ping, AgentOptions, Binaries, Lab, LabSpec, Overlayd,
};
use serde_json::Value;

fn json(ns: &str, args: &[&str]) -> Vec<Value> {
    let out = exec_ok(ns, args).unwrap();
    if out.trim().is_empty() {
        return Vec::new();
    }
    match serde_json::from_str(&out) {
        Ok(Value::Array(v)) => v,
        other => panic!("{}: {other:?}\n{out}", args.join(" ")),
    }
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

/// Kernel-mode state of ours on host `h`, or about host `h`'s peer `p`
/// anywhere: VXLAN devices, routes, neighbour and FDB entries. One line each.
fn kernel_state(lab: &Lab, h: usize, p: usize) -> Vec<String> {
    let ns = &lab.host(h).ns;
    let peer = lab.host(p);
    let (net, dot0, underlay) = (
        peer.subnet.as_str(),
        peer.subnet_addr.to_string(),
        peer.underlay_ip.to_string(),
    );
    // `ovl.md`, the eBPF mode's tunnel device, is in bpf_state.
    let ours = |dev: &str| dev.starts_with("ovl.") && dev != TUNNEL_DEVICE;
    let mut found = Vec::new();
    for l in json(ns, &["ip", "-j", "-d", "link", "show"]) {
        let name = s(&l, "ifname");
        if ours(name) || (l["linkinfo"]["info_kind"] == "vxlan" && name != TUNNEL_DEVICE) {
            found.push(format!("device {}", s(&l, "ifname")));
        }
    }
    for r in json(ns, &["ip", "-j", "-4", "route", "show", "table", "all"]) {
        if ours(s(&r, "dev")) || s(&r, "dst") == net {
            found.push(format!("route {r}"));
        }
    }
    for n in json(ns, &["ip", "-j", "-4", "neigh", "show"]) {
        if ours(s(&n, "dev")) || s(&n, "dst") == dot0 {
            found.push(format!("neighbour {n}"));
        }
    }
    for f in json(ns, &["bridge", "-j", "fdb", "show"]) {
        if ours(s(&f, "ifname")) || s(&f, "dst") == underlay {
            found.push(format!("fdb {f}"));
        }
    }
    found
}

fn bpftool(args: &[&str]) -> std::process::Output {
    std::process::Command::new("bpftool")
        .args(args)
        .output()
        .expect("running bpftool")
}

/// The ids of the BPF links pinned under host `h`'s pin directory.
fn pinned_links(lab: &Lab, h: usize) -> Vec<u64> {
    // The pins of this overlayd's map layout (`v<MAPS_VERSION>`).
    let dir =
        overlay_user::dataplane::bpf::loader::versioned_dir(&lab.bpffs_dir().join(format!("h{h}")))
            .join("links");
    let mut ids = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        // Not through `ip netns exec`, whose fresh /sys hides bpffs; link ids are global.
        let out = bpftool(&["-j", "link", "show", "pinned", path.to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
        let out = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(&out).unwrap();
        ids.push(v["id"].as_u64().unwrap_or_else(|| panic!("{out}")));
    }
    ids
}

/// BPF state of ours on host `h`: its pin directory, an XDP program on the
/// underlay interface, and which of `links` (ids of links an earlier run
/// attached) still exist.
fn bpf_state(lab: &Lab, h: usize, links: &[u64]) -> Vec<String> {
    let host = lab.host(h);
    let mut found = Vec::new();
    let pins = lab.bpffs_dir().join(format!("h{h}"));
    if pins.exists() {
        found.push(format!("pins {}", pins.display()));
    }
    for l in json(
        &host.ns,
        &["ip", "-j", "-d", "link", "show", "dev", &host.underlay_if],
    ) {
        if !l["xdp"].is_null() {
            found.push(format!("xdp {}", l["xdp"]));
        }
    }
    for id in links {
        let out = bpftool(&["link", "show", "id", &id.to_string()]);
        if out.status.success() {
            found.push(format!(
                "link {}",
                String::from_utf8_lossy(&out.stdout).trim()
            ));
        }
    }
    // `tunnel_gro` (on by default) keeps a collect-metadata VXLAN device.
    for l in json(&host.ns, &["ip", "-j", "-d", "link", "show"]) {
        if s(&l, "ifname") == TUNNEL_DEVICE {
            found.push(format!("tunnel_device {}", l["linkinfo"]["info_data"]));
        }
    }
    found
}

/// The eBPF mode's collect-metadata VXLAN device (`tunnel_gro`).
const TUNNEL_DEVICE: &str = "ovl.md";

fn kinds(state: &[String]) -> Vec<&str> {
    let mut k: Vec<&str> = state.iter().map(|l| l.split(' ').next().unwrap()).collect();
    k.dedup();
    k
}

fn pings(lab: &Lab) {
    let (a, b) = (lab.container(1, 1), lab.container(2, 1));
    let r = ping(&a.ns, b.ip, 3, None, false, 3).unwrap();
    assert_eq!(r.received, 3, "host 1 -> host 2: {r:?}");
    let r = ping(&b.ns, a.ip, 3, None, false, 3).unwrap();
    assert_eq!(r.received, 3, "host 2 -> host 1: {r:?}");
}

fn opts(mode: &str, cleanup: bool) -> AgentOptions {
    AgentOptions {
        dataplane: Some(mode.into()),
        // With XDP too (off by default), so its link is checked as well.
        xdp: (mode == "ebpf").then(|| "generic".into()),
        args: if cleanup {
            vec!["--cleanup".into()]
        } else {
            Vec::new()
        },
        ..AgentOptions::default()
    }
}

#[test]
fn kernel_cleanup_leaves_nothing() {
    if !need_root_or_skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        containers_per_host: 1,
        ..LabSpec::default()
    })
    .unwrap();
    let bins = Binaries::locate().unwrap();
    let a = Overlayd::start(&lab, 1, &bins, &opts("kernel", true)).unwrap();
    let b = Overlayd::start(&lab, 2, &bins, &opts("kernel", false)).unwrap();
    a.add_lab_peers(&lab).unwrap();
    b.add_lab_peers(&lab).unwrap();
    pings(&lab);

    let before = kernel_state(&lab, 1, 2);
    assert_eq!(
        kinds(&before),
        ["device", "route", "neighbour", "fdb"],
        "{before:#?}"
    );
    let bpf = bpf_state(&lab, 1, &[]);
    assert!(bpf.is_empty(), "{bpf:?}");
    let status = a.stop().unwrap();
    assert!(status.success(), "overlayd exited with {status}");
    let after = kernel_state(&lab, 1, 2);
    assert!(after.is_empty(), "left behind: {after:#?}");
    // Only host 1 was cleaned.
    assert!(!kernel_state(&lab, 2, 1).is_empty());
}

#[test]
fn switching_mode_leaves_nothing_of_the_other() {
    if !need_root_or_skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        containers_per_host: 1,
        ..LabSpec::default()
    })
    .unwrap();
    let bins = Binaries::locate().unwrap();
    let b = Overlayd::start(&lab, 2, &bins, &opts("kernel", false)).unwrap();
    b.add_lab_peers(&lab).unwrap();

    // eBPF first; the peers added through the API survive the restarts.
    let a = Overlayd::start(&lab, 1, &bins, &opts("ebpf", false)).unwrap();
    a.add_lab_peers(&lab).unwrap();
    pings(&lab);
    assert!(kernel_state(&lab, 1, 2).is_empty());
    let links = pinned_links(&lab, 1);
    assert!(links.len() >= 3, "pinned links {links:?}");
    a.stop().unwrap();
    // Without --cleanup the programs stay and keep forwarding.
    let bpf = bpf_state(&lab, 1, &links);
    assert_eq!(
        kinds(&bpf),
        ["pins", "xdp", "link", "tunnel_device"],
        "{bpf:#?}"
    );
    pings(&lab);

    // Kernel: no pin, no program left; the kernel path forwards.
    let a = Overlayd::start(&lab, 1, &bins, &opts("kernel", false)).unwrap();
    assert_eq!(a.status().unwrap()["mode"], "kernel");
    let bpf = bpf_state(&lab, 1, &links);
    assert!(bpf.is_empty(), "eBPF left behind: {bpf:#?}");
    pings(&lab);
    a.stop().unwrap();
    let kernel = kernel_state(&lab, 1, 2);
    assert_eq!(
        kinds(&kernel),
        ["device", "route", "neighbour", "fdb"],
        "{kernel:#?}"
    );

    // eBPF again: no device, route, neighbour or FDB entry left.
    let a = Overlayd::start(&lab, 1, &bins, &opts("ebpf", false)).unwrap();
    assert_eq!(a.status().unwrap()["mode"], "ebpf");
    let kernel = kernel_state(&lab, 1, 2);
    assert!(kernel.is_empty(), "kernel mode left behind: {kernel:#?}");
    pings(&lab);
}
