//! Tests of the report: tables, ratios, latency columns, sections.
use super::*;
use std::collections::BTreeMap;

fn opts(nic_like: bool) -> Opts {
    Opts {
        quick: true,
        rounds: None,
        seconds: None,
        modes: None,
        json: None,
        no_docs: true,
        no_progbench: true,
        nic_like,
        bins: "/nonexistent".into(),
        command: "cargo xtask bench --quick".into(),
    }
}

/// host: 20 Gbit/s, 10 µs p50; plain: 16, 12.5 µs; ebpf: 18, 11 µs
/// (two rounds each, medians as given).
fn report(nic: Option<NicStates>) -> Report {
    let mut samples: Samples = BTreeMap::new();
    for (mode, tcp1, p50, p99) in [
        (Mode::Host, [19.0, 21.0], [10.0, 10.0], [30.0, 40.0]),
        (Mode::Plain, [16.0, 16.0], [12.0, 13.0], [50.0, 50.0]),
        (Mode::Ebpf, [17.0, 19.0], [11.0, 11.0], [35.0, 35.0]),
    ] {
        let e = samples.entry(mode).or_default();
        e.insert(Metric::Tcp1, tcp1.to_vec());
        e.insert(Metric::RrP50, p50.to_vec());
        e.insert(Metric::RrP99, p99.to_vec());
        e.insert(Metric::UnderlayFrame, vec![1514.0]);
    }
    Report {
        opts: opts(nic.is_some()),
        rounds: 2,
        secs: 1,
        samples,
        nic,
        peer_add: None,
        progbench: None,
        elapsed: Duration::from_secs(61),
    }
}

/// The row of `mode` in the table that follows the line starting with `title`.
fn row(md: &str, title: &str, mode: &str) -> Vec<String> {
    let at = md
        .find(title)
        .unwrap_or_else(|| panic!("no {title:?} in\n{md}"));
    md[at..]
        .lines()
        .find(|l| l.starts_with(&format!("| {mode} |")))
        .unwrap_or_else(|| panic!("no row {mode} after {title:?}"))
        .split('|')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

#[test]
fn ratios_to_host_and_plain_with_latency() {
    let r = report(None);
    let md = r.markdown();
    assert!(md.starts_with("## Dataplane comparison\n"), "{md}");
    // Main table: TCP 1, TCP 4, TCP_RR, p50, p99, UDP, CPU, frame.
    assert_eq!(
        row(&md, "| mode |", "ebpf"),
        ["ebpf", "18.00", "-", "-", "11.0", "35.0", "-", "-", "1514"]
    );
    // Ratio tables: TCP 1, TCP 4, TCP_RR, p50, p99, UDP, CPU.
    let host = "Ratio to host to host over the underlay, no containers (the limit)";
    assert_eq!(
        row(&md, host, "ebpf"),
        ["ebpf", "0.90", "-", "-", "1.10", "1.00", "-", "-"]
    );
    assert_eq!(
        row(&md, host, "plain"),
        ["plain", "0.80", "-", "-", "1.25", "1.43", "-", "-"]
    );
    let plain = "Ratio to plain routing between the containers";
    assert_eq!(
        row(&md, plain, "ebpf"),
        ["ebpf", "1.12", "-", "-", "0.88", "0.70", "-", "-"]
    );
    assert_eq!(
        row(&md, plain, "host"),
        ["host", "1.25", "-", "-", "0.80", "0.70", "-", "-"]
    );
    // No kernel or docker-overlay table without those modes.
    assert!(!md.contains("Ratio to overlay, kernel VXLAN"), "{md}");
    assert!(!md.contains("Ratio to Docker's own overlay"), "{md}");
    assert!(md.contains("![ratios to host](benchmarks.svg)"), "{md}");
    assert!(!md.contains("NIC-like"), "{md}");

    let j = r.json();
    let e = &j["modes"]["ebpf"]["tcp_1_stream_gbps"];
    assert_eq!(e["median"], 18.0);
    assert!((e["ratio_to_host"].as_f64().unwrap() - 0.9).abs() < 1e-9);
    assert!((e["ratio_to_plain"].as_f64().unwrap() - 1.125).abs() < 1e-9);
    assert!(e["ratio_to_kernel"].is_null());
    assert!(e["ratio_to_docker_overlay"].is_null());
    assert_eq!(j["modes"]["plain"]["tcp_rr_p50_us"]["median"], 12.5);
    // The frame size is no ratio.
    assert!(j["modes"]["ebpf"]["underlay_rx_bytes_per_frame"]
        .get("ratio_to_host")
        .is_none());
    assert!(j["nic_like"].is_null());
    assert!(r.svg().contains("1.0 = host"));
}

#[test]
fn nic_like_heading_says_what_was_set() {
    let all_off: Vec<(String, bool)> = NIC_LIKE_FEATURES
        .iter()
        .map(|(f, _)| (f.to_string(), true))
        .collect();
    let mut gso_on = all_off.clone();
    gso_on[1].1 = false;
    let mut nic = NicStates::new();
    nic.insert(Mode::Host, vec![all_off.clone(), all_off.clone()]);
    nic.insert(Mode::Ebpf, vec![all_off.clone(), gso_on]);
    let r = report(Some(nic));
    let md = r.markdown();
    assert!(
        md.starts_with("## Dataplane comparison, NIC-like underlay (segmentation offloads off)\n"),
        "{md}"
    );
    assert!(md.contains("`ethtool -K eth1 tso off gso off tx-udp_tnl-segmentation off`"));
    assert!(
        md.contains("off on every host in every mode: `tso`, `tx-udp_tnl-segmentation`."),
        "{md}"
    );
    assert!(
        md.contains("Could not be turned off: `gso` still on in ebpf host 2."),
        "{md}"
    );
    assert_eq!(r.svg_name(), "benchmarks-nic-like.svg");
    assert!(md.contains("](benchmarks-nic-like.svg)"));
    assert_eq!(r.json()["nic_like"]["ebpf"][1]["gso"], false);
    assert_eq!(r.json()["nic_like"]["host"][0]["tso"], true);
}
