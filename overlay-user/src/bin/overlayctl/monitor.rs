//! `overlayctl monitor`: the dataplane's events as they happen.

use std::net::Ipv4Addr;
use std::time::Duration;

use overlay_user::model::observe::{proto_name, EventType, MonitorEvent, MonitorLoss};
use overlay_user::model::validation::{parse_ipv4, parse_underlay_ip};
use overlay_user::sources::api::{self, Request, Response};

use crate::{unexpected, CtlError, Ctx};

/// Which events to show.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Every dropped packet, with its reason.
    Drop,
    /// Sampled encapsulations and decapsulations.
    Trace,
}

/// Watch the dataplane's events: drops with their reason, sampled encap/decap.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "Watch the dataplane's events as they happen: every dropped packet with its \
reason, addresses, ports, protocol, VNI and interface, and with --type trace a sample of the \
packets encapsulated to and decapsulated from peers. The programs emit events only while a \
monitor runs, at most 1,000 a second per CPU: what the rate limit suppressed (and what a slow \
reader lost) is reported each second in a \">> lost\" line ({\"type\":\"lost\",...} with --json). \
Stop with Ctrl-C, --count or --duration.",
    after_help = "Examples:\n  \
overlayctl monitor\n  \
overlayctl monitor --type drop --reason unknown_peer --reason unknown_vni\n  \
overlayctl monitor --type trace --sample 100 --peer 192.168.56.5\n  \
overlayctl monitor --ip 10.103.200.2 --json"
)]
pub struct Args {
    /// Which events: drop (default) or trace; give it twice for both.
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    kinds: Vec<Kind>,
    /// Only drops with this reason (as `overlayctl status` names them); repeatable.
    #[arg(long = "reason", value_name = "REASON")]
    reasons: Vec<String>,
    /// Only events with this inner or outer address.
    #[arg(long, value_name = "IP", value_parser = parse_ipv4)]
    ip: Option<Ipv4Addr>,
    /// Only events to or from this peer host (its underlay address).
    #[arg(long, value_name = "IP", value_parser = parse_underlay_ip)]
    peer: Option<Ipv4Addr>,
    /// With --type trace: show one encap/decap in N.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    sample: u32,
    /// Stop after N events.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<u64>,
}

/// Run `overlayctl monitor`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    let req = Request::Monitor {
        drop: args.kinds.contains(&Kind::Drop),
        trace: args.kinds.contains(&Kind::Trace),
        reasons: args.reasons.clone(),
        ip: args.ip.map(|i| i.to_string()),
        peer: args.peer.map(|i| i.to_string()),
        sample: Some(args.sample),
    };
    let mut stream = api::stream(&ctx.socket, &req).await?;
    let deadline = args.duration.map(Duration::from_secs);
    let watch = async {
        let mut events = 0u64;
        let mut lost = MonitorLoss::default();
        loop {
            match stream.next().await? {
                None => return Err(CtlError::Unexpected("overlayd closed the stream".into())),
                Some(Response::Ok) => {
                    eprintln!("Listening for events (Ctrl-C to stop)...");
                }
                Some(Response::Error { message }) => return Err(CtlError::Refused(message)),
                Some(Response::Event(ev)) => {
                    events += 1;
                    if ctx.json {
                        println!("{}", serde_json::to_string(&ev).expect("events serialize"));
                    } else {
                        println!("{}", line(&ev));
                    }
                    if args.count.is_some_and(|n| events >= n) {
                        return Ok((events, lost));
                    }
                }
                Some(Response::Lost(l)) => {
                    lost.suppressed += l.suppressed;
                    lost.ring_full += l.ring_full;
                    lost.lagged += l.lagged;
                    if ctx.json {
                        let mut v = serde_json::to_value(l).expect("loss serializes");
                        v["type"] = "lost".into();
                        println!("{v}");
                    } else {
                        println!(
                            ">> lost {} events: {} over the rate limit, {} ring buffer full, {} not read in time",
                            l.suppressed + l.ring_full + l.lagged,
                            l.suppressed,
                            l.ring_full,
                            l.lagged
                        );
                    }
                }
                Some(other) => return Err(unexpected(&other)),
            }
        }
    };
    let result = match deadline {
        Some(d) => match tokio::time::timeout(d, watch).await {
            Ok(r) => r,
            Err(_) => return Ok(()),
        },
        None => watch.await,
    };
    result.map(|_| ())
}

/// One human line, in the manner of `cilium monitor`.
pub fn line(ev: &MonitorEvent) -> String {
    let secs = ev.time_ns / 1_000_000_000;
    let micros = (ev.time_ns % 1_000_000_000) / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let what = match ev.kind {
        EventType::Drop => format!("drop ({})", ev.reason.as_deref().unwrap_or("?")),
        EventType::Encap => format!(
            "-> encap to {}",
            ev.peer.map(|p| p.to_string()).unwrap_or_default()
        ),
        EventType::Decap => format!(
            "<- decap from {}",
            ev.peer.map(|p| p.to_string()).unwrap_or_default()
        ),
    };
    let iface = match &ev.ifname {
        Some(n) => format!("{n} ({})", ev.ifindex),
        None => format!("ifindex {}", ev.ifindex),
    };
    let mut out = format!(
        "{h:02}:{m:02}:{s:02}.{micros:06} {what} {} {iface}:",
        ev.hook
    );
    let addr = |ip: Option<Ipv4Addr>, port: Option<u16>| match (ip, port) {
        (Some(ip), Some(p)) => format!("{ip}:{p}"),
        (Some(ip), None) => ip.to_string(),
        _ => "?".into(),
    };
    if let (Some(a), Some(b)) = (ev.outer_src, ev.outer_dst) {
        out += &format!(" {a} -> {b} vni {},", ev.vni.unwrap_or(0));
    }
    if ev.src.is_some() {
        out += &format!(
            " {} -> {} {}",
            addr(ev.src, ev.sport),
            addr(ev.dst, ev.dport),
            proto_name(ev.proto.unwrap_or(0))
        );
    }
    out + &format!(", {} bytes", ev.len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_line() {
        let ev = MonitorEvent {
            time_ns: 3_723_000_001_000,
            kind: EventType::Drop,
            reason: Some("unknown_vni".into()),
            hook: "from-underlay".into(),
            ifindex: 4,
            ifname: Some("eth1".into()),
            len: 92,
            vni: Some(7),
            outer_src: Some(Ipv4Addr::new(192, 168, 56, 5)),
            outer_dst: Some(Ipv4Addr::new(192, 168, 56, 4)),
            src: Some(Ipv4Addr::new(10, 1, 2, 3)),
            dst: Some(Ipv4Addr::new(10, 1, 1, 2)),
            proto: Some(17),
            sport: Some(5000),
            dport: Some(53),
            peer: None,
        };
        assert_eq!(
            line(&ev),
            "01:02:03.000001 drop (unknown_vni) from-underlay eth1 (4): 192.168.56.5 -> 192.168.56.4 vni 7, 10.1.2.3:5000 -> 10.1.1.2:53 UDP, 92 bytes"
        );
    }
}
