//! Tests of the config file's schema and validation.

use super::*;

const EXAMPLE: &str = r#"
underlay_interface = "eth1"
subnet = "10.103.100.0/24"
bridge = "docker0"
vni = 42
vxlan_port = 4789
[[peers]]
subnet = "10.103.200.0/24"
underlay_ip = "192.168.56.5"
"#;

fn example() -> Config {
    Config::parse(EXAMPLE).unwrap()
}

fn err_of(edit: impl FnOnce(&mut Config)) -> String {
    let mut cfg = example();
    edit(&mut cfg);
    cfg.validate().unwrap_err().to_string()
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn peer(subnet: &str, ip: &str) -> PeerConfig {
    PeerConfig {
        subnet: net(subnet),
        underlay_ip: ip.parse().unwrap(),
        vtep_mac: None,
    }
}

#[test]
fn parses_the_example() {
    let cfg = example();
    assert_eq!(cfg.underlay_interface, "eth1");
    assert_eq!(cfg.underlay_ip, None);
    assert_eq!(cfg.subnet, net("10.103.100.0/24"));
    assert_eq!(cfg.bridge, "docker0");
    assert_eq!(cfg.vni, 42);
    assert_eq!(cfg.vxlan_port, 4789);
    assert_eq!(cfg.pin_dir, PathBuf::from("/sys/fs/bpf/overlay"));
    assert_eq!(cfg.state_dir, PathBuf::from("/var/lib/overlay"));
    assert_eq!(cfg.attach, AttachPoint::Veth);
    assert_eq!(cfg.xdp, XdpMode::Off);
    assert_eq!(cfg.deliver, DeliverMode::Peer);
    assert_eq!(cfg.learn_limit, 4);
    assert_eq!(cfg.api, ApiConfig::default());
    assert_eq!(cfg.peers, vec![peer("10.103.200.0/24", "192.168.56.5")]);
    cfg.validate().unwrap();
    assert_eq!(cfg.gateway(), Ipv4Addr::new(10, 103, 100, 1));
}

#[test]
fn defaults_port_and_accepts_all_fields() {
    let cfg = Config::parse(
        r#"
underlay_interface = "eth1"
underlay_ip = "192.168.56.4"
subnet = "10.103.100.0/24"
bridge = "br0"
vni = 7
pin_dir = "/tmp/pins"
state_dir = "/tmp/state"
attach = "bridge"
xdp = "off"
learn_limit = 0
[api]
idle_timeout_secs = 5
max_connections = 8
[[peers]]
subnet = "10.103.200.0/24"
underlay_ip = "192.168.56.5"
vtep_mac = "02:aa:bb:cc:dd:ee"
"#,
    )
    .unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.vxlan_port, 4789);
    assert_eq!(cfg.attach, AttachPoint::Bridge);
    assert_eq!(cfg.xdp, XdpMode::Off);
    assert_eq!(cfg.learn_limit, 0);
    assert_eq!((cfg.api.idle_timeout_secs, cfg.api.max_connections), (5, 8));
    assert_eq!(cfg.peers[0].vtep_mac.as_deref(), Some("02:aa:bb:cc:dd:ee"));
}

#[test]
fn validation_errors() {
    assert_eq!(
        err_of(|c| c.vni = 0),
        "vni = 0 is out of range; expected 1..=16777215"
    );
    assert_eq!(
        err_of(|c| c.vni = 16_777_216),
        "vni = 16777216 is out of range; expected 1..=16777215"
    );
    assert_eq!(
        err_of(|c| c.vxlan_port = 0),
        "vxlan_port = 0 is not a usable UDP port; expected 1..=65535 (usually 4789)"
    );
    assert_eq!(
        err_of(|c| c.underlay_interface = String::new()),
        "underlay_interface = \"\" is not a valid interface name; expected 1 to 15 characters without '/', ':' or whitespace"
    );
    assert_eq!(
        err_of(|c| c.bridge = "a-very-long-bridge".into()),
        "bridge = \"a-very-long-bridge\" is not a valid interface name; expected 1 to 15 characters without '/', ':' or whitespace"
    );
    assert_eq!(
        err_of(|c| c.subnet = net("10.103.100.5/24")),
        "subnet: 10.103.100.5/24 has host bits set; expected a network address like 10.103.100.0/24"
    );
    assert_eq!(
        err_of(|c| c.subnet = net("10.103.100.0/31")),
        "subnet 10.103.100.0/31 is too small; expected a prefix of /30 or shorter, like 10.103.100.0/24"
    );
    assert_eq!(
        err_of(|c| c.underlay_ip = Some(Ipv4Addr::new(127, 0, 0, 1))),
        "underlay_ip: 127.0.0.1 is a loopback address; expected a host's unicast underlay address like 192.168.56.5"
    );
    assert_eq!(
        err_of(|c| c.peers[0].subnet = net("10.103.200.9/24")),
        "peers[0].subnet: 10.103.200.9/24 has host bits set; expected a network address like 10.103.200.0/24"
    );
    assert_eq!(
        err_of(|c| c.peers[0].subnet = net("169.254.0.0/16")),
        "peers[0].subnet: peer subnet 169.254.0.0/16 overlaps the link-local range 169.254.0.0/16; expected a container subnet outside 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4 and 255.255.255.255, like 10.103.200.0/24"
    );
    assert_eq!(
        err_of(|c| c.peers[0].subnet = net("10.103.0.0/16")),
        "peers[0].subnet 10.103.0.0/16 overlaps this host's subnet 10.103.100.0/24; expected a subnet disjoint from it"
    );
    assert_eq!(
        err_of(|c| c.peers.push(peer("10.103.200.128/25", "192.168.56.6"))),
        "peers[1].subnet 10.103.200.128/25 overlaps peers[0].subnet 10.103.200.0/24; expected disjoint peer subnets"
    );
    assert_eq!(
        err_of(|c| c.peers.push(peer("10.103.200.0/24", "192.168.56.6"))),
        "peers[1].subnet 10.103.200.0/24 overlaps peers[0].subnet 10.103.200.0/24; expected disjoint peer subnets"
    );
    assert_eq!(
        err_of(|c| c.peers[0].underlay_ip = Ipv4Addr::UNSPECIFIED),
        "peers[0].underlay_ip: 0.0.0.0 is an unspecified address; expected a host's unicast underlay address like 192.168.56.5"
    );
    assert_eq!(
        err_of(|c| c.peers[0].underlay_ip = Ipv4Addr::new(239, 1, 1, 1)),
        "peers[0].underlay_ip: 239.1.1.1 is a multicast address; expected a host's unicast underlay address like 192.168.56.5"
    );
    assert_eq!(
        err_of(|c| c.peers[0].underlay_ip = Ipv4Addr::BROADCAST),
        "peers[0].underlay_ip: 255.255.255.255 is a broadcast address; expected a host's unicast underlay address like 192.168.56.5"
    );
    assert_eq!(
        err_of(|c| {
            c.underlay_ip = Some(Ipv4Addr::new(192, 168, 56, 5));
        }),
        "peers[0].underlay_ip 192.168.56.5 is this host's own underlay address; expected the peer host's address"
    );
    assert_eq!(
        err_of(|c| c.peers[0].vtep_mac = Some("02:aa:bb:cc:dd".into())),
        "peers[0].vtep_mac: \"02:aa:bb:cc:dd\" is not a MAC address; expected six hex bytes like 02:2a:c0:a8:38:05"
    );
    assert_eq!(
        err_of(|c| c.peers[0].vtep_mac = Some("01:00:5e:00:00:01".into())),
        "peers[0].vtep_mac: 01:00:5e:00:00:01 is not a unicast MAC address; expected one like 02:2a:c0:a8:38:05 (first byte even, not all zeros)"
    );
    assert_eq!(
        err_of(|c| c.learn_limit = 300),
        "learn_limit = 300 is more than the 253 container addresses of subnet 10.103.100.0/24; expected 0 (no learning) to 253"
    );
    assert_eq!(
        err_of(|c| c.api.max_connections = 0),
        "api.max_connections = 0 is out of range; expected 1..=4096 connections (default 64)"
    );
    let e = Config::parse(&format!("learn_limit = -1\n{EXAMPLE}")).unwrap_err();
    assert!(e.to_string().contains("learn_limit"), "{e}");
}

#[test]
fn docker_section() {
    let cfg = example();
    assert_eq!(cfg.docker, DockerConfig::default());
    assert!(!cfg.docker.enabled);
    assert!(!cfg.docker.plugin);
    assert_eq!(cfg.docker.socket, PathBuf::from("/var/run/docker.sock"));
    assert_eq!(cfg.docker.networks, vec!["bridge".to_string()]);
    assert_eq!(
        cfg.docker.plugin_socket(),
        PathBuf::from("/run/docker/plugins/ovl.sock")
    );
    let cfg = Config::parse(&format!(
        "{EXAMPLE}\n[docker]\nenabled = true\nsocket = \"/run/d.sock\"\nnetworks = [\"bridge\", \"ovl\"]\nplugin_dir = \"/tmp/p\"\n"
    ))
    .unwrap();
    cfg.validate().unwrap();
    assert!(cfg.docker.enabled);
    assert_eq!(cfg.docker.socket, PathBuf::from("/run/d.sock"));
    assert_eq!(cfg.docker.networks, vec!["bridge", "ovl"]);
    assert_eq!(cfg.docker.plugin_socket(), PathBuf::from("/tmp/p/ovl.sock"));
    let e = Config::parse(&format!("{EXAMPLE}\n[docker]\nenable = true\n")).unwrap_err();
    assert!(e.to_string().contains("unknown field `enable`"), "{e}");
    let e = Config::parse(&format!("{EXAMPLE}\n[docker]\nplugin = true\n"))
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(
        e.to_string().contains(
            "docker.plugin = true needs a [cluster] section; expected [cluster] with etcd, \
             where the overlay networks live, or plugin = false"
        ),
        "{e}"
    );
}

const DNS_BASE: &str =
    "underlay_interface = \"eth1\"\nsubnet = \"10.103.100.0/24\"\nbridge = \"docker0\"\nvni = 42\n";
const DNS_CLUSTER: &str = "[cluster]\netcd = [\"http://10.0.0.1:2379\"]\n";

fn parse_dns(dns: &str) -> Result<Config, String> {
    let text = format!("{DNS_BASE}{DNS_CLUSTER}[dns]\n{dns}");
    let cfg = Config::parse(&text).map_err(|e| e.to_string())?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

#[test]
fn dns_section_off_by_default_and_parsed_with_defaults() {
    assert_eq!(Config::parse(DNS_BASE).unwrap().dns, None);
    let cfg = parse_dns("listen = \"192.168.56.4:53\"\n").unwrap();
    let dns = cfg.dns.unwrap();
    assert_eq!(dns.listen, "192.168.56.4:53".parse().unwrap());
    assert!(dns.upstream.is_empty());
    assert_eq!(dns.ttl, dns::DEFAULT_TTL);
    let cfg = parse_dns(
        "listen = \"10.0.0.1:5353\"\nupstream = [\"192.168.56.2\", \"10.9.9.9:5300\"]\nttl = 5\n",
    )
    .unwrap();
    let dns = cfg.dns.unwrap();
    assert_eq!(
        dns.upstream,
        vec![
            "192.168.56.2:53".parse().unwrap(),
            "10.9.9.9:5300".parse().unwrap()
        ]
    );
    assert_eq!(dns.ttl, 5);
}

#[test]
fn dns_section_bad_values_are_named() {
    let e = parse_dns("listen = \"192.168.56.4\"\n").unwrap_err();
    assert!(e.contains("dns.listen = \"192.168.56.4\" is not an address with a port; expected IP:port like \"192.168.56.4:53\""), "{e}");
    let e = parse_dns("listen = \"1.2.3.4:0\"\n").unwrap_err();
    assert!(e.contains("dns.listen = \"1.2.3.4:0\" has port 0"), "{e}");
    let e = parse_dns("listen = \"1.2.3.4:53\"\nupstream = [\"resolver.example\"]\n").unwrap_err();
    assert!(
        e.contains("dns.upstream = \"resolver.example\" is not a resolver's address; expected \"IP\" or \"IP:port\""),
        "{e}"
    );
    let e = parse_dns("listen = \"1.2.3.4:53\"\nupstream = [\"1.2.3.4\"]\n").unwrap_err();
    assert!(
        e.contains("dns.upstream = \"1.2.3.4:53\" is the resolver's own listen address"),
        "{e}"
    );
    let e = parse_dns("listen = \"1.2.3.4:53\"\nttl = 0\n").unwrap_err();
    assert!(
        e.contains("dns.ttl = \"0\" is out of range; expected 1..=300 seconds"),
        "{e}"
    );
    let e = parse_dns("listen = \"1.2.3.4:53\"\nport = 1\n").unwrap_err();
    assert!(e.contains("unknown field `port`"), "{e}");
    let alone = Config::parse(&format!("{DNS_BASE}[dns]\nlisten = \"1.2.3.4:53\"\n")).unwrap();
    let e = alone.validate().unwrap_err().to_string();
    assert_eq!(e, "dns.listen = \"1.2.3.4:53\" is set without a [cluster] section; expected a [cluster] section too: the names come from the cluster store");
}

#[test]
fn gro_settings_parse_and_show() {
    let cfg = Config::parse(&format!("{EXAMPLE}\n")).unwrap();
    assert_eq!((cfg.xdp, cfg.deliver), (XdpMode::Off, DeliverMode::Peer));
    let toml = EXAMPLE.replacen(
        "vni = 42",
        "vni = 42\nxdp = \"decap\"\ndeliver = \"veth\"",
        1,
    );
    let cfg = Config::parse(&toml).unwrap();
    assert_eq!((cfg.xdp, cfg.deliver), (XdpMode::Decap, DeliverMode::Veth));
    assert_eq!(
        (cfg.xdp.to_string(), cfg.deliver.to_string()),
        ("decap".into(), "veth".into())
    );
    let bad = EXAMPLE.replacen("vni = 42", "vni = 42\ndeliver = \"tunnel\"", 1);
    let e = Config::parse(&bad).unwrap_err().to_string();
    assert!(
        e.contains("unknown variant `tunnel`, expected `peer` or `veth`"),
        "{e}"
    );
}

#[test]
fn endpoint_hop_settings_have_defaults_and_name_bad_values() {
    let cfg = example();
    assert_eq!(cfg.tc_attach, TcAttach::Tcx);
    assert_eq!(cfg.veth_gro, default_veth_gro());
    assert_eq!(cfg.big_tcp, default_big_tcp());
    assert_eq!(cfg.tunnel_gro, default_tunnel_gro());
    let set = Config::parse(&format!(
        "tc_attach = \"clsact\"\nveth_gro = true\nbig_tcp = true\ntunnel_gro = true\n{EXAMPLE}"
    ))
    .unwrap();
    set.validate().unwrap();
    assert_eq!(
        (set.tc_attach, set.veth_gro, set.big_tcp, set.tunnel_gro),
        (TcAttach::Clsact, true, true, true)
    );
    // The device listens for GRO's sake; the programs still encapsulate.
    assert_eq!(set.encap, EncapMode::Bpf);
    assert_eq!(set.tc_attach.to_string(), "clsact");
    for (line, want) in [
        (
            "tc_attach = \"netlink\"",
            "unknown variant `netlink`, expected `tcx` or `clsact`",
        ),
        (
            "veth_gro = \"on\"",
            "invalid type: string \"on\", expected a boolean",
        ),
        (
            "big_tcp = 1",
            "invalid type: integer `1`, expected a boolean",
        ),
        (
            "tunnel_gro = \"yes\"",
            "invalid type: string \"yes\", expected a boolean",
        ),
    ] {
        let e = Config::parse(&format!("{line}\n{EXAMPLE}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{line}: {e}");
        assert!(e.contains(line.split(' ').next().unwrap()), "{line}: {e}");
    }
}

#[test]
fn decap_resize_defaults_to_auto_which_is_measured() {
    assert_eq!(example().decap_resize, DecapResize::Auto);
    for (line, want, fixed) in [
        ("", DecapResize::Auto, None),
        ("decap_resize = \"auto\"", DecapResize::Auto, None),
        (
            "decap_resize = \"one-step\"",
            DecapResize::OneStep,
            Some(false),
        ),
        (
            "decap_resize = \"two-step\"",
            DecapResize::TwoStep,
            Some(true),
        ),
    ] {
        let cfg = Config::parse(&format!("{line}\n{EXAMPLE}")).unwrap();
        assert_eq!(cfg.decap_resize, want, "{line}");
        assert_eq!(cfg.decap_resize.fixed(), fixed, "{line}");
    }
    assert_eq!(DecapResize::TwoStep.to_string(), "two-step");
    let e = Config::parse(&format!("decap_resize = \"fast\"\n{EXAMPLE}"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown variant `fast`, expected one of `auto`, `one-step`, `two-step`"),
        "{e}"
    );
    assert!(e.contains("decap_resize"), "{e}");
}

#[test]
fn encap_resize_defaults_to_head() {
    assert_eq!(example().encap_resize, EncapResize::Head);
    for (line, want) in [
        ("", EncapResize::Head),
        ("encap_resize = \"head\"", EncapResize::Head),
        ("encap_resize = \"adjust-room\"", EncapResize::AdjustRoom),
    ] {
        let cfg = Config::parse(&format!("{line}\n{EXAMPLE}")).unwrap();
        assert_eq!(cfg.encap_resize, want, "{line}");
    }
    assert_eq!(EncapResize::AdjustRoom.to_string(), "adjust-room");
    let e = Config::parse(&format!("encap_resize = \"change-head\"\n{EXAMPLE}"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown variant `change-head`, expected `head` or `adjust-room`"),
        "{e}"
    );
    assert!(e.contains("encap_resize"), "{e}");
}
