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
    let pin = c.lab.bpffs_dir().join(format!(
        "h1/v{}/links/underlay-tc",
        overlay_common::MAPS_VERSION
    ));
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

/// docs/grafana-dashboard.json is a Grafana dashboard (unique panel ids,
/// every query on the Prometheus data source variable) whose queries use
/// only the metrics overlayd publishes (docs/operations.md, "Metrics").
#[test]
fn grafana_dashboard_uses_the_published_metrics() {
    const PUBLISHED: &[&str] = &[
        "overlay_encap_packets_total",
        "overlay_encap_bytes_total",
        "overlay_decap_packets_total",
        "overlay_decap_bytes_total",
        "overlay_dataplane_packets_total",
        "overlay_drops_total",
        "overlay_peer_tx_packets_total",
        "overlay_peer_tx_bytes_total",
        "overlay_peer_rx_packets_total",
        "overlay_peer_rx_bytes_total",
        "overlay_peer_last_rx_timestamp_seconds",
        "overlay_peers",
        "overlay_endpoints",
        "overlay_table_entries",
        "overlay_table_capacity",
        "overlay_dataplane_mode",
        "overlay_store_connected",
        "overlay_lease_remaining_seconds",
        "overlay_docker_connected",
        "overlay_reconcile_duration_seconds_bucket",
    ];
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana-dashboard.json"
    );
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(d["uid"], "overlay-agent");
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "instance"]);
    let panels = d["panels"].as_array().unwrap();
    let mut ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    let mut used = std::collections::BTreeSet::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{p}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{p}");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            assert!(expr.contains("instance=~\"$instance\""), "{expr}");
            for (i, _) in expr.match_indices("overlay_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                assert!(PUBLISHED.contains(&name.as_str()), "{name} in {expr}");
                used.insert(name);
            }
        }
    }
    // Encap/decap rates, drops by reason, per-peer traffic, map fill,
    // store/Docker state, lease time left and reconcile durations all have a panel.
    for needed in [
        "overlay_encap_packets_total",
        "overlay_decap_bytes_total",
        "overlay_drops_total",
        "overlay_peer_tx_bytes_total",
        "overlay_peer_rx_bytes_total",
        "overlay_table_entries",
        "overlay_store_connected",
        "overlay_docker_connected",
        "overlay_lease_remaining_seconds",
        "overlay_reconcile_duration_seconds_bucket",
    ] {
        assert!(used.contains(needed), "no panel uses {needed}");
    }
}
