//! How the kernel dataplane reads netlink's answers and reports failures.

use crate::dataplane::DataplaneError;

/// A failure inside one of the [`Dataplane`](crate::dataplane::Dataplane)
/// methods, as the agent sees it: `netlink: ` and the whole message.
pub(crate) fn netlink_failure(e: DataplaneError) -> DataplaneError {
    match e {
        e @ (DataplaneError::Netlink(_)
        | DataplaneError::Interface { .. }
        | DataplaneError::ForeignRoute { .. }
        | DataplaneError::ForeignDevice { .. }) => e,
        e => DataplaneError::Netlink(e.to_string()),
    }
}

pub(crate) fn request(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> DataplaneError {
    let what = what.into();
    move |source| DataplaneError::Request {
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
