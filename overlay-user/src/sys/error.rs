//! The system layer's one error type.

use std::path::PathBuf;

use bollard::errors::Error as BollardError;

/// Errors of the system helpers: netlink, network namespaces, veth
/// plumbing and the Docker API.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    /// No interface has this name.
    #[error("no interface named {0}")]
    NotFound(String),
    /// No interface has this index.
    #[error("no interface with index {0}")]
    IndexNotFound(u32),
    /// The kernel refused or the request failed.
    #[error("netlink {what}: {source}")]
    Request {
        /// What was asked, e.g. "dump of links".
        what: String,
        /// What rtnetlink reported (boxed: the error embeds a whole netlink message).
        #[source]
        source: Box<rtnetlink::Error>,
    },

    /// A network namespace file could not be opened (no such process or namespace).
    #[error("cannot open network namespace {}: {source}", path.display())]
    NetnsOpen {
        /// `/proc/PID/ns/net` or `/run/netns/NAME`.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// `setns(2)` refused to enter a network namespace.
    #[error("cannot enter network namespace {}: {source}", path.display())]
    NetnsEnter {
        /// The namespace file.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// The helper thread of a namespace, its runtime or its netlink socket could not be set up.
    #[error("network namespace {}: {reason}", path.display())]
    NetnsSetup {
        /// The namespace file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },

    /// The Docker API could not be reached, or answered with an error.
    #[error("Docker API at {}: {source}", socket.display())]
    DockerApi {
        /// The socket.
        socket: PathBuf,
        /// What bollard reported.
        #[source]
        source: Box<BollardError>,
    },
    /// Docker's event stream ended (dockerd stopped).
    #[error("Docker API at {}: the event stream ended", socket.display())]
    DockerStreamEnded {
        /// The socket.
        socket: PathBuf,
    },
    /// No container has this name or ID.
    #[error("no container named {0}")]
    NoContainer(String),
    /// The container exists but does not run (it has no network namespace).
    #[error("container {0} is not running")]
    NotRunning(String),
    /// The container's interfaces could not be read.
    #[error("container {container}: {reason}")]
    ContainerInterfaces {
        /// Its name.
        container: String,
        /// What failed.
        reason: String,
    },

    /// A read-only probe of the host (`overlayctl doctor`) could not be made.
    #[error("{what}: {reason}")]
    Probe {
        /// What was being read, e.g. "reading /proc/net/udp".
        what: String,
        /// What went wrong.
        reason: String,
    },

    /// A netlink change (veth plumbing) was refused.
    #[error("{what}: {reason}")]
    Plumbing {
        /// What was being done.
        what: String,
        /// What the kernel reported.
        reason: String,
    },
}

impl SysError {
    /// Whether the error means the connection to Docker is lost (rather than
    /// a problem with one container).
    pub fn is_connection(&self) -> bool {
        match self {
            SysError::DockerApi { source, .. } => !matches!(
                **source,
                BollardError::DockerResponseServerError { .. }
                    | BollardError::JsonDataError { .. }
                    | BollardError::JsonSerdeError { .. }
            ),
            SysError::DockerStreamEnded { .. } => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn connection_errors() {
        let s = PathBuf::from("/x.sock");
        let server = SysError::DockerApi {
            socket: s.clone(),
            source: Box::new(BollardError::DockerResponseServerError {
                status_code: 500,
                message: "boom".into(),
            }),
        };
        assert!(!server.is_connection());
        let gone = SysError::DockerApi {
            socket: s.clone(),
            source: Box::new(BollardError::SocketNotFoundError("/x.sock".into())),
        };
        assert!(gone.is_connection());
        assert!(SysError::DockerStreamEnded { socket: s }.is_connection());
        assert!(!SysError::NoContainer("x".into()).is_connection());
    }
}
