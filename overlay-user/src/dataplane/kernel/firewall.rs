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
//! VXLAN carries no authentication, and a kernel VXLAN device accepts a
//! frame from any source. So overlayd also accepts VXLAN only from its
//! peers (the VXLAN filter), in a chain of its own kept in step with the
//! peers (`-s` per peer host, then a counted DROP):
//!
//! ```text
//! -t filter -N OVERLAY-VXLAN
//! -t filter -A OVERLAY-VXLAN -s 192.168.56.5/32 -j RETURN
//! -t filter -A OVERLAY-VXLAN -j DROP
//! -t filter -I INPUT 1 -p udp -m udp --dport 4789 -m comment --comment overlayd -j OVERLAY-VXLAN
//! ```
//!
//! The rules are made with the `iptables` crate, which runs the `iptables`
//! command: that way they land in whichever backend (nft or legacy) Docker's
//! own rules are in, which is what decides the FORWARD verdict. The BPF
//! dataplane needs no FORWARD rules: it encapsulates at the container's veth
//! before the bridge and netfilter, and delivers with `bpf_redirect_peer`;
//! its tc program drops VXLAN from strangers itself (`unknown_peer`), but
//! with `encap = "device"` a VXLAN device listens on the port, so it takes
//! the VXLAN filter too.
//!
//! [`Firewall`] is the handle a dataplane owns: it installs the rules at
//! start, updates the filter on every peer change, re-checks everything
//! every [`RECHECK`] (someone may flush the chains, e.g. a firewall reload)
//! once [`Firewall::keep`] was called, and removes it all on `--cleanup`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
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

/// How often [`Firewall::keep`] re-checks the rules.
pub const RECHECK: Duration = Duration::from_secs(5);

/// The chain of the VXLAN filter.
pub const VXLAN_CHAIN: &str = "OVERLAY-VXLAN";

/// The INPUT rule that sends UDP to the VXLAN port `port` through
/// [`VXLAN_CHAIN`], as `iptables -S` prints it (without `-A INPUT`).
pub fn vxlan_hook(port: u16) -> String {
    format!("-p udp -m udp --dport {port} -m comment --comment overlayd -j {VXLAN_CHAIN}")
}

/// The rules of [`VXLAN_CHAIN`] for the peer hosts `peers`, in order, as
/// `iptables -S` prints them: a RETURN per peer host, then DROP.
pub fn vxlan_chain(peers: &BTreeSet<Ipv4Addr>) -> Vec<String> {
    peers
        .iter()
        .map(|ip| format!("-s {ip}/32 -j RETURN"))
        .chain([DROP.to_string()])
        .collect()
}

const DROP: &str = "-j DROP";

/// The FORWARD and POSTROUTING rules for overlay device `device`.
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

fn iptables() -> Result<iptables::IPTables, DataplaneError> {
    iptables::new(false).map_err(ipt_err("starting"))
}

fn ensure_forward(ipt: &iptables::IPTables, device: &str) -> Result<usize, DataplaneError> {
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

fn remove_forward(ipt: &iptables::IPTables, device: &str) -> Result<usize, DataplaneError> {
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

/// The rules of `chain` in `filter`, without the `-A CHAIN ` prefix.
fn chain_rules(ipt: &iptables::IPTables, chain: &str) -> Result<Vec<String>, DataplaneError> {
    let prefix = format!("-A {chain} ");
    Ok(ipt
        .list("filter", chain)
        .map_err(ipt_err(format!("-S {chain}")))?
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect())
}

/// Makes [`VXLAN_CHAIN`] accept exactly `peers` (with `prune`; without it,
/// hosts an earlier run accepted stay until the agent has re-added its
/// peers) and drop the rest; with `hook`, also makes sure the chain exists
/// and INPUT sends UDP to `port` (only) through it. The DROP rule and its
/// counter stay in place. Returns how many rules changed.
fn sync_vxlan(
    ipt: &iptables::IPTables,
    port: u16,
    peers: &BTreeSet<Ipv4Addr>,
    prune: bool,
    hook: bool,
) -> Result<usize, DataplaneError> {
    let mut changed = 0;
    if hook
        && !ipt
            .chain_exists("filter", VXLAN_CHAIN)
            .map_err(ipt_err(format!("-L {VXLAN_CHAIN}")))?
    {
        ipt.new_chain("filter", VXLAN_CHAIN)
            .map_err(ipt_err(format!("-N {VXLAN_CHAIN}")))?;
    }
    let wanted = vxlan_chain(peers);
    let have = chain_rules(ipt, VXLAN_CHAIN)?;
    if have != wanted {
        for spec in &wanted[..wanted.len() - 1] {
            if !have.contains(spec) {
                ipt.insert("filter", VXLAN_CHAIN, spec, 1)
                    .map_err(ipt_err(format!("-I {VXLAN_CHAIN} 1 {spec}")))?;
                changed += 1;
            }
        }
        if prune {
            for spec in have.iter().filter(|s| !wanted.contains(s)) {
                ipt.delete("filter", VXLAN_CHAIN, spec)
                    .map_err(ipt_err(format!("-D {VXLAN_CHAIN} {spec}")))?;
                changed += 1;
            }
        }
        // DROP last: anything appended after it by hand goes before it.
        let now = chain_rules(ipt, VXLAN_CHAIN)?;
        if now.last().map(String::as_str) != Some(DROP) {
            ipt.append("filter", VXLAN_CHAIN, DROP)
                .map_err(ipt_err(format!("-A {VXLAN_CHAIN} {DROP}")))?;
            changed += 1;
            for _ in now.iter().filter(|s| *s == DROP) {
                ipt.delete("filter", VXLAN_CHAIN, DROP)
                    .map_err(ipt_err(format!("-D {VXLAN_CHAIN} {DROP}")))?;
            }
        }
    }
    if !hook {
        return Ok(changed);
    }
    // The hook last, so the chain is complete before it sees a packet.
    let hook = vxlan_hook(port);
    let target = format!("-j {VXLAN_CHAIN}");
    let mut hooked = false;
    for spec in chain_rules(ipt, "INPUT")? {
        if spec == hook {
            hooked = true;
        } else if spec.ends_with(&target) {
            // Another port: left by an earlier configuration.
            ipt.delete("filter", "INPUT", &spec)
                .map_err(ipt_err(format!("-D INPUT {spec}")))?;
            changed += 1;
        }
    }
    if !hooked {
        ipt.insert("filter", "INPUT", &hook, 1)
            .map_err(ipt_err(format!("-I INPUT 1 {hook}")))?;
        changed += 1;
    }
    Ok(changed)
}

/// Unhooks and deletes [`VXLAN_CHAIN`]; returns how many rules went.
fn remove_vxlan(ipt: &iptables::IPTables) -> Result<usize, DataplaneError> {
    let target = format!("-j {VXLAN_CHAIN}");
    let mut removed = 0;
    for spec in chain_rules(ipt, "INPUT")? {
        if spec.ends_with(&target) {
            ipt.delete("filter", "INPUT", &spec)
                .map_err(ipt_err(format!("-D INPUT {spec}")))?;
            removed += 1;
        }
    }
    if ipt
        .chain_exists("filter", VXLAN_CHAIN)
        .map_err(ipt_err(format!("-L {VXLAN_CHAIN}")))?
    {
        removed += chain_rules(ipt, VXLAN_CHAIN)?.len();
        ipt.flush_chain("filter", VXLAN_CHAIN)
            .map_err(ipt_err(format!("-F {VXLAN_CHAIN}")))?;
        ipt.delete_chain("filter", VXLAN_CHAIN)
            .map_err(ipt_err(format!("-X {VXLAN_CHAIN}")))?;
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

/// What the rules are made from, shared with the keeper task.
struct Wanted {
    /// The VXLAN device that needs the FORWARD rules (kernel mode), if any.
    device: Option<String>,
    /// The VXLAN port to filter.
    port: u16,
    /// The peer hosts, and whether hosts that are not peers are removed
    /// from the filter yet (only once the agent has re-added its peers).
    peers: Mutex<(BTreeSet<Ipv4Addr>, bool)>,
    /// Held while iptables runs, so that two syncs never interleave; with
    /// the command, found once.
    busy: Mutex<Option<iptables::IPTables>>,
}

impl Wanted {
    /// Brings every rule in line (`all`), or only the peers in the VXLAN
    /// filter's chain; returns how many rules changed.
    fn sync(&self, all: bool) -> Result<usize, DataplaneError> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let (peers, prune) = self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let ipt = match busy.take() {
            Some(ipt) => ipt,
            None => iptables()?,
        };
        let mut changed = 0;
        if all {
            if let Some(dev) = &self.device {
                changed += ensure_forward(&ipt, dev)?;
            }
        }
        let result = sync_vxlan(&ipt, self.port, &peers, prune, all);
        *busy = Some(ipt);
        Ok(changed + result?)
    }
}

/// The firewall rules of one dataplane: the FORWARD rules of its VXLAN
/// device (kernel mode) and the VXLAN filter. Dropping it stops the keeper
/// and leaves the rules in place (forwarding goes on across restarts).
pub struct Firewall {
    wanted: Arc<Wanted>,
    keeper: Option<tokio::task::JoinHandle<()>>,
}

impl Firewall {
    /// The rules for VXLAN on `port`, with the FORWARD rules of `device` if given.
    pub fn new(device: Option<String>, port: u16) -> Firewall {
        Firewall {
            wanted: Arc::new(Wanted {
                device,
                port,
                peers: Mutex::new((BTreeSet::new(), false)),
                busy: Mutex::new(None),
            }),
            keeper: None,
        }
    }

    /// Installs the rules now; peer hosts accepted by an earlier run stay
    /// accepted until [`Firewall::keep`]. Returns how many rules changed.
    pub async fn install(&self) -> Result<usize, DataplaneError> {
        let wanted = self.wanted.clone();
        blocking(move || wanted.sync(true)).await
    }

    /// The peer hosts are now `peers`: the filter accepts VXLAN from them
    /// (and, once [`Firewall::keep`] was called, from no other host) when
    /// this returns. Runs iptables only when the set of hosts changed.
    pub async fn set_peers(&self, peers: BTreeSet<Ipv4Addr>) -> Result<usize, DataplaneError> {
        {
            let mut wanted = self.wanted.peers.lock().unwrap_or_else(|e| e.into_inner());
            if wanted.0 == peers {
                return Ok(0);
            }
            wanted.0 = peers;
        }
        let wanted = self.wanted.clone();
        blocking(move || wanted.sync(false)).await
    }

    /// From now on (the agent has re-added its peers) accept no host but the
    /// peers, and keep the rules in place: check at once and every
    /// [`RECHECK`], logging each change of outcome once. Idempotent.
    pub fn keep(&mut self) {
        if self.keeper.is_some() {
            return;
        }
        self.wanted
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1 = true;
        self.keeper = Some(tokio::spawn(keeper(self.wanted.clone())));
    }

    /// Stops the keeper and removes every rule (`--cleanup`).
    pub async fn remove(&mut self) -> Result<usize, DataplaneError> {
        if let Some(k) = self.keeper.take() {
            k.abort();
        }
        let wanted = self.wanted.clone();
        blocking(move || {
            let _busy = wanted.busy.lock().unwrap_or_else(|e| e.into_inner());
            let ipt = iptables()?;
            let mut removed = 0;
            if let Some(dev) = &wanted.device {
                removed += remove_forward(&ipt, dev)?;
            }
            removed += remove_vxlan(&ipt)?;
            Ok(removed)
        })
        .await
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        if let Some(k) = self.keeper.take() {
            k.abort();
        }
    }
}

async fn keeper(wanted: Arc<Wanted>) {
    let what = match &wanted.device {
        Some(dev) => format!(
            "traffic forwarded through {dev} is accepted and not masqueraded, and VXLAN to port {} only from peers",
            wanted.port
        ),
        None => format!("VXLAN to port {} is accepted only from peers", wanted.port),
    };
    let mut last: Option<Result<(), String>> = None;
    loop {
        let w = wanted.clone();
        let outcome = match blocking(move || w.sync(true)).await {
            Ok(n) => {
                if n > 0 {
                    log::info!("firewall: {n} rule(s) changed so that {what}");
                }
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        };
        if last.as_ref() != Some(&outcome) {
            if let Err(e) = &outcome {
                log::warn!(
                    "firewall: {e}; without its rules, VXLAN from any host is accepted, and where the FORWARD policy is DROP (Docker sets it) overlay traffic is dropped"
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

    #[test]
    fn vxlan_filter_rules() {
        let peers: BTreeSet<Ipv4Addr> = [[192, 168, 56, 6], [192, 168, 56, 5]]
            .into_iter()
            .map(Ipv4Addr::from)
            .collect();
        assert_eq!(
            vxlan_chain(&peers),
            [
                "-s 192.168.56.5/32 -j RETURN",
                "-s 192.168.56.6/32 -j RETURN",
                "-j DROP"
            ]
        );
        assert_eq!(vxlan_chain(&BTreeSet::new()), ["-j DROP"]);
        assert_eq!(
            vxlan_hook(8472),
            "-p udp -m udp --dport 8472 -m comment --comment overlayd -j OVERLAY-VXLAN"
        );
    }
}
