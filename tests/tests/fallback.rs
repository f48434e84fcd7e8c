//! Issue 3's forced fallback: overlayd with `dataplane = "auto"` on a host
//! where BPF cannot be loaded runs the kernel path, says why in its log and
//! in `overlayctl status`, leaves no BPF pin behind, and traffic flows to a
//! host on which `auto` did load BPF.

use std::path::Path;

use overlay_lab::{
    agent_config, exec_ok, need_root_or_skip, ping, transfer, AgentOptions, Binaries, Lab, LabSpec,
    Overlayd,
};

/// How BPF is made to fail on host 1.
#[derive(Clone, Copy, Debug)]
enum Breakage {
    /// `pin_dir` is an ordinary directory, not on a BPF filesystem.
    NoBpffs,
    /// overlayd runs without CAP_BPF, CAP_SYS_ADMIN and CAP_PERFMON.
    NoCapabilities,
}

fn falls_back(breakage: Breakage, expected_reason: &str) {
    if !need_root_or_skip() {
        return;
    }
    let lab = Lab::new(LabSpec::default()).unwrap();
    let bins = Binaries::locate().unwrap();
    let auto = AgentOptions {
        dataplane: Some("auto".into()),
        ..AgentOptions::default()
    };
    let pin_dir = match breakage {
        Breakage::NoBpffs => lab.dir().join("not-bpffs"),
        Breakage::NoCapabilities => lab.bpffs_dir().join("h1"),
    };
    let a = match breakage {
        Breakage::NoBpffs => {
            let config = lab.dir().join("h1-nobpffs.toml");
            let default_pins = format!("pin_dir = \"{}\"", lab.bpffs_dir().join("h1").display());
            let text = agent_config(&lab, 1, &auto);
            assert!(text.contains(&default_pins), "{text}");
            std::fs::write(
                &config,
                text.replace(
                    &default_pins,
                    &format!("pin_dir = \"{}\"", pin_dir.display()),
                ),
            )
            .unwrap();
            Overlayd::start_with(&lab, 1, &bins, &config, &lab.dir().join("h1.sock"), &[]).unwrap()
        }
        Breakage::NoCapabilities => {
            let opts = AgentOptions {
                wrapper: [
                    "capsh",
                    "--drop=cap_bpf,cap_sys_admin,cap_perfmon",
                    "--shell=OVERLAYD",
                    "--",
                ]
                .map(String::from)
                .to_vec(),
                ..auto.clone()
            };
            Overlayd::start(&lab, 1, &bins, &opts).unwrap()
        }
    };
    let b = Overlayd::start(&lab, 2, &bins, &auto).unwrap();

    let st = a.status().unwrap();
    assert_eq!(st["mode"], "kernel", "{st}");
    let reason = st["mode_reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("auto: eBPF unavailable: ") && reason.contains(expected_reason),
        "{breakage:?}: mode_reason {reason:?}"
    );
    let log = a.proc.log();
    let fallback_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("falling back to the kernel's VXLAN device"))
        .collect();
    assert_eq!(fallback_lines.len(), 1, "{log}");
    assert!(fallback_lines[0].contains(expected_reason), "{log}");
    let ctl = a.ctl_ok(&["status"]).unwrap();
    assert!(ctl.contains("mode reason  auto: eBPF unavailable"), "{ctl}");

    let st = b.status().unwrap();
    assert_eq!(st["mode"], "ebpf", "{st}");
    assert_eq!(
        st["mode_reason"], "auto: the eBPF programs loaded and attached",
        "{st}"
    );

    // The failed attempt left nothing: no pins, no program on the underlay.
    assert!(
        !Path::new(&pin_dir).exists(),
        "{} still exists",
        pin_dir.display()
    );
    let h1 = lab.host(1);
    let eth1 = exec_ok(
        &h1.ns,
        &["ip", "-j", "-d", "link", "show", "dev", &h1.underlay_if],
    )
    .unwrap();
    let eth1: serde_json::Value = serde_json::from_str(&eth1).unwrap();
    assert!(eth1[0]["xdp"].is_null(), "XDP on host 1: {eth1}");

    a.add_lab_peers(&lab).unwrap();
    b.add_lab_peers(&lab).unwrap();
    let (c1, c2) = (lab.container(1, 1), lab.container(2, 1));
    assert_eq!(ping(&c1.ns, c2.ip, 3, None, false, 3).unwrap().received, 3);
    assert_eq!(ping(&c2.ns, c1.ip, 3, None, false, 3).unwrap().received, 3);
    let t = transfer(&c1.ns, &c2.ns, c2.ip, 16 << 20).unwrap();
    assert_eq!(t.sent_sha256, t.received_sha256);
    let t = transfer(&c2.ns, &c1.ns, c1.ip, 16 << 20).unwrap();
    assert_eq!(t.sent_sha256, t.received_sha256);
}

#[test]
fn auto_falls_back_when_pin_dir_is_not_bpffs() {
    falls_back(Breakage::NoBpffs, "not on a BPF filesystem");
}

#[test]
fn auto_falls_back_without_bpf_capabilities() {
    falls_back(Breakage::NoCapabilities, "Operation not permitted");
}
