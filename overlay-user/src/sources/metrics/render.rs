//! The metrics, read at scrape time into a fresh registry and encoded.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `overlay_encap_packets_total`, `overlay_encap_bytes_total` | counter | |
//! | `overlay_decap_packets_total`, `overlay_decap_bytes_total` | counter | |
//! | `overlay_dataplane_packets_total` | counter | `counter` (the other dataplane counters) |
//! | `overlay_drops_total` | counter | `reason` |
//! | `overlay_peer_tx_packets_total`, `overlay_peer_tx_bytes_total` | counter | `peer` |
//! | `overlay_peer_rx_packets_total`, `overlay_peer_rx_bytes_total` | counter | `peer` |
//! | `overlay_peer_last_rx_timestamp_seconds` | gauge | `peer` |
//! | `overlay_peers`, `overlay_endpoints` | gauge | `source` |
//! | `overlay_table_entries`, `overlay_table_capacity` | gauge | `table` |
//! | `overlay_dataplane_mode` | gauge (1) | `mode` |
//! | `overlay_store_connected`, `overlay_lease_remaining_seconds` | gauge | (with `[cluster]`) |
//! | `overlay_docker_connected` | gauge | (with `[docker]`) |
//! | `overlay_reconcile_duration_seconds` | histogram | `kind` (`change`, `refresh`) |

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::agent::handle::Core;
use crate::model::source::Source;
use crate::model::status::mode_name;
use crate::sources::{ClusterView, ConnectionState};

/// What the metrics are read from besides the core.
#[derive(Clone, Default)]
pub struct Extra {
    /// The cluster store, with `[cluster]`.
    pub cluster: Option<Arc<dyn ClusterView>>,
    /// Docker's connection, with `[docker]`.
    pub docker: Option<ConnectionState>,
}

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// How long a scrape waits for the cluster store's lease time.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

type Labels = Vec<(String, String)>;

fn labels(name: &str, value: impl ToString) -> Labels {
    vec![(name.to_string(), value.to_string())]
}

/// A counter with this value (a fresh registry per scrape: counting up from 0).
fn counter(r: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    r.register(name, help, c);
}

fn counters(r: &mut Registry, name: &str, help: &str, values: &[(Labels, u64)]) {
    let f = Family::<Labels, Counter>::default();
    for (l, v) in values {
        f.get_or_create(l).inc_by(*v);
    }
    r.register(name, help, f);
}

fn gauge(r: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    r.register(name, help, g);
}

fn gauges(r: &mut Registry, name: &str, help: &str, values: &[(Labels, i64)]) {
    let f = Family::<Labels, Gauge>::default();
    for (l, v) in values {
        f.get_or_create(l).set(*v);
    }
    r.register(name, help, f);
}

/// Every metric, in the text exposition format.
pub async fn render(core: &Core, extra: &Extra) -> String {
    let mut r = Registry::with_prefix("overlay");
    {
        let agent = core.lock().await;
        match agent.status() {
            Ok(status) => {
                let c = &status.stats.counters;
                let get = |n: &str| c.get(n).copied().unwrap_or(0);
                counter(
                    &mut r,
                    "encap_packets",
                    "Packets encapsulated and sent to a peer.",
                    get("encap_packets"),
                );
                counter(
                    &mut r,
                    "encap_bytes",
                    "Bytes (inner frames) encapsulated.",
                    get("encap_bytes"),
                );
                counter(
                    &mut r,
                    "decap_packets",
                    "Packets from peers decapsulated and delivered.",
                    get("decap_packets"),
                );
                counter(
                    &mut r,
                    "decap_bytes",
                    "Bytes (inner frames) decapsulated.",
                    get("decap_bytes"),
                );
                let main = [
                    "encap_packets",
                    "encap_bytes",
                    "decap_packets",
                    "decap_bytes",
                ];
                let others: Vec<(Labels, u64)> = c
                    .iter()
                    .filter(|(n, _)| !main.contains(&n.as_str()))
                    .map(|(n, v)| (labels("counter", n), *v))
                    .collect();
                counters(&mut r, "dataplane_packets", "The dataplane's other packet counters, by name (as overlayctl status shows them).", &others);
                let drops: Vec<(Labels, u64)> = status
                    .stats
                    .drops
                    .iter()
                    .map(|(n, v)| (labels("reason", n), *v))
                    .collect();
                counters(&mut r, "drops", "Packets dropped, by reason.", &drops);
                gauges(
                    &mut r,
                    "dataplane_mode",
                    "The dataplane that forwards (1 for the one in use).",
                    &[(labels("mode", mode_name(status.mode)), 1)],
                );
            }
            Err(e) => log::warn!("metrics: {e}"),
        }
        match agent.peer_traffic() {
            Ok(traffic) => {
                let per =
                    |f: fn(&crate::model::observe::PeerTraffic) -> u64| -> Vec<(Labels, u64)> {
                        traffic
                            .iter()
                            .map(|(ip, t)| (labels("peer", ip), f(t)))
                            .collect()
                    };
                counters(
                    &mut r,
                    "peer_tx_packets",
                    "Packets encapsulated to each peer host.",
                    &per(|t| t.tx_packets),
                );
                counters(
                    &mut r,
                    "peer_tx_bytes",
                    "Bytes (inner frames) encapsulated to each peer host.",
                    &per(|t| t.tx_bytes),
                );
                counters(
                    &mut r,
                    "peer_rx_packets",
                    "Packets from each peer host decapsulated.",
                    &per(|t| t.rx_packets),
                );
                counters(
                    &mut r,
                    "peer_rx_bytes",
                    "Bytes (inner frames) from each peer host decapsulated.",
                    &per(|t| t.rx_bytes),
                );
                let last: Vec<(Labels, i64)> = traffic
                    .iter()
                    .filter_map(|(ip, t)| {
                        t.last_rx_unix_ms
                            .map(|ms| (labels("peer", ip), (ms / 1000) as i64))
                    })
                    .collect();
                gauges(
                    &mut r,
                    "peer_last_rx_timestamp_seconds",
                    "When the last packet came from each peer host (Unix time).",
                    &last,
                );
            }
            Err(e) => log::warn!("metrics: {e}"),
        }
        let mut peers: BTreeMap<String, i64> = BTreeMap::new();
        for p in agent.peers().values() {
            *peers.entry(p.source.to_string()).or_default() += 1;
        }
        let mut endpoints: BTreeMap<String, i64> = BTreeMap::new();
        for e in agent.endpoints().values() {
            *endpoints.entry(e.source.to_string()).or_default() += 1;
        }
        if let Ok(learned) = agent.learned_endpoints() {
            if !learned.is_empty() {
                endpoints.insert(Source::Learned.to_string(), learned.len() as i64);
            }
        }
        let by_source = |m: BTreeMap<String, i64>| -> Vec<(Labels, i64)> {
            m.into_iter()
                .map(|(s, n)| (labels("source", s), n))
                .collect()
        };
        gauges(
            &mut r,
            "peers",
            "Peer subnets, by the source that added them.",
            &by_source(peers),
        );
        gauges(
            &mut r,
            "endpoints",
            "Local endpoints, by the source that added them.",
            &by_source(endpoints),
        );
        if let Ok(fill) = agent.table_fill() {
            let entries: Vec<(Labels, i64)> = fill
                .iter()
                .map(|(t, n, _)| (labels("table", t), *n as i64))
                .collect();
            let capacity: Vec<(Labels, i64)> = fill
                .iter()
                .map(|(t, _, c)| (labels("table", t), *c as i64))
                .collect();
            gauges(
                &mut r,
                "table_entries",
                "Entries in each dataplane table (BPF map).",
                &entries,
            );
            gauges(
                &mut r,
                "table_capacity",
                "Capacity of each dataplane table (BPF map).",
                &capacity,
            );
        }
    }
    if let Some(cluster) = &extra.cluster {
        let status = match tokio::time::timeout(STORE_TIMEOUT, cluster.status()).await {
            Ok(s) => s,
            Err(_) => cluster.summary(),
        };
        gauge(
            &mut r,
            "store_connected",
            "Whether the cluster store (etcd) answers (1) or not (0).",
            i64::from(status.connected),
        );
        if let Some(ttl) = status.lease_ttl {
            gauge(
                &mut r,
                "lease_remaining_seconds",
                "Seconds left on this host's subnet lease.",
                ttl,
            );
        }
    }
    if let Some(docker) = &extra.docker {
        gauge(
            &mut r,
            "docker_connected",
            "Whether overlayd follows Docker (1) or not (0).",
            i64::from(docker.get() == Some(true)),
        );
    }
    r.register(
        "reconcile_duration_seconds",
        "How long reconciling took: a change validated and given to the dataplane (kind=change), the periodic refresh (kind=refresh).",
        core.reconciles().clone(),
    );
    let mut out = String::new();
    if let Err(e) = prometheus_text::encode(&mut out, &r) {
        log::warn!("metrics: encoding: {e}");
    }
    out
}
