//! Issue 10: a kernel VXLAN device accepts frames from any source, so in
//! kernel mode (and with `encap = "device"`) overlayd accepts VXLAN only
//! from its peers: the `OVERLAY-VXLAN` chain, hooked from INPUT for the
//! VXLAN port, returns for each peer host and drops (and counts) the rest.

use std::thread::{self, JoinHandle};
use std::time::Duration;

use overlay_lab::{exec, exec_ok, need_root_or_skip, ping, AgentOptions, LabSpec};
use overlay_tests::cluster;

fn forge() -> String {
    format!("{}/tools/forge.py", env!("CARGO_MANIFEST_DIR"))
}

/// Counts UDP datagrams to `port` in `ns` for `secs` seconds, in the background.
fn listen(ns: &str, port: u16, secs: u32) -> JoinHandle<u64> {
    let ns = ns.to_string();
    thread::spawn(move || {
        exec_ok(
            &ns,
            &[
                "python3",
                &forge(),
                "listen",
                &port.to_string(),
                &secs.to_string(),
            ],
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap()
    })
}

/// The rules of the filter chain in `ns` (`iptables -S`), without `-A OVERLAY-VXLAN`;
/// `None` when there is no such chain.
fn chain(ns: &str) -> Option<Vec<String>> {
    let out = exec(ns, &["iptables", "-S", "OVERLAY-VXLAN"]).unwrap();
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("-A OVERLAY-VXLAN "))
            .map(str::to_string)
            .collect()
    })
}

/// The INPUT rules that jump to the filter chain.
fn hooks(ns: &str) -> Vec<String> {
    exec_ok(ns, &["iptables", "-S", "INPUT"])
        .unwrap()
        .lines()
        .filter(|l| l.ends_with("-j OVERLAY-VXLAN"))
        .map(str::to_string)
        .collect()
}

/// Packets counted by the chain's DROP rule in `ns`.
fn dropped(ns: &str) -> u64 {
    let out = exec_ok(ns, &["iptables", "-L", "OVERLAY-VXLAN", "-n", "-v", "-x"]).unwrap();
    out.lines()
        .find(|l| l.split_whitespace().nth(2) == Some("DROP"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no DROP rule in OVERLAY-VXLAN:\n{out}"))
}

#[test]
fn kernel_mode_accepts_vxlan_only_from_peers() {
    if !need_root_or_skip() {
        return;
    }
    let opts = AgentOptions {
        args: vec!["--cleanup".into()],
        ..Default::default()
    };
    let mut c = cluster(
        LabSpec {
            hosts: 3,
            containers_per_host: 1,
            ..Default::default()
        },
        "kernel",
        opts,
    )
    .unwrap();
    let (h1, h3) = (c.lab.host(1).clone(), c.lab.host(3).clone());
    let (c11, c21, c31) = (
        c.lab.container(1, 1).clone(),
        c.lab.container(2, 1).clone(),
        c.lab.container(3, 1).clone(),
    );
    // Host 3 stops being a peer of host 1.
    c.agent(1).ctl_ok(&["peer", "del", &h3.subnet]).unwrap();

    // Host 3 forges a frame from container 2.1 to container 1.1, with host
    // 1's VTEP MAC inside, as a kernel VXLAN receiver wants it.
    let vtep_mac = "02:2a:c0:a8:38:04";
    let (to, src, dst) = (
        h1.underlay_ip.to_string(),
        c21.ip.to_string(),
        c11.ip.to_string(),
    );
    let send_from_h3 = || {
        exec_ok(
            &h3.ns,
            &[
                "python3",
                &forge(),
                "vxlan",
                &to,
                "4789",
                "42",
                &src,
                &dst,
                "7000",
                vtep_mac,
            ],
        )
        .unwrap();
    };
    let in_c11 = listen(&c11.ns, 7000, 2);
    thread::sleep(Duration::from_millis(500));
    send_from_h3();
    assert_eq!(
        in_c11.join().unwrap(),
        0,
        "VXLAN from host 3, not a peer, reached container 1.1"
    );
    assert_eq!(
        chain(&h1.ns).unwrap(),
        ["-s 192.168.56.5/32 -j RETURN", "-j DROP"]
    );
    assert_eq!(
        hooks(&h1.ns),
        ["-A INPUT -p udp -m udp --dport 4789 -m comment --comment overlayd -j OVERLAY-VXLAN"]
    );
    assert_eq!(dropped(&h1.ns), 1, "the DROP rule counted host 3's frame");
    // The peers' traffic flows meanwhile.
    assert_eq!(
        ping(&c11.ns, c21.ip, 2, None, false, 3).unwrap().received,
        2
    );
    assert_eq!(
        ping(&c21.ns, c11.ip, 2, None, false, 3).unwrap().received,
        2
    );

    // Host 3 becomes a peer again: its frames arrive, its containers reach ours.
    c.agent(1)
        .ctl_ok(&["peer", "add", &h3.subnet, &h3.underlay_ip.to_string()])
        .unwrap();
    assert_eq!(
        chain(&h1.ns).unwrap(),
        [
            "-s 192.168.56.6/32 -j RETURN",
            "-s 192.168.56.5/32 -j RETURN",
            "-j DROP"
        ]
    );
    let in_c11 = listen(&c11.ns, 7000, 2);
    thread::sleep(Duration::from_millis(500));
    send_from_h3();
    assert_eq!(
        ping(&c31.ns, c11.ip, 2, None, false, 3).unwrap().received,
        2
    );
    assert_eq!(
        in_c11.join().unwrap(),
        1,
        "container 1.1: the frame sent once host 3 was a peer"
    );
    assert_eq!(dropped(&h1.ns), 1, "nothing from a peer dropped");

    // --cleanup removes the chain and its hook with everything else.
    let a1 = c.agents.remove(0);
    assert!(a1.stop().unwrap().success());
    assert_eq!(chain(&h1.ns), None);
    assert_eq!(hooks(&h1.ns), Vec::<String>::new());
}

#[test]
fn encap_device_keeps_the_filter_in_step_with_the_peers() {
    if !need_root_or_skip() {
        return;
    }
    let opts = AgentOptions {
        extra: "encap = \"device\"\n".into(),
        args: vec!["--cleanup".into()],
        port: 8472,
        ..Default::default()
    };
    let mut c = cluster(
        LabSpec {
            hosts: 2,
            containers_per_host: 1,
            ..Default::default()
        },
        "ebpf",
        opts,
    )
    .unwrap();
    let h1 = c.lab.host(1).clone();
    let h2 = c.lab.host(2).clone();
    let (c11, c21) = (c.lab.container(1, 1).clone(), c.lab.container(2, 1).clone());
    assert_eq!(
        ping(&c11.ns, c21.ip, 2, None, false, 3).unwrap().received,
        2
    );
    assert_eq!(
        chain(&h1.ns).unwrap(),
        ["-s 192.168.56.5/32 -j RETURN", "-j DROP"]
    );
    assert_eq!(
        hooks(&h1.ns),
        ["-A INPUT -p udp -m udp --dport 8472 -m comment --comment overlayd -j OVERLAY-VXLAN"]
    );
    c.agent(1).ctl_ok(&["peer", "del", &h2.subnet]).unwrap();
    assert_eq!(chain(&h1.ns).unwrap(), ["-j DROP"]);
    c.agent(1)
        .ctl_ok(&["peer", "add", &h2.subnet, &h2.underlay_ip.to_string()])
        .unwrap();
    assert_eq!(
        chain(&h1.ns).unwrap(),
        ["-s 192.168.56.5/32 -j RETURN", "-j DROP"]
    );
    assert_eq!(
        ping(&c11.ns, c21.ip, 2, None, false, 3).unwrap().received,
        2
    );
    let a1 = c.agents.remove(0);
    assert!(a1.stop().unwrap().success());
    assert_eq!(chain(&h1.ns), None);
    assert_eq!(hooks(&h1.ns), Vec::<String>::new());
}
