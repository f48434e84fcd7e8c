//! Observation on a lab: `overlayctl monitor` (a flood of hostile VXLAN,
//! filters and exact fields, sampled traces), the Prometheus endpoint and
//! the per-peer view moving with traffic.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use overlay_lab::{exec_ok, need_root_or_skip, ping, run_in_netns, AgentOptions, LabSpec, Proc};
use overlay_tests::{cluster, Cluster};
use serde_json::Value;

fn forge() -> String {
    format!("{}/tools/forge.py", env!("CARGO_MANIFEST_DIR"))
}

/// `overlayctl --json monitor ARGS` on host `h`, once it listens.
fn monitor(c: &Cluster, h: usize, args: &[&str], name: &str) -> Proc {
    monitor_as(c, h, "--json", args, name)
}

/// `overlayctl FORMAT monitor ARGS` (FORMAT: `--json`, or `-q` for lines).
fn monitor_as(c: &Cluster, h: usize, format: &str, args: &[&str], name: &str) -> Proc {
    let a = c.agent(h);
    let bins = overlay_lab::Binaries::locate().unwrap();
    let socket = a.socket.display().to_string();
    let ctl = bins.overlayctl.display().to_string();
    let mut argv = vec![ctl.as_str(), "--socket", &socket];
    if format == "--json" {
        argv.push(format);
    }
    argv.push("monitor");
    argv.extend_from_slice(args);
    let p = c.lab.spawn(&a.ns, &argv, name).unwrap();
    p.wait_for_log("Listening for events", Duration::from_secs(10))
        .unwrap();
    p
}

/// The JSON lines a monitor printed so far.
fn lines(p: &Proc) -> Vec<Value> {
    p.log()
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn total_drops(c: &Cluster, h: usize) -> u64 {
    let s = c.agent(h).status().unwrap();
    s["stats"]["drops"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum()
}

/// Waits until `f` gives the same value twice `every` apart.
fn settle(every: Duration, mut f: impl FnMut() -> u64) -> u64 {
    let mut last = f();
    loop {
        std::thread::sleep(every);
        let now = f();
        if now == last {
            return now;
        }
        last = now;
    }
}

fn three_hosts() -> Cluster {
    cluster(
        LabSpec {
            hosts: 3,
            containers_per_host: 1,
            ..Default::default()
        },
        "ebpf",
        AgentOptions {
            extra: "metrics_address = \"127.0.0.1:9642\"\n".into(),
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn monitor_keeps_up_with_a_flood_and_accounts_for_every_drop() {
    if !need_root_or_skip() {
        return;
    }
    let c = three_hosts();
    let h1 = c.lab.host(1).underlay_ip.to_string();
    let h2 = c.lab.host(2).underlay_ip.to_string();
    let before = total_drops(&c, 1);
    let mut mon = monitor(&c, 1, &[], "monitor-flood.log");
    let t = Instant::now();
    let sent: u64 = exec_ok(
        &c.lab.host(2).ns,
        &[
            "python3",
            &forge(),
            "flood",
            &h1,
            "4789",
            "99",
            "10.103.200.2",
            "10.103.100.2",
            "53",
            "1000000",
        ],
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    let flood = t.elapsed();
    let after = settle(Duration::from_millis(500), || total_drops(&c, 1));
    // The monitor reports what it lost once a second: wait for the last report.
    let got = settle(Duration::from_millis(2500), || lines(&mon).len() as u64);
    mon.stop().unwrap();
    let out = lines(&mon);
    let events: Vec<&Value> = out.iter().filter(|v| v["type"] == "drop").collect();
    let lost = |k: &str| -> u64 {
        out.iter()
            .filter(|v| v["type"] == "lost")
            .map(|v| v[k].as_u64().unwrap())
            .sum()
    };
    let (suppressed, ring_full, lagged) = (lost("suppressed"), lost("ring_full"), lost("lagged"));
    let dropped = after - before;
    eprintln!(
        "flood: {sent} sent in {flood:?}, {dropped} dropped; monitor: {} events, {suppressed} suppressed by the rate limit, {ring_full} ring full, {lagged} lagged ({got} lines)",
        events.len()
    );
    assert!(dropped >= sent * 9 / 10, "{dropped} of {sent} dropped");
    assert!(suppressed > 0, "a flood must hit the rate limit");
    assert_eq!(
        events.len() as u64 + suppressed + ring_full + lagged,
        dropped,
        "every drop is an event or counted as lost"
    );
    assert_eq!((ring_full, lagged), (0, 0), "the agent kept up");
    let ev = events[0];
    assert_eq!(ev["reason"], "unknown_vni");
    assert_eq!(ev["vni"], 99);
    assert_eq!(ev["outer_src"], h2.as_str());
    assert_eq!(ev["outer_dst"], h1.as_str());
    assert_eq!(ev["src"], "10.103.200.2");
    assert_eq!(ev["dst"], "10.103.100.2");
    assert_eq!(
        (ev["sport"].as_u64(), ev["dport"].as_u64()),
        (Some(40000), Some(53))
    );
    // Traffic goes on.
    let (a, b) = (c.lab.container(1, 1), c.lab.container(2, 1));
    assert_eq!(ping(&a.ns, b.ip, 3, None, false, 2).unwrap().received, 3);
}

#[test]
fn monitor_filters_by_reason_ip_and_peer_with_exact_fields() {
    if !need_root_or_skip() {
        return;
    }
    let c = three_hosts();
    let (h1, h2, h3) = (c.lab.host(1), c.lab.host(2), c.lab.host(3));
    // Host 3 stops being a peer of host 1: its VXLAN is now from a stranger.
    c.agent(1).ctl_ok(&["peer", "del", &h3.subnet]).unwrap();
    let by_reason = monitor(
        &c,
        1,
        &["--type", "drop", "--reason", "unknown_peer"],
        "mon-reason.log",
    );
    let by_ip = monitor(&c, 1, &["--ip", "10.103.100.77"], "mon-ip.log");
    let human = monitor_as(&c, 1, "", &[], "mon-human.log");
    let to = h1.underlay_ip.to_string();
    let send = |ns: &str, vni: &str, src: &str, dst: &str| {
        exec_ok(
            ns,
            &[
                "python3",
                &forge(),
                "vxlan",
                &to,
                "4789",
                vni,
                src,
                dst,
                "7000",
            ],
        )
        .unwrap();
    };
    send(&h2.ns, "99", "10.103.200.2", "10.103.100.77"); // unknown_vni
    send(&h3.ns, "42", "10.103.250.2", "10.103.100.2"); // unknown_peer
    let wait = |p: &Proc, n: usize| {
        let start = Instant::now();
        while lines(p).len() < n && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        lines(p)
    };
    let got = wait(&by_reason, 1);
    assert_eq!(got.len(), 1, "only the unknown_peer drop: {got:?}");
    let ev = got[0].as_object().unwrap();
    let mut fields: Vec<(String, Value)> = ev.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    fields.retain(|(k, _)| k != "time_ns" && k != "ifindex");
    assert_eq!(
        Value::Object(fields.into_iter().collect()),
        serde_json::json!({
            "type": "drop",
            "reason": "unknown_peer",
            "hook": "from-underlay",
            "ifname": h1.underlay_if,
            "len": 98,
            "vni": 42,
            "outer_src": h3.underlay_ip.to_string(),
            "outer_dst": h1.underlay_ip.to_string(),
            "src": "10.103.250.2",
            "dst": "10.103.100.2",
            "proto": 17,
            "sport": 40000,
            "dport": 7000,
        })
    );
    let got = wait(&by_ip, 1);
    assert_eq!(got.len(), 1, "only the drop to 10.103.100.77: {got:?}");
    assert_eq!(got[0]["reason"], "unknown_vni");
    assert_eq!(got[0]["dst"], "10.103.100.77");
    let text = human.log();
    assert_eq!(
        text.lines().filter(|l| l.contains(" drop (")).count(),
        2,
        "{text}"
    );
    eprintln!("overlayctl monitor:\n{text}\noverlayctl --json monitor --type drop --reason unknown_peer:\n{}", by_reason.log());
    drop((by_reason, by_ip, human));

    // Sampled traces, by peer: host 1's pings to host 2's container, not host 3's.
    let trace = monitor(
        &c,
        1,
        &["--type", "trace", "--peer", &h2.underlay_ip.to_string()],
        "mon-trace.log",
    );
    c.agent(1)
        .ctl_ok(&["peer", "add", &h3.subnet, &h3.underlay_ip.to_string()])
        .unwrap();
    let a = c.lab.container(1, 1);
    assert_eq!(
        ping(&a.ns, c.lab.container(2, 1).ip, 3, None, false, 2)
            .unwrap()
            .received,
        3
    );
    assert_eq!(
        ping(&a.ns, c.lab.container(3, 1).ip, 3, None, false, 2)
            .unwrap()
            .received,
        3
    );
    let got = wait(&trace, 6);
    eprintln!(
        "overlayctl --json monitor --type trace --peer ...:\n{}",
        trace.log()
    );
    let kinds: Vec<&str> = got.iter().map(|v| v["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "encap").count(),
        3,
        "{got:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "decap").count(),
        3,
        "{got:?}"
    );
    let (ip1, ip2) = (a.ip.to_string(), c.lab.container(2, 1).ip.to_string());
    for ev in &got {
        assert_eq!(ev["peer"], h2.underlay_ip.to_string(), "{ev}");
        assert_eq!(ev["proto"], 1, "{ev}");
        assert_eq!(ev["vni"], 42, "{ev}");
        let (src, dst) = if ev["type"] == "encap" {
            (&ip1, &ip2)
        } else {
            (&ip2, &ip1)
        };
        assert_eq!(
            (ev["src"].as_str(), ev["dst"].as_str()),
            (Some(src.as_str()), Some(dst.as_str())),
            "{ev}"
        );
    }
}

/// `GET /metrics` on host `h`'s 127.0.0.1:9642, from inside its namespace.
fn scrape(c: &Cluster, h: usize) -> String {
    run_in_netns(&c.lab.host(h).ns, || {
        let mut s = TcpStream::connect("127.0.0.1:9642").unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .unwrap()
}

/// The value of the sample `name{labels}` (exactly as written), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

#[test]
fn metrics_and_peer_list_move_with_traffic() {
    if !need_root_or_skip() {
        return;
    }
    let c = three_hosts();
    let h2 = c.lab.host(2).underlay_ip;
    let before = scrape(&c, 1);
    assert!(before.starts_with("HTTP/1.1 200 OK\r\n"), "{before}");
    assert!(
        before.contains("Content-Type: text/plain; version=0.0.4"),
        "{before}"
    );
    let (a, b) = (c.lab.container(1, 1), c.lab.container(2, 1));
    assert_eq!(
        ping(&a.ns, b.ip, 5, Some(1000), false, 2).unwrap().received,
        5
    );
    overlay_lab::transfer(&a.ns, &b.ns, b.ip, 1 << 20).unwrap();
    // A bad packet: a VNI host 1 does not carry, from a peer.
    exec_ok(
        &c.lab.host(2).ns,
        &[
            "python3",
            &forge(),
            "vxlan",
            &c.lab.host(1).underlay_ip.to_string(),
            "4789",
            "99",
            "10.103.200.2",
            "10.103.100.2",
            "53",
        ],
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let after = scrape(&c, 1);
    eprintln!("{after}");
    let peer = format!("{{peer=\"{h2}\"}}");
    for series in [
        "overlay_encap_packets_total".to_string(),
        "overlay_encap_bytes_total".into(),
        "overlay_decap_packets_total".into(),
        "overlay_decap_bytes_total".into(),
        format!("overlay_peer_tx_packets_total{peer}"),
        format!("overlay_peer_tx_bytes_total{peer}"),
        format!("overlay_peer_rx_packets_total{peer}"),
        format!("overlay_peer_rx_bytes_total{peer}"),
        "overlay_drops_total{reason=\"unknown_vni\"}".into(),
    ] {
        let (x, y) = (sample(&before, &series), sample(&after, &series));
        assert!(y > x, "{series}: {x} -> {y}\n{after}");
    }
    assert!(sample(&after, &format!("overlay_peer_tx_bytes_total{peer}")) > f64::from(1 << 20));
    assert_eq!(
        sample(&after, "overlay_drops_total{reason=\"unknown_vni\"}")
            - sample(&before, "overlay_drops_total{reason=\"unknown_vni\"}"),
        1.0
    );
    assert_eq!(
        sample(&after, "overlay_peers{source=\"api\"}"),
        2.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, "overlay_table_entries{table=\"OVL_PEERS\"}"),
        2.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, "overlay_table_capacity{table=\"OVL_PEERS\"}"),
        16384.0,
        "{after}"
    );
    assert!(
        sample(
            &after,
            "overlay_reconcile_duration_seconds_count{kind=\"change\"}"
        ) >= 2.0,
        "{after}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last = sample(
        &after,
        &format!("overlay_peer_last_rx_timestamp_seconds{peer}"),
    );
    assert!((now - last).abs() < 30.0, "last rx {last}, now {now}");

    // The per-peer view: host 2's traffic, host 3's none.
    let list: Value =
        serde_json::from_str(&c.agent(1).ctl_ok(&["--json", "peer", "list"]).unwrap()).unwrap();
    let of = |ip: Ipv4Addr| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["underlay_ip"] == ip.to_string())
            .unwrap()["traffic"]
            .clone()
    };
    let t2 = of(h2);
    assert!(t2["tx_packets"].as_u64().unwrap() >= 5, "{t2}");
    assert!(t2["rx_packets"].as_u64().unwrap() >= 5, "{t2}");
    assert!(t2["tx_bytes"].as_u64().unwrap() > 1 << 20, "{t2}");
    let last_ms = t2["last_rx_unix_ms"].as_u64().unwrap() as f64 / 1000.0;
    assert!((now - last_ms).abs() < 30.0, "{t2}");
    let t3 = of(c.lab.host(3).underlay_ip);
    assert_eq!(
        t3,
        serde_json::json!({"tx_packets": 0, "tx_bytes": 0, "rx_packets": 0, "rx_bytes": 0})
    );
    let table = c.agent(1).ctl_ok(&["peer", "list"]).unwrap();
    eprintln!("{table}");
    assert!(table.lines().next().unwrap().contains("TX PKTS"), "{table}");
    assert!(table.contains("never"), "host 3 sent nothing: {table}");
}
