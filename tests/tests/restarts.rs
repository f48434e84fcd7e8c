//! Restarts lose nothing and drop nothing (issue 10): overlayd is killed
//! with SIGKILL three times while a 256 MiB TCP transfer and a UDP stream of
//! 10,000 packets/s cross the overlay. The pinned programs and maps keep
//! forwarding while it is gone; each restart takes them over in place.

use std::thread;
use std::time::Duration;

use overlay_lab::{exec_ok, need_root_or_skip, transfer_with_timeout, Binaries, LabSpec, Overlayd};
use overlay_tests::{cluster, peer_traffic};

const BYTES: u64 = 256 << 20;

/// UDP datagrams the sockets of namespace `ns` sent, received, and had
/// to drop because the receive buffer was full (`/proc/net/snmp`).
fn udp_counters(ns: &str) -> (u64, u64, u64) {
    let snmp = exec_ok(ns, &["cat", "/proc/net/snmp"]).unwrap();
    let mut rows = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (rows.next().unwrap(), rows.next().unwrap());
    let field = |name: &str| -> u64 {
        let i = names.split_whitespace().position(|n| n == name).unwrap();
        values.split_whitespace().nth(i).unwrap().parse().unwrap()
    };
    (
        field("OutDatagrams"),
        field("InDatagrams"),
        field("RcvbufErrors"),
    )
}

fn lists(a: &Overlayd) -> (serde_json::Value, serde_json::Value) {
    let eps = a.ctl_ok(&["--json", "endpoint", "list"]).unwrap();
    (
        overlay_tests::peer_table(a),
        serde_json::from_str(&eps).unwrap(),
    )
}

#[test]
fn kill_9_three_times_during_traffic() {
    if !need_root_or_skip() {
        return;
    }
    let mut c = cluster(
        LabSpec {
            hosts: 2,
            containers_per_host: 2,
            ..Default::default()
        },
        "ebpf",
        Default::default(),
    )
    .unwrap();
    let bins = Binaries::locate().unwrap();
    let (c11, c12) = (c.lab.container(1, 1).clone(), c.lab.container(1, 2).clone());
    let (c21, c22) = (c.lab.container(2, 1).clone(), c.lab.container(2, 2).clone());
    // Pace the TCP transfer (about 13 s at 160 Mbit/s) so that it spans the
    // three restarts; the UDP stream has its own containers, unpaced.
    exec_ok(
        &c11.ns,
        &[
            "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "160mbit", "burst",
            "256kb", "latency", "200ms",
        ],
    )
    .unwrap();
    // Big socket buffers on both ends of the UDP stream, so that a busy
    // machine (the whole suite runs in parallel) does not overflow the
    // receiver's socket: a loss then can only be the overlay's.
    for ns in [&c12.ns, &c22.ns] {
        for key in ["net.core.rmem_max", "net.core.wmem_max"] {
            exec_ok(ns, &["sysctl", "-qw", &format!("{key}=16777216")]).unwrap();
        }
    }
    let _server = c
        .lab
        .spawn(
            &c22.ns,
            &["iperf3", "-s", "-1", "-p", "5300"],
            "iperf3-udp.log",
        )
        .unwrap();
    thread::sleep(Duration::from_millis(500));
    let (sender0, receiver0) = (udp_counters(&c12.ns), udp_counters(&c22.ns));
    let udp = {
        let (ns, ip) = (c12.ns.clone(), c22.ip.to_string());
        thread::spawn(move || {
            exec_ok(
                &ns,
                &[
                    "iperf3",
                    "-u",
                    "-c",
                    &ip,
                    "-p",
                    "5300",
                    "-b",
                    "8M",
                    "-l",
                    "100",
                    "-t",
                    "16",
                    "-w",
                    "8M",
                    "--json",
                    "--get-server-output",
                ],
            )
        })
    };
    let tcp = {
        let (from, to, ip) = (c11.ns.clone(), c21.ns.clone(), c21.ip);
        thread::spawn(move || transfer_with_timeout(&from, &to, ip, BYTES, Duration::from_secs(90)))
    };
    // Every endpoint is known once traffic flows.
    thread::sleep(Duration::from_secs(2));
    let before: Vec<_> = c.agents.iter().map(lists).collect();

    for round in 0..3 {
        let h = 1 + round % 2;
        let (config, socket) = {
            let a = &mut c.agents[h - 1];
            a.proc.kill().unwrap();
            (a.config.clone(), a.socket.clone())
        };
        thread::sleep(Duration::from_millis(300));
        let a = Overlayd::start_with(&c.lab, h, &bins, &config, &socket, &[]).unwrap();
        c.agents[h - 1] = a;
        assert_eq!(
            lists(c.agent(h)),
            before[h - 1],
            "round {round}: host {h}'s peers and endpoints after the restart"
        );
        thread::sleep(Duration::from_millis(1500));
    }

    let t = tcp.join().unwrap().expect("the transfer completes");
    assert!(t.is_intact(), "{t:?}");
    assert_eq!(t.sent_sha256, t.received_sha256);
    // The per-peer counters live in pinned slots each restart takes over:
    // host 1 counted every byte of the transfer to host 2, and host 2 every
    // byte from host 1, although both were restarted in the middle of it.
    let traffic = |h: usize, of: usize| peer_traffic(c.agent(h), c.lab.host(of).underlay_ip);
    let (sent, got) = (traffic(1, 2), traffic(2, 1));
    assert!(
        sent["tx_bytes"].as_u64().unwrap() > BYTES,
        "host 1 to 2: {sent}"
    );
    assert!(
        got["rx_bytes"].as_u64().unwrap() > BYTES,
        "host 2 from 1: {got}"
    );
    let out = udp.join().unwrap().expect("iperf3 UDP client");
    std::fs::write(c.lab.dir().join("iperf3-udp.json"), &out).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // The receiver's count, as iperf3 reports it back to the client.
    let recv = &v["end"]["sum_received"];
    let (packets, lost) = (
        recv["packets"].as_u64().unwrap_or(0),
        recv["lost_packets"].as_u64().unwrap_or(u64::MAX),
    );
    // What the sending socket sent and what reached the receiving one: a
    // datagram the receiving iperf3 was too starved of CPU to read in time
    // (the machine is shared) is dropped by its own full socket buffer
    // after the overlay delivered it, and counted apart.
    let (sender1, receiver1) = (udp_counters(&c12.ns), udp_counters(&c22.ns));
    let out_of_sender = sender1.0 - sender0.0;
    let (into_receiver, buffer_full) = (receiver1.1 - receiver0.1, receiver1.2 - receiver0.2);
    eprintln!(
        "UDP: {packets} packets, {lost} lost by iperf3 ({buffer_full} of them dropped by its \
         full receive buffer); {out_of_sender} sent, {} delivered to the receiving socket; TCP {:.2} Gbit/s",
        into_receiver + buffer_full,
        t.gbit_per_s()
    );
    assert!(packets > 100_000, "the stream ran at 10,000/s: {packets}");
    assert_eq!(
        into_receiver + buffer_full,
        out_of_sender,
        "UDP datagrams lost on the way across three kill -9 restarts"
    );
    assert_eq!(
        lost, buffer_full,
        "UDP datagrams lost across three kill -9 restarts (other than by the receiver's full buffer)"
    );
}
