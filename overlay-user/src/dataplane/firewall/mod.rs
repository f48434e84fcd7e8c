//! The iptables rules of both dataplanes: what the kernel dataplane's
//! per-host VXLAN device needs, the VXLAN filter, and the overlay networks'
//! NAT and isolation.
//!
//! **The per-host device** (kernel mode, [`vxlan`]). Where the FORWARD
//! policy is DROP (dockerd sets it when it enables IP forwarding) and
//! Docker masquerades everything its bridge sends elsewhere, overlayd, like
//! flannel, accepts what is forwarded into and out of its VXLAN device and
//! exempts what leaves through it from masquerading (so containers see each
//! other's real addresses):
//!
//! ```text
//! -t filter -I FORWARD 1 -i ovl.42 -m comment --comment overlayd -j ACCEPT
//! -t filter -I FORWARD 1 -o ovl.42 -m comment --comment overlayd -j ACCEPT
//! -t nat -I POSTROUTING 1 -o ovl.42 -m comment --comment overlayd -j RETURN
//! ```
//!
//! **The VXLAN filter** ([`vxlan`]). VXLAN carries no authentication, and a
//! kernel VXLAN device accepts a frame from any source. So overlayd also
//! accepts VXLAN only from its peers, in a chain of its own kept in step
//! with the peers (`-s` per peer host, then a counted DROP):
//!
//! ```text
//! -t filter -N OVERLAY-VXLAN
//! -t filter -A OVERLAY-VXLAN -s 192.168.56.5/32 -j RETURN
//! -t filter -A OVERLAY-VXLAN -j DROP
//! -t filter -I INPUT 1 -p udp -m udp --dport 4789 -m comment --comment overlayd -j OVERLAY-VXLAN
//! ```
//!
//! The BPF dataplane needs no FORWARD rules for the per-host overlay: it
//! encapsulates at the container's veth before the bridge and netfilter,
//! and delivers with `bpf_redirect_peer`; its tc program drops VXLAN from
//! strangers itself (`unknown_peer`), but with `encap = "device"` a VXLAN
//! device listens on the port, so it takes the VXLAN filter too.
//!
//! **The overlay networks** ([`networks`], both dataplanes): per network,
//! MASQUERADE for what leaves it (chain `OVERLAY-NAT`), and FORWARD rules
//! (chain `OVERLAY-NETS`) accepting its own traffic and replies and
//! dropping what another network (or anyone else) sends into it.
//!
//! The rules are made with the `iptables` crate, which runs the `iptables`
//! command: that way they land in whichever backend (nft or legacy) Docker's
//! own rules are in, which is what decides the FORWARD verdict.
//!
//! [`Firewall`] is the handle a dataplane owns: it installs the rules at
//! start, updates the filter on every peer change and the network chains on
//! every network change, re-checks everything every [`RECHECK`] (someone
//! may flush the chains, e.g. a firewall reload) once [`Firewall::keep`] was
//! called, and removes it all on `--cleanup`.
//!
//! Owns: overlayd's iptables rules and chains (`-m comment --comment
//! overlayd` in built-in chains; `OVERLAY-VXLAN`, `OVERLAY-NETS`,
//! `OVERLAY-NAT`). Must not touch: anyone else's rules and chains (Docker's,
//! the host's), devices, routes and BPF.

mod ipt;
pub mod networks;
pub mod vxlan;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use networks::{NetworkRules, NAT_CHAIN, NETS_CHAIN};
pub use vxlan::{rules, vxlan_chain, vxlan_hook, Rule, VXLAN_CHAIN};

use crate::dataplane::DataplaneError;

/// How often [`Firewall::keep`] re-checks the rules.
pub const RECHECK: Duration = Duration::from_secs(5);

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DataplaneError> + Send + 'static,
) -> Result<T, DataplaneError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DataplaneError::Task(e.to_string()))?
}

/// What the rules are made of now.
#[derive(Clone, Default)]
struct State {
    /// The peer hosts the VXLAN filter accepts.
    peers: BTreeSet<Ipv4Addr>,
    /// The overlay networks.
    networks: BTreeSet<NetworkRules>,
    /// Networks removed since the start (their rules go before pruning starts).
    gone: BTreeSet<NetworkRules>,
    /// Whether what the agent does not list (peer hosts, networks an earlier
    /// run left) is removed yet: only once the agent has re-added its own.
    prune: bool,
}

/// What to bring in line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    All,
    Peers,
    Networks,
}

/// What the rules are made from, shared with the keeper task.
struct Wanted {
    /// The VXLAN device that needs the FORWARD rules (kernel mode), if any.
    device: Option<String>,
    /// The VXLAN port to filter, if VXLAN is filtered.
    port: Option<u16>,
    state: Mutex<State>,
    /// Held while iptables runs, so that two syncs never interleave; with
    /// the command, found once.
    busy: Mutex<Option<iptables::IPTables>>,
}

impl Wanted {
    fn state(&self) -> State {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Brings `part` of the rules in line; returns how many rules changed.
    fn sync(&self, part: Part) -> Result<usize, DataplaneError> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let state = self.state();
        let ipt = match busy.take() {
            Some(ipt) => ipt,
            None => ipt::iptables()?,
        };
        let result = self.sync_with(&ipt, part, &state);
        *busy = Some(ipt);
        result
    }

    fn sync_with(
        &self,
        ipt: &iptables::IPTables,
        part: Part,
        s: &State,
    ) -> Result<usize, DataplaneError> {
        let mut changed = 0;
        if part == Part::All {
            if let Some(dev) = &self.device {
                changed += vxlan::ensure_forward(ipt, dev)?;
            }
        }
        if part != Part::Networks {
            if let Some(port) = self.port {
                changed += vxlan::sync_vxlan(ipt, port, &s.peers, s.prune, part == Part::All)?;
            }
        }
        if part != Part::Peers {
            changed += networks::sync_networks(ipt, &s.networks, s.prune, &s.gone)?;
        }
        Ok(changed)
    }

    /// What the keeper makes sure of, for its log lines.
    fn describe(&self) -> String {
        let mut what = Vec::new();
        if let Some(dev) = &self.device {
            what.push(format!(
                "traffic forwarded through {dev} is accepted and not masqueraded"
            ));
        }
        if let Some(port) = self.port {
            what.push(format!("VXLAN to port {port} is accepted only from peers"));
        }
        what.push("overlay networks are NATed and isolated".into());
        what.join(", ")
    }
}

/// The firewall rules of one dataplane: the FORWARD rules of its VXLAN
/// device (kernel mode), the VXLAN filter and the overlay networks' rules.
/// Dropping it stops the keeper and leaves the rules in place (forwarding
/// goes on across restarts).
pub struct Firewall {
    wanted: Arc<Wanted>,
    keeper: Option<tokio::task::JoinHandle<()>>,
}

impl Firewall {
    /// The rules with the FORWARD rules of `device` if given, and the VXLAN
    /// filter for `vxlan_port` if given (kernel mode, `encap = "device"`;
    /// `None` where BPF filters VXLAN itself). The networks' rules are
    /// always managed: none until [`Firewall::set_networks`].
    pub fn new(device: Option<String>, vxlan_port: Option<u16>) -> Firewall {
        Firewall {
            wanted: Arc::new(Wanted {
                device,
                port: vxlan_port,
                state: Mutex::new(State::default()),
                busy: Mutex::new(None),
            }),
            keeper: None,
        }
    }

    /// Installs the rules now; peer hosts and networks an earlier run added
    /// stay until [`Firewall::keep`]. Returns how many rules changed.
    pub async fn install(&self) -> Result<usize, DataplaneError> {
        let wanted = self.wanted.clone();
        blocking(move || wanted.sync(Part::All)).await
    }

    /// The peer hosts are now `peers`: the filter accepts VXLAN from them
    /// (and, once [`Firewall::keep`] was called, from no other host) when
    /// this returns. Runs iptables only when the set of hosts changed.
    pub async fn set_peers(&self, peers: BTreeSet<Ipv4Addr>) -> Result<usize, DataplaneError> {
        if self.wanted.port.is_none() {
            return Ok(0);
        }
        {
            let mut s = self.wanted.state.lock().unwrap_or_else(|e| e.into_inner());
            if s.peers == peers {
                return Ok(0);
            }
            s.peers = peers;
        }
        let wanted = self.wanted.clone();
        blocking(move || wanted.sync(Part::Peers)).await
    }

    /// The overlay networks on this host are now `networks`: when this
    /// returns, each one's traffic leaving it is masqueraded and accepted,
    /// replies to it are accepted, and nothing else is forwarded into it
    /// (see [`networks`]); a network no longer listed has no rules left
    /// (networks an earlier run left go once [`Firewall::keep`] was
    /// called). With no networks (after `keep`), the chains are removed.
    /// Runs iptables only when the set changed.
    pub async fn set_networks(
        &self,
        networks: BTreeSet<NetworkRules>,
    ) -> Result<usize, DataplaneError> {
        {
            let mut s = self.wanted.state.lock().unwrap_or_else(|e| e.into_inner());
            if s.networks == networks {
                return Ok(0);
            }
            let gone: Vec<NetworkRules> = s.networks.difference(&networks).cloned().collect();
            s.gone.extend(gone);
            for n in &networks {
                s.gone.remove(n);
            }
            s.networks = networks;
        }
        let wanted = self.wanted.clone();
        blocking(move || wanted.sync(Part::Networks)).await
    }

    /// From now on (the agent has re-added its peers and networks) accept
    /// no host but the peers and keep no rules of other networks, and keep
    /// the rules in place: check at once and every [`RECHECK`], logging
    /// each change of outcome once. Idempotent.
    pub fn keep(&mut self) {
        if self.keeper.is_some() {
            return;
        }
        {
            let mut s = self.wanted.state.lock().unwrap_or_else(|e| e.into_inner());
            s.prune = true;
            s.gone.clear();
        }
        self.keeper = Some(tokio::spawn(keeper(self.wanted.clone())));
    }

    /// Stops the keeper and removes every rule (`--cleanup`): the device's,
    /// the VXLAN filter and the networks' chains.
    pub async fn remove(&mut self) -> Result<usize, DataplaneError> {
        if let Some(k) = self.keeper.take() {
            k.abort();
        }
        let wanted = self.wanted.clone();
        blocking(move || {
            let _busy = wanted.busy.lock().unwrap_or_else(|e| e.into_inner());
            let ipt = ipt::iptables()?;
            let mut removed = 0;
            if let Some(dev) = &wanted.device {
                removed += vxlan::remove_forward(&ipt, dev)?;
            }
            removed += vxlan::remove_vxlan(&ipt)?;
            removed += networks::remove_networks(&ipt)?;
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
    let what = wanted.describe();
    let mut last: Option<Result<(), String>> = None;
    loop {
        let w = wanted.clone();
        let outcome = match blocking(move || w.sync(Part::All)).await {
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
                    "firewall: {e}; without its rules, VXLAN from any host is accepted, where the FORWARD policy is DROP (Docker sets it) overlay traffic is dropped, and overlay networks are neither NATed nor isolated"
                );
            }
            last = Some(outcome);
        }
        tokio::time::sleep(RECHECK).await;
    }
}
