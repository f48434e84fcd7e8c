//! Issue 14: `overlayctl doctor` on a lab host. A healthy host reports
//! every check ok (exit 0); each classic breakage, made on the host by
//! hand, is reported with its exact diagnosis and fix (exit 1), and the
//! host is healthy again once it is undone.

use std::time::Duration;

use overlay_lab::{
    exec_ok, need_docker_or_skip, need_root_or_skip, ping, sysctl, AgentOptions, Binaries,
    DockerOptions, Dockerd, Lab, LabSpec, Overlayd,
};
use overlay_tests::{cluster, docker_section};
use serde_json::Value;

/// `overlayctl --json doctor` on `agent`: whether it exited 0, and the findings.
fn doctor(agent: &Overlayd) -> (bool, Vec<Value>) {
    let out = agent.ctl(&["--json", "doctor"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let findings: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "doctor's JSON: {e}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), findings)
}

/// The problems: (check, message, fix).
fn problems(findings: &[Value]) -> Vec<(String, String, String)> {
    findings
        .iter()
        .filter(|f| f["ok"] == false)
        .map(|f| {
            (
                f["check"].as_str().unwrap().to_string(),
                f["message"].as_str().unwrap().to_string(),
                f["fix"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Every check passes and doctor exits 0.
fn assert_healthy(agent: &Overlayd) -> Vec<Value> {
    let (ok, findings) = doctor(agent);
    assert_eq!(problems(&findings), vec![], "{findings:#?}");
    assert!(ok, "doctor exited non-zero on a healthy host");
    findings
}

/// Exactly one problem, `check` with `message` and `fix`; doctor exits 1.
fn assert_problem(agent: &Overlayd, check: &str, message: &str, fix: &str) {
    let (ok, findings) = doctor(agent);
    assert_eq!(
        problems(&findings),
        vec![(check.to_string(), message.to_string(), fix.to_string())],
        "{findings:#?}"
    );
    assert!(!ok, "doctor exited 0 with a problem");
}

/// The message of the one `check` finding.
fn message_of(findings: &[Value], check: &str) -> String {
    let f: Vec<&Value> = findings.iter().filter(|f| f["check"] == check).collect();
    assert_eq!(f.len(), 1, "{findings:#?}");
    f[0]["message"].as_str().unwrap().to_string()
}

/// bpftool from this process's namespace (`ip netns exec` remounts /sys,
/// which hides the lab's pins).
fn bpftool(args: &[&str]) -> String {
    let out = std::process::Command::new("bpftool")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "bpftool {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(ns: &str, args: &[&str]) {
    let mut argv = vec!["ip"];
    argv.extend(args);
    exec_ok(ns, &argv).unwrap();
}

#[test]
fn each_breakage_is_diagnosed_with_its_fix() {
    if !need_root_or_skip() {
        return;
    }
    let mut c = cluster(
        LabSpec {
            hosts: 2,
            containers_per_host: 1,
            ..Default::default()
        },
        "ebpf",
        // With `tunnel_gro` (on by default) our `ovl.md` holds the VXLAN
        // port and no process could bind it (step 5b); its health is checked
        // in xdp_decap.rs.
        AgentOptions {
            extra: "tunnel_gro = false\n".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let (a, b) = (c.lab.container(1, 1).clone(), c.lab.container(2, 1).clone());
    // Traffic both ways: the containers are discovered as endpoints.
    assert!(ping(&a.ns, b.ip, 3, None, false, 3).unwrap().all_received());
    c.agent(1)
        .wait_status(Duration::from_secs(5), |s| s["endpoints"] == 1)
        .unwrap();
    let ns = c.lab.host(1).ns.clone();

    let findings = assert_healthy(c.agent(1));
    let checks: Vec<&str> = findings
        .iter()
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    assert_eq!(
        checks,
        [
            "mtu",
            "ip_forward",
            "rp_filter",
            "rp_filter",
            "vxlan_port",
            "firewall",
            "bridge_address",
            "peer",
            "programs"
        ]
    );
    assert_eq!(
        message_of(&findings, "mtu"),
        "2 interfaces (bridge and containers) are at most 1450 (underlay eth1 1500 - 50)"
    );
    assert_eq!(
        message_of(&findings, "peer"),
        "1 of 1 peer hosts answer on the underlay"
    );
    assert_eq!(
        message_of(&findings, "programs"),
        "2 programs attached where expected (ovl_from_underlay on eth1, ovl_from_container on veth1)"
    );
    let text = c.agent(1).ctl_ok(&["doctor"]).unwrap();
    assert!(text.starts_with("ok       mtu  "), "{text}");

    // 1. The classic: a container interface with the underlay's MTU.
    // The bridge takes its ports' smallest MTU, so it follows.
    ip(&ns, &["link", "set", "dev", "veth1", "mtu", "1500"]);
    let (ok, findings) = doctor(c.agent(1));
    assert!(!ok);
    let too_big = |what: &str| {
        format!(
            "{what} has MTU 1500, above the underlay eth1's 1500 - 50 = 1450: \
             its packets of more than 1450 bytes do not fit the underlay once encapsulated"
        )
    };
    assert_eq!(
        problems(&findings),
        vec![
            (
                "mtu".to_string(),
                too_big("bridge docker0"),
                "ip link set dev docker0 mtu 1450".to_string()
            ),
            (
                "mtu".to_string(),
                too_big("container 10.103.100.2's interface veth1"),
                "ip link set dev veth1 mtu 1450".to_string()
            ),
        ]
    );
    ip(&ns, &["link", "set", "dev", "veth1", "mtu", "1450"]);
    assert_healthy(c.agent(1));

    // 2. ip_forward off.
    sysctl(&ns, "net.ipv4.ip_forward", "0").unwrap();
    assert_problem(
        c.agent(1),
        "ip_forward",
        "net.ipv4.ip_forward = 0: the kernel does not route between the containers and the underlay \
         (the kernel dataplane needs it, and so does container traffic to anything but a peer)",
        "sysctl -w net.ipv4.ip_forward=1",
    );
    sysctl(&ns, "net.ipv4.ip_forward", "1").unwrap();

    // 3. Strict rp_filter on the underlay only.
    sysctl(&ns, "net.ipv4.conf.eth1.rp_filter", "1").unwrap();
    assert_problem(
        c.agent(1),
        "rp_filter",
        "net.ipv4.conf.eth1.rp_filter = 1 (strict): packets arriving on eth1 whose source is routed out of \
         another interface are dropped, such as decapsulated traffic from peer containers and VXLAN from \
         peers over asymmetric routes",
        "sysctl -w net.ipv4.conf.eth1.rp_filter=2",
    );
    // `all` = 1 makes every interface strict; the fix (2 on the interface) wins over it.
    sysctl(&ns, "net.ipv4.conf.eth1.rp_filter", "2").unwrap();
    sysctl(&ns, "net.ipv4.conf.all.rp_filter", "1").unwrap();
    let (_, findings) = doctor(c.agent(1));
    let p = problems(&findings);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(
        p[0].1.starts_with(
            "net.ipv4.conf.all.rp_filter = 1 makes docker0 strict (the kernel applies the larger of all and docker0's 0)"
        ),
        "{p:#?}"
    );
    assert_eq!(p[0].2, "sysctl -w net.ipv4.conf.docker0.rp_filter=2");
    sysctl(&ns, "net.ipv4.conf.all.rp_filter", "0").unwrap();
    sysctl(&ns, "net.ipv4.conf.eth1.rp_filter", "0").unwrap();

    // 4. A firewall rule dropping the VXLAN port.
    exec_ok(
        &ns,
        &[
            "iptables", "-A", "INPUT", "-p", "udp", "--dport", "4789", "-j", "DROP",
        ],
    )
    .unwrap();
    assert_problem(
        c.agent(1),
        "firewall",
        "iptables rule `-A INPUT -p udp -m udp --dport 4789 -j DROP` drops VXLAN (UDP 4789) from the peers \
         before it reaches overlay",
        "iptables -D INPUT -p udp -m udp --dport 4789 -j DROP",
    );
    // The fix, as printed, is the fix.
    exec_ok(
        &ns,
        &[
            "iptables", "-D", "INPUT", "-p", "udp", "-m", "udp", "--dport", "4789", "-j", "DROP",
        ],
    )
    .unwrap();

    // 5. Another VXLAN device on the port (what Docker swarm's overlay does).
    ip(
        &ns,
        &[
            "link",
            "add",
            "vxforeign",
            "type",
            "vxlan",
            "id",
            "7",
            "dstport",
            "4789",
            "dev",
            "eth1",
        ],
    );
    assert_problem(
        c.agent(1),
        "vxlan_port",
        "VXLAN device vxforeign (VNI 7) also uses UDP port 4789, overlay's VXLAN port: the two overlays' \
         packets collide (Docker swarm's overlay uses 4789)",
        "ip link del vxforeign (if it is a leftover), or vxlan_port = 8472 in overlayd's config on every host",
    );
    ip(&ns, &["link", "del", "vxforeign"]);

    // 5b. A process's UDP socket on the port.
    let listener = c
        .lab
        .spawn(
            &ns,
            &[
                "python3",
                "-c",
                "import socket,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 4789)); time.sleep(60)",
            ],
            "udp-4789.log",
        )
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !exec_ok(&ns, &["cat", "/proc/net/udp"])
        .unwrap()
        .contains(":12B5 ")
    {
        assert!(std::time::Instant::now() < deadline, "{}", listener.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_problem(
        c.agent(1),
        "vxlan_port",
        "1 UDP socket(s) of a process are bound to port 4789, overlay's VXLAN port: it receives no VXLAN, or takes overlay's",
        "stop the process bound to it (ss -lunp 'sport = :4789' names it), or choose another vxlan_port on every host",
    );
    drop(listener);

    // 6. The bridge does not carry this host's gateway (a --bip mismatch without dockerd).
    ip(&ns, &["addr", "del", "10.103.100.1/24", "dev", "docker0"]);
    ip(&ns, &["addr", "add", "10.103.99.1/24", "dev", "docker0"]);
    assert_problem(
        c.agent(1),
        "bridge_address",
        "bridge docker0 has 10.103.99.1/24, not this host's gateway 10.103.100.1/24 (subnet 10.103.100.0/24): \
         its containers are not in the subnet the peers route to this host",
        "ip addr del 10.103.99.1/24 dev docker0 && ip addr add 10.103.100.1/24 dev docker0",
    );
    ip(&ns, &["addr", "del", "10.103.99.1/24", "dev", "docker0"]);
    ip(&ns, &["addr", "add", "10.103.100.1/24", "dev", "docker0"]);

    // 7. A peer whose host does not answer on the underlay.
    c.agent(1)
        .ctl_ok(&["peer", "add", "10.103.250.0/24", "192.168.56.99"])
        .unwrap();
    assert_problem(
        c.agent(1),
        "peer",
        "peer 10.103.250.0/24 (api): its host 192.168.56.99 does not answer on the underlay (no reply to ICMP \
         echo, no ARP reply on eth1); traffic to 10.103.250.0/24 is lost. If the host is up, check the \
         underlay between the two; if it is gone for good, remove the peer",
        "overlayctl peer del 10.103.250.0/24",
    );
    c.agent(1)
        .ctl_ok(&["peer", "del", "10.103.250.0/24"])
        .unwrap();

    // 8. A pinned program detached behind overlayd's back.
    let pin = c
        .lab
        .bpffs_dir()
        .join(format!(
            "h1/v{}/links/underlay-tc",
            overlay_common::MAPS_VERSION
        ))
        .display()
        .to_string();
    let link_id = bpftool(&["-j", "link", "show", "pinned", &pin]);
    let link_id = serde_json::from_str::<Value>(&link_id).unwrap()["id"]
        .as_u64()
        .unwrap();
    bpftool(&["link", "detach", "pinned", &pin]);
    let (ok, findings) = doctor(c.agent(1));
    assert!(!ok);
    let p = problems(&findings);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(p[0].0, "programs");
    assert_eq!(
        p[0].1,
        format!("ovl_from_underlay is not attached to eth1: pinned link {pin} (link id {link_id}) is detached from every interface")
    );
    let pid = c.agent(1).proc.pid();
    assert!(
        p[0].2.starts_with(&format!(
            "restart overlayd (it attaches every program again at start): kill -TERM {pid}, then "
        )),
        "{p:#?}"
    );
    // Traffic from host 2 is no longer decapsulated on host 1...
    assert_eq!(ping(&b.ns, a.ip, 2, None, false, 2).unwrap().received, 0);
    // ...until overlayd restarts, as the fix says.
    let bins = Binaries::locate().unwrap();
    let old = c.agents.remove(0);
    old.stop().unwrap();
    let restarted = Overlayd::start(
        &c.lab,
        1,
        &bins,
        &AgentOptions {
            dataplane: Some("ebpf".into()),
            ..Default::default()
        },
    )
    .unwrap();
    c.agents.insert(0, restarted);
    c.agent(1).add_lab_peers(&c.lab).unwrap();
    assert!(ping(&b.ns, a.ip, 3, None, false, 3).unwrap().all_received());
    c.agent(1)
        .wait_status(Duration::from_secs(5), |s| s["endpoints"] == 1)
        .unwrap();
    assert_healthy(c.agent(1));
}

#[test]
fn kernel_mode_host_is_healthy_and_its_own_device_is_no_conflict() {
    if !need_root_or_skip() {
        return;
    }
    let c = cluster(LabSpec::default(), "kernel", AgentOptions::default()).unwrap();
    let findings = assert_healthy(c.agent(1));
    // Its own ovl.42 listens on 4789 and carries decapsulated traffic.
    assert_eq!(
        message_of(&findings, "vxlan_port"),
        "UDP port 4789: no other VXLAN device or socket uses it"
    );
    assert_eq!(
        message_of(&findings, "programs"),
        "the kernel dataplane attaches no programs"
    );
    let rp: Vec<&Value> = findings
        .iter()
        .filter(|f| f["check"] == "rp_filter")
        .collect();
    assert!(
        rp.iter()
            .any(|f| f["message"].as_str().unwrap().starts_with("ovl.42: 0")),
        "{rp:#?}"
    );
    // The VXLAN filter (kernel mode) is checked and complete.
    let nft = std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert_eq!(
        message_of(&findings, "firewall"),
        format!(
            "nothing drops VXLAN (UDP 4789) from the peers (checked iptables INPUT, the VXLAN filter{})",
            if nft { ", nftables input hooks" } else { "" }
        )
    );
}

#[test]
fn docker_with_the_wrong_bip() {
    if !need_root_or_skip() || !need_docker_or_skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        hosts: 1,
        containers_per_host: 0,
        docker: true,
        ..Default::default()
    })
    .unwrap();
    // Host 1's subnet is 10.103.100.0/24; this dockerd's --bip is another.
    let docker = Dockerd::start(
        &lab,
        1,
        &DockerOptions {
            extra_args: vec!["--bip".into(), "10.103.99.1/24".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let bins = Binaries::locate().unwrap();
    let agent = Overlayd::start(
        &lab,
        1,
        &bins,
        &AgentOptions {
            dataplane: Some("ebpf".into()),
            extra: docker_section(&docker),
            ..Default::default()
        },
    )
    .unwrap();
    let (ok, findings) = doctor(&agent);
    assert!(!ok);
    let fix = "dockerd --bip=10.103.100.1/24 (or \"bip\": \"10.103.100.1/24\" in /etc/docker/daemon.json), then restart dockerd";
    assert_eq!(
        problems(&findings),
        vec![
            (
                "bridge_address".to_string(),
                "bridge docker0 has 10.103.99.1/24, not this host's gateway 10.103.100.1/24 (subnet 10.103.100.0/24): \
                 its containers are not in the subnet the peers route to this host"
                    .to_string(),
                fix.to_string()
            ),
            (
                "docker_bip".to_string(),
                "Docker's bridge network is 10.103.99.0/24 (gateway 10.103.99.1), not this host's subnet \
                 10.103.100.0/24: dockerd's --bip does not match, so its containers get addresses the peers do not route here"
                    .to_string(),
                fix.to_string()
            ),
        ],
        "{findings:#?}"
    );
    // status's health summary has the Docker connection.
    let s = agent.status().unwrap();
    assert_eq!(s["health"]["docker"]["connected"], true, "{s}");
    assert!(
        s["health"]["docker"]["detail"]
            .as_str()
            .unwrap()
            .starts_with(&format!("connected to {} (API ", docker.socket().display())),
        "{s}"
    );
    // Docker gone: status says so (and doctor, with the error).
    let mut docker = docker;
    docker.kill().unwrap();
    agent
        .wait_status(Duration::from_secs(10), |s| {
            s["health"]["docker"]["connected"] == false
        })
        .unwrap();
    let text = agent.ctl_ok(&["status"]).unwrap();
    let line = text.lines().find(|l| l.starts_with("docker ")).unwrap();
    assert!(
        line.starts_with(&format!(
            "docker     DOWN: Docker API at {}",
            docker.socket().display()
        )),
        "{text}"
    );
    let (ok, findings) = doctor(&agent);
    assert!(!ok);
    let p = problems(&findings);
    let bip: Vec<_> = p.iter().filter(|p| p.0 == "docker_bip").collect();
    assert_eq!(bip.len(), 1, "{p:#?}");
    assert!(
        bip[0]
            .1
            .starts_with(&format!("Docker API at {}", docker.socket().display())),
        "{p:#?}"
    );
}
