//! The saved lease, `state_dir/cluster.json`: this host's subnet, etcd
//! lease and the cluster settings, with the last-known hosts, so that a
//! restart gets the same subnet back and, while etcd is down, starts with
//! the peers, overlay networks and remote network endpoints it had. The file is replaced atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::model::cluster::{subnet_env, ClusterSettings, HostRecord};
use crate::model::overlay_network::{EndpointRecord, NetworkSpec};
use crate::sources::cluster::ClusterError;

/// The file's name inside `state_dir`.
pub const FILE: &str = "cluster.json";
/// The format version written by this build.
pub const VERSION: u32 = 1;

/// What is kept of the cluster across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedLease {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// The key prefix it belongs to.
    pub prefix: String,
    /// This host's name.
    pub name: String,
    /// The leased subnet.
    pub subnet: Ipv4Net,
    /// The etcd lease it was last bound to.
    pub lease_id: i64,
    /// The cluster settings then.
    pub settings: ClusterSettings,
    /// The other hosts, as last seen.
    #[serde(default)]
    pub hosts: Vec<HostRecord>,
    /// The overlay networks, as last seen.
    #[serde(default)]
    pub networks: Vec<NetworkSpec>,
    /// The other hosts' endpoint records on them, as last seen.
    #[serde(default)]
    pub net_endpoints: Vec<EndpointRecord>,
}

/// The saved lease's path for `state_dir`.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Read the saved lease; a missing file is `None`.
pub fn load(path: &Path) -> Result<Option<SavedLease>, ClusterError> {
    let err = |reason: String| ClusterError::Saved {
        path: path.to_owned(),
        reason,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(format!("cannot read it: {e}"))),
    };
    let saved: SavedLease =
        serde_json::from_str(&text).map_err(|e| err(format!("corrupt: {e}; fix or remove it")))?;
    if saved.version > VERSION {
        return Err(err(format!(
            "has version {}; this overlayd understands version {VERSION}",
            saved.version
        )));
    }
    Ok(Some(saved))
}

/// Write `bytes` to `path` atomically (temporary file, sync, rename), creating the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Replace the saved lease.
pub fn save(path: &Path, saved: &SavedLease) -> Result<(), ClusterError> {
    let mut json = serde_json::to_vec_pretty(saved).expect("the saved lease serializes");
    json.push(b'\n');
    write_atomic(path, &json).map_err(|e| ClusterError::Saved {
        path: path.to_owned(),
        reason: format!("cannot write it: {e}"),
    })
}

/// Remove the saved lease (a clean leave); a missing file is fine.
pub fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("removing {}: {e}", path.display()),
    }
}

/// Write the subnet file for Docker: the pool, this host's subnet in gateway form, the MTU.
pub fn write_subnet_file(
    path: &Path,
    pool: Ipv4Net,
    subnet: Ipv4Net,
    mtu: u32,
) -> Result<(), ClusterError> {
    write_atomic(path, subnet_env(pool, subnet, mtu).as_bytes()).map_err(|source| {
        ClusterError::SubnetFile {
            path: path.to_owned(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("overlay-saved-lease-{}", std::process::id()));
        let path = path_in(&dir.join("nested"));
        assert_eq!(load(&path).unwrap(), None);
        let saved = SavedLease {
            version: VERSION,
            prefix: "/overlay".into(),
            name: "h1".into(),
            subnet: "10.103.3.0/24".parse().unwrap(),
            lease_id: 0x1234,
            settings: ClusterSettings {
                pool: "10.103.0.0/16".parse().unwrap(),
                subnet_len: 24,
                vni: 42,
                port: 4789,
            },
            hosts: vec![HostRecord {
                name: "h2".into(),
                underlay_ip: Ipv4Addr::new(192, 168, 56, 5),
                subnet: "10.103.4.0/24".parse().unwrap(),
                vtep_mac: "02:2a:c0:a8:38:05".into(),
                mode: None,
                version: "0.1.0".into(),
            }],
            networks: vec![NetworkSpec {
                name: "web".into(),
                vni: 4096,
                subnet: "10.104.0.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(10, 104, 0, 1),
            }],
            net_endpoints: vec![EndpointRecord {
                network: "web".into(),
                ip: Ipv4Addr::new(10, 104, 0, 2),
                mac: [2, 0, 0, 0, 0, 2],
                host: "h2".into(),
                underlay_ip: Ipv4Addr::new(192, 168, 56, 5),
                container: "abc".into(),
                name: "a".into(),
                aliases: vec![],
            }],
        };
        save(&path, &saved).unwrap();
        assert_eq!(load(&path).unwrap(), Some(saved));
        std::fs::write(&path, "{").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("saved lease {}: corrupt: ", path.display())),
            "{e}"
        );
        remove(&path);
        remove(&path);
        let env = dir.join("run/subnet.env");
        write_subnet_file(
            &env,
            "10.103.0.0/16".parse().unwrap(),
            "10.103.3.0/24".parse().unwrap(),
            1450,
        )
        .unwrap();
        assert!(std::fs::read_to_string(&env)
            .unwrap()
            .contains("OVERLAY_SUBNET=10.103.3.1/24\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
