//! A tiny DNS client and a fake upstream resolver for the names tests,
//! built on hickory-proto's messages (blocking std sockets, so they can be
//! made inside another network namespace with `run_in_netns`).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// An answer: the response code and the A addresses in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The response code.
    pub code: ResponseCode,
    /// The A records' addresses, in order.
    pub addresses: Vec<Ipv4Addr>,
    /// Every answer record's data, as text (A, PTR, ...).
    pub data: Vec<String>,
    /// Whether the resolver said it is authoritative.
    pub authoritative: bool,
}

/// A question for `name` (absolute or not) of type `qtype`, with recursion desired.
pub fn question(name: &str, qtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    let mut n = Name::from_ascii(name).expect("a valid name");
    n.set_fqdn(true);
    m.add_query(Query::query(n, qtype));
    m
}

fn answer_of(m: &Message) -> Answer {
    Answer {
        code: m.metadata.response_code,
        addresses: m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect(),
        data: m.answers.iter().map(|r| r.data.to_string()).collect(),
        authoritative: m.metadata.authoritative,
    }
}

/// Ask `server` over UDP from `socket`; waits up to `timeout` for the
/// response with the question's ID (others are skipped).
pub fn ask_on(
    socket: &UdpSocket,
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    timeout: Duration,
) -> Result<Answer, String> {
    let q = question(name, qtype);
    socket
        .send_to(&q.to_vec().unwrap(), server)
        .map_err(|e| format!("send to {server}: {e}"))?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65_535];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no answer from {server} for {name} within {timeout:?}"
            ));
        }
        socket.set_read_timeout(Some(left)).unwrap();
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if from != server {
            continue;
        }
        if let Ok(m) = Message::from_vec(&buf[..n]) {
            if m.metadata.id == q.metadata.id && m.metadata.message_type == MessageType::Response {
                return Ok(answer_of(&m));
            }
        }
    }
}

/// Ask `server` over UDP from a fresh socket.
pub fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Result<Answer, String> {
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let socket = UdpSocket::bind(local).map_err(|e| e.to_string())?;
    ask_on(&socket, server, name, qtype, Duration::from_secs(3))
}

/// Ask `server` over TCP.
pub fn ask_tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Result<Answer, String> {
    let q = question(name, qtype);
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(3))
        .map_err(|e| format!("TCP connect {server}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let bytes = q.to_vec().unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    s.write_all(&framed).map_err(|e| e.to_string())?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)
        .map_err(|e| format!("TCP read: {e}"))?;
    let mut buf = vec![0u8; u16::from_be_bytes(len).into()];
    s.read_exact(&mut buf)
        .map_err(|e| format!("TCP read: {e}"))?;
    let m = Message::from_vec(&buf).map_err(|e| e.to_string())?;
    if m.metadata.id != q.metadata.id {
        return Err("TCP answer with another ID".into());
    }
    Ok(answer_of(&m))
}

/// A fake upstream resolver on `socket` (a thread that runs until the
/// process ends or `stop` is set): every name in `names` gets its address,
/// anything else NXDOMAIN. It counts the questions it got.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub asked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FakeUpstream {
    pub fn serve(socket: UdpSocket, names: Vec<(String, Ipv4Addr)>) -> FakeUpstream {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let addr = socket.local_addr().unwrap();
        let asked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (asked.clone(), stop.clone());
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                if q.queries.len() != 1 {
                    continue;
                }
                a.fetch_add(1, Ordering::Relaxed);
                let mut m = Message::response(q.metadata.id, OpCode::Query);
                m.metadata.recursion_available = true;
                m.metadata.recursion_desired = q.metadata.recursion_desired;
                m.queries = q.queries.clone();
                let qname = q.queries[0].name().clone();
                let key = qname.to_ascii().trim_end_matches('.').to_ascii_lowercase();
                match names.iter().find(|(n, _)| *n == key) {
                    Some((_, ip)) if q.queries[0].query_type() == RecordType::A => {
                        m.add_answer(Record::from_rdata(qname, 30, RData::A(A(*ip))));
                    }
                    Some(_) => {}
                    None => m.metadata.response_code = ResponseCode::NXDomain,
                }
                let _ = socket.send_to(&m.to_vec().unwrap(), from);
            }
        });
        FakeUpstream { addr, asked, stop }
    }

    pub fn asked(&self) -> u64 {
        self.asked.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The answer to `name` of type `qtype`, asked from inside namespace `ns`
/// (so the question comes from that namespace's address).
pub fn ask_from(ns: &str, server: SocketAddr, name: &str, qtype: RecordType) -> Answer {
    let name2 = name.to_string();
    overlay_lab::run_in_netns(ns, move || ask(server, &name2, qtype))
        .unwrap()
        .unwrap_or_else(|e| panic!("{ns} asking {name}: {e}"))
}

/// The response code and A addresses for `name`, asked from `ns`.
pub fn a_from(ns: &str, server: SocketAddr, name: &str) -> (ResponseCode, Vec<Ipv4Addr>) {
    let r = ask_from(ns, server, name, RecordType::A);
    (r.code, r.addresses)
}

/// Asks for `name` from `ns` every 20 ms until the answer is `want`;
/// returns how long that took, and panics once `limit` has passed.
pub fn until_a(
    ns: &str,
    server: SocketAddr,
    name: &str,
    want: (ResponseCode, Vec<Ipv4Addr>),
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let got = a_from(ns, server, name);
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{name} from {ns}: still {got:?}, expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
