//! Firewall rules the kernel dataplane needs on hosts where the FORWARD
//! policy is DROP (dockerd sets it when it enables IP forwarding) and where
//! Docker masquerades everything its bridge sends elsewhere.
//!
//! Like flannel, overlayd then accepts what is forwarded into and out of
//! its VXLAN device, and exempts what leaves through it from masquerading
//! (so containers see each other's real addresses):
//!
//! ```text
//! -t filter -I FORWARD 1 -i ovl.42 -m comment --comment overlayd -j ACCEPT
//! -t filter -I FORWARD 1 -o ovl.42 -m comment --comment overlayd -j ACCEPT
//! -t nat -I POSTROUTING 1 -o ovl.42 -m comment --comment overlayd -j RETURN
//! ```
//!
//! The rules are made with the `iptables` crate, which runs the `iptables`
//! command: that way they land in whichever backend (nft or legacy) Docker's
//! own rules are in, which is what decides the FORWARD verdict. The BPF
//! dataplane needs none of this: it encapsulates at the container's veth
//! before the bridge and netfilter, and delivers with `bpf_redirect_peer`.

use std::time::Duration;

use crate::dataplane::DataplaneError;

/// One rule: table, chain, rule specification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// `filter` or `nat`.
    pub table: &'static str,
    /// `FORWARD` or `POSTROUTING`.
    pub chain: &'static str,
    /// The match and target, as iptables takes them.
    pub spec: String,
}

/// How often [`keep`] re-checks the rules.
pub const RECHECK: Duration = Duration::from_secs(5);

/// The rules for overlay device `device`.
pub fn rules(device: &str) -> Vec<Rule> {
    vec![
        Rule {
            table: "filter",
            chain: "FORWARD",
            spec: format!("-i {device} -m comment --comment overlayd -j ACCEPT"),
        },
        Rule {
            table: "filter",
            chain: "FORWARD",
            spec: format!("-o {device} -m comment --comment overlayd -j ACCEPT"),
        },
        Rule {
            table: "nat",
            chain: "POSTROUTING",
            spec: format!("-o {device} -m comment --comment overlayd -j RETURN"),
        },
    ]
}

fn ipt_err(what: impl Into<String>) -> impl FnOnce(Box<dyn std::error::Error>) -> DataplaneError {
    let what = what.into();
    move |e| DataplaneError::Iptables {
        what,
        reason: e.to_string(),
    }
}

fn ensure_blocking(device: &str) -> Result<usize, DataplaneError> {
    let ipt = iptables::new(false).map_err(ipt_err("starting"))?;
    let mut added = 0;
    for r in rules(device) {
        let what = format!("-t {} -I {} 1 {}", r.table, r.chain, r.spec);
        if !ipt
            .exists(r.table, r.chain, &r.spec)
            .map_err(ipt_err(what.clone()))?
        {
            ipt.insert(r.table, r.chain, &r.spec, 1)
                .map_err(ipt_err(what))?;
            added += 1;
        }
    }
    Ok(added)
}

fn remove_blocking(device: &str) -> Result<usize, DataplaneError> {
    let ipt = iptables::new(false).map_err(ipt_err("starting"))?;
    let mut removed = 0;
    for r in rules(device) {
        let what = format!("-t {} -D {} {}", r.table, r.chain, r.spec);
        while ipt
            .exists(r.table, r.chain, &r.spec)
            .map_err(ipt_err(what.clone()))?
        {
            ipt.delete(r.table, r.chain, &r.spec)
                .map_err(ipt_err(what.clone()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DataplaneError> + Send + 'static,
) -> Result<T, DataplaneError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DataplaneError::Task(e.to_string()))?
}

/// Add the missing rules for `device`; returns how many were added.
pub async fn ensure(device: &str) -> Result<usize, DataplaneError> {
    let device = device.to_string();
    blocking(move || ensure_blocking(&device)).await
}

/// Remove every copy of the rules for `device`; returns how many were removed.
pub async fn remove(device: &str) -> Result<usize, DataplaneError> {
    let device = device.to_string();
    blocking(move || remove_blocking(&device)).await
}

/// Keep the rules for `device` in place: check now and every [`RECHECK`]
/// (someone may flush the chains, e.g. a firewall reload). Logs each change
/// of outcome once. Runs until the task is aborted.
pub async fn keep(device: String) {
    let mut last: Option<Result<(), String>> = None;
    loop {
        let outcome = match ensure(&device).await {
            Ok(n) => {
                if n > 0 {
                    log::info!(
                        "firewall: {n} rule(s) added so that traffic forwarded through {device} is accepted and not masqueraded"
                    );
                }
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        };
        if last.as_ref() != Some(&outcome) {
            if let Err(e) = &outcome {
                log::warn!(
                    "firewall: {e}; where the FORWARD policy is DROP (Docker sets it), traffic through {device} is dropped"
                );
            }
            last = Some(outcome);
        }
        tokio::time::sleep(RECHECK).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_name_the_device() {
        let r = rules("ovl.42");
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[0].spec,
            "-i ovl.42 -m comment --comment overlayd -j ACCEPT"
        );
        assert_eq!((r[2].table, r[2].chain), ("nat", "POSTROUTING"));
    }
}
