//! The name table, the answer rules and the replies, with a fake upstream
//! resolver on the loopback.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use tokio::net::UdpSocket;

use super::answer::{reply, Reply};
use super::table::{normalize, NameTable, Verdict};
use super::upstream::Upstream;
use crate::model::overlay_network::{EndpointRecord, NetworkSpec, NetworkView};

fn net(name: &str, subnet: &str) -> NetworkSpec {
    let subnet: ipnet::Ipv4Net = subnet.parse().unwrap();
    NetworkSpec {
        name: name.into(),
        vni: 4096,
        subnet,
        gateway: subnet.hosts().next().unwrap(),
    }
}

fn rec(network: &str, ip: &str, name: &str, aliases: &[&str]) -> EndpointRecord {
    EndpointRecord {
        network: network.into(),
        ip: ip.parse().unwrap(),
        mac: [2, 0, 0, 0, 0, 1],
        host: "h1".into(),
        underlay_ip: Ipv4Addr::new(192, 168, 56, 4),
        container: format!("id-{name}"),
        name: name.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
    }
}

/// web 10.103.240.0/24 with a, b (alias api) and two "shared"; db
/// 10.103.241.0/24 with c and its own b.
fn view() -> NetworkView {
    NetworkView {
        networks: vec![net("web", "10.103.240.0/24"), net("db", "10.103.241.0/24")],
        endpoints: vec![
            rec("web", "10.103.240.2", "a", &[]),
            rec("web", "10.103.240.3", "/B", &["api", "shared"]),
            rec("web", "10.103.240.4", "w4", &["shared"]),
            rec("db", "10.103.241.2", "c", &[]),
            rec("db", "10.103.241.3", "b", &[]),
            // Not answerable: unknown network, outside its subnet.
            rec("gone", "10.9.9.9", "ghost", &[]),
            rec("web", "10.103.241.9", "stray", &[]),
        ],
    }
}

const WEB: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 103, 240, 2));
const DB: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 103, 241, 2));
const OUTSIDE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 56, 9));

fn ips(list: &[&str]) -> Verdict {
    Verdict::Addresses(list.iter().map(|s| s.parse().unwrap()).collect())
}

#[test]
fn names_are_answered_per_network() {
    let t = NameTable::build(&view());
    assert_eq!(t.counts(), (2, 7));
    assert_eq!(t.decide(WEB, "a", RecordType::A), ips(&["10.103.240.2"]));
    assert_eq!(t.decide(WEB, "B.", RecordType::A), ips(&["10.103.240.3"]));
    assert_eq!(
        t.decide(WEB, "b.web", RecordType::A),
        ips(&["10.103.240.3"])
    );
    assert_eq!(
        t.decide(WEB, "Api.Web.", RecordType::A),
        ips(&["10.103.240.3"])
    );
    assert_eq!(
        t.decide(WEB, "shared", RecordType::A),
        ips(&["10.103.240.3", "10.103.240.4"])
    );
    // The same name on db is db's container.
    assert_eq!(t.decide(DB, "b", RecordType::A), ips(&["10.103.241.3"]));
    assert_eq!(t.decide(DB, "b.db", RecordType::A), ips(&["10.103.241.3"]));
    // web's names do not resolve on db, neither short nor qualified.
    assert_eq!(t.decide(DB, "a", RecordType::A), Verdict::NxDomain);
    assert_eq!(t.decide(DB, "a.web", RecordType::A), Verdict::NxDomain);
    assert_eq!(t.decide(DB, "api", RecordType::A), Verdict::NxDomain);
    assert_eq!(t.decide(WEB, "c", RecordType::A), Verdict::NxDomain);
    assert_eq!(
        t.decide(WEB, "nobody.web", RecordType::A),
        Verdict::NxDomain
    );
    assert_eq!(t.decide(WEB, "ghost", RecordType::A), Verdict::NxDomain);
    assert_eq!(t.decide(WEB, "stray", RecordType::A), Verdict::NxDomain);
    // Known names have no AAAA: NOERROR, no records.
    assert_eq!(
        t.decide(WEB, "a", RecordType::AAAA),
        Verdict::Addresses(vec![])
    );
    assert_eq!(t.decide(WEB, "a", RecordType::ANY), ips(&["10.103.240.2"]));
    // Everything else goes upstream.
    assert_eq!(
        t.decide(WEB, "outside.lab", RecordType::A),
        Verdict::Forward
    );
    assert_eq!(
        t.decide(WEB, "a.web.example", RecordType::A),
        Verdict::Forward
    );
    assert_eq!(t.decide(WEB, ".", RecordType::NS), Verdict::Forward);
    // Askers outside every network are refused, whatever they ask.
    for name in ["a", "outside.lab", "b.db"] {
        assert_eq!(t.decide(OUTSIDE, name, RecordType::A), Verdict::Refused);
    }
    assert_eq!(
        t.decide("::1".parse().unwrap(), "a", RecordType::A),
        Verdict::Refused
    );
    assert_eq!(
        t.decide("::ffff:10.103.240.9".parse().unwrap(), "a", RecordType::A),
        ips(&["10.103.240.2"])
    );
}

#[test]
fn reverse_names_of_the_askers_network() {
    let t = NameTable::build(&view());
    assert_eq!(
        t.decide(WEB, "3.240.103.10.in-addr.arpa.", RecordType::PTR),
        Verdict::Pointer("b.web".into())
    );
    assert_eq!(
        t.decide(DB, "3.240.103.10.in-addr.arpa", RecordType::PTR),
        Verdict::NxDomain
    );
    assert_eq!(
        t.decide(WEB, "99.240.103.10.in-addr.arpa", RecordType::PTR),
        Verdict::NxDomain
    );
    assert_eq!(
        t.decide(WEB, "1.2.0.192.in-addr.arpa", RecordType::PTR),
        Verdict::Forward
    );
}

#[test]
fn the_table_follows_the_view() {
    let mut v = view();
    let before = NameTable::build(&v);
    v.endpoints.retain(|r| r.name != "a");
    v.endpoints.push(rec("web", "10.103.240.9", "a2", &["a"]));
    let after = NameTable::build(&v);
    assert_eq!(
        before.decide(WEB, "a", RecordType::A),
        ips(&["10.103.240.2"])
    );
    assert_eq!(
        after.decide(WEB, "a", RecordType::A),
        ips(&["10.103.240.9"])
    );
    assert_eq!(NameTable::build(&NetworkView::default()).counts(), (0, 0));
    assert_eq!(normalize(" /Web.Example. "), "web.example");
}

/// A fake upstream on the loopback: `outside.lab` is 192.0.2.7, `big.lab`
/// has 60 addresses (too many for 512 bytes), the rest NXDOMAIN.
async fn fake_upstream() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut m = Message::response(q.metadata.id, OpCode::Query);
            m.metadata.recursion_available = true;
            m.queries = q.queries.clone();
            let name = q.queries[0].name().clone();
            match name.to_ascii().as_str() {
                "outside.lab." => {
                    m.add_answer(Record::from_rdata(name, 30, RData::A(A::new(192, 0, 2, 7))));
                }
                "big.lab." => {
                    for i in 0..60 {
                        m.add_answer(Record::from_rdata(
                            name.clone(),
                            30,
                            RData::A(A::new(192, 0, 2, i)),
                        ));
                    }
                }
                _ => m.metadata.response_code = ResponseCode::NXDomain,
            }
            let _ = socket.send_to(&m.to_vec().unwrap(), from).await;
        }
    });
    addr
}

fn request(src: IpAddr, name: &str, qtype: RecordType, edns: Option<u16>) -> Request {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    Request::from_bytes(
        m.to_vec().unwrap(),
        SocketAddr::new(src, 40000),
        Protocol::Udp,
    )
    .unwrap()
}

fn addresses(r: &Reply) -> Vec<String> {
    r.answers.iter().map(|a| a.data.to_string()).collect()
}

#[tokio::test]
async fn replies_answer_refuse_and_forward() {
    let up = Upstream::new(vec![fake_upstream().await], Duration::from_secs(2));
    let t = NameTable::build(&view());
    let ask = |src, name: &str, qtype| {
        let req = request(src, name, qtype, None);
        let (t, up) = (&t, &up);
        async move {
            let r = reply(t, up, 2, &req).await;
            assert_eq!(r.metadata.id, req.metadata.id);
            assert_eq!(r.metadata.message_type, MessageType::Response);
            r
        }
    };
    let r = ask(WEB, "b.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    assert_eq!(addresses(&r), ["10.103.240.3"]);
    assert_eq!(r.answers[0].ttl, 2);
    assert_eq!(r.answers[0].name.to_ascii(), "b.");

    let r = ask(WEB, "b.", RecordType::AAAA).await;
    assert_eq!(
        (r.metadata.response_code, r.answers.len()),
        (ResponseCode::NoError, 0)
    );
    let r = ask(DB, "a.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    let r = ask(WEB, "3.240.103.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(addresses(&r), ["b.web."]);

    let r = ask(WEB, "outside.lab.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(!r.metadata.authoritative);
    assert_eq!(addresses(&r), ["192.0.2.7"]);
    let r = ask(DB, "nothing.lab.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);

    for name in ["b.", "outside.lab."] {
        let r = ask(OUTSIDE, name, RecordType::A).await;
        assert_eq!(
            (r.metadata.response_code, r.answers.len()),
            (ResponseCode::Refused, 0)
        );
    }

    // Too big for 512 bytes: TC and no records; with EDNS 4096 it fits.
    let r = ask(WEB, "big.lab.", RecordType::A).await;
    assert!(r.metadata.truncation);
    assert!(r.answers.is_empty());
    let req = request(WEB, "big.lab.", RecordType::A, Some(4096));
    let r = reply(&t, &up, 2, &req).await;
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 60);
}

#[tokio::test]
async fn a_dead_or_missing_upstream_is_servfail_not_a_hang() {
    let t = NameTable::build(&view());
    // A port nobody listens on: ICMP unreachable, or the timeout.
    let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let up = Upstream::new(vec![addr], Duration::from_millis(300));
    let started = std::time::Instant::now();
    let r = reply(
        &t,
        &up,
        2,
        &request(WEB, "outside.lab.", RecordType::A, None),
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() < Duration::from_secs(2));
    let none = Upstream::new(vec![], Duration::from_millis(300));
    let r = reply(
        &t,
        &none,
        2,
        &request(WEB, "outside.lab.", RecordType::A, None),
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    // Our own names do not need an upstream.
    let r = reply(&t, &none, 2, &request(WEB, "a.", RecordType::A, None)).await;
    assert_eq!(addresses(&r), ["10.103.240.2"]);
}

#[tokio::test]
async fn other_opcodes_and_question_counts() {
    let up = Upstream::new(vec![], Duration::from_millis(100));
    let t = NameTable::build(&view());
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii("a.").unwrap(), RecordType::A));
    m.add_query(Query::query(Name::from_ascii("b.").unwrap(), RecordType::A));
    let req =
        Request::from_bytes(m.to_vec().unwrap(), SocketAddr::new(WEB, 1), Protocol::Udp).unwrap();
    assert_eq!(
        reply(&t, &up, 2, &req).await.metadata.response_code,
        ResponseCode::FormErr
    );
    let mut m = Message::new(7, MessageType::Query, OpCode::Status);
    m.add_query(Query::query(Name::from_ascii("a.").unwrap(), RecordType::A));
    let req =
        Request::from_bytes(m.to_vec().unwrap(), SocketAddr::new(WEB, 1), Protocol::Udp).unwrap();
    assert_eq!(
        reply(&t, &up, 2, &req).await.metadata.response_code,
        ResponseCode::NotImp
    );
}

#[test]
fn settings_take_upstream_from_config_else_resolv_conf() {
    use super::server::Settings;
    use crate::model::config::dns::DnsConfig;
    let mut cfg = DnsConfig {
        listen: "192.168.56.4:53".parse().unwrap(),
        upstream: vec![],
        ttl: 3,
    };
    let resolv = "nameserver 192.168.56.4\nnameserver 192.168.56.2\n";
    let s = Settings::from_config(&cfg, resolv);
    assert_eq!(s.upstream, vec!["192.168.56.2:53".parse().unwrap()]);
    assert_eq!(s.ttl, 3);
    cfg.upstream = vec!["10.0.0.2:5300".parse().unwrap()];
    assert_eq!(
        Settings::from_config(&cfg, resolv).upstream,
        vec!["10.0.0.2:5300".parse::<SocketAddr>().unwrap()]
    );
}
