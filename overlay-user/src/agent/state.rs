//! The state file: peers and endpoints added through the API, kept in
//! `state_dir/state.json` so that a restart re-applies them.
//!
//! The file is replaced atomically (written to a temporary file in the same
//! directory, synced, then renamed over the old one).

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::agent::error::AgentError;
use crate::model::source::Source;

/// The file's name inside `state_dir`.
pub const STATE_FILE: &str = "state.json";

/// The format version written by this build.
pub const VERSION: u32 = 1;

/// A peer as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPeer {
    /// The remote container subnet.
    pub subnet: Ipv4Net,
    /// The remote host's underlay address.
    pub underlay_ip: Ipv4Addr,
    /// The remote VTEP MAC when given explicitly (aa:bb:cc:dd:ee:ff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<String>,
    /// Who added it.
    pub source: Source,
}

/// An endpoint as stored; the ifindex and MAC are looked up again on restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEndpoint {
    /// The container's address.
    pub ip: Ipv4Addr,
    /// The host-side interface.
    pub dev: String,
    /// Who added it.
    pub source: Source,
}

/// A local endpoint of an overlay network, as stored; the ifindex is
/// looked up again on restore, once the network is carried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredNetEndpoint {
    /// The network's VNI.
    pub vni: u32,
    /// The container's address.
    pub ip: Ipv4Addr,
    /// The container's MAC (aa:bb:cc:dd:ee:ff).
    pub mac: String,
    /// The host-side interface.
    pub dev: String,
    /// Who added it.
    pub source: Source,
}

/// The whole file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// Peers.
    #[serde(default)]
    pub peers: Vec<StoredPeer>,
    /// Endpoints.
    #[serde(default)]
    pub endpoints: Vec<StoredEndpoint>,
    /// Local endpoints of overlay networks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net_endpoints: Vec<StoredNetEndpoint>,
}

impl Default for State {
    fn default() -> Self {
        State {
            version: VERSION,
            peers: Vec::new(),
            endpoints: Vec::new(),
            net_endpoints: Vec::new(),
        }
    }
}

impl State {
    /// The same entries, peers by subnet and endpoints by address (the
    /// order the agent writes them in), for comparing two states.
    pub fn sorted(mut self) -> State {
        self.peers.sort_by_key(|p| p.subnet);
        self.endpoints.sort_by_key(|e| e.ip);
        self.net_endpoints.sort_by_key(|e| (e.vni, e.ip));
        self
    }
}

/// The state file's path for `state_dir`.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(STATE_FILE)
}

/// Read the state file; a missing file is an empty state.
pub fn load(path: &Path) -> Result<State, AgentError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(source) => {
            return Err(AgentError::StateRead {
                path: path.to_owned(),
                source,
            })
        }
    };
    let state: State = serde_json::from_slice(&bytes).map_err(|source| AgentError::StateParse {
        path: path.to_owned(),
        source,
    })?;
    if state.version > VERSION {
        return Err(AgentError::StateVersion {
            path: path.to_owned(),
            found: state.version,
            supported: VERSION,
        });
    }
    Ok(state)
}

/// Like [`load`], but a corrupt file (not JSON of the expected shape: cut
/// short, overwritten, edited wrongly) does not stop the start: it is moved
/// aside to `state.json.corrupt-<unix time>`, logged at error level with
/// both paths, and the agent starts from the config file alone. A file of a
/// newer version, or one that cannot be read, is still an error.
pub fn load_or_set_aside(path: &Path) -> Result<State, AgentError> {
    let error = match load(path) {
        Err(AgentError::StateParse { source, .. }) => source,
        other => return other,
    };
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = path
        .file_name()
        .map_or_else(|| STATE_FILE.into(), |n| n.to_string_lossy().into_owned());
    let mut aside = path.with_file_name(format!("{name}.corrupt-{secs}"));
    let mut n = 1;
    while aside.exists() {
        aside = path.with_file_name(format!("{name}.corrupt-{secs}-{n}"));
        n += 1;
    }
    std::fs::rename(path, &aside).map_err(|source| AgentError::StateSetAside {
        path: path.to_owned(),
        aside: aside.clone(),
        source,
    })?;
    log::error!(
        "state file {} is corrupt ({error}); moved it to {} and starting from the config file: \
         peers and endpoints added through the API or attach before are not restored",
        path.display(),
        aside.display()
    );
    Ok(State::default())
}

/// Replace the state file atomically, creating its directory if needed.
pub fn save(path: &Path, state: &State) -> Result<(), AgentError> {
    let werr = |source| AgentError::StateWrite {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir).map_err(werr)?;
    let mut json = serde_json::to_vec_pretty(state).expect("state serializes");
    json.push(b'\n');
    let tmp = path.with_extension("json.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        werr(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("overlay-state-test-{}", std::process::id()));
        let path = path_in(&dir.join("nested"));
        assert_eq!(load(&path).unwrap(), State::default());
        let state = State {
            version: VERSION,
            peers: vec![StoredPeer {
                subnet: "10.103.200.0/24".parse().unwrap(),
                underlay_ip: Ipv4Addr::new(192, 168, 56, 5),
                vtep_mac: Some("02:2a:c0:a8:38:05".into()),
                source: Source::Api,
            }],
            endpoints: vec![StoredEndpoint {
                ip: Ipv4Addr::new(10, 103, 100, 7),
                dev: "veth1".into(),
                source: Source::Attach,
            }],
            net_endpoints: vec![],
        };
        save(&path, &state).unwrap();
        assert_eq!(load(&path).unwrap(), state);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"source\": \"api\""), "{text}");
        assert!(!path.with_extension("json.tmp").exists());

        std::fs::write(&path, "{\"version\": 1, \"peers\": [").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("state file {} is corrupt: ", path.display())),
            "{e}"
        );
        std::fs::write(&path, "{\"version\": 9}").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(
            e.ends_with("has version 9; this overlayd understands version 1"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_moved_aside() {
        let dir = std::env::temp_dir().join(format!("overlay-state-aside-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = path_in(&dir);
        // Missing and valid files load as they are.
        assert_eq!(load_or_set_aside(&path).unwrap(), State::default());
        save(&path, &State::default()).unwrap();
        assert_eq!(load_or_set_aside(&path).unwrap(), State::default());
        let names = || -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(), ["state.json"]);
        // Cut short, then not even UTF-8: each moved aside, content intact.
        for bad in [
            &b"{\"version\": 1, \"peers\": [{\"sub"[..],
            &[0xff, 0xfe, 0x00],
        ] {
            std::fs::write(&path, bad).unwrap();
            let before = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            assert_eq!(load_or_set_aside(&path).unwrap(), State::default());
            assert!(!path.exists());
            let aside: Vec<String> = names()
                .into_iter()
                .filter(|n| n.starts_with("state.json.corrupt-"))
                .collect();
            let newest = aside.last().unwrap();
            let secs: u64 = newest["state.json.corrupt-".len()..]
                .split('-')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!(secs >= before && secs <= before + 5, "{newest}");
            assert_eq!(std::fs::read(dir.join(newest)).unwrap(), bad);
        }
        assert_eq!(names().len(), 2, "{:?}", names());
        // A newer version is not corrupt: refused, left where it is.
        std::fs::write(&path, "{\"version\": 9}").unwrap();
        assert!(matches!(
            load_or_set_aside(&path),
            Err(AgentError::StateVersion { found: 9, .. })
        ));
        assert!(path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
