//! `overlayctl doctor`: overlayd checks this host; one line per check.

use overlay_user::model::doctor::Finding;
use overlay_user::sources::api::{Request, Response};

use crate::output::print_json;
use crate::{unexpected, CtlError, Ctx};

/// Check this host for what commonly breaks an overlay, with the fix for each problem.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "Ask overlayd to check this host, where it runs, and print one line per check: \
`ok` with what was seen, or `problem` with what is wrong and the command that fixes it.\n\n\
Checks: mtu (the bridge's and the containers' MTU at most the underlay's minus 50), ip_forward, \
rp_filter (strict reverse-path filtering on the underlay, the bridge or the VXLAN device; the \
kernel applies the larger of `all` and the interface's value), vxlan_port (another VXLAN device, \
such as Docker swarm's on 4789, or a socket on overlay's port), firewall (iptables or nftables \
rules dropping the VXLAN port in INPUT, a peer missing from the VXLAN filter), bridge_address (the \
bridge carries this host's gateway), docker_bip (with [docker]: Docker's bridge network is this \
host's subnet), peer (every peer's host answers ICMP echo or ARP on the underlay within 1.5 s; \
only configured peers are probed), programs (every pinned program is attached to its \
interface).\n\n\
Exit status: 0 when every check passed, 1 when a problem was found (or overlayd could not be \
asked). With --json, the findings as an array of {check, ok, message, fix}.",
    after_help = "Examples:\n  \
overlayctl doctor\n  \
overlayctl --json doctor | jq '.[] | select(.ok | not)'"
)]
pub struct Args {}

/// Run `overlayctl doctor`.
pub async fn run(ctx: &Ctx, _args: Args) -> Result<(), CtlError> {
    let findings = match ctx.request(Request::Doctor).await? {
        Response::Doctor(findings) => findings,
        other => return Err(unexpected(&other)),
    };
    if ctx.json {
        print_json(&findings);
    } else {
        print!("{}", render(&findings));
    }
    match findings.iter().filter(|f| !f.ok).count() {
        0 => Ok(()),
        n => Err(CtlError::Problems(n)),
    }
}

/// One line per finding: `ok` or `problem`, the check, the message, and the fix.
pub fn render(findings: &[Finding]) -> String {
    let width = findings.iter().map(|f| f.check.len()).max().unwrap_or(0);
    let mut out = String::new();
    for f in findings {
        let state = if f.ok { "ok     " } else { "problem" };
        out.push_str(&format!("{state}  {:width$}  {}", f.check, f.message));
        if let Some(fix) = &f.fix {
            out.push_str(&format!("; fix: {fix}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_check() {
        let out = render(&[
            Finding::ok("mtu", "docker0 is at most 1450"),
            Finding::problem(
                "ip_forward",
                "net.ipv4.ip_forward = 0",
                "sysctl -w net.ipv4.ip_forward=1",
            ),
        ]);
        assert_eq!(
            out,
            "ok       mtu         docker0 is at most 1450\n\
             problem  ip_forward  net.ipv4.ip_forward = 0; fix: sysctl -w net.ipv4.ip_forward=1\n"
        );
    }
}
