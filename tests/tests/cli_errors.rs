//! Bad input to overlayctl gets a clear error naming the value, a non-zero
//! exit code, and changes nothing in the running agent.

use overlay_lab::{need_root_or_skip, AgentOptions, LabSpec, Overlayd};
use overlay_tests::cluster;

fn run(a: &Overlayd, args: &[&str]) -> (i32, String) {
    let out = a.ctl(args).unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    if !need_root_or_skip() {
        return;
    }
    let c = cluster(
        LabSpec {
            hosts: 2,
            ..Default::default()
        },
        "ebpf",
        AgentOptions::default(),
    )
    .unwrap();
    let a = c.agent(1);
    let peers_before = overlay_tests::peer_table(a);
    let endpoints_before = a.ctl_ok(&["--json", "endpoint", "list"]).unwrap();

    let cases: &[(&[&str], i32, &[&str])] = &[
        (&["peer", "add", "banana", "192.168.56.5"], 2, &["banana"]),
        (
            &["peer", "add", "10.103.200.5/24", "192.168.56.5"],
            2,
            &["10.103.200.5/24", "host bits"],
        ),
        (
            &["peer", "add", "10.103.200.0/24", "192.168.56.300"],
            2,
            &["192.168.56.300"],
        ),
        (
            &["peer", "add", "10.103.100.0/25", "192.168.56.6"],
            1,
            &["10.103.100.0/25", "10.103.100.0/24"],
        ),
        (
            &["peer", "add", "10.103.200.128/25", "192.168.56.6"],
            1,
            &["10.103.200.128/25", "10.103.200.0/24"],
        ),
        (
            &[
                "peer",
                "add",
                "10.104.0.0/24",
                "192.168.56.5",
                "--vtep-mac",
                "zz:00",
            ],
            2,
            &["zz:00"],
        ),
        (&["peer", "del", "10.120.0.0/24"], 1, &["10.120.0.0/24"]),
        (
            &["endpoint", "add", "10.103.100.50", "--dev", "nosuchif0"],
            1,
            &["nosuchif0"],
        ),
        (
            &["endpoint", "add", "10.9.9.9", "--dev", "veth1"],
            1,
            &["10.9.9.9"],
        ),
        (
            &["endpoint", "add", "10.103.100.x", "--dev", "veth1"],
            2,
            &["10.103.100.x"],
        ),
    ];
    for (args, code, needles) in cases {
        let (got, text) = run(a, args);
        assert_eq!(
            got,
            *code,
            "overlayctl {}: exit {got}, output:\n{text}",
            args.join(" ")
        );
        for n in *needles {
            assert!(
                text.contains(n),
                "overlayctl {}: output does not name {n}:\n{text}",
                args.join(" ")
            );
        }
    }
    assert_eq!(overlay_tests::peer_table(a), peers_before, "peers changed");
    assert_eq!(
        a.ctl_ok(&["--json", "endpoint", "list"]).unwrap(),
        endpoints_before,
        "endpoints changed"
    );
    // The dataplane still forwards.
    let (x, y) = (c.lab.container(1, 1).clone(), c.lab.container(2, 1).clone());
    assert_eq!(
        overlay_lab::ping(&x.ns, y.ip, 2, None, false, 2)
            .unwrap()
            .received,
        2
    );
}

/// A bad config file: overlayd exits 2 with a message naming the value and
/// leaves no socket, pin or program behind.
#[test]
fn bad_config_is_refused_before_anything_starts() {
    if !need_root_or_skip() {
        return;
    }
    let lab = overlay_lab::Lab::new(LabSpec {
        hosts: 1,
        containers_per_host: 1,
        ..Default::default()
    })
    .unwrap();
    let bins = overlay_lab::Binaries::locate().unwrap();
    let good = overlay_lab::agent_config(&lab, 1, &AgentOptions::default());
    let cases = [
        (
            good.replace(
                "underlay_interface = \"eth1\"",
                "underlay_interface = \"eth9\"",
            ),
            "eth9",
        ),
        (
            good.replace(
                "subnet = \"10.103.100.0/24\"",
                "subnet = \"10.103.100.7/24\"",
            ),
            "10.103.100.7/24",
        ),
        (good.replace("vni = 42", "vni = 16777216"), "16777216"),
        (
            good.replace("bridge = \"docker0\"", "bridge = \"nobridge\""),
            "nobridge",
        ),
    ];
    for (i, (config, needle)) in cases.iter().enumerate() {
        let path = lab.dir().join(format!("bad-{i}.toml"));
        std::fs::write(&path, config).unwrap();
        let socket = lab.dir().join(format!("bad-{i}.sock"));
        let out =
            overlay_lab::nsenter_command(&lab.host(1).ns, &bins.overlayd.display().to_string())
                .arg("--config")
                .arg(&path)
                .arg("--socket")
                .arg(&socket)
                .output()
                .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "case {i} accepted");
        assert!(
            text.contains(needle),
            "case {i}: error does not name {needle}:\n{text}"
        );
        assert!(!socket.exists(), "case {i}: socket left behind");
        let pins = lab.bpffs_dir().join("h1");
        let leftover = std::fs::read_dir(pins.join("links"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(leftover, 0, "case {i}: links pinned");
    }
}
