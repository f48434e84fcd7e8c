//! `overlayctl cluster`: write the cluster settings to etcd (`init`), and
//! the cluster store's state as this host's overlayd sees it (`status`).

use std::path::PathBuf;

use clap::Subcommand;
use ipnet::Ipv4Net;

use overlay_user::model::cluster::{settings_key, ClusterSettings};
use overlay_user::model::config::cluster::ClusterConfig;
use overlay_user::model::config::cluster::DEFAULT_PREFIX;
use overlay_user::model::status::StoreStatus;
use overlay_user::model::validation::parse_cidr;
use overlay_user::sources::api::{Request, Response};
use overlay_user::sources::cluster::client::{Init, Store};

use crate::hosts::duration;
use crate::output::{print_json, table, Align};
use crate::{unexpected, CtlError, Ctx};

/// The cluster store: its settings and state.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "The cluster store (etcd) through which hosts lease their subnets and find \
each other. `init` writes the settings every host shares, once, straight to etcd; `status` \
asks this host's overlayd which etcd member answers, the revision and the last error.",
    after_help = "Examples:\n  \
overlayctl cluster init --etcd http://10.0.0.1:2379 --pool 10.103.0.0/16 --subnet-len 24 --vni 42\n  \
overlayctl cluster status"
)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write the cluster settings (pool, subnet length, VNI, port) to etcd.
    #[command(
        long_about = "Write the cluster settings to etcd at PREFIX/config: the pool hosts lease \
their subnets from, the length of each host's subnet, the VNI and the UDP port. Settings that \
are already there and equal are left alone; different ones are refused, naming what differs, \
unless --force is given (hosts that run keep their leases: restart them).",
        after_help = "Examples:\n  \
overlayctl cluster init --etcd http://10.0.0.1:2379 --pool 10.103.0.0/16 --subnet-len 24 --vni 42 --port 4789\n  \
overlayctl cluster init --etcd https://10.0.0.1:2379 --ca-file ca.pem --cert-file c.pem --key-file c.key --pool 10.103.0.0/16 --subnet-len 24 --vni 42"
    )]
    Init(InitArgs),
    /// The cluster store's state: endpoints, the member answering, revision, last error.
    #[command(
        after_help = "Examples:\n  overlayctl cluster status\n  overlayctl --json cluster status"
    )]
    Status,
}

#[derive(clap::Args, Debug)]
struct InitArgs {
    /// etcd client URLs (repeat, or separate with commas).
    #[arg(
        long = "etcd",
        value_name = "URL",
        required = true,
        value_delimiter = ','
    )]
    etcd: Vec<String>,
    /// The pool of host subnets, e.g. 10.103.0.0/16.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pool: Ipv4Net,
    /// The prefix length of each host's subnet, e.g. 24.
    #[arg(long, value_name = "LEN")]
    subnet_len: u8,
    /// The VXLAN network identifier.
    #[arg(long)]
    vni: u32,
    /// The VXLAN UDP port.
    #[arg(long, default_value_t = overlay_common::DEFAULT_VXLAN_PORT)]
    port: u16,
    /// The key prefix in etcd.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    prefix: String,
    /// Overwrite different settings.
    #[arg(long)]
    force: bool,
    /// CA certificate (PEM) for https:// endpoints.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long, value_name = "FILE")]
    cert_file: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
}

/// Run `overlayctl cluster ...`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    match args.command {
        Command::Init(a) => init(ctx, a).await,
        Command::Status => match ctx.request(Request::ClusterStatus).await? {
            Response::Cluster(s) if ctx.json => {
                print_json(&s);
                Ok(())
            }
            Response::Cluster(s) => {
                print!("{}", render(&s));
                Ok(())
            }
            other => Err(unexpected(&other)),
        },
    }
}

/// The settings and the connection of `cluster init`, checked.
fn checked(a: &InitArgs) -> Result<(ClusterConfig, ClusterSettings), CtlError> {
    let mut cfg: ClusterConfig = toml::from_str("etcd = []").expect("defaults parse");
    cfg.etcd = a.etcd.clone();
    cfg.prefix = a.prefix.clone();
    cfg.ca_file = a.ca_file.clone();
    cfg.cert_file = a.cert_file.clone();
    cfg.key_file = a.key_file.clone();
    cfg.validate().map_err(CtlError::BadInput)?;
    let settings = ClusterSettings {
        pool: a.pool,
        subnet_len: a.subnet_len,
        vni: a.vni,
        port: a.port,
    };
    settings.validate().map_err(CtlError::BadInput)?;
    Ok((cfg, settings))
}

async fn init(ctx: &Ctx, a: InitArgs) -> Result<(), CtlError> {
    let (cfg, settings) = checked(&a)?;
    let store = Store::connect(&cfg).await?;
    let outcome = store.init(&settings, a.force).await?;
    let key = settings_key(&cfg.prefix);
    let what = format!(
        "pool {}, {} subnets of /{}, vni {}, port {}",
        settings.pool,
        settings.subnet_count(),
        settings.subnet_len,
        settings.vni,
        settings.port
    );
    let (result, message) = match outcome {
        Init::Created => (
            "created",
            format!("cluster settings written to {key}: {what}"),
        ),
        Init::Unchanged => (
            "unchanged",
            format!("{key} already holds these settings: {what}"),
        ),
        Init::Replaced(old) => (
            "replaced",
            format!(
                "cluster settings at {key} replaced ({}): {what}; restart the hosts to apply them",
                old.differences(&settings).join(", ")
            ),
        ),
    };
    if ctx.json {
        print_json(
            &serde_json::json!({ "ok": true, "result": result, "key": key, "settings": settings }),
        );
    } else {
        println!("{message}");
    }
    Ok(())
}

fn render(s: &StoreStatus) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let rows = vec![
        vec!["endpoints".into(), s.endpoints.join(", ")],
        vec!["prefix".into(), s.prefix.clone()],
        vec![
            "connected".into(),
            if s.connected { "yes" } else { "no" }.into(),
        ],
        vec!["member".into(), opt(&s.member)],
        vec!["leader".into(), opt(&s.leader)],
        vec!["revision".into(), s.revision.to_string()],
        vec!["last error".into(), opt(&s.last_error)],
        vec!["other hosts".into(), s.hosts.to_string()],
        vec!["subnet".into(), s.subnet.to_string()],
        vec![
            "lease".into(),
            format!(
                "{} ({} left)",
                s.lease_id,
                s.lease_ttl.map(duration).unwrap_or_else(|| "?".into())
            ),
        ],
    ];
    table(&[("CLUSTER", Align::Left), ("VALUE", Align::Left)], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_state() {
        let s = StoreStatus {
            endpoints: vec!["http://10.0.0.1:2379".into()],
            prefix: "/overlay".into(),
            connected: false,
            member: None,
            leader: Some("m1".into()),
            revision: 17,
            last_error: Some("etcd at http://10.0.0.1:2379 is unreachable".into()),
            hosts: 2,
            subnet: "10.103.5.0/24".parse().unwrap(),
            lease_id: "694d7a1e2b3c4d5e".into(),
            lease_ttl: Some(3600),
        };
        let out = render(&s);
        assert!(out.contains("connected    no\n"), "{out}");
        assert!(out.contains("member       -\n"), "{out}");
        assert!(
            out.contains("lease        694d7a1e2b3c4d5e (1h00m left)\n"),
            "{out}"
        );
    }
}
