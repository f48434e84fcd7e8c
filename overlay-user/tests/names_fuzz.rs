//! Fuzzing the names resolver over the wire: thousands of random and
//! mutated packets (seeded, reproducible: `OVERLAY_FUZZ_SEED`, default 1;
//! `OVERLAY_DNS_FUZZ_PACKETS`, default 6,000) thrown at the running server
//! over UDP on the loopback, and a few hostile TCP streams. After every
//! hundred the server must still answer a good question right, and at the
//! end too, over UDP and TCP. Malformed questions with a readable header
//! must get FORMERR; no packet may crash it. No root needed.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use overlay_user::model::overlay_network::{EndpointRecord, NetworkSpec, NetworkView};
use overlay_user::sources::names::server::{NamesServer, Settings};

#[path = "common/dns.rs"]
mod dns;
use dns::{ask, ask_on, ask_tcp, question, FakeUpstream};

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// The loopback is the "network" here, so that the fuzzer is an asker
/// inside it: `b` (alias `svc`) is 127.0.0.9.
fn view() -> NetworkView {
    NetworkView {
        networks: vec![NetworkSpec {
            name: "lo".into(),
            vni: 4096,
            subnet: "127.0.0.0/8".parse().unwrap(),
            gateway: Ipv4Addr::new(127, 0, 0, 1),
        }],
        endpoints: vec![EndpointRecord {
            network: "lo".into(),
            ip: Ipv4Addr::new(127, 0, 0, 9),
            mac: [2, 0, 0, 0, 0, 9],
            host: "h1".into(),
            underlay_ip: Ipv4Addr::new(192, 168, 56, 4),
            container: "id-b".into(),
            name: "b".into(),
            aliases: vec!["svc".into()],
        }],
    }
}

/// Good questions to mutate: ours, forwarded ones, odd types.
fn seeds() -> Vec<Vec<u8>> {
    [
        ("b", RecordType::A),
        ("svc.lo", RecordType::AAAA),
        ("outside.lab", RecordType::A),
        ("9.0.0.127.in-addr.arpa", RecordType::PTR),
        ("nobody", RecordType::MX),
        (
            "a.very.long.name.under.some.domain.example",
            RecordType::TXT,
        ),
    ]
    .iter()
    .map(|(n, t)| question(n, *t).to_vec().unwrap())
    .collect()
}

/// One hostile packet.
fn packet(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut p = seeds[rng.below(seeds.len())].clone();
    match rng.below(8) {
        // Random bytes of any length (also shorter than a header).
        0 => (0..rng.below(600)).map(|_| rng.byte()).collect(),
        // A few bytes flipped.
        1 | 2 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(p.len());
                p[i] = rng.byte();
            }
            p
        }
        // Cut anywhere.
        3 => {
            p.truncate(rng.below(p.len()));
            p
        }
        // Junk appended.
        4 => {
            p.extend((0..rng.below(100)).map(|_| rng.byte()));
            p
        }
        // Header counts changed (more or fewer records than there are).
        5 => {
            let i = 4 + 2 * rng.below(4);
            p[i] = rng.byte();
            p[i + 1] = rng.byte();
            p
        }
        // Flags and opcode changed (responses, updates, QR set...).
        6 => {
            p[2] = rng.byte();
            p[3] = rng.byte();
            p
        }
        // Compression pointer loops in the question name.
        _ => {
            p.truncate(12);
            p[5] = 1;
            p.extend([0xc0, 12, 0, 1, 0, 1]);
            p
        }
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_packets_never_stop_the_resolver() {
    let seed = env_or("OVERLAY_FUZZ_SEED", 1);
    let count = env_or("OVERLAY_DNS_FUZZ_PACKETS", 6_000);
    let upstream = FakeUpstream::serve(
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        vec![("outside.lab".into(), Ipv4Addr::new(192, 0, 2, 7))],
    );
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(view()));
    let settings = Settings {
        upstream: vec![upstream.addr],
        ttl: 2,
        upstream_timeout: Duration::from_millis(500),
    };
    let server = NamesServer::bind("127.0.0.1:0".parse().unwrap(), settings, rx)
        .await
        .unwrap();
    let addr: SocketAddr = server.local_addr().unwrap();
    let task = server.spawn();

    let report = tokio::task::spawn_blocking(move || {
        let mut rng = Rng(seed.max(1));
        let seeds = seeds();
        let fuzz = UdpSocket::bind("127.0.0.1:0").unwrap();
        fuzz.set_nonblocking(true).unwrap();
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut codes = std::collections::BTreeMap::<String, u64>::new();
        let mut answered = 0u64;
        let mut buf = vec![0u8; 65_535];
        let mut drain = |codes: &mut std::collections::BTreeMap<String, u64>| {
            while let Ok(n) = fuzz.recv(&mut buf) {
                answered += 1;
                let code = Message::from_vec(&buf[..n])
                    .map(|m| format!("{:?}", m.metadata.response_code))
                    .unwrap_or_else(|_| "unparsable".into());
                *codes.entry(code).or_default() += 1;
            }
        };
        let started = Instant::now();
        for i in 0..count {
            let p = packet(&mut rng, &seeds);
            fuzz.send_to(&p, addr).unwrap();
            if i % 100 == 99 {
                drain(&mut codes);
                let a = ask_on(&probe, addr, "b", RecordType::A, Duration::from_secs(3))
                    .unwrap_or_else(|e| panic!("seed {seed}, after packet {i}: {e}"));
                assert_eq!(
                    (a.code, a.addresses.clone()),
                    (ResponseCode::NoError, vec![Ipv4Addr::new(127, 0, 0, 9)]),
                    "seed {seed}, after packet {i}"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(600));
        drain(&mut codes);
        (codes, answered, started.elapsed())
    })
    .await
    .unwrap();
    let (codes, answered, took) = report;
    eprintln!(
        "seed {seed}: {count} packets in {took:?}, {answered} answered: {codes:?}, upstream asked {}",
        upstream.asked()
    );

    // Hostile TCP: a length prefix bigger than what follows, then close;
    // garbage; a connection that says nothing.
    for bytes in [
        vec![0xff, 0xff, 1, 2, 3],
        vec![0, 3, 1, 2, 3],
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![],
    ] {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut s, &bytes).unwrap();
        drop(s);
    }

    assert!(!task.is_finished(), "the resolver task ended");
    let a = tokio::task::spawn_blocking(move || {
        (
            ask(addr, "svc.lo", RecordType::A),
            ask_tcp(addr, "b", RecordType::A),
            ask(addr, "outside.lab", RecordType::A),
        )
    })
    .await
    .unwrap();
    assert_eq!(a.0.unwrap().addresses, [Ipv4Addr::new(127, 0, 0, 9)]);
    assert_eq!(a.1.unwrap().addresses, [Ipv4Addr::new(127, 0, 0, 9)]);
    assert_eq!(a.2.unwrap().addresses, [Ipv4Addr::new(192, 0, 2, 7)]);
    // Malformed questions with a header were answered FORMERR; good ones
    // (intact seeds) NOERROR or NXDOMAIN.
    assert!(codes.get("FormErr").copied().unwrap_or(0) > 0, "{codes:?}");
    assert!(codes.get("NoError").copied().unwrap_or(0) > 0, "{codes:?}");
    assert!(answered > count / 4, "{answered} of {count} answered");
    task.abort();
}
