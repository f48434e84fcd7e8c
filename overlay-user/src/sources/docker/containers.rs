//! A container's endpoints on the watched networks, out of Docker's inspect answer.

use std::net::Ipv4Addr;

use bollard::models::ContainerInspectResponse;
use ipnet::Ipv4Net;

use crate::model::network::is_container_ip;
use crate::model::validation::parse_mac;
use crate::sys::docker::container;

/// One endpoint of a container on a watched network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerEndpoint {
    /// The Docker network's name.
    pub network: String,
    /// The container's address on it.
    pub ip: Ipv4Addr,
    /// The container interface's MAC.
    pub mac: [u8; 6],
}

/// What the watcher needs to know of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Full ID.
    pub id: String,
    /// Name, without Docker's leading '/'.
    pub name: String,
    /// PID of its init process while it runs.
    pub pid: Option<u32>,
    /// Its endpoints on watched networks with an address in this host's subnet.
    pub endpoints: Vec<ContainerEndpoint>,
}

/// Pick out of `inspect` the endpoints on `networks` whose address is a
/// container address of `subnet`; others (other networks, other subnets,
/// no address yet, bad MAC) are skipped.
pub fn container_info(
    inspect: &ContainerInspectResponse,
    networks: &[String],
    subnet: Ipv4Net,
) -> ContainerInfo {
    let c = container(inspect);
    let mut endpoints = Vec::new();
    if let Some(nets) = inspect
        .network_settings
        .as_ref()
        .and_then(|s| s.networks.as_ref())
    {
        for (net, ep) in nets {
            if !networks.iter().any(|w| w == net) {
                continue;
            }
            let Some(ip) = ep
                .ip_address
                .as_deref()
                .and_then(|s| s.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let Some(mac) = ep.mac_address.as_deref().and_then(|m| parse_mac(m).ok()) else {
                continue;
            };
            if is_container_ip(subnet, ip) {
                endpoints.push(ContainerEndpoint {
                    network: net.clone(),
                    ip,
                    mac,
                });
            }
        }
    }
    endpoints.sort_by_key(|e| e.ip);
    ContainerInfo {
        id: c.id,
        name: c.name,
        pid: c.pid,
        endpoints,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::docker::short_id;
    use bollard::models::{ContainerState, EndpointSettings, NetworkSettings};

    fn inspect(running: bool, nets: &[(&str, &str, &str)]) -> ContainerInspectResponse {
        ContainerInspectResponse {
            id: Some("3ffd421aa325939c14bfb047be9507d7615f831d281543e20548c576ce19049d".into()),
            name: Some("/web1".into()),
            state: Some(ContainerState {
                running: Some(running),
                pid: Some(if running { 4242 } else { 0 }),
                ..Default::default()
            }),
            network_settings: Some(NetworkSettings {
                networks: Some(
                    nets.iter()
                        .map(|(net, ip, mac)| {
                            (
                                net.to_string(),
                                EndpointSettings {
                                    ip_address: Some(ip.to_string()),
                                    mac_address: Some(mac.to_string()),
                                    ..Default::default()
                                },
                            )
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn subnet() -> Ipv4Net {
        "10.103.100.0/24".parse().unwrap()
    }

    #[test]
    fn picks_watched_networks_in_the_subnet() {
        let c = inspect(
            true,
            &[
                ("bridge", "10.103.100.2", "02:42:0a:67:64:02"),
                ("other", "10.103.100.3", "02:42:0a:67:64:03"),
                ("ovl", "10.9.0.2", "02:42:0a:09:00:02"),
                ("ovl2", "", ""),
            ],
        );
        let nets = vec!["bridge".to_string(), "ovl".into(), "ovl2".into()];
        let info = container_info(&c, &nets, subnet());
        assert_eq!(info.name, "web1");
        assert_eq!(info.pid, Some(4242));
        assert_eq!(
            info.endpoints,
            vec![ContainerEndpoint {
                network: "bridge".into(),
                ip: "10.103.100.2".parse().unwrap(),
                mac: [2, 0x42, 10, 103, 100, 2]
            }]
        );
        assert_eq!(short_id(&info.id), "3ffd421aa325");
    }

    #[test]
    fn stopped_containers_have_no_pid() {
        let c = inspect(false, &[("bridge", "10.103.100.2", "02:42:0a:67:64:02")]);
        let info = container_info(&c, &["bridge".into()], subnet());
        assert_eq!(info.pid, None);
    }

    #[test]
    fn reserved_addresses_are_skipped() {
        let c = inspect(true, &[("bridge", "10.103.100.1", "02:42:0a:67:64:01")]);
        assert!(container_info(&c, &["bridge".into()], subnet())
            .endpoints
            .is_empty());
    }
}
