//! The API's overlay network requests: create, list, inspect and remove
//! networks in the cluster store through the
//! [`NetworkDirectory`](crate::sources::NetworkDirectory), with what this
//! host's core carries of them.

use crate::agent::handle::Core;
use crate::agent::tables::Agent;
use crate::model::network_store::check_network_name;
use crate::model::overlay_network::{EndpointRecord, NetworkRequest, NetworkSpec};
use crate::model::validation::{format_mac, parse_cidr, parse_ipv4, InputError};
use crate::sources::api::wire::{NetEndpointInfo, NetworkDetail, NetworkInfo, Request, Response};
use crate::sources::NetworkDirectory;

/// The answer when a network request reaches an overlayd without `[cluster]`.
pub const NO_NETWORKS: &str =
    "networks need a cluster store: add [cluster] etcd = [\"http://HOST:2379\"] to the config";

/// Whether this host carries `spec` (the same VNI and subnet).
fn carried(agent: &Agent, spec: &NetworkSpec) -> bool {
    agent
        .networks()
        .get(&spec.vni)
        .is_some_and(|n| n.spec == *spec)
}

/// `records` as listed, each with who installed it here.
fn endpoint_infos(
    agent: &Agent,
    spec: &NetworkSpec,
    records: Vec<EndpointRecord>,
) -> Vec<NetEndpointInfo> {
    records
        .into_iter()
        .map(|r| NetEndpointInfo {
            installed: agent
                .net_endpoints()
                .get(&(spec.vni, r.ip))
                .filter(|e| e.spec.mac == r.mac)
                .map(|e| e.source),
            ip: r.ip,
            mac: format_mac(&r.mac),
            host: r.host,
            underlay_ip: r.underlay_ip,
            container: r.container,
            name: r.name,
        })
        .collect()
}

/// The request `NetworkCreate` stands for, its values checked.
fn parse_create(
    name: String,
    subnet: Option<String>,
    gateway: Option<String>,
    vni: Option<u32>,
) -> Result<NetworkRequest, InputError> {
    check_network_name(&name)?;
    Ok(NetworkRequest {
        name,
        subnet: subnet.as_deref().map(parse_cidr).transpose()?,
        gateway: gateway.as_deref().map(parse_ipv4).transpose()?,
        vni,
    })
}

/// Serve a network request (`req` is one of the `Network*` requests)
/// through `networks` (`None` without `[cluster]`).
pub async fn handle(
    core: &Core,
    networks: Option<&dyn NetworkDirectory>,
    req: Request,
) -> Response {
    let Some(dir) = networks else {
        return Response::error(NO_NETWORKS);
    };
    match req {
        Request::NetworkCreate {
            name,
            subnet,
            gateway,
            vni,
        } => match parse_create(name, subnet, gateway, vni) {
            Ok(req) => match dir.create_network(req).await {
                Ok(spec) => Response::NetworkCreated(Box::new(spec)),
                Err(e) => Response::error(e),
            },
            Err(e) => Response::error(e),
        },
        Request::NetworkList => match dir.networks().await {
            Ok(nets) => {
                let agent = core.lock().await;
                Response::Networks(
                    nets.into_iter()
                        .map(|spec| NetworkInfo {
                            carried: carried(&agent, &spec),
                            spec,
                        })
                        .collect(),
                )
            }
            Err(e) => Response::error(e),
        },
        Request::NetworkInspect { name } => match dir.network(&name).await {
            Ok((spec, records)) => {
                let agent = core.lock().await;
                Response::Network(Box::new(NetworkDetail {
                    endpoints: endpoint_infos(&agent, &spec, records),
                    info: NetworkInfo {
                        carried: carried(&agent, &spec),
                        spec,
                    },
                }))
            }
            Err(e) => Response::error(e),
        },
        Request::NetworkRm { name } => match dir.remove_network(&name).await {
            Ok(spec) => Response::NetworkRemoved(Box::new(spec)),
            Err(e) => Response::error(e),
        },
        other => Response::error(format!("not a network request: {other:?}")),
    }
}
