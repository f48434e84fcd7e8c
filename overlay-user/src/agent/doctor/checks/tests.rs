use super::*;

fn peers(ips: &[&str]) -> BTreeSet<Ipv4Addr> {
    ips.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn mtu_above_underlay_minus_50() {
    let ifaces = [
        MtuOf {
            ifname: "docker0".into(),
            mtu: 1450,
            what: "bridge".into(),
            docker: false,
        },
        MtuOf {
            ifname: "veth1".into(),
            mtu: 1462,
            what: "container 10.103.100.2's interface".into(),
            docker: false,
        },
        MtuOf {
            ifname: "veth9".into(),
            mtu: 1500,
            what: "container 10.103.100.9's interface".into(),
            docker: true,
        },
    ];
    let f = mtu("eth1", 1500, &ifaces);
    assert_eq!(f.len(), 2);
    assert_eq!(
        f[0].message,
        "container 10.103.100.2's interface veth1 has MTU 1462, above the underlay eth1's 1500 - 50 = 1450: \
         its packets of more than 1450 bytes do not fit the underlay once encapsulated"
    );
    assert_eq!(f[0].fix.as_deref(), Some("ip link set dev veth1 mtu 1450"));
    assert!(f[1]
        .fix
        .as_deref()
        .unwrap()
        .starts_with("dockerd --mtu=1450"));
    let ok = mtu("eth1", 1500, &ifaces[..1]);
    assert!(ok[0].ok, "{ok:?}");
    assert_eq!(
        ok[0].message,
        "docker0 is at most 1450 (underlay eth1 1500 - 50)"
    );
}

#[test]
fn rp_filter_takes_the_larger_of_all_and_the_interface() {
    assert!(rp_filter("eth1", 0, 0).ok);
    assert!(rp_filter("eth1", 2, 1).ok, "max(2, 1) = 2 is loose");
    assert!(rp_filter("eth1", 1, 2).ok, "max(1, 2) = 2 is loose");
    let f = rp_filter("eth1", 1, 0);
    assert!(!f.ok);
    assert!(f
        .message
        .starts_with("net.ipv4.conf.all.rp_filter = 1 makes eth1 strict"));
    assert_eq!(
        f.fix.as_deref(),
        Some("sysctl -w net.ipv4.conf.eth1.rp_filter=2")
    );
    let f = rp_filter("ovl.42", 0, 1);
    assert!(f
        .message
        .starts_with("net.ipv4.conf.ovl.42.rp_filter = 1 (strict)"));
}

#[test]
fn iptables_rules_that_drop_vxlan() {
    let p = peers(&["192.168.56.5"]);
    let rules: Vec<String> = [
        "-P INPUT ACCEPT",
        "-A INPUT -p udp -m udp --dport 4789 -j DROP",
        "-A INPUT -p udp -m udp --dport 53 -j DROP",
        "-A INPUT -p tcp -j DROP",
        "-A INPUT -s 10.0.0.0/8 -j DROP",
        "-A INPUT -s 192.168.56.0/24 -p udp -m multiport --dports 80,4000:5000 -j REJECT --reject-with icmp-port-unreachable",
        "-A INPUT -i eth0 -j DROP",
        "-A INPUT -p udp -m udp --dport 4789 -m comment --comment overlayd -j OVERLAY-VXLAN",
        "-A INPUT ! -s 192.168.56.5/32 -p udp -j DROP",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let f = iptables_input(&rules, 4789, "eth1", &p);
    let fixes: Vec<&str> = f.iter().map(|f| f.fix.as_deref().unwrap()).collect();
    assert_eq!(
        fixes,
        [
            "iptables -D INPUT -p udp -m udp --dport 4789 -j DROP",
            "iptables -D INPUT -s 192.168.56.0/24 -p udp -m multiport --dports 80,4000:5000 -j REJECT --reject-with icmp-port-unreachable",
        ]
    );
    assert_eq!(
        f[0].message,
        "iptables rule `-A INPUT -p udp -m udp --dport 4789 -j DROP` drops VXLAN (UDP 4789) from the peers before it reaches overlay"
    );
}

#[test]
fn vxlan_filter_needs_a_return_per_peer() {
    let rules: Vec<String> = [
        "-N OVERLAY-VXLAN",
        "-A OVERLAY-VXLAN -s 192.168.56.5/32 -j RETURN",
        "-A OVERLAY-VXLAN -j DROP",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let f = vxlan_filter(
        &rules,
        "OVERLAY-VXLAN",
        &peers(&["192.168.56.5", "192.168.56.6"]),
    );
    assert_eq!(f.len(), 1);
    assert_eq!(
        f[0].fix.as_deref(),
        Some("iptables -I OVERLAY-VXLAN 1 -s 192.168.56.6/32 -j RETURN")
    );
}

#[test]
fn nft_input_drops() {
    let ruleset = "table inet fw { # handle 7\n\
        \tchain input { # handle 1\n\
        \t\ttype filter hook input priority filter; policy accept;\n\
        \t\tudp dport 4789 drop # handle 3\n\
        \t\tudp dport { 53, 4789 } counter packets 0 bytes 0 reject # handle 4\n\
        \t\tudp dport 8472 drop # handle 5\n\
        \t}\n\
        \tchain output { # handle 2\n\
        \t\ttype filter hook output priority filter; policy accept;\n\
        \t\tudp dport 4789 drop # handle 6\n\
        \t}\n\
        }\n\
        table ip filter { # handle 8\n\
        \tchain INPUT { # handle 1\n\
        \t\ttype filter hook input priority filter; policy accept;\n\
        \t\tmeta l4proto udp udp dport 4789 counter packets 0 bytes 0 drop # handle 2\n\
        \t}\n\
        }\n";
    let f = nft_input(ruleset, 4789);
    let fixes: Vec<&str> = f.iter().map(|f| f.fix.as_deref().unwrap()).collect();
    assert_eq!(
        fixes,
        [
            "nft delete rule inet fw input handle 3",
            "nft delete rule inet fw input handle 4"
        ]
    );
    assert_eq!(
        f[0].message,
        "nftables rule `udp dport 4789 drop` (table inet fw, chain input) drops VXLAN (UDP 4789) before it reaches overlay"
    );
}

#[test]
fn bridge_and_docker_addresses() {
    let subnet: Ipv4Net = "10.103.100.0/24".parse().unwrap();
    let gw: Ipv4Addr = "10.103.100.1".parse().unwrap();
    assert!(bridge_address("docker0", &[(gw, 24)], subnet, gw, false).ok);
    let f = bridge_address(
        "docker0",
        &[("10.103.99.1".parse().unwrap(), 24)],
        subnet,
        gw,
        false,
    );
    assert_eq!(
        f.message,
        "bridge docker0 has 10.103.99.1/24, not this host's gateway 10.103.100.1/24 (subnet 10.103.100.0/24): \
         its containers are not in the subnet the peers route to this host"
    );
    assert_eq!(
        f.fix.as_deref(),
        Some("ip addr del 10.103.99.1/24 dev docker0 && ip addr add 10.103.100.1/24 dev docker0")
    );
    assert!(docker_bip("10.103.100.0/24", Some("10.103.100.1"), subnet, gw).ok);
    let f = docker_bip("172.17.0.0/16", Some("172.17.0.1"), subnet, gw);
    assert!(!f.ok);
    assert_eq!(
        f.fix.as_deref(),
        Some("dockerd --bip=10.103.100.1/24 (or \"bip\": \"10.103.100.1/24\" in /etc/docker/daemon.json), then restart dockerd")
    );
}

#[test]
fn unreachable_peer_fix_depends_on_its_source() {
    let s: Ipv4Net = "10.103.200.0/24".parse().unwrap();
    let ip: Ipv4Addr = "192.168.56.5".parse().unwrap();
    assert_eq!(
        peer_unreachable(s, ip, Source::Api, "x").fix.as_deref(),
        Some("overlayctl peer del 10.103.200.0/24")
    );
    assert!(peer_unreachable(s, ip, Source::Config, "x")
        .fix
        .unwrap()
        .starts_with("remove the [[peers]] entry 10.103.200.0/24"));
    assert!(peer_unreachable(s, ip, Source::Cluster, "x")
        .fix
        .unwrap()
        .starts_with("overlayctl hosts rm NAME"));
}

#[test]
fn programs_not_attached() {
    let st = |attached: bool| AttachmentState {
        program: "ovl_from_underlay".into(),
        link: "underlay-tc".into(),
        ifname: "eth1".into(),
        attached,
        problem: (!attached).then(|| "detached".to_string()),
    };
    let f = programs("ebpf", &[st(true)], "restart");
    assert!(f[0].ok);
    assert_eq!(
        f[0].message,
        "1 programs attached where expected (ovl_from_underlay on eth1)"
    );
    let f = programs("ebpf", &[st(false)], "restart");
    assert_eq!(
        f[0].message,
        "ovl_from_underlay is not attached to eth1: detached"
    );
    assert!(programs("kernel", &[], "restart")[0].ok);
}
