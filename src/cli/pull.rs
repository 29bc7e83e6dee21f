//! `kiln pull IMAGE`: fetch an image from a registry into the store.

use std::path::PathBuf;

use clap::Args;

use super::Cli;
use kiln::registry::{self, RegistryOptions};

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

    /// Try a registry request this many more times when it fails in a way that may pass (refused or
    /// dropped connection, 429, 5xx); never after 401, 403 or 404.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retry: u32,

    /// Wait this long before each retry (e.g. 2s, 500ms; default: 0.25s doubling each time). A
    /// registry's Retry-After wins.
    #[arg(long, value_name = "DURATION", value_parser = parse_delay)]
    pub retry_delay: Option<std::time::Duration>,
}

/// `2s`, `500ms`, `1m30s` (Go's durations, as buildah takes them), or bare seconds.
fn parse_delay(text: &str) -> Result<std::time::Duration, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds >= 0.0 && seconds.is_finite() {
            return Ok(std::time::Duration::from_secs_f64(seconds));
        }
    }
    match kiln::dockerfile::duration::parse_go_duration(text) {
        Ok(nanos) if nanos >= 0 => Ok(std::time::Duration::from_nanos(nanos as u64)),
        Ok(_) => Err(format!("{text:?} is negative")),
        Err(e) => Err(format!("{e} (e.g. 2s, 500ms)")),
    }
}

impl RegistryFlags {
    pub fn options(&self, platform: Option<kiln::image::platform::Platform>, progress: bool) -> RegistryOptions {
        RegistryOptions {
            tls_verify: self.tls_verify,
            cert_dir: self.cert_dir.clone(),
            authfile: self.authfile.clone(),
            platform,
            progress,
            chunk_size: None,
            net: None,
            retry: kiln::registry::RetryPolicy { retries: self.retry, delay: self.retry_delay },
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
    let platform = args.platform.as_deref().map(kiln::image::platform::Platform::parse).transpose()?;
    let opts = args.registry.options(platform, !args.quiet);
    let view = super::progress::View::new(super::progress::mode(None, args.quiet)?, Box::new(std::io::stderr()));
    let image = registry::pull(&store, &args.image, &opts, &view)?;
    view.finish();
    println!("{}", image.config_digest.trim_start_matches("sha256:"));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::parse_delay;
    use std::time::Duration;

    #[test]
    fn retry_delays_are_go_durations_or_seconds() {
        assert_eq!(parse_delay("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_delay("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_delay("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_delay("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_delay("-1s").is_err());
        assert!(parse_delay("soon").unwrap_err().contains("e.g. 2s"));
    }
}
