//! `kiln pull IMAGE`: fetch an image from a registry into the store.

use std::path::PathBuf;

use clap::Args;

use super::Cli;
use crate::registry::{self, RegistryOptions};

/// How to reach registries; shared by pull, push, login and build.
#[derive(Debug, Clone, Args, Default)]
pub struct RegistryFlags {
    /// Require HTTPS with verified certificates (default true; loopback registries may still answer in plain HTTP).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub tls_verify: Option<bool>,

    /// Trust the CA certificates (*.crt) in DIR (default /etc/containers/certs.d/HOST[:PORT]).
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,

    /// Read (and for login, write) credentials in FILE instead of the default auth files.
    #[arg(long, value_name = "FILE", env = "REGISTRY_AUTH_FILE")]
    pub authfile: Option<PathBuf>,
}

impl RegistryFlags {
    pub fn options(&self, platform: Option<String>, progress: bool) -> RegistryOptions {
        RegistryOptions {
            tls_verify: self.tls_verify,
            cert_dir: self.cert_dir.clone(),
            authfile: self.authfile.clone(),
            platform,
            progress,
            chunk_size: None,
            net: None,
        }
    }
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln pull busybox\n  kiln pull --platform linux/arm64 quay.io/org/app:1.2\n  kiln pull localhost:5000/app@sha256:..."
)]
pub struct PullArgs {
    /// The image: [REGISTRY[:PORT]/]NAME[:TAG][@DIGEST]; a bare name means docker.io/library/NAME.
    pub image: String,

    /// Pick this os/arch[/variant] from a multi-platform image (default: the host's).
    #[arg(long)]
    pub platform: Option<String>,

    /// Print only the image id.
    #[arg(short, long)]
    pub quiet: bool,

    #[command(flatten)]
    pub registry: RegistryFlags,
}

pub fn run(cli: &Cli, args: &PullArgs) -> anyhow::Result<i32> {
    // Ctrl-C and SIGTERM stop at the next blob write, which removes the
    // partial blob (see `kiln_runtime::lifetime`).
    anyhow::Context::context(kiln_runtime::lifetime::handle_interrupts(), "prepare for Ctrl-C")?;
    let store = cli.open_store()?;
    // Shared with builds: `kiln system prune` waits while blobs arrive.
    let _builds = store.builds_lock(|| {})?;
    let opts = args.registry.options(args.platform.clone(), !args.quiet);
    let view = super::progress::View::new(super::progress::mode(None, args.quiet)?, Box::new(std::io::stderr()));
    let image = registry::pull(&store, &args.image, &opts, &view)?;
    view.finish();
    println!("{}", image.config_digest.trim_start_matches("sha256:"));
    Ok(0)
}
