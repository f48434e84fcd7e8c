//! The kernel dataplane's errors, and how netlink answers are read.

use crate::dataplane::DataplaneError;

/// Errors while setting up or changing the kernel dataplane.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    /// An interface the configuration names does not exist or is unusable.
    #[error("interface {name}: {reason}")]
    Interface {
        /// Its name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The kernel refused a netlink request.
    #[error("{what}: {source}")]
    Request {
        /// What was asked, e.g. "adding the route to 10.103.200.0/24".
        what: String,
        /// What rtnetlink reported (boxed: it embeds a whole netlink message).
        #[source]
        source: Box<rtnetlink::Error>,
    },
}

impl From<KernelError> for DataplaneError {
    fn from(e: KernelError) -> Self {
        DataplaneError::Netlink(e.to_string())
    }
}

pub(crate) fn request(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> KernelError {
    let what = what.into();
    move |source| KernelError::Request {
        what,
        source: Box::new(source),
    }
}

pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

/// "No such entry" answers to a delete (or a lookup): success for an idempotent delete.
pub(crate) fn is_missing(e: &rtnetlink::Error) -> bool {
    matches!(errno(e), Some(libc::ENOENT | libc::ESRCH | libc::ENODEV))
}
