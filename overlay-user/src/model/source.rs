//! Who put an entry in the tables.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Who put an entry in the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The config file.
    Config,
    /// The local API (overlayctl).
    Api,
    /// Found on the bridge by discovery.
    Discovered,
    /// Docker events.
    Docker,
    /// `overlayctl attach`-style plumbing of a container.
    Attach,
    /// Learned by the from-container program from a container's first
    /// packet to a peer; only listed, never reported by a source (a
    /// registration by any source replaces it).
    Learned,
    /// Another host's record in the cluster store (etcd).
    Cluster,
    /// Docker's network and IPAM plugin protocols (`-d ovl`).
    Plugin,
}

impl Source {
    /// Whether entries of this source are kept in the state file.
    /// Config entries come back from the config; discovered and Docker ones
    /// are found again; cluster peers are kept by the cluster source itself.
    pub fn persisted(self) -> bool {
        matches!(self, Source::Api | Source::Attach)
    }

    /// The lowercase name, as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Api => "api",
            Source::Discovered => "discovered",
            Source::Docker => "docker",
            Source::Attach => "attach",
            Source::Learned => "learned",
            Source::Cluster => "cluster",
            Source::Plugin => "plugin",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
