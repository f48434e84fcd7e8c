//! The `[docker]` section: following the Docker Engine API (containers on
//! the default bridge become endpoints) and serving Docker's network and
//! IPAM plugin `ovl` for the cluster's overlay networks.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::validation::InputError;

/// Where Docker looks for plugin sockets unless `[docker] plugin_dir` says otherwise.
pub const DEFAULT_PLUGIN_DIR: &str = "/run/docker/plugins";
/// The plugin's name: `docker network create -d ovl --ipam-driver ovl`.
pub const PLUGIN_NAME: &str = "ovl";

/// The `[docker]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// Follow Docker's events (off unless set).
    #[serde(default)]
    pub enabled: bool,
    /// The Docker Engine API socket.
    #[serde(default = "default_docker_socket")]
    pub socket: PathBuf,
    /// The Docker networks whose endpoints join the overlay (by name, e.g. "bridge").
    #[serde(default = "default_docker_networks")]
    pub networks: Vec<String>,
    /// Serve the network and IPAM plugin `ovl` and create the cluster's
    /// overlay networks on this host's Docker (off unless set; needs `[cluster]`).
    #[serde(default)]
    pub plugin: bool,
    /// The directory Docker finds plugin sockets in; the plugin listens on
    /// `<plugin_dir>/ovl.sock`.
    #[serde(default = "default_plugin_dir")]
    pub plugin_dir: PathBuf,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            enabled: false,
            socket: default_docker_socket(),
            networks: default_docker_networks(),
            plugin: false,
            plugin_dir: default_plugin_dir(),
        }
    }
}

fn default_docker_socket() -> PathBuf {
    PathBuf::from("/var/run/docker.sock")
}

fn default_docker_networks() -> Vec<String> {
    vec!["bridge".into()]
}

fn default_plugin_dir() -> PathBuf {
    PathBuf::from(DEFAULT_PLUGIN_DIR)
}

impl DockerConfig {
    /// Check the section's values (also when disabled, so that enabling it
    /// later works); `clustered`: whether the file has a `[cluster]` section.
    pub fn validate(&self, clustered: bool) -> Result<(), InputError> {
        if self.socket.as_os_str().is_empty() {
            return Err(InputError::DockerEmpty {
                field: "socket",
                value: String::new(),
                expected: "the Docker API socket, like /var/run/docker.sock",
            });
        }
        if self.networks.is_empty() {
            return Err(InputError::DockerNoNetworks);
        }
        if let Some(n) = self.networks.iter().find(|n| n.trim().is_empty()) {
            return Err(InputError::DockerEmpty {
                field: "networks",
                value: n.clone(),
                expected: "Docker network names, like \"bridge\"",
            });
        }
        let dir = self.plugin_dir.to_string_lossy();
        if !self.plugin_dir.is_absolute() || dir.trim() != dir || self.plugin_dir == Path::new("/")
        {
            return Err(InputError::DockerPluginDir(self.plugin_dir.clone()));
        }
        if self.plugin && !clustered {
            return Err(InputError::DockerPluginNeedsCluster);
        }
        Ok(())
    }

    /// The plugin's socket, `<plugin_dir>/ovl.sock`.
    pub fn plugin_socket(&self) -> PathBuf {
        self.plugin_dir.join(format!("{PLUGIN_NAME}.sock"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of(edit: impl FnOnce(&mut DockerConfig), clustered: bool) -> String {
        let mut d = DockerConfig::default();
        edit(&mut d);
        d.validate(clustered).unwrap_err().to_string()
    }

    #[test]
    fn bad_values() {
        assert_eq!(
            err_of(|c| c.networks.clear(), false),
            "docker.networks is empty; expected the Docker networks to watch, like [\"bridge\"]"
        );
        assert_eq!(
            err_of(|c| c.networks = vec![" ".into()], false),
            "docker.networks = \" \" is empty; expected Docker network names, like \"bridge\""
        );
        assert_eq!(
            err_of(|c| c.socket = PathBuf::new(), false),
            "docker.socket = \"\" is empty; expected the Docker API socket, like /var/run/docker.sock"
        );
        for bad in ["", "plugins", "/", " /run/x"] {
            assert_eq!(
                err_of(|c| c.plugin_dir = PathBuf::from(bad), true),
                format!("docker.plugin_dir = {bad:?} is not usable; expected an absolute directory like /run/docker/plugins, where dockerd looks for plugin sockets")
            );
        }
        let mut d = DockerConfig {
            plugin: true,
            ..DockerConfig::default()
        };
        d.validate(true).unwrap();
        d.plugin_dir = PathBuf::from("/run/lab-h1/plugins");
        d.validate(true).unwrap();
    }
}
