use std::net::Ipv4Addr;

use super::*;
use crate::agent::testing::{agent, temp_dir};
use crate::model::source::Source;
use crate::sys::routes::RTPROT_OVERLAY;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn route(dst: &str, gateway: Option<[u8; 4]>, oif: u32, protocol: u8) -> Route {
    Route {
        dst: net(dst),
        gateway: gateway.map(Ipv4Addr::from),
        oif: Some(oif),
        protocol,
    }
}

#[tokio::test]
async fn peers_overlapping_the_underlay_or_foreign_routes_are_refused() {
    let (mut agent, dp, fake) = agent(temp_dir("host-checks")).await;
    *fake.routes.lock().unwrap() = vec![
        route("0.0.0.0/0", Some([192, 168, 56, 1]), 2, 4),
        route("192.168.56.0/24", None, 2, 2),
        route("10.103.250.0/24", Some([192, 168, 56, 1]), 2, 4),
        route("172.16.0.0/12", None, 99, 3),
        route(
            "10.103.240.0/24",
            Some([10, 103, 240, 0]),
            2,
            RTPROT_OVERLAY,
        ),
    ];
    let add = |subnet: &'static str| {
        let subnet = net(subnet);
        (subnet, Ipv4Addr::new(192, 168, 56, 9))
    };
    for (subnet, expected) in [
        ("192.168.56.0/24", "peer subnet 192.168.56.0/24 overlaps the underlay network 192.168.56.0/24 of eth1; expected a subnet disjoint from the underlay's networks"),
        ("192.168.0.0/16", "peer subnet 192.168.0.0/16 overlaps the underlay network 192.168.56.0/24 of eth1; expected a subnet disjoint from the underlay's networks"),
        ("192.168.56.128/25", "peer subnet 192.168.56.128/25 overlaps the underlay network 192.168.56.0/24 of eth1; expected a subnet disjoint from the underlay's networks"),
        ("10.103.250.0/24", "peer subnet 10.103.250.0/24 overlaps the route 10.103.250.0/24 via 192.168.56.1 dev eth1 proto static in the main table, which overlay did not make; expected a subnet no other route covers (delete that route or choose another subnet)"),
        ("10.103.250.128/25", "peer subnet 10.103.250.128/25 overlaps the route 10.103.250.0/24 via 192.168.56.1 dev eth1 proto static in the main table, which overlay did not make; expected a subnet no other route covers (delete that route or choose another subnet)"),
        ("172.20.0.0/16", "peer subnet 172.20.0.0/16 overlaps the route 172.16.0.0/12 dev #99 proto boot in the main table, which overlay did not make; expected a subnet no other route covers (delete that route or choose another subnet)"),
    ] {
        let (subnet, ip) = add(subnet);
        let e = agent.add_peer(subnet, ip, None, Source::Api).await.unwrap_err();
        assert_eq!(e.to_string(), expected);
    }
    // The pure checks come first (model::validation).
    let (subnet, ip) = add("127.0.0.0/8");
    assert_eq!(
        agent.add_peer(subnet, ip, None, Source::Api).await.unwrap_err().to_string(),
        "peer subnet 127.0.0.0/8 overlaps the loopback range 127.0.0.0/8; expected a container subnet outside 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4 and 255.255.255.255, like 10.103.200.0/24"
    );
    assert_eq!(dp.take(), vec![], "the dataplane was not called");
    // The default route and overlay's own routes are no conflict.
    let (subnet, ip) = add("10.103.240.0/24");
    agent.add_peer(subnet, ip, None, Source::Api).await.unwrap();
    let (subnet, ip) = add("10.103.251.0/24");
    agent.add_peer(subnet, ip, None, Source::Api).await.unwrap();
    assert_eq!(dp.take().len(), 2);
}
