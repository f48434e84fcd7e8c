//! `overlayctl docker-opts`: dockerd's `--bip` and `--mtu` from overlayd's subnet file.

use std::path::PathBuf;

use overlay_user::model::cluster::docker_opts;
use overlay_user::model::config::cluster::DEFAULT_SUBNET_FILE;

use crate::output::print_json;
use crate::{CtlError, Ctx};

/// Print dockerd's options for this host's leased subnet.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "Print the options dockerd needs for this host's subnet, `--bip=GATEWAY/LEN \
--mtu=MTU`, from the subnet file overlayd writes with a [cluster] section (flannel's \
subnet.env: OVERLAY_NETWORK, OVERLAY_SUBNET, OVERLAY_MTU). It reads the file only, so it works \
before dockerd starts and while overlayd restarts.",
    after_help = "Examples:\n  \
overlayctl docker-opts\n  \
dockerd $(overlayctl docker-opts)\n  \
overlayctl docker-opts --subnet-file /run/overlay/subnet.env"
)]
pub struct Args {
    /// The subnet file overlayd writes (`[cluster] subnet_file`).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SUBNET_FILE)]
    subnet_file: PathBuf,
}

/// Run `overlayctl docker-opts`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    let text =
        std::fs::read_to_string(&args.subnet_file).map_err(|source| CtlError::SubnetFile {
            path: args.subnet_file.clone(),
            source,
        })?;
    let opts = docker_opts(&text)?;
    if ctx.json {
        let mut words = opts.split(' ');
        print_json(&serde_json::json!({
            "bip": words.next().unwrap_or_default().trim_start_matches("--bip="),
            "mtu": words
                .next()
                .unwrap_or_default()
                .trim_start_matches("--mtu=")
                .parse::<u32>()
                .ok(),
        }));
    } else {
        println!("{opts}");
    }
    Ok(())
}
