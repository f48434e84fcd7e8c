//! The config file as written, before the values `[cluster]` provides
//! are filled in: `subnet`, `vni` and `vxlan_port` may be missing there.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::Deserialize;

use super::cluster::ClusterConfig;
use super::dns::DnsConfig;
use super::{
    de_opt_net, default_big_tcp, default_tunnel_gro, default_veth_gro, AttachPoint, Config,
    DataplaneChoice, DecapResize, DeliverMode, DockerConfig, EncapMode, EncapResize, PeerConfig,
    Pending, TcAttach, XdpMode,
};
use crate::model::limits::{default_learn_limit, ApiConfig};
use crate::model::validation::InputError;

pub(super) fn default_port() -> u16 {
    overlay_common::DEFAULT_VXLAN_PORT
}

pub(super) fn default_pin_dir() -> PathBuf {
    PathBuf::from("/sys/fs/bpf/overlay")
}

pub(super) fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/overlay")
}

/// `metrics_address`: an IP address and a port other than 0.
fn parse_metrics_address(value: &str) -> Result<SocketAddr, InputError> {
    match value.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(a),
        _ => Err(InputError::MetricsAddress {
            value: value.to_string(),
        }),
    }
}

/// The file as written, before the values `[cluster]` provides are filled in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    underlay_interface: String,
    #[serde(default)]
    underlay_ip: Option<Ipv4Addr>,
    #[serde(default, deserialize_with = "de_opt_net")]
    subnet: Option<Ipv4Net>,
    bridge: String,
    #[serde(default)]
    vni: Option<u32>,
    #[serde(default)]
    vxlan_port: Option<u16>,
    #[serde(default = "default_pin_dir")]
    pin_dir: PathBuf,
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    #[serde(default)]
    attach: AttachPoint,
    #[serde(default)]
    dataplane: DataplaneChoice,
    #[serde(default)]
    xdp: XdpMode,
    #[serde(default)]
    encap: EncapMode,
    #[serde(default)]
    deliver: DeliverMode,
    #[serde(default)]
    tc_attach: TcAttach,
    #[serde(default)]
    decap_resize: DecapResize,
    #[serde(default)]
    encap_resize: EncapResize,
    #[serde(default = "default_veth_gro")]
    veth_gro: bool,
    #[serde(default = "default_big_tcp")]
    big_tcp: bool,
    #[serde(default = "default_tunnel_gro")]
    tunnel_gro: bool,
    #[serde(default)]
    peers: Vec<PeerConfig>,
    #[serde(default)]
    docker: DockerConfig,
    #[serde(default = "default_learn_limit")]
    learn_limit: u32,
    #[serde(default)]
    api: ApiConfig,
    #[serde(default)]
    cluster: Option<ClusterConfig>,
    #[serde(default)]
    metrics_address: Option<String>,
    dns: Option<DnsConfig>,
}

impl TryFrom<RawConfig> for Config {
    type Error = InputError;

    fn try_from(raw: RawConfig) -> Result<Config, InputError> {
        let clustered = raw.cluster.is_some();
        let subnet = match (raw.subnet, clustered) {
            (Some(s), _) => s,
            (None, true) => Ipv4Net::default(),
            (None, false) => {
                return Err(InputError::MissingField {
                    field: "subnet",
                    expected: "this host's container subnet like \"10.103.100.0/24\", or a [cluster] section to lease one",
                })
            }
        };
        let vni =
            match (raw.vni, clustered) {
                (Some(v), _) => v,
                (None, true) => 0,
                (None, false) => return Err(InputError::MissingField {
                    field: "vni",
                    expected:
                        "the VXLAN network identifier like 42, or a [cluster] section that sets it",
                }),
            };
        let metrics_address = raw
            .metrics_address
            .as_deref()
            .map(parse_metrics_address)
            .transpose()?;
        Ok(Config {
            metrics_address,
            underlay_interface: raw.underlay_interface,
            underlay_ip: raw.underlay_ip,
            subnet,
            bridge: raw.bridge,
            vni,
            vxlan_port: raw.vxlan_port.unwrap_or_else(default_port),
            pin_dir: raw.pin_dir,
            state_dir: raw.state_dir,
            attach: raw.attach,
            dataplane: raw.dataplane,
            xdp: raw.xdp,
            encap: raw.encap,
            deliver: raw.deliver,
            tc_attach: raw.tc_attach,
            decap_resize: raw.decap_resize,
            encap_resize: raw.encap_resize,
            veth_gro: raw.veth_gro,
            big_tcp: raw.big_tcp,
            tunnel_gro: raw.tunnel_gro,
            peers: raw.peers,
            docker: raw.docker,
            learn_limit: raw.learn_limit,
            api: raw.api,
            pending: Pending {
                subnet: raw.subnet.is_none(),
                vni: raw.vni.is_none(),
                vxlan_port: clustered && raw.vxlan_port.is_none(),
            },
            cluster: raw.cluster,
            dns: raw.dns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_address_is_off_by_default_and_checked() {
        let base = "underlay_interface = \"eth1\"\nbridge = \"docker0\"\nsubnet = \"10.1.0.0/24\"\nvni = 4\n";
        assert_eq!(Config::parse(base).unwrap().metrics_address, None);
        let cfg = Config::parse(&format!("metrics_address = \"127.0.0.1:9642\"\n{base}")).unwrap();
        assert_eq!(cfg.metrics_address, Some("127.0.0.1:9642".parse().unwrap()));
        for bad in [
            "localhost:9642",
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:70000",
        ] {
            let e = Config::parse(&format!("metrics_address = \"{bad}\"\n{base}"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("metrics_address = \"{bad}\" is not an IP address and port; expected one like \"127.0.0.1:9642\" (port 1 to 65535)")),
                "{e}"
            );
        }
    }

    #[test]
    fn a_config_with_cluster_may_leave_out_subnet_vni_and_port() {
        let text = "underlay_interface = \"eth1\"\nbridge = \"docker0\"\n[cluster]\netcd = [\"http://10.0.0.1:2379\"]\nname = \"h1\"\n";
        let mut cfg = Config::parse(text).unwrap();
        assert_eq!(
            cfg.pending,
            Pending {
                subnet: true,
                vni: true,
                vxlan_port: true
            }
        );
        cfg.validate().unwrap();
        assert_eq!(cfg.cluster.as_ref().unwrap().name.as_deref(), Some("h1"));
        cfg.apply_cluster("10.103.5.0/24".parse().unwrap(), 42, 8472)
            .unwrap();
        assert_eq!(cfg.pending, Pending::default());
        assert_eq!((cfg.vni, cfg.vxlan_port), (42, 8472));
        assert_eq!(cfg.gateway().to_string(), "10.103.5.1");

        let given = Config::parse(&format!("vni = 7\nvxlan_port = 4789\n{text}")).unwrap();
        assert_eq!(
            given.pending,
            Pending {
                subnet: true,
                vni: false,
                vxlan_port: false
            }
        );

        let without = "underlay_interface = \"eth1\"\nbridge = \"docker0\"\nvni = 42\n";
        let e = Config::parse(without).unwrap_err().to_string();
        assert!(
            e.contains("missing field `subnet`; expected this host's container subnet like \"10.103.100.0/24\", or a [cluster] section to lease one"),
            "{e}"
        );
        let e = Config::parse(
            &format!("subnet = \"10.1.0.0/24\"\n{without}").replace("vni = 42\n", ""),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("missing field `vni`"), "{e}");
        let e = Config::parse(&format!("{text}bogus = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `bogus`"), "{e}");
    }
}
