//! The config file, a control source: reading it (the file's schema and
//! validation are in [`crate::model::config`]) and, once at start, its
//! `[[peers]]`, reported before the state file's entries are restored.

use std::path::{Path, PathBuf};

use crate::agent::handle::Core;
use crate::model::change::Change;
use crate::model::config::{Config, PeerConfig};
use crate::model::peer::PeerSpec;
use crate::model::source::Source;
use crate::model::validation::{parse_vtep_mac, InputError};
use crate::sources::ControlSource;

/// Errors of [`load`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, no permission, ...).
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML or does not match the schema; the message has the line and column.
    #[error("config file {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser reported (with line and column).
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The file parsed but a value is not acceptable.
    #[error("config file {}: {source}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The problem.
        #[source]
        source: InputError,
    },
}

/// Read, parse and validate the file at `path`.
pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let cfg = Config::parse(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    cfg.validate().map_err(|source| ConfigError::Invalid {
        path: path.to_owned(),
        source,
    })?;
    Ok(cfg)
}

/// The config file's peers, as a one-shot control source.
pub struct ConfigFile {
    peers: Vec<PeerConfig>,
}

impl ConfigFile {
    /// The peers of `cfg` (validated: [`load`]).
    pub fn new(cfg: &Config) -> ConfigFile {
        ConfigFile {
            peers: cfg.peers.clone(),
        }
    }
}

#[async_trait::async_trait]
impl ControlSource for ConfigFile {
    fn name(&self) -> &'static str {
        "config"
    }

    /// Reports each peer; one that fails is logged and skipped.
    async fn run(self: Box<Self>, core: Core) {
        for (index, p) in self.peers.into_iter().enumerate() {
            // The config was validated, so the MAC parses.
            let vtep_mac = p
                .vtep_mac
                .as_deref()
                .map(parse_vtep_mac)
                .and_then(Result::ok);
            let peer = PeerSpec {
                subnet: p.subnet,
                underlay_ip: p.underlay_ip,
                vtep_mac,
            };
            if let Err(e) = core.apply(Source::Config, Change::AddPeer(peer)).await {
                log::error!("config peers[{index}] {}: {e}", p.subnet);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    use ipnet::Ipv4Net;

    use crate::agent::state::State;
    use crate::agent::tables::Agent;
    use crate::agent::testing::{fake_net, temp_dir, test_config, Call, FakeDataplane};

    const EXAMPLE: &str = r#"
underlay_interface = "eth1"
subnet = "10.103.100.0/24"
bridge = "docker0"
vni = 42
vxlan_port = 4789
[[peers]]
subnet = "10.103.200.0/24"
underlay_ip = "192.168.56.5"
"#;

    fn example() -> Config {
        Config::parse(EXAMPLE).unwrap()
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn load_names_the_file_and_line() {
        let dir = std::env::temp_dir().join(format!("overlay-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        let missing = dir.join("missing.toml");
        let e = load(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot read config file {}: ", missing.display())),
            "{e}"
        );

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, EXAMPLE.replace("vni = 42", "vni = \"x\"")).unwrap();
        let e = load(&bad).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("config file {}: ", bad.display())),
            "{e}"
        );
        assert!(e.contains("line 5, column 7"), "{e}");

        let no_prefix = dir.join("no_prefix.toml");
        std::fs::write(
            &no_prefix,
            EXAMPLE.replace("10.103.200.0/24", "10.103.200.0"),
        )
        .unwrap();
        let e = load(&no_prefix).unwrap_err().to_string();
        assert!(e.contains("line 8, column 10"), "{e}");
        assert!(
            e.contains("\"10.103.200.0\" is not an IPv4 CIDR; expected a network address like 10.103.200.0/24"),
            "{e}"
        );

        let unknown = dir.join("unknown.toml");
        std::fs::write(&unknown, format!("{EXAMPLE}\nfoo = 1\n")).unwrap();
        let e = load(&unknown).unwrap_err().to_string();
        assert!(e.contains("unknown field `foo`"), "{e}");

        let invalid = dir.join("invalid.toml");
        std::fs::write(
            &invalid,
            EXAMPLE.replace("10.103.100.0/24", "10.103.100.5/24"),
        )
        .unwrap();
        let e = load(&invalid).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "config file {}: subnet: 10.103.100.5/24 has host bits set; expected a network address like 10.103.100.0/24",
                invalid.display()
            )
        );

        let good = dir.join("good.toml");
        std::fs::write(&good, EXAMPLE).unwrap();
        assert_eq!(load(&good).unwrap(), example());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn restore_applies_config_peers() {
        let dp = FakeDataplane::default();
        let cfg = test_config(temp_dir("restore"));
        let cfg_peers = ConfigFile::new(&cfg);
        let agent = Agent::new(cfg, Box::new(dp.clone()), fake_net(), ip("192.168.56.4"));
        let core = Core::new(agent);
        Box::new(cfg_peers).run(core.clone()).await;
        core.restore(State::default()).await;
        let agent = core.lock().await;
        assert_eq!(
            dp.take(),
            vec![Call::AddPeer(PeerSpec {
                subnet: net("10.103.200.0/24"),
                underlay_ip: ip("192.168.56.5"),
                vtep_mac: None
            })]
        );
        assert_eq!(
            agent.peers()[&net("10.103.200.0/24")].source,
            Source::Config
        );
    }
}
