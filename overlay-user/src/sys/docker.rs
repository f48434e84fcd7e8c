//! The Docker Engine API, through bollard (never the `docker` CLI):
//! connecting, inspecting a container, and finding the host side of its
//! veths from inside its network namespace.
//!
//! Both the Docker source (which follows events) and the attach source
//! (which needs a container's network namespace) use this.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::ContainerInspectResponse;
use bollard::Docker;
use futures::TryStreamExt;
use netlink_packet_route::link::LinkAttribute;

use crate::sys::error::SysError;
use crate::sys::netns;

/// How long one Docker API request may take (the event stream is not limited).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Wraps a bollard error with the socket it came from.
pub fn api_error(socket: &Path) -> impl Fn(BollardError) -> SysError + '_ {
    move |source| SysError::DockerApi {
        socket: socket.to_owned(),
        source: Box::new(source),
    }
}

/// Connect to the Docker API at `socket` and agree on an API version
/// (dockerd 20.10 speaks 1.41 at most; bollard would ask for newer).
pub async fn connect(socket: &Path) -> Result<Docker, SysError> {
    let docker = Docker::connect_with_unix(
        &socket.to_string_lossy(),
        REQUEST_TIMEOUT.as_secs(),
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(api_error(socket))?;
    docker.negotiate_version().await.map_err(api_error(socket))
}

/// Inspect container `name` (name or ID); `None` if there is no such container.
pub async fn inspect(
    docker: &Docker,
    socket: &Path,
    name: &str,
) -> Result<Option<ContainerInspectResponse>, SysError> {
    match docker.inspect_container(name, None).await {
        Ok(c) => Ok(Some(c)),
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(api_error(socket)(e)),
    }
}

/// A container's identity and, while it runs, its init process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// Full ID.
    pub id: String,
    /// Name, without Docker's leading '/'.
    pub name: String,
    /// PID of its init process while it runs.
    pub pid: Option<u32>,
}

/// The ID, name and (if it runs) PID in `inspect`.
pub fn container(inspect: &ContainerInspectResponse) -> Container {
    let id = inspect.id.clone().unwrap_or_default();
    let name = inspect
        .name
        .as_deref()
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_else(|| short_id(&id).to_string());
    let running = inspect
        .state
        .as_ref()
        .is_some_and(|s| s.running == Some(true));
    let pid = inspect
        .state
        .as_ref()
        .and_then(|s| s.pid)
        .filter(|&p| running && p > 0)
        .and_then(|p| u32::try_from(p).ok());
    Container { id, name, pid }
}

/// The first 12 characters of a container ID, as Docker shows it.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Inside the network namespace of `pid`: for every interface with a MAC
/// and a peer link (a veth), MAC -> the peer's ifindex (in the peer's namespace).
pub async fn veth_peers(pid: u32) -> Result<HashMap<[u8; 6], u32>, String> {
    let path = netns::of_pid(pid);
    let result = netns::run_in(&path, |handle| {
        Box::pin(async move {
            let msgs: Vec<_> = handle
                .link()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(|e| format!("listing interfaces: {e}"))?;
            let mut peers = HashMap::new();
            for msg in msgs {
                let mut mac = None;
                let mut peer = None;
                for attr in &msg.attributes {
                    match attr {
                        LinkAttribute::Address(a) => mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                        LinkAttribute::Link(i) if *i != 0 => peer = Some(*i),
                        _ => {}
                    }
                }
                if let (Some(mac), Some(peer)) = (mac, peer) {
                    peers.insert(mac, peer);
                }
            }
            Ok::<_, String>(peers)
        })
    })
    .await;
    match result {
        Ok(inner) => inner,
        Err(e) => Err(e.to_string()),
    }
}
