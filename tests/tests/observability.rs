//! Issue 14: overlayd's logs through `tracing` (`--log-format json`: one
//! object a line, with the change's source and the span it was applied
//! in) and the health summary of `overlayctl status` (programs attached,
//! store, Docker, drops of the last minute).

use overlay_lab::{need_root_or_skip, ping, AgentOptions, LabSpec};
use overlay_tests::cluster;
use serde_json::Value;

#[test]
fn json_logs_carry_the_change_its_source_and_span() {
    if !need_root_or_skip() {
        return;
    }
    let c = cluster(
        LabSpec {
            hosts: 2,
            containers_per_host: 1,
            ..Default::default()
        },
        "ebpf",
        AgentOptions {
            args: vec!["--log-format".into(), "json".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let agent = c.agent(1);
    agent
        .ctl_ok(&["peer", "add", "10.103.250.0/24", "192.168.56.99"])
        .unwrap();
    agent.ctl_ok(&["peer", "del", "10.103.250.0/24"]).unwrap();
    // The lab's log has overlayd's stdout too: its one "ready" line.
    let log = agent.proc.log();
    let mut lines = Vec::new();
    for line in log.lines() {
        if line.starts_with("overlayd ready: ") {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n{log}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        assert!(v["fields"]["message"].is_string(), "{line}");
        lines.push(v);
    }
    let find = |message: &str| -> &Value {
        lines
            .iter()
            .find(|v| v["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no line {message:?} in\n{log}"))
    };
    let added = find("peer 10.103.250.0/24 via 192.168.56.99 (api)");
    assert_eq!(added["level"], "INFO");
    assert_eq!(added["fields"]["source"], "api");
    assert_eq!(added["fields"]["peer"], "10.103.250.0/24");
    assert_eq!(added["fields"]["underlay_ip"], "192.168.56.99");
    assert_eq!(added["span"]["name"], "reconcile");
    assert_eq!(added["span"]["source"], "api");
    assert_eq!(added["span"]["change"], "add_peer");
    let deleted = find("peer 10.103.250.0/24 deleted (was api)");
    assert_eq!(deleted["span"]["change"], "del_peer");
    assert_eq!(deleted["fields"]["source"], "api");
    // The peers added at start through overlayctl, and `log::` records
    // (bridged) outside any span, are JSON lines too.
    let lab_peer = find("peer 10.103.200.0/24 via 192.168.56.5 (api)");
    assert_eq!(lab_peer["span"]["name"], "reconcile");
    assert!(
        lines.iter().any(|v| v["fields"]["message"]
            .as_str()
            .unwrap()
            .starts_with("overlayd ready: mode=ebpf")
            && v["span"].is_null()),
        "{log}"
    );
}

#[test]
fn status_health_summary() {
    if !need_root_or_skip() {
        return;
    }
    let c = cluster(
        LabSpec {
            hosts: 2,
            containers_per_host: 1,
            ..Default::default()
        },
        "ebpf",
        AgentOptions::default(),
    )
    .unwrap();
    let (a, b) = (c.lab.container(1, 1), c.lab.container(2, 1));
    assert!(ping(&a.ns, b.ip, 2, None, false, 3).unwrap().all_received());
    let s = c.agent(1).status().unwrap();
    let h = &s["health"];
    assert_eq!(h["drops_recent"], 0, "{s}");
    assert!(h["docker"].is_null(), "{s}");
    let programs = h["programs"].as_array().unwrap();
    assert_eq!(programs.len(), 2, "{s}");
    assert!(programs.iter().all(|p| p["attached"] == true), "{s}");

    // Host 1 forgets host 2: host 2's packets are dropped (unknown peer).
    c.agent(1)
        .ctl_ok(&["peer", "del", &c.lab.host(2).subnet])
        .unwrap();
    assert_eq!(ping(&b.ns, a.ip, 5, None, false, 2).unwrap().received, 0);
    let s = c.agent(1).status().unwrap();
    let h = &s["health"];
    let recent = h["drops_recent"].as_u64().unwrap();
    assert!(recent >= 5, "{s}");
    assert_eq!(
        h["drops_recent_by_reason"]["unknown_peer"].as_u64(),
        Some(recent),
        "{s}"
    );
    let window = h["drops_window_secs"].as_u64().unwrap();
    assert!(window <= 60, "{s}");
    let text = c.agent(1).ctl_ok(&["status"]).unwrap();
    assert!(
        text.starts_with(&format!(
            "HEALTH     STATE\n\
             dataplane  ebpf, 2 programs attached where expected\n\
             store      not used (no [cluster])\n\
             docker     not followed (no [docker])\n\
             drops      {recent} in the last {window} s (unknown_peer {recent})\n"
        )),
        "{text}"
    );

    // A program detached behind overlayd's back shows at once.
    let pin = c.lab.bpffs_dir().join("h1/v2/links/underlay-tc");
    // From this namespace: `ip netns exec` remounts /sys, hiding the pins.
    let out = std::process::Command::new("bpftool")
        .args(["link", "detach", "pinned", &pin.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = c.agent(1).ctl_ok(&["status"]).unwrap();
    assert!(
        text.contains(
            "dataplane  ebpf, NOT attached: ovl_from_underlay on eth1 (overlayctl doctor says more)\n"
        ),
        "{text}"
    );
}
